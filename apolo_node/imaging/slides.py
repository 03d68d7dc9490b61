"""Whole-slide images: one pyramid level of a slide, read frame by frame.

A VL Whole Slide Microscopy series holds the same slide at several resolutions (levels), each an
instance whose frames are tiles of its total pixel matrix, beside LABEL and OVERVIEW images of
the glass slide (photographs of its label: not for a model). The full-resolution level may hold
tens of thousands of tiles, so one level is read: the one ``[vision] wsi_level`` names (0 = the
finest), or by default the finest whose tiles number at most ``max_frames``, every tile of it a
model image (more than ``max_frames`` only where even the coarsest level has more; then they are
evenly spaced). Boxes stay in the tile's pixels, referenced by frame number, as for any
multi-frame instance.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

VL_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"
PYRAMID_FLAVORS = ("VOLUME", "THUMBNAIL")  # Image Type value 3 of levels; LABEL and OVERVIEW are not


def is_slide(header: Dataset) -> bool:
    """A VL Whole Slide Microscopy instance."""
    return str(header.get("SOPClassUID", "")) == VL_WHOLE_SLIDE


def _flavor(header: Dataset) -> str:
    image_type = header.get("ImageType")
    values = list(image_type) if image_type is not None and not isinstance(image_type, str) else [image_type]
    return str(values[2]).upper() if len(values) > 2 and values[2] else "VOLUME"


def _size(header: Dataset) -> int:
    columns = int(header.get("TotalPixelMatrixColumns", 0) or 0) or int(header.get("Columns", 0) or 0)
    rows = int(header.get("TotalPixelMatrixRows", 0) or 0) or int(header.get("Rows", 0) or 0)
    return columns * rows


def levels(headers: Sequence[Dataset]) -> list[Dataset]:
    """The pyramid levels of one slide series, finest first (LABEL and OVERVIEW left out)."""
    pyramid = [h for h in headers if is_slide(h) and _flavor(h) in PYRAMID_FLAVORS]
    return sorted(pyramid, key=lambda h: (-_size(h), str(h.get("SOPInstanceUID", ""))))


def choose_level(headers: Sequence[Dataset], level: int = -1, max_frames: int = 16) -> Dataset | None:
    """The level to read: ``level`` counted from the finest (clamped to the coarsest), or with
    -1 the finest with at most ``max_frames`` frames, else the coarsest; None without levels."""
    pyramid = levels(headers)
    if not pyramid:
        return None
    if level >= 0:
        return pyramid[min(level, len(pyramid) - 1)]
    fitting = [h for h in pyramid if int(h.get("NumberOfFrames", 1) or 1) <= max_frames]
    return fitting[0] if fitting else pyramid[-1]
