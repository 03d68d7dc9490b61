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
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ComputedRadiographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    RLELossless,
    generate_uid,
)

from apolo_node.config import Config
from apolo_node.deid import DeidError, Deidentifier, clean_instance, deidentify_paths
from apolo_node.deid import burnedin
from apolo_node.deid.burnedin import MARGIN, ocr_available
from apolo_node.deid import frames as frames_mod
from apolo_node.deid.frames import decode_frames, ocr_image
from apolo_node.deid.pixels import pixel_scan_reason
from tests.image_cases import CASES, Case, build
from tests.peer_fixtures import dciodvfy_errors
from tests.synthetic import ct_slice, new_marker

pytestmark = pytest.mark.skipif(ocr_available() is not None, reason="rapidocr not installed")

SLACK = MARGIN + 8  # how far from the drawn glyphs the detector's box may reach


def deidentifier() -> Deidentifier:
    return Deidentifier(secrets.token_bytes(16), ["clean_pixel_data", "clean_descriptors"])


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
    assert reason.startswith(
        "burned-in text scan failed: pixel data could not be decoded by the installed decoders "
        "(JPEG Baseline (Process 1), "
    )
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
    with pytest.raises(
        DeidError, match=rf"text is still found after {burnedin.ROUNDS} rounds of redaction on frame\(s\) \[1\]"
    ) as info:
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


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.id in ("us-rgb", "sc-mono2", "us-cine-rgb", "us-palette")], ids=lambda c: c.id
)
def test_redacted_captures_have_no_more_dciodvfy_errors_than_their_originals(case: Case, tmp_path: Path) -> None:
    _, text = planted()
    ds, _, _ = build(case, text)
    original, cleaned = tmp_path / "original.dcm", tmp_path / "cleaned.dcm"
    ds.save_as(original, enforce_file_format=True)
    cleaned.write_bytes(clean_instance(ds, deidentifier()).encoded)
    assert dcmread(cleaned).BurnedInAnnotation == "NO"
    before, after = dciodvfy_errors(original), dciodvfy_errors(cleaned)
    new = sorted(set(after) - set(before))
    assert not new, f"errors the redaction added: {new}"


