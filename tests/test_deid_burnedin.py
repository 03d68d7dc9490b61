"""Burned-in text is found by OCR and blacked out; everything else keeps its values."""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from apolo_node.deid import DeidError, Deidentifier, clean_instance
from apolo_node.deid.burnedin import ocr_available, _ocr, _for_ocr
from tests.synthetic import ct_slice, new_marker

pytestmark = pytest.mark.skipif(ocr_available() is not None, reason="rapidocr not installed")


def deidentifier() -> Deidentifier:
    return Deidentifier(secrets.token_bytes(16), ["clean_pixel_data", "clean_descriptors"])


def draw(shape: tuple[int, int], text: str, rgb: bool, at: tuple[int, int] = (16, 16)) -> np.ndarray:
    """A dark image with a grey 'anatomy' block and ``text`` burned in."""
    rows, cols = shape
    img = Image.new("RGB", (cols, rows), (10, 10, 10))
    d = ImageDraw.Draw(img)
    d.rectangle([cols // 4, rows // 3, cols * 3 // 4, rows * 5 // 6], fill=(90, 90, 90))
    d.text(at, text, fill=(255, 255, 255), font=ImageFont.load_default(size=20))
    arr = np.asarray(img)
    return arr if rgb else arr[..., 0].copy()


def image(modality: str, frames: list[np.ndarray], photometric: str, marker: str) -> Dataset:
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=marker, rows=frames[0].shape[0], columns=frames[0].shape[1],
                  modality=modality)
    for key in ("RescaleIntercept", "RescaleSlope"):
        del ds[key]
    rgb = frames[0].ndim == 3
    ds.SOPClassUID = (UltrasoundMultiFrameImageStorage if len(frames) > 1 else UltrasoundImageStorage) \
        if modality == "US" else SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    stack = np.stack(frames)
    if photometric == "MONOCHROME1":
        stack = 255 - stack
    ds.PixelData = stack.tobytes()
    return ds


def ocr_text(ds: Dataset) -> str:
    arr = ds.pixel_array
    frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[np.newaxis]
    found = []
    for frame in frames:
        result = _ocr()(_for_ocr(ds, frame))
        found.extend(result.txts or ())
    return " ".join(found)


def outside_boxes_equal(before: np.ndarray, after: np.ndarray) -> tuple[bool, float]:
    """Changed pixels form the redactions only: equal elsewhere; the share that changed."""
    changed = before != after
    return bool(changed.any()), float(changed.mean())


@pytest.mark.parametrize(
    ("modality", "photometric", "rgb", "encoding"),
    [
        ("US", "RGB", True, None),
        ("US", "RGB", True, "rle"),
        ("US", "YBR_FULL_422", True, "jpeg"),
        ("SC", "MONOCHROME2", False, None),
        ("SC", "MONOCHROME1", False, "rle"),
    ],
)
def test_burned_in_text_is_found_and_blacked_out(
    modality: str, photometric: str, rgb: bool, encoding: str | None
) -> None:
    marker = new_marker("DOE")
    ds = image(modality, [draw((240, 320), f"{marker} 1970", rgb)], "RGB" if encoding == "jpeg" else photometric, marker)
    if encoding == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif encoding == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(ds.pixel_array).save(buf, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].is_undefined_length = True
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    before = ds.pixel_array.copy()
    assert marker in ocr_text(ds).replace(" ", ""), "the test image must carry readable text"
    result = clean_instance(ds, deidentifier())
    out = dcmread(io.BytesIO(result.encoded))
    assert out.BurnedInAnnotation == "NO"
    assert marker not in ocr_text(out).replace(" ", "")
    after = out.pixel_array
    if out.PhotometricInterpretation == "RGB" and before.ndim == 3 and photometric.startswith("YBR"):
        pass  # pydicom already gave RGB for the JPEG original
    changed, share = outside_boxes_equal(before, after)
    assert changed and share < 0.2, "only the text boxes change"
    rows, cols = np.nonzero(before != after if before.ndim == 2 else (before != after).any(-1))
    assert rows.max() < 60, "nothing below the text line was touched"


def test_multi_frame_text_on_one_frame_only_changes_that_frame() -> None:
    marker = new_marker("DOE")
    frames = [draw((200, 300), "", True), draw((200, 300), f"{marker}", True), draw((200, 300), "", True)]
    ds = image("US", frames, "RGB", marker)
    before = ds.pixel_array.copy()
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    after = out.pixel_array
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[2], after[2])
    assert not np.array_equal(before[1], after[1])
    assert marker not in ocr_text(out).replace(" ", "")


def test_a_plain_ct_is_not_scanned_and_its_pixels_are_untouched() -> None:
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=new_marker(), rows=64, columns=64)
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    assert out.PixelData == ds.PixelData and "BurnedInAnnotation" not in out


def test_undecodable_pixels_are_quarantined_with_a_reason_without_phi() -> None:
    marker = new_marker("DOE")
    ds = image("US", [draw((120, 160), marker, True)], "RGB", marker)
    ds.PixelData = encapsulate([b"\xff\xd8 not a jpeg " + marker.encode()])
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    with pytest.raises(DeidError, match="burned-in text scan failed: pixel data could not be decoded") as info:
        clean_instance(ds, deidentifier())
    assert marker not in str(info.value)


def test_without_the_clean_pixel_data_option_such_images_are_refused() -> None:
    marker = new_marker("DOE")
    ds = image("US", [draw((120, 160), marker, True)], "RGB", marker)
    with pytest.raises(DeidError, match="lack clean_pixel_data"):
        clean_instance(ds, Deidentifier(secrets.token_bytes(16), ["clean_descriptors"]))
