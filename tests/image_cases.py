"""A table of images in every photometric interpretation, bit depth, transfer syntax and frame
count we meet, each with a dark field, a grey disc (anatomy) and optional white text in one frame.

Used by the burned-in text tests (the text is a planted name) and the imaging tests (the levels
are known, so what a model is shown can be checked).
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    DigitalXRayImageStorageForPresentation,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from tests.synthetic import ct_slice, new_marker

ROWS, COLUMNS = 200, 288
TEXT_AT = (14, 12)


@dataclass(frozen=True)
class Case:
    """One image of the table: how it is stored, and which frame (0-based) carries the text."""

    id: str
    modality: str
    photometric: str  # as stored; "YBR_FULL_422" only with JPEG
    bits: int = 8  # BitsStored (BitsAllocated 8 or 16)
    signed: bool = False  # PixelRepresentation 1, values centred on 0
    encoding: str = "native"  # native, rle, jpeg, jpeg-lossless (process 14), jpegls, j2k, j2k-lossy
    frames: int = 1
    text_frame: int = 0
    size: tuple[int, int] = (ROWS, COLUMNS)  # rows, columns
    text_at: tuple[int, int] = TEXT_AT  # (x, y) of the text's top-left


CASES = [
    Case("us-rgb", "US", "RGB"),
    Case("us-rgb-rle", "US", "RGB", encoding="rle"),
    Case("us-ybr422-jpeg", "US", "YBR_FULL_422", encoding="jpeg"),
    Case("us-ybr-full", "US", "YBR_FULL"),
    Case("us-palette", "US", "PALETTE COLOR"),
    Case("sc-mono2", "SC", "MONOCHROME2"),
    Case("sc-mono2-jpeg", "SC", "MONOCHROME2", encoding="jpeg"),
    Case("sc-mono2-j2k-lossy", "SC", "MONOCHROME2", bits=12, encoding="j2k-lossy"),
    Case("ct-signed-burned", "CT", "MONOCHROME2", bits=16, signed=True),
    Case("dx-mono1-12bit", "DX", "MONOCHROME1", bits=12),
    Case("dx-mono1-12bit-rle", "DX", "MONOCHROME1", bits=12, encoding="rle"),
    Case("dx-mono1-12bit-j2k", "DX", "MONOCHROME1", bits=12, encoding="j2k"),
    Case("dx-mono1-12bit-jpegls", "DX", "MONOCHROME1", bits=12, encoding="jpegls"),
    Case("us-rgb-jpegls", "US", "RGB", encoding="jpegls"),
    Case("sc-mono2-jpeg-lossless", "SC", "MONOCHROME2", encoding="jpeg-lossless"),
    Case("dx-mono1-large", "DX", "MONOCHROME1", bits=12, size=(2048, 1536)),  # read in tiles
    # a line across the seams of the OCR tiles (columns 928 and 1024 with 1024 px tiles)
    Case("dx-mono1-wide-seam", "DX", "MONOCHROME1", bits=12, size=(1536, 2048), text_at=(840, 700)),
    Case("us-cine-rgb", "US", "RGB", frames=3, text_frame=1),
    Case("us-cine-rgb-rle", "US", "RGB", encoding="rle", frames=3, text_frame=1),
    Case("us-cine-ybr422-jpeg", "US", "YBR_FULL_422", encoding="jpeg", frames=3, text_frame=1),
]


def levels(
    text: str, rows: int, columns: int, at: tuple[int, int] = TEXT_AT
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Display levels 0..1 (dark field, a grey disc, white text), the glyph mask, the text box."""
    img = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=18)
    draw.text(at, text, fill=255, font=font)
    glyphs = np.asarray(img) > 0
    field = np.full((rows, columns), 0.05)
    yy, xx = np.mgrid[:rows, :columns]
    field[(yy - 120) ** 2 + (xx - 150) ** 2 < 60**2] = 0.4  # the anatomy OCR misreads as "0"
    field[glyphs] = 1.0
    box = draw.textbbox(at, text, font=font)
    return field, glyphs, (int(box[0]), int(box[1]), int(box[2]), int(box[3]))


