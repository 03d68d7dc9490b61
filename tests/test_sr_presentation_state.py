"""GSPS of grounding boxes: built from findings, checked by dcmpschk and dciodvfy, read back from bytes.

The image builders here make de-identified evidence (pseudonymous 2.25 UIDs, Patient Identity
Removed with its method); tests/test_sr_answer_report.py uses them too.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    GrayscaleSoftcopyPresentationStateStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

from apolo_node.findings import LOCAL_SCHEME, Algorithm, Box, Code, Finding
from apolo_node.sr import (
    GroundingBox,
    grounding_presentation_state,
    read_grounding_presentation_state,
)
from tests.sr_evidence import deidentified, uid
from tests.peer_fixtures import dciodvfy_errors, need_tool

ALGORITHM = Algorithm(name="apolo-baseline", version="0.3.1")
NODULE = Code("27925004", "SCT", "Nodule")


def square(rows: int, columns: int, low: int, high: int, dtype: type) -> np.ndarray:
    """A dark frame with a bright square, so a rendered box has something to sit on."""
    pixels = np.full((rows, columns), low, dtype=dtype)
    pixels[rows // 4 : rows // 2, columns // 4 : columns // 2] = high
    return pixels


def ct_slice(
    study: str, *, window: tuple[float, float] = (40, 400), rows: int = 64, columns: int = 64
) -> Dataset:
    """A CT slice: 16-bit stored values, rescale to HU (-1024), a soft-tissue window."""
    ds = deidentified(CTImageStorage, "CT", study, rows=rows, columns=columns, bits=16)
    ds.FrameOfReferenceUID = uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-22.4, -22.4, 10]
    ds.SliceThickness = 1.25
    ds.KVP = ""
    ds.AcquisitionNumber = ""
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = square(rows, columns, 1024 - 1000, 1024 + 60, np.uint16).tobytes()
    return ds


def multiframe(study: str, *, window: bool = True) -> Dataset:
    """A 3-frame 64x64 8-bit Multi-frame Grayscale Byte Secondary Capture image."""
    sop_class = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ds = deidentified(sop_class, "OT", study, rows=64, columns=64, bits=8)
    ds.NumberOfFrames = 3
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 100
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    if window:
        ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.PixelData = np.stack([square(64, 64, 10 * i, 200, np.uint8) for i in range(3)]).tobytes()
    return ds


def radiograph(study: str) -> Dataset:
    """A MONOCHROME1 digital radiograph with a VOI LUT Sequence instead of a window."""
    ds = deidentified(DigitalXRayImageStorageForPresentation, "DX", study, rows=64, columns=64, bits=16)
    ds.PhotometricInterpretation = "MONOCHROME1"
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 16]
    lut.LUTData = [i * 256 for i in range(256)]
    lut.LUTExplanation = "NORMAL"
    ds.VOILUTSequence = [lut]
    ds.PixelData = square(64, 64, 100, 3000, np.uint16).tobytes()
    return ds


def boxed(image: Dataset, box: Box, *, frame: int = 1, label: str = "Pulmonary nodule",
          confidence: float | None = None) -> Finding:
    return Finding(
        tracking_uid=uid(), label=label, code=NODULE, sop_instance_uid=image.SOPInstanceUID,
        sop_class_uid=image.SOPClassUID, frame=frame, box=box, confidence=confidence,
    )


def build(findings: list[Finding], images: list[Dataset], **kwargs: object) -> Dataset:
    return grounding_presentation_state(
        findings, images, series_instance_uid=uid(), sop_instance_uid=uid(), **kwargs
    )


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def study() -> tuple[Dataset, Dataset, Dataset]:
    """One de-identified study: two CT slices (same window) and a 3-frame multi-frame image."""
    study_uid = uid()
    return ct_slice(study_uid), ct_slice(study_uid), multiframe(study_uid)


def ct_findings(ct1: Dataset, ct2: Dataset) -> list[Finding]:
    """Two boxed findings (one with confidence) and one without a box, which the GSPS skips."""
    no_box = dataclasses.replace(boxed(ct1, Box(1, 1, 2, 2), label="Emphysema"), box=None)
    return [
        boxed(ct1, Box(10.5, 12.25, 30, 40), confidence=0.87),
        no_box,
        boxed(ct2, Box(0, 0, 64, 64), label="Ground-glass opacity"),
    ]


# --- round trip -------------------------------------------------------------------------------


def test_boxes_labels_instances_and_frames_survive_a_round_trip_through_bytes(study, tmp_path) -> None:
    ct1, ct2, _ = study
    findings = ct_findings(ct1, ct2)
    read = read_grounding_presentation_state(dcmread(write(build(findings, [ct1, ct2]), tmp_path / "pr.dcm")))
    assert read == [
        GroundingBox("Pulmonary nodule (87%)", ct1.SOPInstanceUID, 1, Box(10.5, 12.25, 30, 40)),
        GroundingBox("Ground-glass opacity", ct2.SOPInstanceUID, 1, Box(0, 0, 64, 64)),
    ]


def test_a_box_at_arbitrary_source_coordinates_reads_back_within_float32(study, tmp_path) -> None:
    ct1, _, _ = study
    box = Box(0.123 * 64, 0.377 * 64, 0.9012 * 64, 0.99 * 64)
    (read,) = read_grounding_presentation_state(
        dcmread(write(build([boxed(ct1, box)], [ct1]), tmp_path / "pr.dcm"))
    )
    assert read.box.as_list() == pytest.approx(box.as_list(), rel=1e-6)


def test_on_a_multi_frame_image_each_annotation_names_its_frame(study, tmp_path) -> None:
    _, _, mf = study
    findings = [boxed(mf, Box(5, 5, 20, 20), frame=3, label="Fluid"), boxed(mf, Box(30, 30, 60, 50), frame=2)]
    pr = build(findings, [mf])
    frames = [a.ReferencedImageSequence[0].ReferencedFrameNumber for a in pr.GraphicAnnotationSequence]
    assert frames == [3, 2]
    read = read_grounding_presentation_state(dcmread(write(pr, tmp_path / "pr.dcm")))
    assert [(g.label, g.sop_instance_uid, g.frame) for g in read] == [
        ("Fluid", mf.SOPInstanceUID, 3), ("Pulmonary nodule", mf.SOPInstanceUID, 2),
    ]


# --- structure --------------------------------------------------------------------------------


def test_each_box_is_a_closed_pixel_polyline_with_its_label_at_the_top_left(study) -> None:
    ct1, ct2, _ = study
    findings = ct_findings(ct1, ct2)
    pr = build(findings, [ct1, ct2], content_label="APOLO_BOXES", algorithm=ALGORITHM)
    assert pr.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage
    assert (pr.ContentLabel, pr.SeriesNumber, pr.Modality) == ("APOLO_BOXES", 992, "PR")
    assert (pr.Manufacturer, pr.ManufacturerModelName, pr.SoftwareVersions) == (
        "apolo-node", ALGORITHM.name, ALGORITHM.version,
    )
    (layer,) = pr.GraphicLayerSequence
    assert layer.GraphicLayer == "AI FINDINGS"
    assert len(layer.GraphicLayerRecommendedDisplayCIELabValue) == 3
    annotations = pr.GraphicAnnotationSequence
    assert len(annotations) == 2  # the finding without a box is skipped
    for annotation, finding in zip(annotations, [findings[0], findings[2]], strict=True):
        assert annotation.GraphicLayer == "AI FINDINGS"
        (reference,) = annotation.ReferencedImageSequence
        assert reference.ReferencedSOPInstanceUID == finding.sop_instance_uid
        assert "ReferencedFrameNumber" not in reference  # single-frame CT
        (graphic,) = annotation.GraphicObjectSequence
        assert (graphic.GraphicType, graphic.GraphicAnnotationUnits, graphic.NumberOfGraphicPoints) == (
            "POLYLINE", "PIXEL", 5,
        )
        assert list(graphic.GraphicData) == pytest.approx([v for p in finding.box.polyline() for v in p])
        (text,) = annotation.TextObjectSequence
        assert text.UnformattedTextValue.startswith(finding.label)
        assert list(text.AnchorPoint) == pytest.approx([finding.box.x1, finding.box.y1])
        assert text.AnchorPointAnnotationUnits == "PIXEL"
        assert graphic.TrackingUID == text.TrackingUID == finding.tracking_uid


def test_it_joins_the_study_and_references_only_the_annotated_images(study) -> None:
    ct1, ct2, mf = study
    series, instance = uid(), uid()
    pr = grounding_presentation_state([boxed(ct1, Box(1, 1, 9, 9))], [ct1, ct2, mf], series_instance_uid=series,
                                      sop_instance_uid=instance)
    assert (pr.SeriesInstanceUID, pr.SOPInstanceUID) == (series, instance)
    assert (pr.StudyInstanceUID, pr.PatientID, pr.PatientIdentityRemoved) == (
        ct1.StudyInstanceUID, ct1.PatientID, "YES",
    )
    referenced = [
        i.ReferencedSOPInstanceUID for s in pr.ReferencedSeriesSequence for i in s.ReferencedImageSequence
    ]
    assert referenced == [ct1.SOPInstanceUID]


def test_the_ct_rescale_and_window_are_copied(study) -> None:
    ct1, ct2, _ = study
    pr = build(ct_findings(ct1, ct2), [ct1, ct2])
    assert (float(pr.RescaleIntercept), float(pr.RescaleSlope), pr.RescaleType) == (-1024.0, 1.0, "HU")
    (voi,) = pr.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (40.0, 400.0)
    assert "ReferencedImageSequence" not in voi  # one window for every image
    assert pr.PresentationLUTShape == "IDENTITY"


def test_different_windows_each_reference_their_image(study) -> None:
    ct1, _, _ = study
    lung = ct_slice(ct1.StudyInstanceUID, window=(-600, 1500))
    pr = build([boxed(ct1, Box(1, 1, 9, 9)), boxed(lung, Box(2, 2, 8, 8))], [ct1, lung])
    windows = {
        v.ReferencedImageSequence[0].ReferencedSOPInstanceUID: (float(v.WindowCenter), float(v.WindowWidth))
        for v in pr.SoftcopyVOILUTSequence
    }
    assert windows == {ct1.SOPInstanceUID: (40.0, 400.0), lung.SOPInstanceUID: (-600.0, 1500.0)}


@pytest.mark.parametrize("window", [True, False], ids=["window", "no-window"])
def test_a_multi_frame_image_keeps_its_own_window_or_none(study, window: bool) -> None:
    mf = multiframe(study[0].StudyInstanceUID, window=window)
    pr = build([boxed(mf, Box(1, 1, 9, 9), frame=2)], [mf])
    if window:
        (voi,) = pr.SoftcopyVOILUTSequence
        assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (128.0, 256.0)
    else:
        assert "SoftcopyVOILUTSequence" not in pr
    assert (float(pr.RescaleSlope), float(pr.RescaleIntercept), pr.RescaleType) == (1.0, 0.0, "US")


def test_per_frame_windows_of_functional_groups_reference_their_frames(study) -> None:
    mf = multiframe(study[0].StudyInstanceUID, window=False)
    groups = []
    for center in (100, 100, 30):  # frames 1 and 2 share a window, frame 3 has its own
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, 200
        group = Dataset()
        group.FrameVOILUTSequence = [voi]
        groups.append(group)
    mf.PerFrameFunctionalGroupsSequence = groups
    pr = build([boxed(mf, Box(1, 1, 9, 9), frame=3)], [mf])
    frames = [v.ReferencedImageSequence[0]["ReferencedFrameNumber"] for v in pr.SoftcopyVOILUTSequence]
    windows = {
        tuple(f.value) if f.VM > 1 else (f.value,): float(v.WindowCenter)
        for f, v in zip(frames, pr.SoftcopyVOILUTSequence, strict=True)
    }
    assert windows == {(1, 2): 100.0, (3,): 30.0}


def test_a_monochrome1_image_is_inverted_and_keeps_its_voi_lut(study) -> None:
    dx = radiograph(study[0].StudyInstanceUID)
    pr = build([boxed(dx, Box(3, 4, 50, 60))], [dx])
    assert pr.PresentationLUTShape == "INVERSE"
    (voi,) = pr.SoftcopyVOILUTSequence
    (lut,) = voi.VOILUTSequence
    assert list(lut.LUTDescriptor) == [256, 0, 16]
    assert np.frombuffer(lut.LUTData, dtype="<u2").tolist() == [i * 256 for i in range(256)]


@pytest.mark.parametrize(
    ("body_part", "laterality", "expected"),
    [
        ("CHEST", None, ("CHEST", False, None)),
        ("BREAST", "L", ("BREAST", True, "L")),
        (None, None, (None, True, None)),
    ],
    ids=["unpaired", "paired", "unknown"],
)
def test_body_part_and_laterality_follow_the_images(study, body_part, laterality, expected) -> None:
    ct1, _, _ = study
    if body_part:
        ct1.BodyPartExamined = body_part
    if laterality:
        ct1.Laterality = laterality
    pr = build([boxed(ct1, Box(1, 1, 9, 9))], [ct1])
    # unpaired: absent; paired: copied; unknown body part: present and empty (Type 2C, unknown)
    assert (pr.get("BodyPartExamined"), "Laterality" in pr, pr.get("Laterality")) == expected


def test_the_builder_leaves_the_images_untouched(study) -> None:
    ct1, ct2, mf = study
    before = copy.deepcopy([ct1, ct2, mf])
    build(ct_findings(ct1, ct2), [ct1, ct2, mf])
    assert [ct1, ct2, mf] == before and "PixelData" in ct1


# --- the tools: dcmpschk (dcmtk) and dciodvfy (dicom3tools) -------------------------------------


@pytest.mark.parametrize("case", ["ct", "multi-frame", "monochrome1"])
def test_dcmpschk_and_dciodvfy_accept_the_presentation_state(study, tmp_path: Path, case: str) -> None:
    dcmpschk = need_tool("dcmpschk")
    ct1, ct2, mf = study
    if case == "ct":
        ct1.BodyPartExamined = ct2.BodyPartExamined = "CHEST"  # unpaired: no Laterality
        pr = build(ct_findings(ct1, ct2), [ct1, ct2], algorithm=ALGORITHM)
    elif case == "multi-frame":
        pr = build([boxed(mf, Box(5, 5, 20, 20), frame=3, confidence=0.5)], [mf])
    else:
        dx = radiograph(ct1.StudyInstanceUID)
        pr = build([boxed(dx, Box(5, 5, 20, 20))], [dx])
    path = write(pr, tmp_path / "pr.dcm")
    result = subprocess.run([dcmpschk, str(path)], check=False, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    # dcmpschk exits 0 either way; it ends with "Test passed." or "Test failed - one or more errors."
    assert result.returncode == 0, output
    assert "Test passed." in output and "failed" not in output, output
    assert dciodvfy_errors(path) == []
    run = subprocess.run([need_tool("dciodvfy"), str(path)], check=False, capture_output=True, text=True,
                         timeout=60)
    print("\n".join(line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Warning")))


# --- errors -----------------------------------------------------------------------------------


def test_a_finding_on_an_instance_outside_images_is_refused(study) -> None:
    ct1, ct2, _ = study
    stray = dataclasses.replace(boxed(ct1, Box(1, 1, 9, 9)), sop_instance_uid=uid())
    rule = rf"sop_instance_uid {stray.sop_instance_uid}, which is not among images"
    with pytest.raises(ValueError, match=rule):
        build([stray], [ct1, ct2])


def test_a_box_outside_its_frame_is_refused_with_box_frame_size_and_instance(study) -> None:
    ct1, _, mf = study
    with pytest.raises(ValueError, match=re.escape("box (10, 10, 70, 20) lies outside the 64x64")) as error:
        build([boxed(ct1, Box(10, 10, 70, 20))], [ct1])
    assert ct1.SOPInstanceUID in str(error.value)
    with pytest.raises(ValueError, match=rf"64x64 .*frame 2 of instance {mf.SOPInstanceUID}"):
        build([boxed(mf, Box(1, 1, 60, 64.5), frame=2)], [mf])


def test_a_frame_the_instance_lacks_is_refused(study) -> None:
    ct1, _, mf = study
    with pytest.raises(ValueError, match=r"on frame 4, but instance .* has 3 frame"):
        build([boxed(mf, Box(1, 1, 9, 9), frame=4)], [mf])
    with pytest.raises(ValueError, match=r"on frame 2, but instance .* has 1 frame"):
        build([boxed(ct1, Box(1, 1, 9, 9), frame=2)], [ct1])


def test_without_any_box_there_is_nothing_to_present(study) -> None:
    ct1, ct2, _ = study
    no_box = [f for f in ct_findings(ct1, ct2) if f.box is None]
    with pytest.raises(ValueError, match=r"none of the 1 finding\(s\) has a box"):
        build(no_box, [ct1, ct2])


def test_images_must_be_presentable_and_of_one_study(study) -> None:
    ct1, _, _ = study
    palette = deidentified(SecondaryCaptureImageStorage, "OT", ct1.StudyInstanceUID, rows=64, columns=64, bits=8)
    palette.PhotometricInterpretation = "PALETTE COLOR"  # neither kind draws on it (test_sr_colour_presentation_state)
    rule = rf"instance {palette.SOPInstanceUID} is PALETTE COLOR with 1 sample\(s\) per pixel: .*MONOCHROME1 or MONOCHROME2"
    with pytest.raises(ValueError, match=rule):
        build([boxed(ct1, Box(1, 1, 9, 9))], [ct1, palette])
    elsewhere = ct_slice(uid())
    with pytest.raises(ValueError, match="covers one study"):
        build([boxed(ct1, Box(1, 1, 9, 9))], [ct1, elsewhere])
    with pytest.raises(ValueError, match="given twice"):
        build([boxed(ct1, Box(1, 1, 9, 9))], [ct1, ct1])


@pytest.mark.parametrize("other", ["size", "polarity", "rescale"])
def test_annotated_images_must_share_size_polarity_and_rescale(study, other: str) -> None:
    ct1, _, mf = study
    odd, match = {
        "size": (ct_slice(ct1.StudyInstanceUID, rows=32), r"\(64x32\) both carry boxes but differ in size"),
        "polarity": (radiograph(ct1.StudyInstanceUID), r"\(MONOCHROME1\) both carry boxes but differ in polarity"),
        "rescale": (mf, r"\(rescale slope 1, intercept -1024\) and .* \(slope 1, intercept 0\) .*in rescale"),
    }[other]
    with pytest.raises(ValueError, match=match):
        build([boxed(ct1, Box(1, 1, 9, 9)), boxed(odd, Box(1, 1, 9, 9))], [ct1, odd])


def test_the_reader_refuses_what_is_not_a_presentation_state(study) -> None:
    with pytest.raises(ValueError, match="not a Grayscale or Color Softcopy Presentation State"):
        read_grounding_presentation_state(study[0])


def test_local_codes_do_not_matter_to_the_drawing(study) -> None:
    ct1, _, _ = study
    local = dataclasses.replace(boxed(ct1, Box(1, 1, 9, 9), label="Shadowing"),
                                code=Code("shadowing", LOCAL_SCHEME, "Shadowing"))
    (read,) = read_grounding_presentation_state(build([local], [ct1]))
    assert read.label == "Shadowing"
