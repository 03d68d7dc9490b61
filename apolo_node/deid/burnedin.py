"""Burned-in text: find it with OCR on every frame and black it out (PS3.15 Clean Pixel Data).

Every frame is decoded (:mod:`apolo_node.deid.frames`), made 8-bit for the OCR engine (rapidocr
with onnxruntime, whose models ship in the wheel: nothing is downloaded), and every text line it
finds is blacked out, with a margin of :data:`MARGIN` pixels, in the stored pixel values of that
frame. Pixels outside those boxes keep their values. Each frame that had text is OCR'd again
after its redaction: with the lines around it gone, the detector reads marks it passed over
(a logo beside a name, a glyph next to a blacked-out line), and those are blacked out too, up to
:data:`ROUNDS` rescans; the instance is refused if the last rescan still finds text. The redacted
pixels are written back as native Explicit VR Little Endian, decoded again and checked equal to
what was scanned clean. An instance with no text keeps its Pixel Data exactly as received.
Either way it leaves with Burned In Annotation NO.

Detections are kept when the recogniser's score reaches :data:`MIN_SCORE` and the box has the
shape of text: rapidocr reads a plain bright disc (anatomy) as "0" or "O" with a frame-sized
box, so a text of at most :data:`SHORT_TEXT` characters taller than :data:`TALL_SHORT_TEXT` of
the frame is taken for anatomy. Whole text lines are blacked out, not word boxes: every text is
removed, not chosen tokens, and the detector's line box covers all the recogniser's word boxes.

Nothing the OCR reads is ever logged or put in an error: it is PHI.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import threading
from dataclasses import dataclass, replace
from typing import Any, Iterable

import numpy as np
from pydicom.dataset import Dataset

from apolo_node.deid.frames import PixelDataError, black_value, decode_frames, ocr_image, store_native

MARGIN = 4  # pixels added around each text box on every side
MIN_SCORE = 0.5  # lowest recogniser score kept (rapidocr's Global.text_score)
SHORT_TEXT = 2  # characters: texts this short ...
TALL_SHORT_TEXT = 0.1  # ... in a box taller than this share of the frame are anatomy
ROUNDS = 5  # rescans after redaction; what each finds is blacked out before the next
CACHE_LINES = 4096  # text line readings kept while one instance is scanned
# rapidocr misses 18 px text on a 2048 x 2048 frame and finds it on a 1024 x 1024 crop: larger
# frames are read in overlapping tiles. A line cut by a tile's edge is read in pieces, or not at
# all, so tiles overlap by half: any line up to 512 px wide lies whole in one tile. The rescan
# after redaction uses tiles shifted by half a step, so what a seam hid the first time lies
# inside a tile the second time (and the instance is refused rather than passed).
TILE = 1024
TILE_OVERLAP = TILE // 2
TILE_STEP = TILE - TILE_OVERLAP
OCR_REQUIREMENTS = ("rapidocr", "onnxruntime")


class BurnedInTextError(RuntimeError):
    """Pixels could not be decoded, scanned or cleaned; the message holds no PHI."""


@dataclass(frozen=True)
class Box:
    """A text region of one frame (0-based) in (column, row) pixels, end-exclusive, margin included."""

    frame: int
    x0: int
    y0: int
    x1: int
    y1: int


_engine: Any = None
_engine_lock = threading.Lock()  # one engine per process; calls are serialised through it


def ocr_available() -> str | None:
    """None if the OCR engine can be imported, else the pip command that installs it."""
    missing = [name for name in OCR_REQUIREMENTS if importlib.util.find_spec(name) is None]
    return f"pip install {' '.join(OCR_REQUIREMENTS)}" if missing else None


def _ocr(image: np.ndarray) -> Any:
    """rapidocr's result for one 8-bit image; the engine is created on first use (~0.5 s)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                from rapidocr import RapidOCR

                _engine = RapidOCR(
                    params={"Global.log_level": "critical", "Global.text_score": MIN_SCORE}
                )
                _cache_recognition(_engine)
            except Exception as exc:
                raise BurnedInTextError(f"the OCR engine could not start ({type(exc).__name__})") from None
        return _engine(image)


