"""A frame ready for a model, with the exact transform back to its source pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Transform:
    """A region of the source frame (columns x rows, from column ``left`` and row ``top``; the
    whole frame unless the image is a tile) scaled to the model image (width x height).

    Model coordinates map back with left + x * columns / width and top + y * rows / height; a
    box given as fractions of the model image is the same fraction of that region.
    """

    columns: int
    rows: int
    width: int
    height: int
    left: int = 0
    top: int = 0

    def __post_init__(self) -> None:
        if min(self.columns, self.rows, self.width, self.height) < 1 or min(self.left, self.top) < 0:
            raise ValueError(f"transform sizes must be >= 1 and offsets >= 0, got {self}")

    def fraction_to_source(
        self, box: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float] | None:
        """A (x1, y1, x2, y2) fraction box in source pixels, clipped to the region; None if empty."""
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(np.isfinite([x1, y1, x2, y2])):
            return None
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        x1, x2 = (self.left + min(max(v, 0.0), 1.0) * self.columns for v in (x1, x2))
        y1, y2 = (self.top + min(max(v, 0.0), 1.0) * self.rows for v in (y1, y2))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return None
        return (x1, y1, x2, y2)

    def model_to_source(self, x: float, y: float) -> tuple[float, float]:
        """A point of the model image in source pixel coordinates."""
        return (self.left + x * self.columns / self.width, self.top + y * self.rows / self.height)


@dataclass(frozen=True, eq=False)
class ModelImage:
    """One de-identified frame as a model sees it (8-bit RGB), and where it came from.

    ``values`` holds the modality values (Hounsfield units on CT) of the region shown, at source
    resolution, for backends that measure (the offline baseline); ``None`` for colour images.
    ``tile`` is 0 for the whole frame, k for the k-th tile of a tiled frame (``imaging.tiling``).
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
    tile: int = 0
    frame_size: tuple[int, int] | None = None  # (columns, rows) of the whole frame, when a tile

    def cut(self, box: tuple[float, float, float, float], margin: float = 1.0) -> bool:
        """Whether a source-pixel box touches a seam of this tile (an edge inside the frame),
        within ``margin`` model pixels: the object may go on in the neighbouring tile."""
        if not self.tile or self.frame_size is None:
            return False
        t = self.transform
        mx, my = margin * t.columns / t.width, margin * t.rows / t.height
        x1, y1, x2, y2 = box
        return (
            (t.left > 0 and x1 <= t.left + mx)
            or (t.top > 0 and y1 <= t.top + my)
            or (t.left + t.columns < self.frame_size[0] and x2 >= t.left + t.columns - mx)
            or (t.top + t.rows < self.frame_size[1] and y2 >= t.top + t.rows - my)
        )

    @property
    def columns(self) -> int:
        """Source columns of the region shown (the frame's, unless a tile)."""
        return self.transform.columns

    @property
    def rows(self) -> int:
        return self.transform.rows
