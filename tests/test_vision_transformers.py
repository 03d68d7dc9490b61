"""The transformers vision backend, end to end on a tiny random-weight Qwen2.5-VL built here.

Real processor, real chat template, real generate: the answers are gibberish, so these tests
check the plumbing (one answer per image in order, batching that changes nothing, the prompt
that is sent, the coordinates bbox_2d are read in), never what the model says.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from apolo_node.config import VisionSettings
from apolo_node.findings import Algorithm
from apolo_node.imaging import ModelImage, Transform
from apolo_node.vision import grounding, prompts
from apolo_node.vision import transformers_backend as tb
from apolo_node.vision.backend import BackendUnavailable, Context, Described

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MAX_NEW_TOKENS = 16
REPO = Path(__file__).resolve().parents[1]


def chest_slice(nodule: tuple[int, int], radius: int, width: int = 128, height: int = 128) -> Image.Image:
    """An axial chest-CT-like 8-bit slice (body, lungs, spine, one nodule), with no text on it."""
    picture = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(picture)
    sx, sy = width / 128, height / 128
    draw.ellipse((8 * sx, 20 * sy, 120 * sx, 108 * sy), fill=105)  # soft tissue
    draw.ellipse((20 * sx, 32 * sy, 60 * sx, 96 * sy), fill=22)  # right lung (image left)
    draw.ellipse((68 * sx, 32 * sy, 108 * sx, 96 * sy), fill=22)  # left lung
    draw.ellipse((56 * sx, 82 * sy, 72 * sx, 98 * sy), fill=230)  # vertebra
    x, y = nodule
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=160)
    noise = np.random.default_rng(x * 131 + y).normal(0, 4, (height, width))
    pixels = np.clip(np.asarray(picture, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")  # 2-D uint8: mode L


def model_image(k: int, width: int = 128, height: int = 128) -> ModelImage:
    """The k-th test frame, as the imaging stage hands it over: 256x256 source shown at half size."""
    return ModelImage(
        image=chest_slice(nodule=(30 + 8 * k, 50 + 6 * k), radius=3 + k, width=width, height=height),
        sop_instance_uid=f"2.25.{31415926535 + k}",
        sop_class_uid=CT_IMAGE_STORAGE,
        frame=1,
        transform=Transform(columns=256, rows=256, width=width, height=height),
        modality="CT",
        body_part="CHEST",
    )


IMAGES = [model_image(k) for k in range(3)]
CONTEXTS = [Context(modality="CT", body_part="CHEST"), Context(modality="MR"), Context(modality="CT")]


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    from tests.tiny_models import hub_offline

    yield from hub_offline()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_models import built_once, tiny_qwen2_5_vl

    return built_once(tiny_qwen2_5_vl, tmp_path_factory, "tiny-qwen2.5-vl")


def settings(model: Path | str, **changes: object) -> VisionSettings:
    values: dict[str, object] = {
        "backend": "transformers", "model": str(model), "device": "cpu",
        "max_new_tokens": MAX_NEW_TOKENS, "batch_size": 2, "profile": "apolo",
    }
    values.update(changes)
    return VisionSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def backend(tiny_model: Path) -> tb.TransformersBackend:
    return tb.TransformersBackend.from_settings(settings(tiny_model))


# --- without the ml extra -------------------------------------------------------------------


def test_importing_the_module_needs_no_torch_and_the_backend_says_what_to_install() -> None:
    script = """
import json, sys
sys.modules["torch"] = None          # as if the ml extra were not installed
sys.modules["transformers"] = None
import apolo_node.vision.transformers_backend as tb
from apolo_node.vision.backend import BackendUnavailable
out = {"message": tb.available()}
try:
    tb.TransformersBackend("Qwen/Qwen2.5-VL-3B-Instruct")
except BackendUnavailable as exc:
    out["raised"] = str(exc)
out["imported"] = sorted(m for m in ("torch", "transformers") if sys.modules.get(m) is not None)
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["imported"] == []
    assert "pip install 'apolo-node[ml]'" in out["message"]
    assert "torch and transformers" in out["message"]
    assert out["raised"] == out["message"]


def test_available_is_none_where_torch_and_transformers_import() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    assert tb.available() is None


