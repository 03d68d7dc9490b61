"""Pixel Data as frames: decode every frame, an 8-bit view for OCR, and native re-encoding.

Decoding goes through pydicom, so every transfer syntax it has a plugin for works (native,
RLE, JPEG baseline and lossless, JPEG-LS, JPEG 2000 with pylibjpeg and its plugins or Pillow).
Frames keep their stored values: grayscale as stored, PALETTE COLOR as indices, YBR as RGB
(pydicom's conversion). Anything unexpected raises :class:`PixelDataError`, whose message names
attributes and numbers, never a value that could identify anyone.
"""

from __future__ import annotations

import copy

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
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
# VRs whose values pydicom keeps as raw bytes in the file's byte order (PS3.5 7.3): moving a
# big endian dataset to little endian must swap them (palette LUT data, ...), pydicom does not.
PALETTE_KEYWORDS = (
    "PixelRepresentation",  # settles the LUT Descriptors' US or SS
    *(f"{colour}PaletteColorLookupTable{part}" for colour in ("Red", "Green", "Blue", "Alpha")
      for part in ("Descriptor", "Data")),
    *(f"Segmented{colour}PaletteColorLookupTableData" for colour in ("Red", "Green", "Blue", "Alpha")),
)
WORD_SIZES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
PIXEL_DATA = 0x7FE00010


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
        syntax = _syntax(ds)
        raise PixelDataError(
            f"pixel data could not be decoded by the installed decoders "
            f"({syntax.name or 'no transfer syntax'}, {type(exc).__name__})"
        ) from None
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
        frame = palette_colours(ds, frame)
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


def palette_colours(ds: Dataset, values: np.ndarray) -> np.ndarray:
    """The RGB colours of PALETTE COLOR stored values, read from a copy of the palette module.

    A copy, because reading a LUT Descriptor in ``ds`` itself leaves there a value pydicom
    cannot pickle (the worker process could not send the instance back). And pydicom 3.0's
    ``apply_color_lut`` reads non-segmented LUT Data in the machine's byte order whatever the
    transfer syntax, so a big endian dataset's tables are swapped in the copy.
    """
    palette = Dataset()
    if hasattr(ds, "file_meta"):
        palette.file_meta = ds.file_meta
    for keyword in PALETTE_KEYWORDS:
        elem = ds.get_item(keyword)  # raw, unconverted, where nobody has read it yet
        if elem is not None:
            palette[elem.tag] = copy.deepcopy(elem)
    if _syntax(ds) == ExplicitVRBigEndian:
        for colour in ("Red", "Green", "Blue", "Alpha"):
            keyword = f"{colour}PaletteColorLookupTableData"
            if keyword in palette:
                palette[keyword].value = np.frombuffer(palette[keyword].value, ">u2").astype("<u2").tobytes()
    return apply_color_lut(values, palette)


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
        colours = palette_colours(ds, used).astype(np.int64).sum(axis=-1)
        return int(used[int(np.argmin(colours))])
    return int(frame.min())


def store_native(ds: Dataset, frames: np.ndarray) -> None:
    """Write decoded frames back into ``ds`` as native Explicit VR Little Endian Pixel Data.

    YBR input was decoded to RGB and is recorded as RGB; pixels from an always-lossy transfer
    syntax get Lossy Image Compression "01" (a value the original set is kept).
    """
    source = _syntax(ds)
    if source == ExplicitVRBigEndian:
        _swap_words(ds)
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


def _syntax(ds: Dataset) -> UID:
    return UID(str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")))


def _swap_words(ds: Dataset) -> None:
    """Byte-swap every OW, OL, OF, OD and OV value but Pixel Data, at any depth (big to little)."""
    for elem in ds.iterall():
        size = WORD_SIZES.get(str(elem.VR))
        value = elem.value
        if size and elem.tag != PIXEL_DATA and isinstance(value, bytes) and len(value) % size == 0:
            elem.value = np.frombuffer(value, f">u{size}").astype(f"<u{size}").tobytes()
