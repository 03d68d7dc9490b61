"""Whole-slide images: one pyramid level chosen, its tiles read frame by frame; the slide's label
and overview photographs never shown to a model."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from apolo_node.config import VisionSettings
from apolo_node.imaging import VL_WHOLE_SLIDE, choose_level
from apolo_node.imaging.slides import levels
from apolo_node.vision.baseline import BaselineBackend
from apolo_node.vision.look import choose_instances, look

TILE = 64


def slide_instance(series: str, side: int, flavor: str = "VOLUME") -> Dataset:
    """One level of a TILED_FULL slide: ``side`` x ``side`` pixels in 64-pixel RGB tiles."""
    across = -(-side // TILE)
    frames = across * across
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = VL_WHOLE_SLIDE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.77", series
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL" if flavor in ("LABEL", "OVERVIEW") else "DERIVED", "PRIMARY", flavor, "NONE"]
    ds.Rows = ds.Columns = TILE
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = side
    ds.NumberOfFrames = frames
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pixels = np.zeros((frames, TILE, TILE, 3), np.uint8)
    pixels[..., 0] = (np.arange(frames, dtype=np.uint8) * 7)[:, None, None]  # each tile its own shade
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.fixture
def slide() -> list[Dataset]:
    series = generate_uid()
    return [
        slide_instance(series, 64, "LABEL"),
        slide_instance(series, 128),  # 4 tiles
        slide_instance(series, 512),  # 64 tiles: full resolution
        slide_instance(series, 256),  # 16 tiles
        slide_instance(series, 96, "OVERVIEW"),
        slide_instance(series, 32, "THUMBNAIL"),
    ]


def test_levels_are_the_pyramid_finest_first(slide: list[Dataset]) -> None:
    assert [int(h.TotalPixelMatrixColumns) for h in levels(slide)] == [512, 256, 128, 32]


@pytest.mark.parametrize(
    "level, max_frames, side",
    [(-1, 16, 256), (-1, 64, 512), (-1, 4, 128), (-1, 0, 32), (0, 16, 512), (2, 16, 128), (9, 16, 32)],
)
def test_the_level_read_is_the_one_asked_or_the_finest_that_fits(
    slide: list[Dataset], level: int, max_frames: int, side: int
) -> None:
    chosen = choose_level(slide, level, max_frames)
    assert chosen is not None and int(chosen.TotalPixelMatrixColumns) == side


def test_a_series_of_only_label_and_overview_images_shows_a_model_nothing(slide: list[Dataset]) -> None:
    photos = [h for h in slide if h.ImageType[2] in ("LABEL", "OVERVIEW")]
    assert choose_level(photos) is None
    assert choose_instances(photos, VisionSettings()) == []


def test_every_tile_of_the_chosen_level_is_a_model_image_and_nothing_else(slide: list[Dataset]) -> None:
    settings = VisionSettings(max_frames=16)  # frames = middle would pick one tile of anything else
    (chosen,) = choose_instances(slide, settings)
    assert int(chosen.TotalPixelMatrixColumns) == 256
    result = look(BaselineBackend(), [chosen], settings)
    assert result.images == 16 and result.skipped == ()
    # a level with more tiles than max_frames is read at max_frames evenly spaced tiles
    assert look(BaselineBackend(), [slide[2]], settings).images == 16


def test_other_series_of_the_study_keep_their_own_choice(slide: list[Dataset]) -> None:
    other = slide_instance(generate_uid(), 128)
    other.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic, multi-frame
    chosen = choose_instances([*slide, other], VisionSettings(max_frames=16))
    assert [h.SOPInstanceUID for h in chosen] == [slide[3].SOPInstanceUID, other.SOPInstanceUID]
