"""The offline baseline on colour images (issue 12 item 4): where the content lies, its size and
mean colour, as a description; on synthetic frames with known answers and on pydicom's own
ultrasound, secondary capture and palette colour files."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UltrasoundImageStorage

from apolo_node.config import VisionSettings
from apolo_node.imaging import model_images
from apolo_node.vision.backend import Context
from apolo_node.vision.baseline import BaselineBackend
from apolo_node.vision.look import look
from tests.sr_evidence import deidentified, uid

ROWS, COLUMNS = 120, 160
RED = (200, 30, 30)
DESCRIPTION = re.compile(
    r"Image content: the largest region differing from the background, \d+x\d+ pixels \(box\), "
    r"[\d.]+ (mm2|pixels) \(\d+% of the frame\); mean colour RGB \(\d+, \d+, \d+\), [a-z ]+; "
    r"\d+% of its pixels are coloured rather than grey\. A description, not a diagnosis\. "
    r"Non-diagnostic baseline\."
)


def colour_image(pixels: np.ndarray, *, spacing: float | None = 0.5) -> Dataset:
    """A de-identified RGB ultrasound image of ``pixels`` (rows, columns, 3) uint8."""
    rows, columns, _ = pixels.shape
    ds = deidentified(UltrasoundImageStorage, "US", uid(), rows=rows, columns=columns, bits=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    if spacing is not None:
        ds.PixelSpacing = [spacing, spacing]
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


def dark_frame(seed: int = 0) -> np.ndarray:
    """A near-black frame with speckle under the content threshold, as an ultrasound's surround."""
    noise = np.random.default_rng(seed).integers(0, 12, size=(ROWS, COLUMNS, 3))
    return noise.astype(np.uint8)


def with_rectangle(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    frame = frame.copy()
    frame[30:70, 40:120] = colour  # rows 30..69, columns 40..119: 40 x 80 pixels
    return frame


def describe(ds: Dataset, **kwargs: object):
    (image,) = model_images(ds, **kwargs)  # type: ignore[arg-type]
    return BaselineBackend().describe(image, Context(modality=str(ds.Modality))).findings


def test_a_coloured_object_is_boxed_with_its_size_and_mean_colour() -> None:
    (found,) = describe(colour_image(with_rectangle(dark_frame(), RED)))
    assert found.label == "Image content"
    assert found.box == pytest.approx((40 / COLUMNS, 30 / ROWS, 120 / COLUMNS, 70 / ROWS))
    assert found.measurements == (("Area", pytest.approx(40 * 80 * 0.25), "mm2"),)
    assert DESCRIPTION.fullmatch(found.description), found.description
    assert "80x40 pixels (box), 800.0 mm2 (17% of the frame)" in found.description
    assert "mean colour RGB (200, 30, 30), red; 100% of its pixels are coloured" in found.description


def test_grey_content_on_a_white_background_is_called_grey_and_sized_in_pixels() -> None:
    white = np.full((ROWS, COLUMNS, 3), 250, np.uint8)
    (found,) = describe(colour_image(with_rectangle(white, (90, 90, 90)), spacing=None))
    assert found.box == pytest.approx((40 / COLUMNS, 30 / ROWS, 120 / COLUMNS, 70 / ROWS))
    assert found.measurements == ()  # no pixel spacing: no area in mm2
    assert "3200 pixels" in found.description and "mean colour RGB (90, 90, 90), grey;" in found.description
    assert "0% of its pixels are coloured" in found.description


def test_on_a_scaled_down_view_the_box_is_still_in_fractions_of_the_source() -> None:
    big = np.kron(with_rectangle(dark_frame(), RED), np.ones((4, 4, 1), np.uint8))  # 480 x 640
    (found,) = describe(colour_image(big), max_pixels=160 * 120)
    assert found.box == pytest.approx((40 / COLUMNS, 30 / ROWS, 120 / COLUMNS, 70 / ROWS), abs=1 / COLUMNS)
    (_, area, _), = found.measurements
    assert area == pytest.approx(160 * 320 * 0.25, rel=0.03)


def test_a_blank_or_speckled_frame_says_nothing() -> None:
    assert describe(colour_image(dark_frame())) == ()
    specks = dark_frame()
    specks[10:13, 10:13] = RED  # 9 pixels: under the smallest region
    assert describe(colour_image(specks)) == ()


def test_tiles_of_a_colour_frame_are_not_described_again() -> None:
    (image,) = model_images(colour_image(with_rectangle(dark_frame(), RED)))
    tile = dataclasses.replace(image, tile=1)
    assert BaselineBackend().describe(tile, Context(modality="US")).findings == ()


def test_the_stage_maps_the_colour_box_to_source_pixels() -> None:
    ds = colour_image(with_rectangle(dark_frame(), RED))
    result = look(BaselineBackend(), [ds], VisionSettings(tiling="off"))
    (finding,) = result.findings
    assert finding.box is not None and finding.box.as_list() == pytest.approx([40, 30, 120, 70])
    assert finding.sop_instance_uid == ds.SOPInstanceUID and "Non-diagnostic" in result.disclaimer


@pytest.mark.parametrize(
    ("name", "within"),
    [
        # the 2D ultrasound with its colour Doppler: the image and its burned-in header text
        ("US1_UNCR.dcm", (0, 20, 640, 340)),
        ("US1_J2KR.dcm", (0, 20, 640, 340)),  # the same image, YBR_RCT in JPEG 2000
        ("SC_rgb.dcm", (0, 0, 100, 100)),  # colour bars
        ("color3d_jpeg_baseline.dcm", (150, 30, 500, 420)),  # echocardiogram, YBR_FULL_422 JPEG, 120 frames
        ("OBXXXX1A.dcm", (0, 0, 800, 600)),  # PALETTE COLOR
    ],
)
def test_pydicoms_colour_files_get_one_described_box(name: str, within: tuple[int, int, int, int]) -> None:
    ds = dcmread(get_testdata_file(name))
    (found,) = describe(ds)
    assert DESCRIPTION.fullmatch(found.description), found.description
    x1, y1, x2, y2 = found.box
    columns, rows = int(ds.Columns), int(ds.Rows)
    box = (x1 * columns, y1 * rows, x2 * columns, y2 * rows)
    assert within[0] <= box[0] < box[2] <= within[2] and within[1] <= box[1] < box[3] <= within[3], box
    assert (box[2] - box[0]) * (box[3] - box[1]) >= 0.05 * columns * rows  # not a speck
