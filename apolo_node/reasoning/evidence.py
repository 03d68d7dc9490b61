"""Evidence: the findings retrieved for a question, each with its SR reference and its score.

A piece of evidence is referred to as ``F1``..``Fn`` in its list's order (best first): that is
how answerers show it to a model and how a model cites it (``[F2]``); citations are mapped back
to the finding's tracking UID.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from apolo_node.catalog.search import FindingHit
from apolo_node.findings import Finding


@dataclass(frozen=True)
class Evidence:
    """One finding, where it comes from (study, TID 1500 SR, series), and how well it matched."""

    finding: Finding
    study_uid: str  # pseudonymous
    sr_sop_instance_uid: str  # the TID 1500 SR that holds the finding
    sr_series_uid: str
    modality: str | None
    body_part: str | None
    study_date: dt.date | None  # de-identified Study Date
    score: float  # higher is better; see reasoning.retrieval for what it measures

    def __post_init__(self) -> None:
        if not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
            raise ValueError(f"evidence score must be a finite number, got {self.score!r}")
        if not self.study_uid or not self.sr_sop_instance_uid:
            raise ValueError("evidence needs the study UID and the SR's SOP Instance UID")

    @classmethod
    def from_hit(cls, hit: FindingHit, score: float) -> Evidence:
        return cls(
            finding=hit.finding, study_uid=hit.study_uid, sr_sop_instance_uid=hit.sr_sop_instance_uid,
            sr_series_uid=hit.sr_series_uid, modality=hit.modality, body_part=hit.body_part,
            study_date=hit.study_date, score=float(score),
        )

    @property
    def tracking_uid(self) -> str:
        return self.finding.tracking_uid

    def as_json(self, ref: str | None = None) -> dict[str, object]:
        """``Finding.as_json()`` and where it comes from: one element of ``ask --json``'s evidence."""
        out: dict[str, object] = {"ref": ref} if ref else {}
        out.update(self.finding.as_json())
        out.update(
            study_uid=self.study_uid,
            sr_sop_instance_uid=self.sr_sop_instance_uid,
            sr_series_uid=self.sr_series_uid,
            modality=self.modality,
            body_part=self.body_part,
            study_date=self.study_date.isoformat() if self.study_date else None,
            score=round(self.score, 6),
        )
        return out


def ref(index: int) -> str:
    """The reference of the evidence at 0-based ``index``: ``F1`` for the first."""
    return f"F{index + 1}"
