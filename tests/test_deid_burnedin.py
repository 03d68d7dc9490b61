"""Burned-in text is found by OCR and blacked out; every other pixel keeps its stored value.

A table of images (modality, photometric interpretation, bit depth, transfer syntax, frames)
drives one test: each carries a unique planted name drawn into one frame, goes through
``clean_instance``, and must come out with the name unreadable, the glyphs black, and every pixel
outside a small box around the planted text equal to the decoded original.
"""

from __future__ import annotations

import copy
import io
import logging
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from apolo_node.config import Config
from apolo_node.deid import DeidError, Deidentifier, clean_instance, deidentify_paths
from apolo_node.deid import burnedin
from apolo_node.deid.burnedin import MARGIN, ocr_available
from apolo_node.deid.frames import decode_frames, ocr_image
from tests.synthetic import ct_slice, new_marker

pytestmark = pytest.mark.skipif(ocr_available() is not None, reason="rapidocr not installed")

ROWS, COLUMNS = 200, 288
TEXT_AT = (14, 12)
SLACK = MARGIN + 8  # how far from the drawn glyphs the detector's box may reach


def deidentifier() -> Deidentifier:
    return Deidentifier(secrets.token_bytes(16), ["clean_pixel_data", "clean_descriptors"])


@dataclass(frozen=True)
class Case:
    """One image of the table: how it is stored, and which frame (0-based) carries the text."""

    id: str
    modality: str
    photometric: str  # as stored; "YBR_FULL_422" only with JPEG
    bits: int = 8  # BitsStored (BitsAllocated 8 or 16)
    signed: bool = False  # PixelRepresentation 1, values centred on 0
    encoding: str = "native"  # native, rle, jpeg, j2k, j2k-lossy
    frames: int = 1
    text_frame: int = 0
    size: tuple[int, int] = (ROWS, COLUMNS)  # rows, columns


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
    Case("dx-mono1-large", "DX", "MONOCHROME1", bits=12, size=(2048, 1536)),  # read in tiles
    Case("us-cine-rgb", "US", "RGB", frames=3, text_frame=1),
    Case("us-cine-rgb-rle", "US", "RGB", encoding="rle", frames=3, text_frame=1),
    Case("us-cine-ybr422-jpeg", "US", "YBR_FULL_422", encoding="jpeg", frames=3, text_frame=1),
]


def levels(text: str, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Display levels 0..1 (dark field, a grey disc, white text), the glyph mask, the text box."""
    img = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=18)
    draw.text(TEXT_AT, text, fill=255, font=font)
    glyphs = np.asarray(img) > 0
    field = np.full((rows, columns), 0.05)
    yy, xx = np.mgrid[:rows, :columns]
    field[(yy - 120) ** 2 + (xx - 150) ** 2 < 60**2] = 0.4  # the anatomy OCR misreads as "0"
    field[glyphs] = 1.0
    box = draw.textbbox(TEXT_AT, text, font=font)
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
    field, glyphs, box = levels(text, rows, columns)
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


def read_text(ds: Dataset) -> str:
    """Everything OCR reads on every frame, in the scanner's tiles, spaces removed."""
    read = []
    for frame in decode_frames(ds):
        image = ocr_image(ds, frame)
        for top in burnedin._tile_starts(image.shape[0]):
            for left in burnedin._tile_starts(image.shape[1]):
                tile = np.ascontiguousarray(image[top:top + burnedin.TILE, left:left + burnedin.TILE])
                read.extend(burnedin._ocr(tile).txts or ())
    return "".join(read).replace(" ", "")


def planted() -> tuple[str, str]:
    marker = new_marker("ID")
    return marker, f"DOE^JOHN {marker}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_burned_in_text_is_blacked_out_and_nothing_else_changes(case: Case) -> None:
    marker, text = planted()
    ds, glyphs, (x0, y0, x1, y1) = build(case, text)
    before = decode_frames(ds)
    assert "DOE^JOHNID" in read_text(ds), "the test image must carry readable text"

    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))

    left = read_text(out)
    assert "DOE" not in left and "JOHN" not in left and marker[:4] not in left
    assert out.BurnedInAnnotation == "NO" and 0x60000010 not in out
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PhotometricInterpretation == ("RGB" if case.photometric.startswith("YBR") else
                                             ds.PhotometricInterpretation)
    if case.encoding == "jpeg":
        assert out.LossyImageCompression == "01"
    after = decode_frames(out)
    assert after.shape == before.shape and after.dtype == before.dtype
    changed = before != after
    if changed.ndim == 4:
        changed = changed.any(axis=-1)
    near_text = np.zeros_like(changed)
    near_text[case.text_frame, max(0, y0 - SLACK):y1 + SLACK, max(0, x0 - SLACK):x1 + SLACK] = True
    assert not (changed & ~near_text).any(), "a pixel away from the text changed"
    view = ocr_image(out, after[case.text_frame])
    assert view[glyphs].max() <= 16, "every glyph pixel shows black"
    assert len(np.unique(after[case.text_frame][glyphs], axis=0)) == 1, "one black value fills the box"


