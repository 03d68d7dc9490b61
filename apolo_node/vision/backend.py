"""The vision backend contract: is it available, what does it need, run it on model images.

A backend sees only de-identified pixels (``imaging.ModelImage``) and a little de-identified
context, and answers with ``RawFinding``s whose boxes are fractions of the image it was shown
(0..1, x across, y down), so that every grounding dialect and every resize meets in one place;
the stage maps them back to source pixels with the image's exact transform.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from apolo_node.findings import Algorithm
from apolo_node.imaging import ModelImage


class BackendUnavailable(RuntimeError):
    """A backend cannot run here; the message says what to install or configure."""


@dataclass(frozen=True)
class Context:
    """What a backend may know besides the pixels: nothing that identifies anyone."""

    modality: str | None = None
    body_part: str | None = None
    frame: int = 1
    frames: int = 1
    pixel_spacing: tuple[float, float] | None = None  # (row, column) mm, when known


@dataclass(frozen=True)
class RawFinding:
    """A finding as a backend gave it: box as fractions (x1, y1, x2, y2) of the image shown."""

    label: str
    description: str = ""
    box: tuple[float, float, float, float] | None = None
    confidence: float | None = None
    laterality: str | None = None
    location: str | None = None
    # (name, value, UCUM unit) of measurements the backend made, e.g. ("Area", 1234.5, "mm2")
    measurements: tuple[tuple[str, float, str], ...] = ()


@dataclass(frozen=True)
class Described:
    """A backend's answer for one image: findings, plus what could not be parsed (kept as text)."""

    findings: tuple[RawFinding, ...] = ()
    unparsed: int = 0
    free_text: tuple[str, ...] = field(default=())


class VisionBackend(ABC):
    """One vision backend. ``describe_batch`` answers one ``Described`` per image, in order."""

    #: names the algorithm in TID 4019 (with the model's name and version)
    algorithm: Algorithm

    @abstractmethod
    def describe_batch(self, images: Sequence[ModelImage], contexts: Sequence[Context]) -> list[Described]:
        """Describe each image; never raise for a bad model answer (count it as unparsed)."""

    def describe(self, image: ModelImage, context: Context) -> Described:
        return self.describe_batch([image], [context])[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the backend holds (a model, a connection pool)."""
