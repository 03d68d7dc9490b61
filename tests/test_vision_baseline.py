"""The offline baseline measures what classical analysis can, and the stage maps it to source pixels."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from apolo_node.config import VisionSettings
from apolo_node.imaging import model_images
from apolo_node.vision.backend import Context
from apolo_node.vision.baseline import BaselineBackend, body_mask
from apolo_node.vision.lexicon import code_for
from apolo_node.vision.look import choose_instances, look
from tests.image_cases import Case, build
from tests.synthetic import PHANTOM, disc, phantom_ct, phantom_hu

SPACING = 0.7 * 0.7


def test_the_body_holds_the_lung_but_not_the_air_around_it() -> None:
    body = body_mask(phantom_hu().astype(np.float32))
    assert body[100, 80]  # inside the lung
    assert not body[5, 5] and not body[128, 250]
    assert body.sum() == disc(256, 256, *PHANTOM["body"]).sum()


def expected_masks() -> dict[str, np.ndarray]:
    body = disc(256, 256, *PHANTOM["body"])
    inner = disc(256, 256, 128, 128, PHANTOM["fat_inner"])
    lung, bone, metal = (disc(256, 256, *PHANTOM[k]) for k in ("lung", "bone", "metal"))
    return {
        "Air": lung,
        "Fat": body & ~inner,
        "Soft tissue": inner & ~lung & ~bone & ~metal,
        "Bone": bone,
        "Metal": metal,
    }


def test_ct_tissue_classes_have_their_areas_and_the_boxes_of_their_regions() -> None:
    ds = phantom_ct(study_uid=generate_uid(), series_uid=generate_uid())
    (image,) = model_images(ds)
    answer = BaselineBackend().describe(image, Context(modality="CT"))
    found = {f.label: f for f in answer.findings}
    masks = expected_masks()
    assert set(found) == set(masks)
    for label, mask in masks.items():
        f = found[label]
        (name, area, unit), = f.measurements
        assert (name, unit) == ("Area", "mm2")
        assert area == pytest.approx(mask.sum() * SPACING, abs=0.1)
        if label in ("Air", "Bone", "Metal"):  # one region each: its box is the disc's bounds
            rows, cols = np.nonzero(mask)
            assert f.box == pytest.approx(
                (cols.min() / 256, rows.min() / 256, (cols.max() + 1) / 256, (rows.max() + 1) / 256)
            )
        assert "Non-diagnostic baseline" in f.description


def test_projection_images_report_their_densest_objects() -> None:
    ds, _, _ = build(Case("dx", "DX", "MONOCHROME2", bits=12), "")
    ds.PixelData = None
    levels = np.full((200, 288), 400, dtype=np.uint16)
    levels[disc(200, 288, 60, 200, 12)] = 4000  # a dense implant
    ds.PixelData = levels.tobytes()
    ds.ImagerPixelSpacing = [0.2, 0.2]
    del ds.PixelSpacing
    (image,) = model_images(ds)
    answer = BaselineBackend().describe(image, Context(modality="DX"))
    assert [f.label for f in answer.findings] == ["Dense object"]
    x1, y1, x2, y2 = answer.findings[0].box
    assert (x1 * 288, y1 * 200, x2 * 288, y2 * 200) == pytest.approx((189, 49, 212, 72))
    (_, area, _), = answer.findings[0].measurements
    assert area == pytest.approx(disc(200, 288, 60, 200, 12).sum() * 0.04, abs=0.05)  # to 0.1 mm2


def test_a_volume_is_looked_at_on_its_middle_slice_and_boxes_land_in_source_pixels() -> None:
    study, series = generate_uid(), generate_uid()
    slices = [phantom_ct(study_uid=study, series_uid=series, number=n) for n in (5, 1, 3, 2, 4)]
    settings = VisionSettings(max_pixels=128 * 128)  # the model image is half size
    chosen = choose_instances(slices, settings)
    assert [int(d.InstanceNumber) for d in chosen] == [3]
    result = look(BaselineBackend(), chosen, settings)
    assert result.images == 1 and result.unparsed == 0 and "Non-diagnostic" in result.disclaimer
    metal = next(f for f in result.findings if f.label == "Metal")
    rows, cols = np.nonzero(disc(256, 256, *PHANTOM["metal"]))
    assert metal.box is not None
    assert metal.box.as_list() == pytest.approx([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    assert metal.sop_instance_uid == chosen[0].SOPInstanceUID and metal.frame == 1
    assert metal.code == code_for("metal") and metal.code.scheme == "SCT"
    assert all(f.box is not None and f.box.within(256, 256) for f in result.findings)
    again = look(BaselineBackend(), chosen, settings)
    assert [f.tracking_uid for f in again.findings] == [f.tracking_uid for f in result.findings]
    assert len({f.tracking_uid for f in result.findings}) == len(result.findings)


def test_all_frames_of_a_series_are_evenly_spaced_up_to_max_frames() -> None:
    study, series = generate_uid(), generate_uid()
    slices = [phantom_ct(study_uid=study, series_uid=series, number=n) for n in range(1, 11)]
    chosen = choose_instances(slices, VisionSettings(frames="all", max_frames=4))
    assert [int(d.InstanceNumber) for d in chosen] == [1, 4, 7, 10]


def test_labels_map_to_snomed_or_to_a_stable_local_code() -> None:
    assert code_for("Pleural effusions").value == "60046008"
    local = code_for("Ground-glass opacity in the left upper lobe")
    assert local.scheme == "99APOLO" and local.meaning == "Ground-glass opacity in the left upper lobe"
    assert len(local.value) <= 16 and local.value == code_for("ground-glass opacity in the left upper lobe".title()).value
    assert code_for("Ground-glass opacity in the left upper lobe!").value != local.value
