"""De-identified instances to ``ModelImage``s: which frames, decoded, displayed, scaled.

A model has a pixel budget; a frame bigger than ``max_pixels`` is scaled down (never up) with
its aspect kept, and the exact scale is kept in the image's ``Transform`` so a box the model
draws lands on the same anatomy in the source frame. A big frame may also be shown in
overlapping tiles after its whole view (``imaging.tiling``), each with its own transform.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from apolo_node.imaging.display import ImagingError, frame_attributes, to_rgb8
from apolo_node.imaging.model_image import ModelImage, Transform
from apolo_node.imaging.tiling import Tile, plan

FRAME_SELECTIONS = ("first", "middle", "all")


def select_frames(count: int, selection: str = "middle", max_frames: int = 16) -> list[int]:
    """The 1-based frame numbers to look at out of ``count``: first, middle, or all (evenly
    spaced, at most ``max_frames``, first and last included)."""
    if count < 1:
        raise ImagingError(f"NumberOfFrames must be >= 1, got {count}")
    if selection == "first":
        return [1]
    if selection == "middle":
        return [(count + 1) // 2]
    if selection != "all":
        raise ImagingError(f"frame selection must be one of {FRAME_SELECTIONS}, got {selection!r}")
    if max_frames < 1:
        raise ImagingError(f"max_frames must be >= 1, got {max_frames}")
    if count <= max_frames:
        return list(range(1, count + 1))
    if max_frames == 1:
        return [(count + 1) // 2]
    step = (count - 1) / (max_frames - 1)
    return sorted({1 + round(i * step) for i in range(max_frames)})


def fit(columns: int, rows: int, max_pixels: int) -> tuple[int, int]:
    """The largest (width, height) with the frame's aspect and at most ``max_pixels``; never larger."""
    if columns * rows <= max_pixels:
        return columns, rows
    scale = math.sqrt(max_pixels / (columns * rows))
    width = max(1, math.floor(columns * scale))
    height = max(1, math.floor(rows * scale))
    return width, height


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from Pixel Spacing or, for projection images, Imager Pixel
    Spacing; None when neither is there or usable."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
                return row, col
    return None


def model_images(
    ds: Dataset,
    frames: str = "middle",
    max_frames: int = 16,
    max_pixels: int = 1_048_576,
    tiling: str = "off",
    max_tiles: int = 6,
    tile_overlap: float = 0.125,
) -> Iterator[ModelImage]:
    """The selected frames of one instance, ready for a model, in frame order; each frame's
    whole view first, then its tiles when ``tiling`` picks it (``imaging.tiling.plan``)."""
    if "PixelData" not in ds:
        raise ImagingError(f"instance {ds.get('SOPInstanceUID', '?')} has no Pixel Data")
    columns, rows = int(ds.Columns), int(ds.Rows)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    whole = Tile(0, 0, columns, rows)
    regions = [whole, *plan(columns, rows, max_pixels, tiling, max_tiles, tile_overlap)]
    for number in select_frames(count, frames, max_frames):
        try:
            frame = pixel_array(ds, index=number - 1)
        except Exception as exc:  # a codec's error names no patient data, but keep only its kind
            raise ImagingError(
                f"frame {number} of instance {ds.SOPInstanceUID} could not be decoded ({type(exc).__name__})"
            ) from None
        attributes = frame_attributes(ds, number - 1)
        rgb, values = to_rgb8(attributes, frame)
        for index, region in enumerate(regions):
            yield _shown(ds, attributes, rgb, values, region, max_pixels, number, count, index)


def _shown(
    ds: Dataset, attributes: Dataset, rgb: np.ndarray, values: np.ndarray | None, region: Tile,
    max_pixels: int, number: int, count: int, tile: int,
) -> ModelImage:
    """One region of a decoded frame as the model sees it, scaled to the budget."""
    rows = slice(region.top, region.top + region.rows)
    cols = slice(region.left, region.left + region.columns)
    width, height = fit(region.columns, region.rows, max_pixels)
    if values is not None:  # grayscale: resize one channel, a third of the work
        image = Image.fromarray(np.ascontiguousarray(rgb[rows, cols, 0]))
    else:
        image = Image.fromarray(np.ascontiguousarray(rgb[rows, cols]))
    if (width, height) != (region.columns, region.rows):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return ModelImage(
        image=image,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        frame=number,
        transform=Transform(region.columns, region.rows, width, height, region.left, region.top),
        values=None if values is None else values[rows, cols],
        pixel_spacing=pixel_spacing(attributes),
        modality=str(ds.get("Modality", "") or "") or None,
        body_part=str(ds.get("BodyPartExamined", "") or "") or None,
        frames=count,
        tile=tile,
        frame_size=(rgb.shape[1], rgb.shape[0]) if tile else None,
    )