class _RecognitionCache:
    """rapidocr's recogniser, reading each distinct text line crop once per instance.

    A cine loop carries the same overlay on every frame: the detector finds the same lines, and
    their crops are equal bytes, so their reading is reused; the recogniser is most of the OCR
    time. :func:`_redact` clears it for each instance (no text outlives the instance's scan).
    """

    def __init__(self, recogniser: Any) -> None:
        self.recogniser = recogniser
        self.read: dict[bytes, tuple[Any, Any, Any]] = {}
        self.last: Any = None  # the recogniser's last output, the shape of what we answer

    def __call__(self, args: Any) -> Any:
        crops = [args.img] if isinstance(args.img, np.ndarray) else list(args.img)
        keys = [_digest(crop) for crop in crops]
        new = {key: crop for key, crop in zip(keys, crops) if key not in self.read}
        if len(self.read) + len(new) > CACHE_LINES:
            self.read.clear()
            new = dict(zip(keys, crops))
        if new or self.last is None:
            batch = new or dict(zip(keys, crops))
            self.last = self.recogniser(dataclasses.replace(args, img=list(batch.values())))
            for key, txt, score, words in zip(
                batch, self.last.txts, self.last.scores, self.last.word_results
            ):
                self.read[key] = (txt, score, words)
        txts, scores, words = zip(*(self.read[key] for key in keys))
        return dataclasses.replace(self.last, imgs=crops, txts=txts, scores=scores, word_results=words)

    def forget(self) -> None:
        self.read.clear()
        self.last = None


def _digest(image: np.ndarray) -> bytes:
    image = np.ascontiguousarray(image)
    return hashlib.blake2b(image.tobytes() + repr(image.shape).encode(), digest_size=16).digest()


def _cache_recognition(engine: Any) -> None:
    """Put :class:`_RecognitionCache` in front of the engine's recogniser (rapidocr 3 loads it
    lazily through ``_load_rec_model``; without that method the engine is left as it is)."""
    load = getattr(engine, "_load_rec_model", None)
    if load is not None and getattr(engine, "text_rec", False) is None:
        engine.text_rec = _RecognitionCache(load())


def _looks_like_text(text: str, height: int, rows: int) -> bool:
    return not (len(text.strip()) <= SHORT_TEXT and height > TALL_SHORT_TEXT * rows)


def _tile_starts(length: int, phase: int = 0) -> list[int]:
    """Where the tiles along one side begin: one tile if it fits, else overlapping ones, the
    inner ones ``phase`` pixels further on (the first and last always cover the ends)."""
    if length <= TILE:
        return [0]
    return sorted({0, *range(phase, length - TILE, TILE_STEP), length - TILE})


def find_text(
    ds: Dataset, frames: np.ndarray, indices: Iterable[int] | None = None, phase: int = 0
) -> list[Box]:
    """Text boxes on the given frames (all by default), with the margin, clipped to the frame;
    ``phase`` shifts the inner tiles (the rescan reads across the first pass's seams).

    OCR is the cost, so it is spent only where text can be: a frame equal to one already read
    (a frozen or repeated cine frame) gets that frame's boxes, and a uniform tile (a blank
    frame, the black background of a radiograph) none, without calling the engine.
    """
    rows, columns = frames.shape[1], frames.shape[2]
    boxes: list[Box] = []
    read: dict[bytes, int] = {}  # digest of a frame's stored values -> the frame read with them
    for index in range(len(frames)) if indices is None else indices:
        digest = hashlib.blake2b(np.ascontiguousarray(frames[index]).tobytes(), digest_size=16).digest()
        if digest in read:
            boxes += [replace(box, frame=index) for box in boxes if box.frame == read[digest]]
            continue
        read[digest] = index
        try:
            image = ocr_image(ds, frames[index])
            for top in _tile_starts(rows, phase):
                for left in _tile_starts(columns, phase):
                    tile = np.ascontiguousarray(image[top : top + TILE, left : left + TILE])
                    if tile.min() == tile.max():
                        continue
                    for x0, y0, x1, y1 in _text_in(tile):
                        boxes.append(
                            Box(
                                index,
                                max(0, left + x0 - MARGIN),
                                max(0, top + y0 - MARGIN),
                                min(columns, left + x1 + MARGIN + 1),
                                min(rows, top + y1 + MARGIN + 1),
                            )
                        )
        except BurnedInTextError:
            raise
        except Exception as exc:
            raise BurnedInTextError(f"OCR failed on frame {index + 1} ({type(exc).__name__})") from None
    return boxes


