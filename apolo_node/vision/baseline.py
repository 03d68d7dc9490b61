"""The offline default backend: classical image measurement, honest and non-diagnostic.

It needs no weights and runs on any CPU, so ``apolo-node serve`` works end to end out of the box.
On CT (modality values in Hounsfield units) it finds the body (the largest region above -500 HU,
holes filled) and, inside it, regions of air, fat, soft tissue, bone and metal by HU range: each
class present gets one finding with its total area on the slice and the box of its largest
connected region. On other grayscale images it reports the densest objects (the brightest 1% of
the displayed frame, as bone and devices show on projection radiographs); where the frame was
shown scaled down, each object's box is redrawn on the source values at half its height above
its surroundings, so it is as sharp as the source. On colour images (RGB, YBR, palette colour:
ultrasound, photographs, slides) it says where the image content lies: the largest region that
differs from the background (the colour of the frame's border), boxed, with its size, its mean
colour and how much of it is coloured rather than grey; a description, not a diagnosis. Every
report that carries its findings says that it is a non-diagnostic baseline.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

import apolo_node
from apolo_node.findings import Algorithm
from apolo_node.imaging import ModelImage
from apolo_node.vision.backend import Context, Described, RawFinding, VisionBackend

DISCLAIMER = (
    "Non-diagnostic baseline: regions measured by Hounsfield-unit ranges or brightness with "
    "classical image analysis, not by a trained model; not for clinical use."
)


@dataclass(frozen=True)
class HURange:
    """A tissue class as a half-open Hounsfield range [low, high)."""

    label: str
    low: float
    high: float


# Ranges as commonly used for CT tissue segmentation; bone from 300 HU (cortical and dense
# trabecular), metal from 2500 HU (above cortical bone, below the 3071 HU ceiling of 12 bits).
CT_CLASSES = (
    HURange("Air", -1100.0, -900.0),
    HURange("Fat", -190.0, -30.0),
    HURange("Soft tissue", -29.0, 150.0),
    HURange("Bone", 300.0, 2500.0),
    HURange("Metal", 2500.0, float("inf")),
)
BODY_THRESHOLD = -500.0
MIN_REGION_PX = 16  # smaller regions are noise, not anatomy
DENSE_PERCENTILE = 99.0
DENSE_MAX_OBJECTS = 3
CONTENT_DIFFERENCE = 24  # 8-bit levels a pixel must differ from the background in some channel
CONTENT_CLOSING = 0.01  # closing kernel as a fraction of the frame's side: bridges speckle gaps
COLOURED_SATURATION = 0.2  # HSV saturation above which a pixel counts as coloured, not grey


def _largest_components(mask: np.ndarray, keep: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(area, (x, y, w, h)) of the ``keep`` largest 8-connected regions of a boolean mask."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    regions = [
        (int(stats[i, cv2.CC_STAT_AREA]), tuple(int(v) for v in stats[i, :4]))
        for i in range(1, count)
        if stats[i, cv2.CC_STAT_AREA] >= MIN_REGION_PX
    ]
    regions.sort(key=lambda r: r[0], reverse=True)
    return regions[:keep]  # type: ignore[return-value]


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient's body on a CT slice: the largest region above -500 HU with its holes filled
    (lungs and bowel gas are inside the body, the air around it is not)."""
    above = (hu > BODY_THRESHOLD).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=8)
    if count < 2:
        return np.zeros(hu.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    body = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(body, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(body)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def _fraction_box(x: int, y: int, w: int, h: int, image: ModelImage) -> tuple[float, float, float, float]:
    return (x / image.columns, y / image.rows, (x + w) / image.columns, (y + h) / image.rows)


def _area_mm2(pixels: int, spacing: tuple[float, float] | None) -> float | None:
    return None if spacing is None else round(pixels * spacing[0] * spacing[1], 1)


def describe_ct(image: ModelImage) -> list[RawFinding]:
    """Tissue classes by HU range inside the body, each with its area and largest region."""
    assert image.values is not None
    hu = image.values
    body = body_mask(hu)
    found = []
    for cls in CT_CLASSES:
        mask = body & (hu >= cls.low) & (hu < cls.high)
        regions = _largest_components(mask, 1)
        if not regions:
            continue
        total = int(mask.sum())
        largest, (x, y, w, h) = regions[0]
        total_mm2 = _area_mm2(total, image.pixel_spacing)
        largest_mm2 = _area_mm2(largest, image.pixel_spacing)
        where = f"{total_mm2:.1f} mm2" if total_mm2 is not None else f"{total} pixels"
        biggest = f"{largest_mm2:.1f} mm2" if largest_mm2 is not None else f"{largest} pixels"
        found.append(RawFinding(
            label=cls.label,
            description=(
                f"{cls.label} ({cls.low:g} to {cls.high:g} HU) covers {where} of the body on this "
                f"slice; its largest connected region ({biggest}) is boxed. Non-diagnostic baseline."
            ),
            box=_fraction_box(x, y, w, h, image),
            measurements=(("Area", total_mm2, "mm2"),) if total_mm2 is not None else (),
        ))
    return found


def refine(values: np.ndarray, box: tuple[int, int, int, int], margin: int) -> tuple[int, int, int, int] | None:
    """A (x1, y1, x2, y2) source box redrawn where the object stands out by half its height
    above the ring of ``margin`` pixels around ``box`` (its full width at half maximum).
    None when the window shows no contrast."""
    rows, columns = values.shape
    x1, y1, x2, y2 = box
    wx1, wy1 = max(0, x1 - margin), max(0, y1 - margin)
    wx2, wy2 = min(columns, x2 + margin), min(rows, y2 + margin)
    window = values[wy1:wy2, wx1:wx2].astype(np.float64)
    inner = np.zeros(window.shape, dtype=bool)
    inner[y1 - wy1 : y2 - wy1, x1 - wx1 : x2 - wx1] = True
    if inner.all():
        return None
    ring = float(np.median(window[~inner]))
    if float(np.mean(window[inner])) < ring:  # dense is dark in these values (MONOCHROME1)
        window, ring = -window, -ring
    peak = float(window[inner].max())
    if peak <= ring:
        return None
    ys, xs = np.nonzero(inner & (window >= (peak + ring) / 2))
    return (wx1 + int(xs.min()), wy1 + int(ys.min()), wx1 + int(xs.max()) + 1, wy1 + int(ys.max()) + 1)


def describe_projection(image: ModelImage) -> list[RawFinding]:
    """The densest objects: the brightest 1% of the displayed frame, largest regions first."""
    gray = np.asarray(image.image.convert("L"), dtype=np.float32)
    if gray.max() <= gray.min():
        return []
    threshold = max(float(np.percentile(gray, DENSE_PERCENTILE)), float(gray.mean() + 2 * gray.std()))
    mask = gray >= threshold
    scale_y = image.rows / gray.shape[0]
    scale_x = image.columns / gray.shape[1]
    found = []
    for n, (area, (x, y, w, h)) in enumerate(_largest_components(mask, DENSE_MAX_OBJECTS), start=1):
        source_px = round(area * scale_x * scale_y)
        mm2 = _area_mm2(source_px, image.pixel_spacing)
        size = f"{mm2:.1f} mm2" if mm2 is not None else f"{source_px} pixels"
        box = (x / gray.shape[1], y / gray.shape[0], (x + w) / gray.shape[1], (y + h) / gray.shape[0])
        if image.values is not None and (scale_x > 1 or scale_y > 1):
            box = _sharper(image, box, scale_x, scale_y)
        found.append(RawFinding(
            label="Dense object",
            description=(
                f"Dense object {n}: among the brightest 1% of the image, {size}. "
                "Non-diagnostic baseline."
            ),
            box=box,
            measurements=(("Area", mm2, "mm2"),) if mm2 is not None else (),
        ))
    return found


def _sharper(
    image: ModelImage, box: tuple[float, float, float, float], scale_x: float, scale_y: float
) -> tuple[float, float, float, float]:
    """A fraction box found on a scaled-down view, redrawn on the source values (``refine``)."""
    assert image.values is not None
    rows, columns = image.values.shape
    source = (
        max(0, math.floor(box[0] * columns - scale_x)), max(0, math.floor(box[1] * rows - scale_y)),
        min(columns, math.ceil(box[2] * columns + scale_x)), min(rows, math.ceil(box[3] * rows + scale_y)),
    )
    margin = math.ceil(2 * max(scale_x, scale_y))
    sharp = refine(image.values, source, margin)
    if sharp is None:
        return box
    return (sharp[0] / columns, sharp[1] / rows, sharp[2] / columns, sharp[3] / rows)


def _colour_name(rgb: tuple[float, float, float]) -> str:
    """A plain name for a mean colour: a grey level, or a hue with its lightness."""
    hue, lightness, _ = colorsys.rgb_to_hls(*(v / 255.0 for v in rgb))
    _, saturation, _ = colorsys.rgb_to_hsv(*(v / 255.0 for v in rgb))  # as for "coloured" pixels
    tone = "dark " if lightness < 0.3 else "light " if lightness > 0.7 else ""
    if saturation < COLOURED_SATURATION or lightness < 0.06 or lightness > 0.96:
        return f"{tone}grey" if 0.06 <= lightness <= 0.96 else ("black" if lightness < 0.06 else "white")
    names = ((15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (195, "cyan"),
             (255, "blue"), (290, "purple"), (335, "magenta"), (360, "red"))
    degrees = hue * 360.0
    return tone + next(name for limit, name in names if degrees < limit)


def content_region(rgb: np.ndarray) -> np.ndarray | None:
    """The image content of an (rows, columns, 3) uint8 frame: the largest region (closed over
    small gaps, holes filled) of pixels differing from the background colour, which is the
    median of the border pixels. None when nothing differs (a blank frame)."""
    rows, columns, _ = rgb.shape
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    background = np.median(border, axis=0)
    differs = (np.abs(rgb.astype(np.int16) - background).max(axis=2) > CONTENT_DIFFERENCE).astype(np.uint8)
    side = max(1, round(CONTENT_CLOSING * max(rows, columns))) | 1
    closed = cv2.morphologyEx(differs, cv2.MORPH_CLOSE, np.ones((side, side), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    if count < 2 or stats[1:, cv2.CC_STAT_AREA].max() < MIN_REGION_PX:
        return None
    largest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    contours, _ = cv2.findContours(largest.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros((rows, columns), np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def describe_colour(image: ModelImage) -> list[RawFinding]:
    """Where a colour frame's content lies (its box), its size and its mean colour."""
    rgb = np.asarray(image.image.convert("RGB"))
    region = content_region(rgb)
    if region is None:
        return []
    shown_rows, shown_columns = region.shape
    ys, xs = np.nonzero(region)
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    scale_x, scale_y = image.columns / shown_columns, image.rows / shown_rows
    source_px = round(int(region.sum()) * scale_x * scale_y)
    mm2 = _area_mm2(source_px, image.pixel_spacing)
    size = f"{mm2:.1f} mm2" if mm2 is not None else f"{source_px} pixels"
    width, height = round((x2 - x1) * scale_x), round((y2 - y1) * scale_y)
    pixels = rgb[region].astype(np.float64)
    mean = tuple(float(v) for v in pixels.mean(axis=0))
    high, low = pixels.max(axis=1), pixels.min(axis=1)
    coloured = float(np.mean((high - low) > COLOURED_SATURATION * np.maximum(high, 1.0)))
    share = 100.0 * int(region.sum()) / region.size
    return [RawFinding(
        label="Image content",
        description=(
            f"Image content: the largest region differing from the background, {width}x{height} "
            f"pixels (box), {size} ({share:.0f}% of the frame); mean colour RGB "
            f"({mean[0]:.0f}, {mean[1]:.0f}, {mean[2]:.0f}), {_colour_name(mean)}; "
            f"{100 * coloured:.0f}% of its pixels are coloured rather than grey. "
            "A description, not a diagnosis. Non-diagnostic baseline."
        ),
        box=(x1 / shown_columns, y1 / shown_rows, x2 / shown_columns, y2 / shown_rows),
        measurements=(("Area", mm2, "mm2"),) if mm2 is not None else (),
    )]


class BaselineBackend(VisionBackend):
    """Classical measurement, no model: the offline default."""

    disclaimer = DISCLAIMER

    def __init__(self) -> None:
        self.algorithm = Algorithm("apolo-node baseline", f"{apolo_node.__version__}+hu2")

    def describe_batch(self, images: Sequence[ModelImage], contexts: Sequence[Context]) -> list[Described]:
        out = []
        for image in images:
            if image.values is not None and image.modality == "CT":
                found = describe_ct(image)
            elif image.values is not None:
                found = describe_projection(image)
            elif image.tile == 0:  # colour: the content of the whole frame, not of each tile
                found = describe_colour(image)
            else:
                found = []
            out.append(Described(findings=tuple(found)))
        return out
