"""Color Softcopy Presentation State of grounding boxes on colour images (issue 12 item 4): built
from findings, checked by dcmpschk and dciodvfy, read back from bytes; on synthetic images and on
pydicom's own ultrasound and secondary capture files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    ColorSoftcopyPresentationStateStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from apolo_node.findings import Box
from apolo_node.sr import GroundingBox, presentable, read_grounding_presentation_state
from apolo_node.sr.presentation_state import SRGB_PROFILE
from tests.peer_fixtures import dciodvfy_errors, need_tool
from tests.sr_evidence import deidentified, uid
from tests.test_sr_presentation_state import ALGORITHM, boxed, build, ct_slice, write

GRAYSCALE_ONLY = ("RescaleSlope", "SoftcopyVOILUTSequence", "PresentationLUTShape")


def colour(study: str, photometric: str = "RGB", *, frames: int = 1, rows: int = 48, columns: int = 64) -> Dataset:
    """A de-identified colour ultrasound image: a dark frame with an orange square."""
    sop_class = UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage
    ds = deidentified(sop_class, "US", study, rows=rows, columns=columns, bits=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, 0
    pixels = np.zeros((frames, rows, columns, 3), np.uint8)
    pixels[:, 10:30, 20:40] = (230, 140, 20)
    if frames > 1:
        ds.NumberOfFrames, ds.FrameIncrementPointer, ds.FrameTime = frames, 0x00181063, 40
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.fixture
def study() -> str:
    return uid()


def test_boxes_on_a_colour_image_make_a_color_presentation_state_that_reads_back(study, tmp_path) -> None:
    us = colour(study)
    findings = [boxed(us, Box(20, 10, 40, 30), label="Image content", confidence=0.5),
                boxed(us, Box(0.5, 1.25, 63, 47.5), label="Whole")]
    pr = build(findings, [us], algorithm=ALGORITHM)
    assert (pr.SOPClassUID, pr.Modality, pr.StudyInstanceUID) == (ColorSoftcopyPresentationStateStorage, "PR", study)
    assert not any(k in pr for k in GRAYSCALE_ONLY)  # no grayscale pipeline in a colour state
    assert pr.ICCProfile == SRGB_PROFILE and SRGB_PROFILE[12:16] == b"spac"  # sRGB, a conversion profile
    (layer,) = pr.GraphicLayerSequence
    assert layer.GraphicLayer == "AI FINDINGS" and len(layer.GraphicLayerRecommendedDisplayCIELabValue) == 3
    (area,) = pr.DisplayedAreaSelectionSequence
    assert list(area.DisplayedAreaBottomRightHandCorner) == [64, 48]
    read = read_grounding_presentation_state(dcmread(write(pr, tmp_path / "pr.dcm")))
    assert read == [
        GroundingBox("Image content (50%)", us.SOPInstanceUID, 1, Box(20, 10, 40, 30)),
        GroundingBox("Whole", us.SOPInstanceUID, 1, Box(0.5, 1.25, 63, 47.5)),
    ]


def test_on_a_colour_multi_frame_image_each_annotation_names_its_frame(study) -> None:
    cine = colour(study, "YBR_FULL", frames=4)
    pr = build([boxed(cine, Box(1, 1, 9, 9), frame=4), boxed(cine, Box(2, 2, 8, 8), frame=2)], [cine])
    assert pr.SOPClassUID == ColorSoftcopyPresentationStateStorage
    assert [g.frame for g in read_grounding_presentation_state(pr)] == [4, 2]


def test_the_images_own_icc_profile_is_carried_and_two_different_ones_are_refused(study) -> None:
    first, second = colour(study), colour(study)
    at = SRGB_PROFILE.index("sRGB".encode("utf-16-be"))  # in its description: another valid profile
    first.ICCProfile = second.ICCProfile = SRGB_PROFILE[:at] + "SRGB".encode("utf-16-be") + SRGB_PROFILE[at + 8:]
    pr = build([boxed(first, Box(1, 1, 9, 9)), boxed(second, Box(1, 1, 9, 9))], [first, second])
    assert pr.ICCProfile == first.ICCProfile != SRGB_PROFILE
    second.ICCProfile = SRGB_PROFILE
    with pytest.raises(ValueError, match="2 annotated colour instances carry different ICC profiles"):
        build([boxed(first, Box(1, 1, 9, 9)), boxed(second, Box(1, 1, 9, 9))], [first, second])


def test_rgb_and_ybr_images_of_one_size_share_one_colour_state(study) -> None:
    rgb, ybr = colour(study), colour(study, "YBR_FULL_422")
    pr = build([boxed(rgb, Box(1, 1, 9, 9)), boxed(ybr, Box(3, 3, 9, 9))], [rgb, ybr])
    assert {g.sop_instance_uid for g in read_grounding_presentation_state(pr)} == {rgb.SOPInstanceUID, ybr.SOPInstanceUID}
    small = colour(study, rows=32)
    with pytest.raises(ValueError, match=r"\(64x32\) both carry boxes but differ in size"):
        build([boxed(rgb, Box(1, 1, 9, 9)), boxed(small, Box(1, 1, 9, 9))], [rgb, small])


def test_colour_and_grayscale_boxes_never_share_a_state(study) -> None:
    us, ct = colour(study, rows=64), ct_slice(study)
    with pytest.raises(ValueError, match="one is colour and one grayscale: a presentation state is one or the other"):
        build([boxed(ct, Box(1, 1, 9, 9)), boxed(us, Box(1, 1, 9, 9))], [ct, us])
    # an unannotated colour image beside the annotated CT: a grayscale state, referencing the CT only
    pr = build([boxed(ct, Box(1, 1, 9, 9))], [ct, us])
    assert pr.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage
    assert [g.sop_instance_uid for g in read_grounding_presentation_state(pr)] == [ct.SOPInstanceUID]


@pytest.mark.parametrize(
    ("photometric", "samples", "expected"),
    [
        ("MONOCHROME2", 1, True), ("MONOCHROME1", 1, True), ("RGB", 3, True), ("YBR_FULL", 3, True),
        ("YBR_FULL_422", 3, True), ("YBR_RCT", 3, True), ("PALETTE COLOR", 1, False), ("RGB", 1, False),
        ("MONOCHROME2", 3, False), ("ARGB", 4, False), (None, 1, False),
    ],
)
def test_which_images_a_presentation_state_can_draw_on(photometric, samples, expected) -> None:
    ds = Dataset()
    ds.SamplesPerPixel = samples
    if photometric:
        ds.PhotometricInterpretation = photometric
    assert presentable(ds) is expected


def test_a_palette_colour_image_is_refused_by_name(study) -> None:
    palette = dcmread(get_testdata_file("OBXXXX1A.dcm"), stop_before_pixels=True)
    with pytest.raises(ValueError, match=rf"{palette.SOPInstanceUID} is PALETTE COLOR with 1 sample\(s\) per pixel"):
        build([boxed(palette, Box(1, 1, 9, 9))], [palette])


# --- the tools: dcmpschk (dcmtk) and dciodvfy (dicom3tools) -------------------------------------


def checked(pr: Dataset, path: Path) -> None:
    """dcmpschk passes the file and dciodvfy finds no error in it."""
    write(pr, path)
    run = subprocess.run([need_tool("dcmpschk"), str(path)], check=False, capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "Test passed." in output and "failed" not in output, output
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize(
    ("name", "frame", "box"),
    [
        ("synthetic-rgb", 1, Box(20, 10, 40, 30)),
        ("synthetic-ybr-cine", 3, Box(20, 10, 40, 30)),
        ("US1_UNCR.dcm", 1, Box(0, 108, 632, 338)),  # ultrasound with colour Doppler, RGB
        ("US1_J2KR.dcm", 1, Box(0, 108, 632, 338)),  # the same, YBR_RCT in JPEG 2000
        ("SC_rgb.dcm", 1, Box(0, 20, 100, 100)),  # secondary capture, colour bars
        ("color3d_jpeg_baseline.dcm", 60, Box(250, 49, 448, 315)),  # echo cine, YBR_FULL_422, 120 frames
    ],
)
def test_dcmpschk_and_dciodvfy_accept_the_colour_presentation_state(study, tmp_path, name, frame, box) -> None:
    if name.startswith("synthetic"):
        image = colour(study) if name == "synthetic-rgb" else colour(study, "YBR_FULL", frames=3)
    else:
        image = dcmread(get_testdata_file(name), stop_before_pixels=True)
    pr = build([boxed(image, box, frame=frame, label="Image content", confidence=0.9)], [image], algorithm=ALGORITHM)
    assert pr.SOPClassUID == ColorSoftcopyPresentationStateStorage
    checked(pr, tmp_path / "pr.dcm")
    (read,) = read_grounding_presentation_state(dcmread(tmp_path / "pr.dcm"))
    assert (read.sop_instance_uid, read.frame, read.box) == (image.SOPInstanceUID, frame, box)
