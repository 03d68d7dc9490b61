"""Stored pixel values to what a radiologist would see: PS3.3 C.11 (modality LUT, VOI LUT,
presentation), then 8-bit RGB for a model.

Grayscale: modality LUT or rescale slope/intercept, then the first VOI LUT or window
(LINEAR, LINEAR_EXACT, SIGMOID) when the instance has one, else the frame's own 0.5-99.5
percentile range; MONOCHROME1 is inverted so that a model always sees bone bright. Colour:
RGB as stored, YBR converted to RGB, PALETTE COLOR through its lookup tables.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut


class ImagingError(ValueError):
    """A frame cannot be shown to a model; the message says which attribute and why."""


_PIXEL_KEYWORDS = (
    "SOPInstanceUID", "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "ModalityLUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "PixelSpacing", "ImagerPixelSpacing",
)
# Functional group macros that carry a frame's LUTs and spacing (enhanced CT/MR/XA/...).
_FRAME_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence", "PixelMeasuresSequence")


def frame_attributes(ds: Dataset, index: int) -> Dataset:
    """The attributes that say how to display frame ``index`` (0-based): the top level, then the
    shared functional groups, then the frame's own (PS3.3 C.7.6.16), later ones winning."""
    view = Dataset()
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    groups = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for macro in _FRAME_MACROS:
            items = group.get(macro)
            if items:
                for element in items[0]:
                    view[element.tag] = element
    return view


def modality_values(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """The frame in modality units (Hounsfield units on CT), as float32."""
    if "ModalityLUTSequence" in ds or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
        return np.asarray(apply_modality_lut(frame, ds), dtype=np.float32)
    return frame.astype(np.float32)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing of modality values to [0, 1]."""
    function = function.upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ImagingError(f"WindowWidth must be > 0 for SIGMOID, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ImagingError(f"WindowWidth must be > 0 for LINEAR_EXACT, got {width}")
        return np.clip((values - (center - width / 2.0)) / width, 0.0, 1.0)
    if width < 1:
        raise ImagingError(f"WindowWidth must be >= 1 for LINEAR, got {width}")
    low = center - 0.5 - (width - 1) / 2.0
    return np.clip((values - low) / (width - 1), 0.0, 1.0)


def _first(value: object) -> float:
    """The first of a multi-valued window attribute (several windows: the first one is used)."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ImagingError(f"window value {value!r} is not a number") from None


def voi(ds: Dataset, values: np.ndarray) -> np.ndarray:
    """Modality values to [0, 1] through the instance's first VOI LUT or window, else its range."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[0]
        # a LUT is indexed by whole modality values
        out = np.asarray(apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0, prefer_lut=True), dtype=np.float32)
        top = float(np.max(item.LUTData)) if len(item.LUTData) else 0.0
        return np.clip(out / top, 0.0, 1.0) if top > 0 else np.zeros_like(out)
    if "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter is not None:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        return window(values, center, width, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"))
    low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 0.0)
    if high <= low:
        high = low + 1.0
    return np.clip((values - low) / (high - low), 0.0, 1.0)


# pydicom's decoder (raw=False) hands these over as RGB already: YBR_FULL(_422) converted, JPEG
# 2000's YBR_ICT/RCT undone by the codec.
RGB_AFTER_DECODING = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


def to_rgb8(ds: Dataset, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One frame decoded by pydicom as (rows, columns, 3) uint8 RGB, and its modality values
    when grayscale."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = modality_values(ds, frame)
        gray = voi(ds, values)
        if photometric == "MONOCHROME1":
            gray = 1.0 - gray
        g8 = np.round(gray * 255.0).astype(np.uint8)
        return np.repeat(g8[..., None], 3, axis=2), values
    if samples == 1 and photometric == "PALETTE COLOR":
        rgb = np.asarray(apply_color_lut(frame, ds))
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _scale8(rgb, bits), None
    if samples == 3 and photometric in RGB_AFTER_DECODING:
        return _scale8(np.asarray(frame), int(ds.get("BitsStored", 8))), None
    raise ImagingError(
        f"PhotometricInterpretation {photometric!r} with SamplesPerPixel {samples} is not supported"
    )


def _scale8(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8 and bits <= 8:
        return rgb
    top = float(2**bits - 1)
    return np.round(np.clip(rgb.astype(np.float32) / top, 0.0, 1.0) * 255.0).astype(np.uint8)
