"""Findings as data: what the vision stage saw, where, how sure, and by which algorithm.

Shared by the stages after the privacy wall (vision writes them, ``sr`` turns them into TID 1500
and back, the catalog keeps one row each, reasoning cites them), so it imports nothing of ours.
Every UID here is a de-identified one; a box is in source pixels of the de-identified frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SCT = "SCT"  # SNOMED CT
DCM = "DCM"
LOCAL_SCHEME = "99APOLO"  # our local coding scheme: the label is the meaning
LATERALITIES = ("left", "right", "bilateral", "unilateral")  # DICOM CID 244 Laterality


@dataclass(frozen=True)
class Code:
    """A coded concept (value, scheme designator, meaning), as in a DICOM Code Sequence."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        for name in ("value", "scheme", "meaning"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Code {name} must be a non-empty string, got {text!r}")
        if len(self.value) > 64 or len(self.meaning) > 64:
            raise ValueError(
                f"Code value and meaning are at most 64 characters (LO): {self.value!r}, {self.meaning!r}"
            )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in source pixel coordinates: x is the column, y the row, x1 < x2, y1 < y2."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        values = (self.x1, self.y1, self.x2, self.y2)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"box {values} must hold four finite numbers")
        if min(values) < 0 or self.x1 >= self.x2 or self.y1 >= self.y2:
            raise ValueError(f"box {values} must have 0 <= x1 < x2 and 0 <= y1 < y2")

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def polyline(self) -> list[tuple[float, float]]:
        """The closed five-point (column, row) outline that TID 1500 and GSPS draw."""
        return [
            (self.x1, self.y1), (self.x2, self.y1), (self.x2, self.y2),
            (self.x1, self.y2), (self.x1, self.y1),
        ]

    @classmethod
    def from_polyline(cls, points: list[tuple[float, float]]) -> Box:
        """The bounding box of a (column, row) polyline: how an SR's region is read back."""
        if len(points) < 2:
            raise ValueError(f"a polyline needs at least 2 points, got {len(points)}")
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        return cls(min(xs), min(ys), max(xs), max(ys))

    def within(self, columns: int, rows: int) -> bool:
        return self.x2 <= columns and self.y2 <= rows


@dataclass(frozen=True)
class Measurement:
    """A numeric measurement of a finding: name (a code), value, and UCUM unit (a code)."""

    name: Code
    value: float
    unit: Code


@dataclass(frozen=True)
class Algorithm:
    """TID 4019 Algorithm Identification: who produced the findings."""

    name: str
    version: str

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.version.strip():
            raise ValueError(f"algorithm name and version must be non-empty, got {self!r}")


@dataclass(frozen=True)
class Finding:
    """One finding on one frame of one de-identified instance.

    ``frame`` is 1-based (DICOM's Referenced Frame Number); ``box`` is None when the model
    gave no location; ``confidence`` is in [0, 1] or None when the backend has none.
    """

    tracking_uid: str
    label: str
    code: Code
    sop_instance_uid: str
    sop_class_uid: str
    frame: int = 1
    description: str = ""
    box: Box | None = None
    confidence: float | None = None
    laterality: str | None = None
    location: str | None = None
    measurements: tuple[Measurement, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.label.strip():
            raise ValueError("finding label must be non-empty")
        if self.frame < 1:
            raise ValueError(f"finding frame is 1-based, got {self.frame}")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"finding confidence must be in [0, 1], got {self.confidence}")
        if self.laterality is not None and self.laterality not in LATERALITIES:
            raise ValueError(f"finding laterality must be one of {LATERALITIES}, got {self.laterality!r}")
        if not self.tracking_uid or not self.sop_instance_uid:
            raise ValueError("finding needs a tracking UID and the SOP Instance UID it was seen on")

    def as_json(self) -> dict[str, object]:
        """The shape of ``report --json`` (design.md)."""
        return {
            "tracking_uid": self.tracking_uid,
            "label": self.label,
            "code": {"value": self.code.value, "scheme": self.code.scheme, "meaning": self.code.meaning},
            "description": self.description,
            "box": self.box.as_list() if self.box else None,
            "sop_instance_uid": self.sop_instance_uid,
            "frame": self.frame,
            "confidence": self.confidence,
            "laterality": self.laterality,
            "location": self.location,
            "measurements": [
                {"name": m.name.meaning, "value": m.value, "unit": m.unit.value} for m in self.measurements
            ],
        }