def test_an_image_without_text_keeps_its_encoded_pixels() -> None:
    ds, _, _ = build(Case("us-rle-blank", "US", "RGB", encoding="rle"), "")
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    assert out.PixelData == ds.PixelData and out.file_meta.TransferSyntaxUID == RLELossless
    assert out.BurnedInAnnotation == "NO"


def test_a_plain_ct_is_not_scanned_and_its_pixels_are_untouched() -> None:
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=new_marker(), rows=64, columns=64)
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    assert out.PixelData == ds.PixelData and "BurnedInAnnotation" not in out


def test_corrupt_compressed_pixels_are_quarantined_with_a_reason_without_phi(
    cfg: Config, tmp_path: Path
) -> None:
    marker, text = planted()
    ds, _, _ = build(Case("us-jpeg", "US", "YBR_FULL_422", encoding="jpeg"), text)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not a jpeg " + marker.encode()])
    ds["PixelData"].is_undefined_length = True
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "us.dcm", enforce_file_format=True)
    summary = deidentify_paths([tmp_path / "in"], tmp_path / "out", cfg, tmp_path / "q")
    assert (summary.written, summary.quarantined) == (0, 1)
    [reason] = summary.reasons.values()
    assert reason.startswith("burned-in text scan failed: pixel data could not be decoded")
    assert marker not in reason and marker not in "".join(
        p.read_text() for p in (tmp_path / "q").glob("*.reason.txt"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.dcm"))


def test_text_still_found_after_redaction_is_refused_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker, text = planted()
    ds, _, _ = build(Case("us-rgb", "US", "RGB"), text)
    stubborn = SimpleNamespace(boxes=np.array([[[20, 20], [120, 20], [120, 36], [20, 36]]], float),
                               txts=(text,), scores=(0.99,))
    monkeypatch.setattr(burnedin, "_ocr", lambda image: stubborn)
    with pytest.raises(DeidError, match=r"text is still found after redaction on frame\(s\) \[1\]") as info:
        clean_instance(ds, deidentifier())
    assert marker not in str(info.value)


def test_without_the_clean_pixel_data_option_such_images_are_refused() -> None:
    _, text = planted()
    ds, _, _ = build(Case("us-rgb", "US", "RGB"), text)
    with pytest.raises(DeidError, match="lack clean_pixel_data"):
        clean_instance(ds, Deidentifier(secrets.token_bytes(16), ["clean_descriptors"]))


def test_without_rapidocr_such_images_are_refused_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, text = planted()
    ds, _, _ = build(Case("us-rgb", "US", "RGB"), text)
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # what find_spec and import see when absent
    with pytest.raises(DeidError, match=r"no OCR engine .*pip install rapidocr onnxruntime"):
        clean_instance(ds, deidentifier())


def test_ocr_text_reaches_no_log_and_no_output(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    marker, text = planted()
    ds, _, _ = build(Case("sc-mono2", "SC", "MONOCHROME2"), text)
    with caplog.at_level(logging.DEBUG):
        clean = clean_instance(copy.deepcopy(ds), deidentifier())
    out, err = capfd.readouterr()
    assert marker not in caplog.text + out + err
    assert marker.encode() not in clean.encoded
