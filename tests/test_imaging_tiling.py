"""Dynamic tiling: which frames are tiled and how, tiles mapped back to source pixels, boxes
of a tiled frame merged, and a small object on a 4096x4096 radiograph that only tiling finds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from apolo_node.config import TILINGS, ConfigError, VisionSettings, load
from apolo_node.findings import Box, Code, Finding
from apolo_node.imaging import TILINGS as IMAGING_TILINGS
from apolo_node.imaging import Tile, model_images, plan
from apolo_node.imaging.tiling import AUTO_FACTOR, MAX_TILE_ASPECT
from apolo_node.vision.baseline import BaselineBackend, refine
from apolo_node.vision.look import look
from apolo_node.vision.merge import Seen, merge, overlaps

MP = 1_048_576
TOML = Path(__file__).resolve().parents[1] / "config" / "apolo.toml"


def test_config_and_imaging_name_the_same_tilings() -> None:
    assert TILINGS == IMAGING_TILINGS == ("off", "auto", "always")


@pytest.mark.parametrize(
    "columns, rows, tiling, tiled",
    [
        (4096, 4096, "auto", True),
        (3000, 2500, "auto", True),  # 7.5 MP
        (2048, 2048, "auto", False),  # exactly 4 MP: shown at half resolution, not less
        (2049, 2048, "auto", True),
        (1200, 1000, "auto", False),
        (1200, 1000, "always", True),
        (1024, 1024, "always", False),  # fits the budget: nothing to gain
        (4096, 4096, "off", False),
    ],
)
def test_which_frames_are_tiled(columns: int, rows: int, tiling: str, tiled: bool) -> None:
    assert bool(plan(columns, rows, MP, tiling)) == tiled
    assert AUTO_FACTOR == 4


@pytest.mark.parametrize("columns, rows", [(4096, 4096), (3000, 2500), (3328, 4096), (10000, 500), (2049, 2048)])
@pytest.mark.parametrize("max_tiles, overlap", [(6, 0.125), (9, 0.25), (2, 0.0)])
def test_tiles_cover_the_frame_overlap_their_neighbours_and_stay_in_bounds(
    columns: int, rows: int, max_tiles: int, overlap: float
) -> None:
    tiles = plan(columns, rows, MP, "auto", max_tiles, overlap)
    assert 2 <= len(tiles) <= max_tiles
    covered = np.zeros((rows, columns), dtype=bool)
    for t in tiles:
        assert t.left >= 0 and t.top >= 0 and t.left + t.columns <= columns and t.top + t.rows <= rows
        covered[t.top : t.top + t.rows, t.left : t.left + t.columns] = True
    assert covered.all()
    lefts = sorted({t.left for t in tiles})
    width = tiles[0].columns
    for a, b in zip(lefts, lefts[1:]):  # neighbours share at least `overlap` of a side
        assert a + width - b >= math.floor(overlap * width)
    if columns / rows <= 3:  # a grid of tiles no longer than twice their width exists
        assert max(width / tiles[0].rows, tiles[0].rows / width) <= MAX_TILE_ASPECT


def test_plan_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="tiling must be one of off, auto, always, got 'some'"):
        plan(4096, 4096, MP, "some")
    with pytest.raises(ValueError, match="tile overlap must be a fraction"):
        plan(4096, 4096, MP, "auto", 6, 1.0)


def radiograph(size: int, objects: list[tuple[int, int, int]], monochrome1: bool = False) -> Dataset:
    """A size x size 12-bit DX: air, an elliptical body, and dense squares (x, y, side)."""
    yy, xx = np.ogrid[0:size, 0:size]
    pixels = np.full((size, size), 200, np.uint16)
    pixels[((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.38 * size)) ** 2 <= 1] = 1200
    for x, y, side in objects:
        pixels[y : y + side, x : x + side] = 4000
    if monochrome1:
        pixels = 4095 - pixels
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = pixels.tobytes()
    return ds


def test_a_tile_shows_its_region_and_maps_back_to_it() -> None:
    ds = radiograph(2100, [(1500, 300, 40)])
    images = list(model_images(ds, max_pixels=500_000, tiling="auto", max_tiles=4))
    assert [i.tile for i in images] == list(range(len(images))) and len(images) > 2
    whole, tiles = images[0], images[1:]
    assert whole.transform.columns == 2100 and whole.frame_size is None
    for image in tiles:
        t = image.transform
        assert image.frame_size == (2100, 2100)
        assert image.values is not None and image.values.shape == (t.rows, t.columns)
        assert image.image.size == (t.width, t.height) and t.width * t.height <= 500_000
        # the tile's values are the source's, from its corner on
        assert image.values[0, 0] == float(np.frombuffer(ds.PixelData, np.uint16)[t.top * 2100 + t.left])
        assert t.fraction_to_source((0.0, 0.0, 1.0, 1.0)) == (t.left, t.top, t.left + t.columns, t.top + t.rows)
        assert t.model_to_source(t.width, 0) == (t.left + t.columns, t.top)


def test_a_box_on_a_seam_is_cut_and_one_inside_is_not() -> None:
    ds = radiograph(2100, [])
    tiles = list(model_images(ds, max_pixels=500_000, tiling="auto", max_tiles=4))[1:]
    first = tiles[0].transform  # top left: its right and bottom edges are seams
    inside = (100.0, 100.0, 200.0, 200.0)
    on_seam = (first.columns - 50.0, 100.0, float(first.columns), 200.0)
    on_frame_edge = (0.0, 100.0, 50.0, 200.0)
    assert not tiles[0].cut(inside) and tiles[0].cut(on_seam) and not tiles[0].cut(on_frame_edge)


def finding(label: str, box: tuple[float, float, float, float] | None, uid: str, frame: int = 1,
            confidence: float | None = None) -> Finding:
    return Finding(
        tracking_uid=uid, label=label, code=Code("1", "99APOLO", label), sop_instance_uid="2.25.9",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1", frame=frame, description=label,
        box=Box(*box) if box else None, confidence=confidence,
    )


def test_a_whole_tile_box_replaces_the_coarse_view_and_the_tiles_that_cut_it() -> None:
    seen = [
        Seen(finding("Nodule", (96, 96, 124, 124), "2.25.1"), tile=0, order=0),  # coarse
        Seen(finding("nodule", (100, 100, 120, 120), "2.25.2", confidence=0.6), tile=1, order=1),
        Seen(finding("Nodule", (100, 100, 110, 120), "2.25.3", confidence=0.9), tile=2, order=2, cut=True),
        Seen(finding("Effusion", (100, 100, 120, 120), "2.25.4"), tile=1, order=3),  # other label
        Seen(finding("Nodule", (900, 900, 920, 920), "2.25.5"), tile=3, order=4),  # elsewhere
        Seen(finding("Nodule", None, "2.25.6"), tile=2, order=5),
    ]
    merged = merge(seen)
    assert [(f.tracking_uid, f.box.as_list() if f.box else None) for f in merged] == [
        ("2.25.2", [100, 100, 120, 120]),
        ("2.25.4", [100, 100, 120, 120]),
        ("2.25.5", [900, 900, 920, 920]),
        ("2.25.6", None),
    ]


def test_halves_of_an_object_on_a_seam_become_their_union() -> None:
    seen = [
        Seen(finding("Wire", (300, 50, 460, 70), "2.25.1", confidence=0.5), tile=1, order=0, cut=True),
        Seen(finding("Wire", (420, 52, 700, 68), "2.25.2", confidence=0.7), tile=2, order=1, cut=True),
    ]
    (one,) = merge(seen)
    assert one.tracking_uid == "2.25.2" and one.box.as_list() == [300, 50, 700, 70]


def test_frames_that_were_not_tiled_keep_every_box() -> None:
    seen = [
        Seen(finding("Nodule", (100, 100, 120, 120), "2.25.1"), tile=0, order=0),
        Seen(finding("Nodule", (101, 101, 121, 121), "2.25.2"), tile=0, order=1),
        Seen(finding("Nodule", (101, 101, 121, 121), "2.25.3", frame=2), tile=1, order=2),
    ]
    assert [f.tracking_uid for f in merge(seen)] == ["2.25.1", "2.25.2", "2.25.3"]


def test_overlap_is_measured_on_the_smaller_box() -> None:
    assert overlaps(Box(0, 0, 100, 100), Box(90, 0, 110, 10))  # half of the small one
    assert not overlaps(Box(0, 0, 100, 100), Box(95, 0, 115, 10))  # a quarter
    assert not overlaps(Box(0, 0, 10, 10), Box(10, 0, 20, 10))  # touching is not sharing


def test_refine_draws_the_box_at_half_height_over_the_surroundings() -> None:
    values = np.full((60, 60), 100.0)
    values[20:31, 25:33] = 900.0
    assert refine(values, (22, 18, 36, 34), 6) == (25, 20, 33, 31)
    assert refine(-values, (22, 18, 36, 34), 6) == (25, 20, 33, 31)  # dense shown dark
    assert refine(np.full((60, 60), 5.0), (22, 18, 36, 34), 6) is None


@pytest.mark.parametrize("monochrome1", [False, True])
def test_only_tiling_finds_a_small_dense_object_on_a_4096_radiograph(monochrome1: bool) -> None:
    """12 x 12 pixels (1.2 mm at 0.1 mm) of metal: 3 x 3 pixels in the 1024 x 1024 whole view,
    too few to be told from noise; whole in a tile shown at 0.57 of the source."""
    x, y, side = 2901, 1303, 12
    ds = radiograph(4096, [(x, y, side)], monochrome1)
    settings = VisionSettings()  # the defaults: auto tiling, 6 tiles
    tiled = look(BaselineBackend(), [ds], settings)
    assert tiled.images == 1 + len(plan(4096, 4096, settings.max_pixels, "auto"))
    near = [f for f in tiled.findings if f.box and abs(f.box.x1 - x) < side and abs(f.box.y1 - y) < side]
    (found,) = near
    errors = np.abs(np.array(found.box.as_list()) - [x, y, x + side, y + side])
    assert errors.max() <= 0.1 * side
    single = look(BaselineBackend(), [ds], VisionSettings(tiling="off"))
    assert single.images == 1
    assert not [f for f in single.findings if f.box and f.box.x1 < x + side and f.box.x2 > x and f.box.y1 < y + side and f.box.y2 > y]


def test_tiles_get_their_own_stable_tracking_uids() -> None:
    ds = radiograph(1200, [(150, 550, 8), (1000, 550, 8)])
    settings = VisionSettings(max_pixels=90_000)
    first = look(BaselineBackend(), [ds], settings)
    again = look(BaselineBackend(), [ds], settings)
    uids = [f.tracking_uid for f in first.findings]
    assert sorted(f.box.as_list() for f in first.findings) == [[150, 550, 158, 558], [1000, 550, 1008, 558]]
    assert len(set(uids)) == 2
    assert uids == [f.tracking_uid for f in again.findings]


def test_tile_is_a_region_of_source_pixels() -> None:
    assert Tile(1, 2, 3, 4) == Tile(left=1, top=2, columns=3, rows=4)


@pytest.mark.parametrize(
    "env, match",
    [
        ({"APOLO_VISION__TILING": "sometimes"}, r"\[vision\] tiling must be one of off, auto, always, got 'sometimes'"),
        ({"APOLO_VISION__MAX_TILES": "0"}, r"\[vision\] max_tiles must be 1-64 and tile_overlap 0-0.5, got 0"),
        ({"APOLO_VISION__TILE_OVERLAP": "0.6"}, r"tile_overlap 0-0.5, got 6 and 0.6"),
        ({"APOLO_VISION__PROFILE": "llava"}, r"\[vision\] profile must be one of auto, apolo, .*got 'llava'"),
    ],
)
def test_bad_vision_settings_are_refused_by_name(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(TOML, env=env)


@pytest.mark.parametrize(
    "env",
    [{"APOLO_VISION__TILING": "always", "APOLO_VISION__MAX_TILES": "1", "APOLO_VISION__TILE_OVERLAP": "0"},
     {"APOLO_VISION__TILING": "off", "APOLO_VISION__MAX_TILES": "64", "APOLO_VISION__TILE_OVERLAP": "0.5"},
     {"APOLO_VISION__PROFILE": "deepseek_vl2"}],
)
def test_vision_settings_at_their_bounds_are_taken(env: dict[str, str]) -> None:
    vision = load(TOML, env=env).vision
    assert vision.tiling == env.get("APOLO_VISION__TILING", "auto")
    assert vision.profile == env.get("APOLO_VISION__PROFILE", "auto")


def test_wsi_level_is_refused_below_minus_one_and_taken_from_there() -> None:
    with pytest.raises(ConfigError, match=r"\[vision\] wsi_level must be -1 \(auto\) or a level >= 0, got -2"):
        load(TOML, env={"APOLO_VISION__WSI_LEVEL": "-2"})
    assert load(TOML, env={"APOLO_VISION__WSI_LEVEL": "-1"}).vision.wsi_level == -1
    assert load(TOML, env={"APOLO_VISION__WSI_LEVEL": "0"}).vision.wsi_level == 0


def test_a_flood_of_boxes_passes_unmerged_in_bounded_time() -> None:
    import time

    from apolo_node.vision.merge import MAX_GROUP

    seen = [Seen(finding("Dot", (i, i, i + 50, i + 50), f"2.25.{i}"), tile=1, order=i) for i in range(MAX_GROUP + 1)]
    started = time.perf_counter()
    assert len(merge(seen)) == MAX_GROUP + 1
    assert time.perf_counter() - started < 1.0
    assert len(merge(seen[:MAX_GROUP])) == 1  # under the bound they chain into one object


def test_tiles_are_told_they_are_regions_and_their_repeated_prose_is_kept_once() -> None:
    from apolo_node.vision import prompts
    from apolo_node.vision.backend import Context, Described, VisionBackend

    class Echo(VisionBackend):
        """Answers every image with the same prose and trace, and records the prompts."""

        algorithm = BaselineBackend().algorithm

        def __init__(self) -> None:
            self.asked: list[str] = []

        def describe_batch(self, images, contexts):  # noqa: ANN001, ANN201
            self.asked += [prompts.user_prompt(c) for c in contexts]
            return [Described(free_text=("No acute abnormality.",), trace=("Looked twice.",)) for _ in images]

    ds = radiograph(1200, [])
    echo = Echo()
    result = look(echo, [ds], VisionSettings(max_pixels=90_000))
    assert result.images == len(echo.asked) > 1
    assert "enlarged region" not in echo.asked[0] and all("enlarged region" in a for a in echo.asked[1:])
    assert result.free_text == ("No acute abnormality.",) and result.trace == ("Looked twice.",)
    assert Context().tile == 0


def test_a_transform_with_an_offset_maps_into_its_region_and_refuses_negative_offsets() -> None:
    from apolo_node.imaging import Transform

    t = Transform(columns=400, rows=300, width=200, height=150, left=1000, top=2000)
    assert t.fraction_to_source((0.5, 0.5, 2.0, 1.0)) == (1200.0, 2150.0, 1400.0, 2300.0)  # clipped to it
    assert t.model_to_source(100, 75) == (1200.0, 2150.0)
    with pytest.raises(ValueError, match="offsets >= 0"):
        Transform(columns=4, rows=3, width=2, height=1, left=-1)


def test_a_colour_frame_is_tiled_with_its_colours() -> None:
    ds = radiograph(600, [])
    rgb = np.zeros((600, 600, 3), np.uint8)
    rgb[:300, :300], rgb[:300, 300:] = (200, 30, 30), (30, 30, 200)  # red, blue
    rgb[300:, :300], rgb[300:, 300:] = (30, 200, 30), (220, 220, 220)  # green, white
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    del ds.WindowCenter, ds.WindowWidth
    ds.PixelData = rgb.tobytes()
    whole, *tiles = model_images(ds, max_pixels=40_000, tiling="always", max_tiles=4)
    assert len(tiles) >= 2 and all(t.values is None and t.image.mode == "RGB" for t in tiles)
    for tile in tiles:  # each tile shows the colours of its own region of the source
        t = tile.transform
        source = rgb[t.top : t.top + t.rows, t.left : t.left + t.columns].reshape(-1, 3).mean(axis=0)
        assert np.asarray(tile.image).reshape(-1, 3).mean(axis=0) == pytest.approx(source, abs=3)
    means = {tuple(np.asarray(t.image).reshape(-1, 3).mean(axis=0).round()) for t in tiles}
    assert len(means) == len(tiles)  # every tile shows another part, so the check above means something
