"""Burned-in text: find it with OCR on every frame and black it out (PS3.15 Clean Pixel Data).

Every frame is decoded (any transfer syntax pydicom can decode), made 8-bit for the OCR engine
(rapidocr with onnxruntime, whose models ship in the wheel: nothing is downloaded), and each
text line it finds is blacked out, with a margin, in the stored pixel values. Pixels outside
those boxes keep their values. The redacted frames are OCR'd again and the instance refused if
text is still found. A frame with no text leaves the Pixel Data exactly as received.

Nothing the OCR reads is ever logged or put in an error: it is PHI.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

MARGIN = 4  # pixels around each text box
MIN_SCORE = 0.5
# rapidocr reads a plain bright disc as "0" with a frame-sized box: a single character taller
# than this share of the frame is taken for anatomy, not text.
TALL_SINGLE_CHAR = 0.1
ALWAYS_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless})


class BurnedInTextError(RuntimeError):
    """Pixels could not be decoded, scanned or cleaned; the message holds no PHI."""


@dataclass(frozen=True)
class Box:
    """A text region of one frame in (column, row) pixels, end-exclusive."""

    frame: int
    x0: int
    y0: int
    x1: int
    y1: int


_engine: Any = None
_engine_lock = threading.Lock()


def ocr_available() -> str | None:
    """None if the OCR engine can be used, else what to install."""
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        return "pip install rapidocr onnxruntime"
    return None


def _ocr() -> Any:
    global _engine
    with _engine_lock:
        if _engine is None:
            from rapidocr import RapidOCR

            _engine = RapidOCR(params={"Global.log_level": "critical"})
        return _engine


def _frames(ds: Dataset) -> np.ndarray:
    """All frames as (frames, rows, columns[, 3]), stored values (palette indices kept)."""
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise BurnedInTextError(f"pixel data could not be decoded ({type(exc).__name__})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    expected = 4 if samples > 1 else 3
    if arr.ndim != expected:
        raise BurnedInTextError(f"pixel array has {arr.ndim} dimensions, expected {expected}")
    return arr


def _for_ocr(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """An 8-bit RGB image of one frame for the OCR engine."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if frame.ndim == 3:
        img = frame.astype(np.float64)
        top = float(img.max()) or 1.0
        return (img * (255.0 / top) if top > 255 else img).clip(0, 255).astype(np.uint8)
    img = frame.astype(np.float64)
    low, high = float(img.min()), float(img.max())
    scaled = (img - low) * (255.0 / (high - low)) if high > low else np.zeros_like(img)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    gray = scaled.clip(0, 255).astype(np.uint8)
    return np.stack([gray, gray, gray], axis=-1)


def find_text(ds: Dataset, frames: np.ndarray) -> list[Box]:
    """Text boxes on every frame, with the margin, clipped to the frame."""
    engine = _ocr()
    rows, columns = frames.shape[1], frames.shape[2]
    boxes: list[Box] = []
    for index, frame in enumerate(frames):
        try:
            result = engine(_for_ocr(ds, frame))
        except Exception as exc:
            raise BurnedInTextError(f"OCR failed on frame {index + 1} ({type(exc).__name__})") from None
        if result.boxes is None:
            continue
        for quad, text, score in zip(result.boxes, result.txts, result.scores):
            if score < MIN_SCORE:
                continue
            xs, ys = quad[:, 0], quad[:, 1]
            x0, x1 = int(np.floor(xs.min())), int(np.ceil(xs.max()))
            y0, y1 = int(np.floor(ys.min())), int(np.ceil(ys.max()))
            if len(str(text).strip()) < 2 and (y1 - y0) > TALL_SINGLE_CHAR * rows:
                continue
            boxes.append(
                Box(
                    index,
                    max(0, x0 - MARGIN),
                    max(0, y0 - MARGIN),
                    min(columns, x1 + MARGIN + 1),
                    min(rows, y1 + MARGIN + 1),
                )
            )
    return boxes


def redact_burned_in_text(ds: Dataset) -> tuple[Dataset, list[Box]]:
    """A copy of ``ds`` with every text region blacked out, and the regions; or raise.

    Raises BurnedInTextError when the pixels cannot be decoded or scanned, or text is still
    found after redaction.
    """
    missing = ocr_available()
    if missing is not None:
        raise BurnedInTextError(f"no OCR engine for burned-in text ({missing})")
    frames = _frames(ds)
    boxes = find_text(ds, frames)
    out = copy.deepcopy(ds)
    if boxes:
        redacted = np.array(frames, copy=True)
        for box in boxes:
            region = redacted[box.frame, box.y0:box.y1, box.x0:box.x1]
            region[...] = 0 if redacted.ndim == 4 else redacted[box.frame].min()
        if find_text(ds, redacted):
            raise BurnedInTextError("text is still found after redaction")
        _store_uncompressed(out, redacted)
    out.BurnedInAnnotation = "NO"
    return out, boxes


def _store_uncompressed(ds: Dataset, frames: np.ndarray) -> None:
    """Write redacted frames back as native Explicit VR Little Endian pixel data."""
    if ds.file_meta.TransferSyntaxUID in ALWAYS_LOSSY:
        ds.LossyImageCompression = "01"  # the pixels we keep were lossy-compressed once
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric.startswith("YBR"):
        ds.PhotometricInterpretation = "RGB"  # pydicom's pixel_array gave RGB
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    data = frames if int(ds.get("NumberOfFrames", 1) or 1) > 1 else frames[0]
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