def to_stored(case: Case, level: np.ndarray) -> np.ndarray:
    top = (1 << case.bits) - 1
    if case.photometric == "MONOCHROME1":
        level = 1.0 - level
    values = np.round(level * top).astype(np.uint8 if case.bits <= 8 else np.uint16)
    if case.signed:
        values = (values.astype(np.int32) - (top + 1) // 2).astype(np.int16)
    if case.photometric.startswith(("RGB", "YBR")):
        tint = np.array([1.0, 0.85, 0.7])  # a warm grey, as ultrasound consoles draw
        values = np.round(level[..., np.newaxis] * tint * top).astype(np.uint8)
    return values


def build(case: Case, text: str) -> tuple[Dataset, np.ndarray, tuple[int, int, int, int]]:
    """The instance of ``case`` with ``text`` burned into its text frame; its glyph mask and box."""
    rows, columns = case.size
    field, glyphs, box = levels(text, rows, columns, case.text_at)
    blank, _, _ = levels("", rows, columns)
    frames = [to_stored(case, field if i == case.text_frame else blank) for i in range(case.frames)]
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=new_marker(), rows=rows, columns=columns, modality=case.modality)
    for keyword in ("RescaleIntercept", "RescaleSlope"):
        del ds[keyword]
    ds.SOPClassUID = {
        "US": UltrasoundMultiFrameImageStorage if case.frames > 1 else UltrasoundImageStorage,
        "SC": SecondaryCaptureImageStorage,
        "DX": DigitalXRayImageStorageForPresentation,
        "CT": ds.SOPClassUID,
    }[case.modality]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if case.modality in ("DX", "CT"):
        ds.BurnedInAnnotation = "YES"  # scanned because it says so
    rgb = frames[0].ndim == 3
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB" if rgb else case.photometric
    ds.BitsAllocated = 8 if case.bits <= 8 else 16
    ds.BitsStored = case.bits
    ds.HighBit = case.bits - 1
    ds.PixelRepresentation = int(case.signed)
    if case.frames > 1:
        ds.NumberOfFrames = case.frames
    if case.photometric == "PALETTE COLOR":
        ramp = np.arange(256, dtype=np.uint16) * 257
        for colour, lut in (("Red", ramp), ("Green", ramp), ("Blue", ramp // 2)):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", lut.tobytes())
    ds.add_new(0x60000010, "US", rows)  # an overlay: the header profile removes the group
    if case.photometric == "YBR_FULL":
        frames = [convert_color_space(f, "RGB", "YBR_FULL") for f in frames]
        ds.PhotometricInterpretation = "YBR_FULL"
    ds.PixelData = np.stack(frames).tobytes()
    encode(ds, case, frames)
    return ds, glyphs, box


def encode(ds: Dataset, case: Case, frames: list[np.ndarray]) -> None:
    if case.encoding == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif case.encoding == "jpegls":
        ds.compress(JPEGLSLossless, generate_instance_uid=False)
    elif case.encoding == "jpeg-lossless":  # process 14 SV1: pydicom has no encoder, dcmtk has
        _dcmcjpeg_lossless(ds)
    elif case.encoding == "j2k":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif case.encoding == "j2k-lossy":
        ds.compress(JPEG2000, generate_instance_uid=False, j2k_cr=[8])
    elif case.encoding == "jpeg":  # pydicom has no baseline encoder: Pillow's, encapsulated
        fragments = []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=92, subsampling=1)
            fragments.append(buf.getvalue())
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.PhotometricInterpretation = case.photometric
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _dcmcjpeg_lossless(ds: Dataset) -> None:
    """Re-encode ``ds`` in place as JPEG Lossless, Non-Hierarchical, First-Order Prediction
    (process 14, selection value 1) with dcmtk's dcmcjpeg."""
    from tests.peer_fixtures import need_tool

    with tempfile.TemporaryDirectory() as tmp:
        plain, packed = Path(tmp) / "plain.dcm", Path(tmp) / "packed.dcm"
        ds.save_as(plain, enforce_file_format=True)
        subprocess.run([need_tool("dcmcjpeg"), "+e1", str(plain), str(packed)], check=True, capture_output=True)
        packed_ds = dcmread(packed)
    ds.file_meta.TransferSyntaxUID = packed_ds.file_meta.TransferSyntaxUID
    ds.PixelData = packed_ds.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
