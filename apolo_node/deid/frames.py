"""Pixel Data as frames: decode every frame, an 8-bit view for OCR, and native re-encoding.

Decoding goes through pydicom, so every transfer syntax it has a plugin for works (native,
RLE, JPEG baseline and lossless, JPEG-LS, JPEG 2000 with pylibjpeg and its plugins or Pillow).
Frames keep their stored values: grayscale as stored, PALETTE COLOR as indices, YBR as RGB
(pydicom's conversion). Anything unexpected raises :class:`PixelDataError`, whose message names
attributes and numbers, never a value that could identify anyone.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    UID,
)

# Transfer syntaxes whose pixels are lossy whatever the encoder did (PS3.5 8.2); for the others
# (JPEG 2000, HTJ2K, ...) the original's Lossy Image Compression already says which it was.
ALWAYS_LOSSY = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
}
OFFSET_TABLES = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")


class PixelDataError(ValueError):
    """Pixel Data could not be decoded or re-encoded; the message holds no PHI."""


def photometric(ds: Dataset) -> str:
    """Photometric Interpretation, upper case, stripped."""
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()


def decode_frames(ds: Dataset) -> np.ndarray:
    """Every frame as (frames, rows, columns[, 3]) of stored values, or raise PixelDataError."""
    if "PixelData" not in ds:
        raise PixelDataError("only integer Pixel Data (7FE0,0010) can be cleaned, not float pixel data")
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16, 32):
        raise PixelDataError(f"BitsAllocated {bits} is not supported; expected 8, 16 or 32")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # plugin and decoder messages may quote bytes: keep only the kind
        raise PixelDataError(f"pixel data could not be decoded ({type(exc).__name__})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if arr.ndim == (3 if samples > 1 else 2):
        arr = arr[np.newaxis]
    shape = (frames, int(ds.Rows), int(ds.Columns)) + ((3,) if samples > 1 else ())
    if arr.shape != shape:
        raise PixelDataError(f"decoded pixel array has shape {arr.shape}, expected {shape}")
    if arr.dtype.kind not in "ui" or arr.dtype.itemsize * 8 != bits:
        raise PixelDataError(f"decoded pixels are {arr.dtype}, which does not fit BitsAllocated {bits}")
    return arr


def ocr_image(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """An 8-bit, 3-channel image of one decoded frame, for OCR only.

    Grayscale is windowed to the frame's full range of stored values (so text burned at any
    level shows), MONOCHROME1 inverted; colour is shifted down to 8 bits.
    """
    if photometric(ds) == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        return (frame >> 8 if frame.dtype.itemsize > 1 else frame).astype(np.uint8)
    if frame.ndim == 3:
        shift = max(int(ds.get("BitsStored", 8) or 8) - 8, 0)
        return (frame >> shift).clip(0, 255).astype(np.uint8)
    img = frame.astype(np.float64)
    low, high = float(img.min()), float(img.max())
    scaled = (img - low) * (255.0 / (high - low)) if high > low else np.zeros_like(img)
    if photometric(ds) == "MONOCHROME1":
        scaled = 255.0 - scaled
    gray = scaled.round().astype(np.uint8)
    return np.repeat(gray[..., np.newaxis], 3, axis=-1)


def black_value(ds: Dataset, frame: np.ndarray) -> int:
    """The stored value that shows black on this frame.

    The frame's lowest value (its highest for MONOCHROME1), 0 for colour, and for PALETTE COLOR
    the index, among those the frame uses, whose colour is darkest.
    """
    if frame.ndim == 3:
        return 0
    kind = photometric(ds)
    if kind == "MONOCHROME1":
        return int(frame.max())
    if kind == "PALETTE COLOR":
        used = np.unique(frame)
        colours = apply_color_lut(used, ds).astype(np.int64).sum(axis=-1)
        return int(used[int(np.argmin(colours))])
    return int(frame.min())


def store_native(ds: Dataset, frames: np.ndarray) -> None:
    """Write decoded frames back into ``ds`` as native Explicit VR Little Endian Pixel Data.

    YBR input was decoded to RGB and is recorded as RGB; pixels from an always-lossy transfer
    syntax get Lossy Image Compression "01" (a value the original set is kept).
    """
    source = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if source in ALWAYS_LOSSY:
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = ALWAYS_LOSSY[source]
    if photometric(ds).startswith("YBR"):
        ds.PhotometricInterpretation = "RGB"
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    for keyword in OFFSET_TABLES:
        if keyword in ds:
            del ds[keyword]
    data = frames if "NumberOfFrames" in ds else frames[0]
    ds.PixelData = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
