"""Pixels to model input: LUTs, MONOCHROME1, colour, frames, scaling and the transform back."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from apolo_node.imaging import ImagingError, Transform, fit, model_images, select_frames, window
from tests.image_cases import CASES, Case, build
from tests.synthetic import PHANTOM, ct_slice, disc, enhanced_ct_phantom, new_marker


@pytest.mark.parametrize(
    ("count", "selection", "max_frames", "expected"),
    [
        (1, "middle", 16, [1]),
        (3, "middle", 16, [2]),
        (4, "middle", 16, [2]),
        (7, "first", 16, [1]),
        (5, "all", 16, [1, 2, 3, 4, 5]),
        (100, "all", 4, [1, 34, 67, 100]),
        (9, "all", 1, [5]),
    ],
)
def test_frame_selection(count: int, selection: str, max_frames: int, expected: list[int]) -> None:
    assert select_frames(count, selection, max_frames) == expected


def test_a_bad_frame_selection_names_the_choices() -> None:
    with pytest.raises(ImagingError, match="first.*middle.*all.*'random'"):
        select_frames(3, "random")


@pytest.mark.parametrize(
    ("size", "budget", "expected"),
    [((512, 512), 1_048_576, (512, 512)), ((2048, 1536), 1_048_576, (1182, 886)), ((3000, 10), 3000, (948, 3))],
)
def test_frames_are_scaled_down_with_their_aspect_never_up(
    size: tuple[int, int], budget: int, expected: tuple[int, int]
) -> None:
    width, height = fit(*size, budget)
    assert (width, height) == expected
    assert width * height <= budget
    assert abs(width / size[0] - height / size[1]) <= 1 / height  # same scale, to a pixel


def test_a_fraction_box_maps_to_source_pixels_clipped_to_the_frame() -> None:
    t = Transform(columns=2048, rows=1536, width=1182, height=886)
    assert t.fraction_to_source((0.25, 0.5, 0.75, 1.0)) == pytest.approx((512, 768, 1536, 1536))
    assert t.fraction_to_source((0.75, 1.2, -0.1, 0.5)) == pytest.approx((0, 768, 1536, 1536))
    assert t.fraction_to_source((0.3, 0.3, 0.3, 0.6)) is None  # no width
    assert t.fraction_to_source((float("nan"), 0, 1, 1)) is None
    assert t.model_to_source(591, 443) == pytest.approx((1024, 768))


@pytest.mark.parametrize(
    ("value", "center", "width", "function", "expected"),
    [
        (-160.0, 40, 400, "LINEAR", 0.0),  # c - 0.5 - (w - 1) / 2
        (39.5, 40, 400, "LINEAR", 0.5),
        (239.0, 40, 400, "LINEAR", 1.0),  # c - 0.5 + (w - 1) / 2
        (40.0, 40, 400, "LINEAR_EXACT", 0.5),
        (-160.0, 40, 400, "LINEAR_EXACT", 0.0),
        (40.0, 40, 400, "SIGMOID", 0.5),
        (240.0, 40, 400, "SIGMOID", 1 / (1 + np.exp(-2))),
    ],
)
def test_windowing_follows_ps3_3_c_11_2_1_2(
    value: float, center: float, width: float, function: str, expected: float
) -> None:
    assert window(np.array([value]), center, width, function)[0] == pytest.approx(expected)


def ct(**attrs: object) -> Dataset:
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=10, marker=new_marker(), rows=64, columns=64)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def test_ct_goes_through_rescale_then_the_first_of_several_windows() -> None:
    # Stored 1074 in the body, 24 outside; intercept -1024: 50 HU and -1000 HU.
    ds = ct(WindowCenter=[50, 500], WindowWidth=[101, 2000])
    (image,) = model_images(ds)
    pixels = np.asarray(image.image)
    assert image.values is not None and image.values[32, 32] == 50.0 and image.values[0, 0] == -1000.0
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[32, 32]) == (129, 129, 129)  # (50 - (50 - 0.5 - 50)) / 100 = 0.505 of 255
    assert tuple(pixels[0, 0]) == (0, 0, 0)  # the second window would have shown air as 28


def test_a_voi_lut_sequence_wins_over_windows() -> None:
    ds = ct(WindowCenter=50, WindowWidth=101)
    item = Dataset()
    item.LUTDescriptor = [4096, -1024, 12]  # first input value -1024 HU, 12-bit output
    item.LUTData = list(range(4095, -1, -1))  # an inverting LUT: air bright, tissue darker
    ds.VOILUTSequence = [item]
    (image,) = model_images(ds)
    pixels = np.asarray(image.image)[..., 0]
    assert pixels[0, 0] == 254  # -1000 HU is entry 24: 4071 / 4095 of 255
    assert pixels[0, 0] > pixels[32, 32]


def test_without_a_window_the_frame_range_is_shown() -> None:
    (image,) = model_images(ct())
    pixels = np.asarray(image.image)[..., 0]
    assert pixels[0, 0] == 0 and pixels[32, 32] == 255


def test_a_frame_bigger_than_the_budget_is_scaled_with_its_transform() -> None:
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=new_marker(), rows=300, columns=400)
    (image,) = model_images(ds, max_pixels=30_000)
    assert image.image.size == (200, 150)
    assert image.transform == Transform(columns=400, rows=300, width=200, height=150)
    assert image.values is not None and image.values.shape == (300, 400)  # measurements stay in source pixels
    assert image.pixel_spacing == (0.7, 0.7) and image.modality == "CT"


@pytest.mark.parametrize("case", [c for c in CASES if c.size[0] <= 512], ids=lambda c: c.id)
def test_every_stored_form_shows_the_disc_brighter_than_the_field(case: Case) -> None:
    ds, _, _ = build(case, "")
    images = list(model_images(ds, frames="all"))
    assert [i.frame for i in images] == list(range(1, case.frames + 1))
    for image in images:
        pixels = np.asarray(image.image).astype(int)
        assert pixels.shape == (case.size[0], case.size[1], 3)
        disc, field = pixels[120, 150], pixels[5, 280]  # see image_cases.levels
        assert disc.sum() > field.sum() + 3 * 40, (case.id, disc, field)
        if case.photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
            assert disc[0] > disc[2] + 10  # the warm tint survived colour conversion
            assert image.values is None
        elif case.photometric == "PALETTE COLOR":
            assert disc[0] > disc[2]  # blue runs at half the ramp
        else:
            assert disc[0] == disc[1] == disc[2]


def test_the_selected_frame_is_the_one_decoded() -> None:
    case = Case("us-cine-rgb", "US", "RGB", frames=3, text_frame=1)
    ds, glyphs, _ = build(case, "FRAME TWO")
    shown = {i.frame: np.asarray(i.image)[..., 0] for i in model_images(ds, frames="all")}
    assert shown[2][glyphs].mean() > 200  # the text is white on frame 2 only
    assert shown[1][glyphs].mean() < 60 and shown[3][glyphs].mean() < 60
    (middle,) = model_images(ds, frames="middle")
    assert middle.frame == 2 and middle.frames == 3


def test_an_instance_without_pixels_is_refused_by_uid() -> None:
    ds = ct()
    del ds.PixelData
    with pytest.raises(ImagingError, match=f"{ds.SOPInstanceUID} has no Pixel Data"):
        list(model_images(ds))


def test_enhanced_multiframe_luts_and_spacing_come_from_the_functional_groups() -> None:
    ds = enhanced_ct_phantom(study_uid=generate_uid(), series_uid=generate_uid(), frames=3)
    images = list(model_images(ds, frames="all"))
    assert [i.frame for i in images] == [1, 2, 3]
    for image in images:
        assert image.pixel_spacing == (0.5, 0.5)
        assert image.values is not None and image.values[5, 5] == -1000.0  # rescaled to HU
    metal = disc(256, 256, *PHANTOM["metal"])
    assert images[1].values[metal].min() == 3000.0 and images[0].values[metal].max() == 40.0
    # frame 3's window centre is 43: 40 HU sits at (40 - (43 - 0.5 - 199.5)) / 399 = 0.49373
    assert np.asarray(images[2].image)[128, 128, 0] == round(255 * (40 - (43 - 0.5 - 199.5)) / 399)