# --- the coordinates of Qwen2.5-VL's bbox_2d ----------------------------------------------


@pytest.mark.parametrize(
    ("grid_thw", "patch_size", "size"),
    [
        ((1, 8, 8), 14, (112, 112)),  # 128x128 image: smart_resize to 112x112, 8x8 patches
        ((1, 4, 10), 14, (140, 56)),  # 128 wide, 64 tall: 140x56 (columns are the last of thw)
        ((1, 36, 52), 14, (728, 504)),  # 740x512 frame at Qwen's default pixel limits
        ([1, 2, 3], 16, (48, 32)),  # Qwen3-VL's 16-pixel patches
    ],
)
def test_input_size_is_the_patch_grid_times_the_patch_size(grid_thw, patch_size, size) -> None:
    assert tb.input_size(grid_thw, patch_size) == size


@pytest.mark.parametrize(
    ("grid_thw", "patch_size", "match"),
    [((8, 8), 14, "grid_thw must be 3"), ((1, 0, 8), 14, "grid_thw must be 3"), ((1, 8, 8), 0, "patch_size")],
)
def test_input_size_refuses_what_is_not_a_grid(grid_thw, patch_size, match) -> None:
    with pytest.raises(ValueError, match=match):
        tb.input_size(grid_thw, patch_size)


@pytest.mark.parametrize(
    ("width", "height", "coords", "answer", "source_box"),
    [
        # 128x128 shown, processor input 112x112: pixel (28, 56)-(84, 112) is (0.25, 0.5)-(0.75, 1.0),
        # which is (64, 128)-(192, 256) of the 256x256 source frame.
        (128, 128, (112, 112), '[{"bbox_2d": [28, 56, 84, 112], "label": "nodule"}]', (64.0, 128.0, 192.0, 256.0)),
        # 128x64 shown: smart_resize rounds each side to 28s, 128/28 = 4.6 -> 140 and 64/28 = 2.3
        # -> 56, so the input is stretched across and squeezed down; pixel (70, 14)-(140, 42) of
        # it is (0.5, 0.25)-(1.0, 0.75), (128, 64)-(256, 192) of the source.
        (128, 64, (140, 56), '[{"bbox_2d": [70, 14, 140, 42], "label": "nodule"}]', (128.0, 64.0, 256.0, 192.0)),
    ],
)
def test_a_bbox_2d_answer_lands_where_the_backend_computes_it(
    backend: tb.TransformersBackend, width, height, coords, answer, source_box
) -> None:
    image = model_image(0, width=width, height=height)
    inputs = backend.encode([image], [CONTEXTS[0]])
    computed = backend.coordinates(inputs, 0)
    assert computed == grounding.Coordinates.pixels(*coords)
    described = grounding.parse(answer, computed)
    assert described.unparsed == 0
    (finding,) = described.findings
    assert finding.label == "nodule"
    assert image.transform.fraction_to_source(finding.box) == pytest.approx(source_box)


# --- the model, end to end ------------------------------------------------------------------


