"""A frame ready for a model, with the exact transform back to its source pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Transform:
    """Source frame (columns x rows) scaled to the model image (width x height), nothing else.

    Model coordinates map back with x * columns / width and y * rows / height; a box given as
    fractions of the model image is the same fraction of the source frame.
    """

    columns: int
    rows: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if min(self.columns, self.rows, self.width, self.height) < 1:
            raise ValueError(f"transform sizes must be >= 1, got {self}")

    def fraction_to_source(
        self, box: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float] | None:
        """A (x1, y1, x2, y2) fraction box in source pixels, clipped to the frame; None if empty."""
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(np.isfinite([x1, y1, x2, y2])):
            return None
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        x1, x2 = (min(max(v, 0.0), 1.0) * self.columns for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), 1.0) * self.rows for v in (y1, y2))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return None
        return (x1, y1, x2, y2)

    def model_to_source(self, x: float, y: float) -> tuple[float, float]:
        """A point of the model image in source pixel coordinates."""
        return (x * self.columns / self.width, y * self.rows / self.height)


@dataclass(frozen=True, eq=False)
class ModelImage:
    """One de-identified frame as a model sees it (8-bit RGB), and where it came from.

    ``values`` holds the frame's modality values (Hounsfield units on CT) at source resolution
    for backends that measure (the offline baseline); ``None`` for colour images.
    """

    image: Image.Image
    sop_instance_uid: str
    sop_class_uid: str
    frame: int  # 1-based, as DICOM's Referenced Frame Number
    transform: Transform
    values: np.ndarray | None = None
    pixel_spacing: tuple[float, float] | None = None  # (row, column) spacing in mm
    modality: str | None = None
    body_part: str | None = None
    frames: int = 1  # frames in the source instance

    @property
    def columns(self) -> int:
        return self.transform.columns

    @property
    def rows(self) -> int:
        return self.transform.rows