def test_the_deid_command_cleans_a_study_in_every_encoding_and_its_references_resolve(
    cfg: Config, tmp_path: Path
) -> None:
    """The issue's corpus: one patient's study holding every image of the table, each with the
    patient's name burned in, and two instances with the marker in every Table E.1-1 attribute at
    sequence depths 0 to 3, private tags, overlays and curves, through ``apolo-node deid``: no
    output holds the marker in any byte, OCR of every output finds none of the name, and every
    reference between instances follows the new UIDs."""
    import json

    from tests.deid_corpus import corpus_instance
    from tests.nodes import apolo

    marker, text = planted()
    study_uid, series_uid = generate_uid(), generate_uid()
    cases = [c for c in CASES if c.size[0] <= 512]
    (tmp_path / "in").mkdir()
    originals = []
    for n, case in enumerate(cases):
        ds, _, _ = build(case, text)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID, ds.InstanceNumber = f"{marker}^NAME", f"{marker}ID", n + 1
        if originals:  # each image refers to the one before it, as a derived image would
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = originals[-1]
            ds.ReferencedImageSequence = [ref]
        originals.append((ds.SOPClassUID, ds.SOPInstanceUID))
        ds.save_as(tmp_path / "in" / f"{n:02d}-{case.id}.dcm", enforce_file_format=True)
    for n in (len(cases), len(cases) + 1):  # the header corpus, in the same study
        ds = corpus_instance(
            marker, patient_id=f"{marker}ID", study_uid=study_uid, series_uid=generate_uid(),
            sop_uid=generate_uid(), frame_uid=generate_uid(), referenced_sop_uid=originals[-1][1],
        )
        ds.InstanceNumber = n + 1
        originals.append((ds.SOPClassUID, ds.SOPInstanceUID))
        ds.save_as(tmp_path / "in" / f"{n:02d}-corpus.dcm", enforce_file_format=True)
    cases = [*cases, Case("corpus", "CT", "MONOCHROME2"), Case("corpus", "CT", "MONOCHROME2")]
    done = apolo(cfg, "deid", str(tmp_path / "in"), str(tmp_path / "out"), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["written"] == len(cases) and result["quarantined"] == 0
    outputs = {int(dcmread(p).InstanceNumber): dcmread(p) for p in result["outputs"]}
    assert sorted(outputs) == list(range(1, len(cases) + 1))
    assert len({str(o.StudyInstanceUID) for o in outputs.values()}) == 1
    for number, out in outputs.items():
        assert marker.encode() not in Path(out.filename).read_bytes()
        left = read_text(out)
        assert "DOE" not in left and "JOHN" not in left and marker[2:8] not in left, cases[number - 1].id
        if number > 1:  # the reference follows the referenced instance's new UID
            assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == outputs[number - 1].SOPInstanceUID
    assert marker not in done.stdout.replace(str(tmp_path), "") and marker not in done.stderr


@pytest.mark.parametrize("length", [1024, 1025, 1536, 2048, 3000, 4096])
@pytest.mark.parametrize("phase", [0, burnedin.TILE_STEP // 2])
def test_every_line_up_to_half_a_tile_lies_whole_in_one_tile(length: int, phase: int) -> None:
    starts = burnedin._tile_starts(length, phase)
    assert starts[0] == 0 and starts[-1] + min(length, burnedin.TILE) == length
    widest = min(length, burnedin.TILE_OVERLAP)
    for x in range(0, length - widest + 1, 7):  # a line from x to x + widest
        assert any(s <= x and x + widest <= s + burnedin.TILE for s in starts), (x, starts)
    if phase and length > burnedin.TILE:  # the rescan's inner seams are not the first pass's
        inner = set(burnedin._tile_starts(length)[1:-1])
        assert not inner & set(starts[1:-1]), (inner, starts)


def _image(modality: str, sop_class: str, **attributes: object) -> Dataset:
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=new_marker(), modality=modality)
    ds.SOPClassUID = sop_class
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


# (modality, SOP class, attributes, scanned?, why): projection and photographic images by risk,
# cross-sectional ones only when they declare text or are screen captures
POLICY = [
    ("DX", "1.2.840.10008.5.1.4.1.1.1.1", {}, True, "a radiograph, nothing declared"),
    ("DX", "1.2.840.10008.5.1.4.1.1.1.1", {"BurnedInAnnotation": "NO"}, True, "a radiograph that says NO"),
    ("CR", ComputedRadiographyImageStorage, {}, True, "computed radiography"),
    ("MG", DigitalMammographyXRayImageStorageForPresentation, {}, True, "a mammogram"),
    ("XA", "1.2.840.10008.5.1.4.1.1.12.1", {}, True, "angiography"),
    ("RF", "1.2.840.10008.5.1.4.1.1.12.2", {}, True, "fluoroscopy"),
    ("IO", "1.2.840.10008.5.1.4.1.1.1.3", {}, True, "intra-oral"),
    ("PX", "1.2.840.10008.5.1.4.1.1.1.1", {}, True, "panoramic"),
    ("OT", SecondaryCaptureImageStorage, {}, True, "other, a capture"),
    ("XC", "1.2.840.10008.5.1.4.1.1.77.1.4", {}, True, "a photograph"),
    ("ES", "1.2.840.10008.5.1.4.1.1.77.1.1", {}, True, "endoscopy"),
    ("GM", "1.2.840.10008.5.1.4.1.1.77.1.4", {}, True, "general microscopy"),
    ("SM", "1.2.840.10008.5.1.4.1.1.77.1.6", {}, True, "slide microscopy"),
    ("OP", "1.2.840.10008.5.1.4.1.1.77.1.5.1", {}, True, "ophthalmic photography"),
    ("", CTImageStorage, {}, True, "no Modality: unknown risk"),
    ("CT", CTImageStorage, {}, False, "a CT slice that declares nothing"),
    ("CT", CTImageStorage, {"BurnedInAnnotation": "NO"}, False, "a CT slice that says NO"),
    ("MR", MRImageStorage, {"ImageType": ["ORIGINAL", "PRIMARY", "M"]}, False, "an MR slice"),
    ("PT", "1.2.840.10008.5.1.4.1.1.128", {}, False, "a PET slice"),
    ("NM", "1.2.840.10008.5.1.4.1.1.20", {}, False, "an NM image"),
    ("CT", CTImageStorage, {"BurnedInAnnotation": "YES"}, True, "a CT slice that says YES"),
    ("CT", CTImageStorage, {"ImageType": ["DERIVED", "SECONDARY"]}, True, "a CT screen capture"),
    ("NM", SecondaryCaptureImageStorage, {}, True, "an NM screen capture (Secondary Capture class)"),
    ("MR", "1.2.840.10008.5.1.4.1.1.7.4", {}, True, "a multi-frame true colour secondary capture"),
]


@pytest.mark.parametrize(("modality", "sop_class", "attributes", "scanned", "why"), POLICY,
                         ids=[row[4] for row in POLICY])
def test_pixels_are_scanned_by_risk_not_by_declaration(
    modality: str, sop_class: str, attributes: dict, scanned: bool, why: str
) -> None:
    ds = _image(modality or "CT", sop_class, **attributes)
    if not modality:
        del ds.Modality
    assert (pixel_scan_reason(ds) is not None) is scanned, why


def test_an_image_without_pixel_data_is_never_scanned() -> None:
    ds = _image("DX", "1.2.840.10008.5.1.4.1.1.1.1")
    del ds.PixelData
    assert pixel_scan_reason(ds) is None


def test_a_radiograph_that_declares_nothing_has_its_burned_in_name_removed() -> None:
    marker, text = planted()
    ds, glyphs, _ = build(Case("dx-mono1-12bit", "DX", "MONOCHROME1", bits=12), text)
    del ds.BurnedInAnnotation  # absent, as on most radiographs
    assert "DOE^JOHNID" in read_text(ds)
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    left = read_text(out)
    assert "DOE" not in left and "JOHN" not in left and marker[:4] not in left
    assert out.BurnedInAnnotation == "NO"
    assert ocr_image(out, decode_frames(out)[0])[glyphs].max() <= 16


def test_a_ct_slice_that_declares_nothing_is_neither_decoded_nor_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    def refuse(*_: object) -> None:
        raise AssertionError("a plain CT slice reached the pixel scan")

    monkeypatch.setattr(burnedin, "_ocr", refuse)
    monkeypatch.setattr(frames_mod, "decode_frames", refuse)
    monkeypatch.setattr(burnedin, "decode_frames", refuse)
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=new_marker(), rows=512, columns=512)
    started = time.perf_counter()
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    assert time.perf_counter() - started < 2.0, "a 512 x 512 CT slice is cleaned in milliseconds"
    assert out.PixelData == ds.PixelData


def test_what_a_rescan_finds_is_blacked_out_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the name gone, the detector reads a mark beside it that it passed over the first time:
    that mark is blacked out in the next round, and the instance is written."""
    _, text = planted()
    ds, _, _ = build(Case("us-rgb", "US", "RGB"), text)

    def result(*quads: list[int]) -> SimpleNamespace:
        boxes = np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]] for x0, y0, x1, y1 in quads], float)
        return SimpleNamespace(boxes=boxes if quads else None, txts=("X",) * len(quads),
                               scores=(0.9,) * len(quads))

    reads = iter([result([20, 20, 120, 36]), result([200, 150, 230, 170]), result()])
    monkeypatch.setattr(burnedin, "_ocr", lambda image: next(reads))
    out, boxes = burnedin.redact_burned_in_text(ds)
    assert [(b.x0, b.y0) for b in boxes] == [(20 - MARGIN, 20 - MARGIN), (200 - MARGIN, 150 - MARGIN)]
    pixels = decode_frames(out)[0]
    assert not pixels[150:170, 200:230].any() and not pixels[20:36, 20:120].any()
    assert pixels[100:110, 140:160].any(), "the anatomy between the boxes is kept"
    assert next(reads, None) is None, "two rescans: the second found nothing"


def test_a_big_endian_palette_image_keeps_its_colours(tmp_path: Path) -> None:
    """Explicit VR Big Endian holds the palette's OW data in big endian bytes; the redacted
    instance is written little endian, so they are swapped, not copied as they are."""
    marker, text = planted()
    ds, _, _ = build(Case("us-palette", "US", "PALETTE COLOR"), text)
    for colour in ("Red", "Green", "Blue"):
        keyword = f"{colour}PaletteColorLookupTableData"
        setattr(ds, keyword, np.frombuffer(ds[keyword].value, "<u2").astype(">u2").tobytes())
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    big = dcmread(tmp_path / "big.dcm")
    assert np.array_equal(ocr_image(big, decode_frames(big)[0]), ocr_image(ds, decode_frames(ds)[0]))
    out = dcmread(io.BytesIO(clean_instance(big, deidentifier()).encoded))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    ramp = np.arange(256, dtype="<u2") * 257
    assert out.RedPaletteColorLookupTableData == ramp.tobytes()
    assert out.BluePaletteColorLookupTableData == (ramp // 2).tobytes()
    after, before = decode_frames(out)[0], decode_frames(ds)[0]
    assert np.array_equal(frames_mod.palette_colours(out, after[150:190, 100:200]),
                          frames_mod.palette_colours(ds, before[150:190, 100:200]))
    left = read_text(out)
    assert "DOE" not in left and marker[:4] not in left


def _cine_with_text_on_every_frame(frames: int) -> tuple[Dataset, tuple[int, int, int, int]]:
    """A native RGB cine whose frames all carry the same name and differ in the anatomy; the
    name's box."""
    _, text = planted()
    ds, _, box = build(Case("us-rgb", "US", "RGB"), text)
    frame = decode_frames(ds)[0]
    loop = np.stack([frame] * frames)
    for n in range(frames):
        loop[n, 120:130, 150:160] = 60 + 20 * n  # the heart moves; the overlay does not
    ds.NumberOfFrames = frames
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.PixelData = loop.tobytes()
    return ds, box


def test_a_cine_overlay_is_read_once_and_found_on_every_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    ds, (x0, y0, x1, y1) = _cine_with_text_on_every_frame(4)
    burnedin._ocr(np.zeros((32, 32, 3), np.uint8))  # the engine, with its recogniser cache
    cache = burnedin._engine.text_rec
    assert isinstance(cache, burnedin._RecognitionCache)
    cache.forget()
    read: list[int] = []
    real = cache.recogniser
    monkeypatch.setattr(cache, "recogniser", lambda args: read.append(len(args.img)) or real(args))
    boxes = burnedin.find_text(ds, decode_frames(ds))
    for frame in range(4):
        assert any(b.frame == frame and b.x0 <= x0 and b.y0 <= y0 and b.x1 >= x1 and b.y1 >= y1
                   for b in boxes), f"the name is found on frame {frame + 1}"
    assert sum(read) < len(boxes), "lines seen on an earlier frame are not read again"
    out, _ = burnedin.redact_burned_in_text(ds)
    assert not burnedin._engine.text_rec.read, "nothing read outlives the instance"
    assert "DOE" not in read_text(out)


def test_repeated_frames_and_blank_tiles_are_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    ds, _ = _cine_with_text_on_every_frame(3)
    loop = decode_frames(ds).copy()
    loop[2] = loop[0]  # a frozen frame
    loop[1] = 0  # a blank one
    calls: list[int] = []
    real = burnedin._ocr
    monkeypatch.setattr(burnedin, "_ocr", lambda image: calls.append(1) or real(image))
    boxes = burnedin.find_text(ds, loop)
    assert len(calls) == 1, "one distinct frame with content: one OCR call"
    frame0 = sorted((b.x0, b.y0, b.x1, b.y1) for b in boxes if b.frame == 0)
    assert frame0 and frame0 == sorted((b.x0, b.y0, b.x1, b.y1) for b in boxes if b.frame == 2)
    assert not [b for b in boxes if b.frame == 1]