def test_the_tiny_model_is_the_same_bytes_on_every_build(tiny_model: Path, tmp_path: Path) -> None:
    from tests.tiny_models import tiny_qwen2_5_vl

    again = tiny_qwen2_5_vl(tmp_path / "again")
    names = sorted(p.name for p in tiny_model.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= set(names)
    for name in names:
        assert (tiny_model / name).read_bytes() == (again / name).read_bytes(), name
    assert json.loads((tiny_model / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"


def test_a_batch_of_three_gives_one_answer_per_image_in_chunks_of_batch_size(
    backend: tb.TransformersBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="apolo.vision.transformers")
    described = backend.describe_batch(IMAGES, CONTEXTS)
    assert len(described) == 3
    assert all(isinstance(d, Described) for d in described)
    # gibberish is kept as text and counted, never raised
    assert all(d.findings or d.unparsed for d in described)
    chunks = [r.fields["images"] for r in caplog.records if r.getMessage() == "vision.transformers.generated"]
    assert chunks == [2, 1]
    assert backend.describe_batch([], []) == []


def test_the_first_row_of_a_batch_is_the_single_image_answer(backend: tb.TransformersBackend) -> None:
    batch, _ = backend.answers(IMAGES[:2], CONTEXTS[:2])
    single, _ = backend.answers(IMAGES[:1], CONTEXTS[:1])
    assert batch[1] != batch[0]  # else the comparison below would prove nothing
    assert batch[0] == single[0]
    assert backend.describe_batch(IMAGES, CONTEXTS)[0] == backend.describe(IMAGES[0], CONTEXTS[0])


def test_the_prompt_sent_is_the_chat_template_with_our_prompt_and_the_context(
    backend: tb.TransformersBackend,
) -> None:
    contexts = [Context(modality="MR", body_part="HEAD"), Context(modality="CT")]
    inputs = backend.encode(IMAGES[:2], contexts)
    tokenizer = backend.processor.tokenizer
    long, short = (tokenizer.decode(row) for row in inputs["input_ids"])
    assert prompts.SYSTEM_PROMPT in long
    assert prompts.user_prompt(contexts[0]) in long and "Modality: MR. Body part: HEAD." in long
    assert "Modality: CT." in short and "Modality: MR" not in short
    # 128x128 shown: 8x8 patches merged 2x2 make 16 image tokens
    assert long.count("<|image_pad|>") == 16
    # left padding: both rows end on the assistant's turn, the shorter starts with padding
    assert long.endswith("<|im_start|>assistant\n") and short.endswith("<|im_start|>assistant\n")
    assert short.startswith(tokenizer.pad_token) and inputs["attention_mask"][1][0] == 0


def test_with_torchvision_a_folder_without_a_video_processor_loads_video_free(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on a GPU machine, where torchvision is installed: the stock Qwen-VL processor asks
    for a video processor our folders do not hold. The backend falls back to the video-free one."""
    import transformers

    monkeypatch.setattr(tb, "_has_torchvision", lambda: True)
    with pytest.raises(OSError):
        transformers.AutoProcessor.from_pretrained(str(tiny_model))
    config = transformers.AutoConfig.from_pretrained(str(tiny_model))
    processor = tb._load_processor(str(tiny_model), config, transformers)
    assert type(processor).__module__ == tb.__name__
    assert processor(text=["<|image_pad|>"], images=[Image.new("RGB", (128, 128))])["image_grid_thw"].tolist() == [
        [1, 8, 8]
    ]


def test_the_algorithm_is_the_folder_name_and_the_config_hash_on_every_load(
    backend: tb.TransformersBackend, tiny_model: Path
) -> None:
    expected = Algorithm(
        name="tiny-qwen2.5-vl",
        version=hashlib.sha256((tiny_model / "config.json").read_bytes()).hexdigest()[:12],
    )
    assert backend.algorithm == expected
    again = tb.TransformersBackend(str(tiny_model) + "/", device="cpu", max_new_tokens=1)
    assert again.algorithm == expected


def test_a_missing_model_path_is_unavailable_and_named(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendUnavailable, match=f"model '{missing}' is a path, but no such folder exists"):
        tb.TransformersBackend.from_settings(settings(missing))


def test_a_model_not_in_the_cache_offline_is_unavailable_and_named() -> None:
    pytest.importorskip("transformers")
    with pytest.raises(BackendUnavailable, match=r"model 'apolo-test/no-such-model' could not be loaded"):
        tb.TransformersBackend("apolo-test/no-such-model", device="cpu")


def test_a_text_only_model_is_unavailable_as_a_vision_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.tiny_models import tiny_causal_lm

    path = tiny_causal_lm(tmp_path / "tiny-lm")
    with pytest.raises(BackendUnavailable, match=r"could not be loaded as an image-text-to-text model.*Qwen3Config"):
        tb.TransformersBackend(str(path), device="cpu")


@pytest.mark.parametrize(
    ("model", "changes", "match"),
    [
        ("org/model", {"dtype": "int8"}, "dtype must be one of auto, float32, bfloat16, float16, got 'int8'"),
        ("org/model", {"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1, got 0"),
        ("org/model", {"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        (" ", {}, "model must be a hub id or a local path, got ' '"),
    ],
)
def test_bad_settings_are_refused_by_name(model: str, changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tb.TransformersBackend.from_settings(settings(model, **changes))