def _text_in(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each detection in one image that passes the score and shape filter."""
    result = _ocr(image)
    if result.boxes is None:
        return []
    found = []
    for quad, text, score in zip(result.boxes, result.txts, result.scores):
        x0, y0 = np.floor(np.asarray(quad).min(axis=0)).astype(int)
        x1, y1 = np.ceil(np.asarray(quad).max(axis=0)).astype(int)
        if score >= MIN_SCORE and _looks_like_text(str(text), y1 - y0, image.shape[0]):
            found.append((int(x0), int(y0), int(x1), int(y1)))
    return found


def redact_burned_in_text(ds: Dataset) -> tuple[Dataset, list[Box]]:
    """A copy of ``ds`` with every text region blacked out, and the regions; or raise.

    Raises BurnedInTextError (no PHI in its message) when the OCR engine is missing, the pixels
    cannot be decoded, scanned or re-encoded, or text is still found after redaction.
    """
    missing = ocr_available()
    if missing is not None:
        raise BurnedInTextError(f"no OCR engine for burned-in text ({missing})")
    try:
        return _redact(ds)
    except BurnedInTextError:
        raise
    except PixelDataError as exc:
        raise BurnedInTextError(str(exc)) from None
    except Exception as exc:  # fail closed, and keep only the kind: messages may quote values
        raise BurnedInTextError(f"burned-in text redaction failed ({type(exc).__name__})") from None


def _redact(ds: Dataset) -> tuple[Dataset, list[Box]]:
    try:
        return _redact_frames(ds)
    finally:  # what the OCR read stays with this instance
        recogniser = getattr(_engine, "text_rec", None)
        if isinstance(recogniser, _RecognitionCache):
            recogniser.forget()


def _redact_frames(ds: Dataset) -> tuple[Dataset, list[Box]]:
    frames = decode_frames(ds)
    boxes = find_text(ds, frames)
    out = copy.deepcopy(ds)
    if boxes:
        redacted = frames.copy()
        black = {f: black_value(ds, frames[f]) for f in {box.frame for box in boxes}}
        found = boxes
        for round_ in range(1, ROUNDS + 1):
            for box in found:
                redacted[box.frame, box.y0 : box.y1, box.x0 : box.x1] = black[box.frame]
            # odd rounds read across the previous tiles' seams
            phase = TILE_STEP // 2 if round_ % 2 else 0
            found = find_text(ds, redacted, sorted({box.frame for box in found}), phase=phase)
            if not found:
                break
            boxes = boxes + found
        if found:
            frames_left = sorted({box.frame + 1 for box in found})
            raise BurnedInTextError(
                f"text is still found after {ROUNDS} rounds of redaction on frame(s) {frames_left}"
            )
        store_native(out, redacted)
        if not np.array_equal(decode_frames(out), redacted):
            raise BurnedInTextError("re-encoded pixel data differ from the redacted pixels")
    out.BurnedInAnnotation = "NO"
    return out, boxes
