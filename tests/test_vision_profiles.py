"""Model profiles: each family asked in its own words and read in its own dialect, by both model
backends; a reasoning trace never becomes a finding.

Answers below are written the way each family's model card and papers show them; every expected
box is worked by hand from the family's scale.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from apolo_node.config import VISION_PROFILES, VisionSettings
from apolo_node.vision import grounding, profiles, prompts
from apolo_node.vision.backend import Context, Described
from apolo_node.vision.openai_backend import OpenAIBackend
from apolo_node.vision.profiles import PROFILES, choose, detect, qwen_resized
from tests.openai_server import OpenAIServer, Reply, chat_completion, serve
from tests.test_vision_openai import model_image
from tests.tiny_models import hub_offline

CONTEXT = Context(modality="DX", body_part="CHEST")


def labels_and_boxes(described: Described) -> list[tuple[str, tuple[float, ...] | None]]:
    return [(f.label, f.box) for f in described.findings]


# --- the trace is kept, never read for findings ---------------------------------------------


def test_a_box_inside_think_is_no_finding_and_its_text_is_the_trace() -> None:
    answer = "<think>Maybe a nodule <box>[[100,100,200,200]]</box>? No, a vessel end-on.</think>No acute abnormality."
    for profile in PROFILES.values():
        described = profile.parse(answer)
        assert described.findings == ()
        assert described.trace == ("Maybe a nodule <box>[[100,100,200,200]]</box>? No, a vessel end-on.",)
        assert described.free_text == ("No acute abnormality.",)


def test_a_box_after_the_trace_is_still_a_finding() -> None:
    answer = "<think>The left base is dense.</think>\nLeft lower lobe consolidation <box>[[550, 600, 800, 850]]</box>"
    described = PROFILES["medmo"].parse(answer)
    assert labels_and_boxes(described) == [
        ("Left lower lobe consolidation", pytest.approx((0.55, 0.6, 0.8, 0.85)))
    ]
    assert described.trace == ("The left base is dense.",)
    assert described.unparsed == 0


def test_a_trace_the_template_opened_ends_at_its_close_tag() -> None:
    # Qwen3-VL Thinking's template writes <think> into the prompt: the answer holds only </think>.
    answer = 'Is that a rib? [{"bbox_2d": [1, 2, 3, 4], "label": "rib"}] Yes.\n</think>\n[{"bbox_2d": [100, 200, 300, 400], "label": "fracture"}]'
    described = PROFILES["qwen3_vl"].parse(answer)
    assert labels_and_boxes(described) == [("fracture", pytest.approx((0.1, 0.2, 0.3, 0.4)))]
    assert described.trace == ('Is that a rib? [{"bbox_2d": [1, 2, 3, 4], "label": "rib"}] Yes.',)


def test_a_trace_cut_off_by_the_token_limit_is_all_trace() -> None:
    answer = 'Pneumothorax <box>[[600, 100, 900, 500]]</box> <THINK>and maybe <box>[[1, 1, 50, 50]]</box> too'
    described = PROFILES["medmo"].parse(answer)
    assert [label for label, _ in labels_and_boxes(described)] == ["Pneumothorax"]
    assert described.trace == ("and maybe <box>[[1, 1, 50, 50]]</box> too",)


def test_an_answer_that_is_only_trace_has_no_findings_and_counts_nothing() -> None:
    described = grounding.parse("<think>I cannot tell.</think>")
    assert described == Described(trace=("I cannot tell.",))


def test_without_a_trace_nothing_changes() -> None:
    answer = 'Cardiomegaly <box>[[300, 400, 700, 800]]</box>'
    assert PROFILES["medmo"].parse(answer) == grounding.parse(answer)
    assert PROFILES["medmo"].parse(answer).trace == ()


def test_a_long_trace_is_bounded() -> None:
    described = grounding.parse("<think>" + "x" * 50_000 + "</think>ok")
    (trace,) = described.trace
    assert len(trace) == grounding.TRACE_LIMIT and trace.endswith("…")


# --- each family's dialect ----------------------------------------------------------------------


def test_deepseek_vl2_grounded_caption() -> None:
    # deepseek-ai/DeepSeek-VL2 README: <|ref|>...<|/ref|><|det|>[[...]]<|/det|>, 0-999.
    answer = (
        "<|ref|>A nodule<|/ref|><|det|>[[580, 270, 999, 900]]<|/det|> in the right upper lobe, and "
        "<|ref|>pleural effusions<|/ref|><|det|>[[0, 800, 333, 999], [666, 800, 999, 999]]<|/det|>"
        "<｜end▁of▁sentence｜>"
    )
    described = PROFILES["deepseek_vl2"].parse(answer)
    assert labels_and_boxes(described) == [
        ("A nodule", pytest.approx((580 / 999, 270 / 999, 1.0, 900 / 999))),
        ("pleural effusions", pytest.approx((0.0, 800 / 999, 333 / 999, 1.0))),
        ("pleural effusions", pytest.approx((666 / 999, 800 / 999, 1.0, 1.0))),
    ]
    assert described.free_text == ("in the right upper lobe, and",)


def test_medmo_boxes_after_their_label() -> None:
    # genmilab/MedMO README: "Fractures <box>[[156, 516, 231, 607], [240, 529, 296, 581]]</box>"
    described = PROFILES["medmo"].parse("Fractures <box>[[156, 516, 231, 607], [240, 529, 296, 581]]</box>")
    assert labels_and_boxes(described) == [
        ("Fractures", pytest.approx((0.156, 0.516, 0.231, 0.607))),
        ("Fractures", pytest.approx((0.240, 0.529, 0.296, 0.581))),
    ]


def test_qwen2_5_vl_json_is_in_pixels_of_the_resized_input() -> None:
    # A 1000x700 image goes in as 1008x700 (multiples of 28); Qwen's cookbook answer format.
    width, height = qwen_resized(1000, 700)
    assert (width, height) == (1008, 700)
    answer = '```json\n[\n\t{"bbox_2d": [504, 350, 1008, 700], "label": "pneumothorax"}\n]\n```\nImpression: right pneumothorax.'
    profile = PROFILES["qwen2_5_vl"]
    described = profile.parse(answer, profile.coordinates(width, height))
    assert labels_and_boxes(described) == [("pneumothorax", pytest.approx((0.5, 0.5, 1.0, 1.0)))]
    assert described.free_text == ("Impression: right pneumothorax.",)


def test_qwen3_vl_json_is_on_a_0_1000_grid_whatever_the_size() -> None:
    profile = PROFILES["qwen3_vl"]
    answer = '[{"bbox_2d": [500, 500, 1000, 1000], "label": "pneumothorax"}]'
    described = profile.parse(answer, profile.coordinates(1008, 700))
    assert labels_and_boxes(described) == [("pneumothorax", pytest.approx((0.5, 0.5, 1.0, 1.0)))]


@pytest.mark.parametrize(
    "size, resized",
    [((96, 64), (84, 56)), ((4000, 3000), (4004, 2996)), ((20, 20), (56, 56)), ((28, 28), (56, 56)),
     ((6000, 4000), (4368, 2912))],
)
def test_qwen_resized_follows_smart_resize(size: tuple[int, int], resized: tuple[int, int]) -> None:
    w, h = qwen_resized(*size)
    assert (w, h) == resized
    assert w % 28 == 0 and h % 28 == 0
    assert profiles.QWEN_MIN_PIXELS <= w * h <= profiles.QWEN_MAX_PIXELS


# --- choosing a profile -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, config, expected",
    [
        ("Qwen/Qwen2.5-VL-7B-Instruct", None, "qwen2_5_vl"),
        ("qwen2_5_vl", None, "qwen2_5_vl"),
        ("Qwen/Qwen3-VL-2B-Thinking", None, "qwen3_vl"),
        ("MBZUAI/MedMO-8B-Next", {"model_type": "qwen3_vl"}, "medmo"),
        ("/models/medmo-4b", None, "medmo"),
        ("deepseek-ai/deepseek-vl2-tiny", None, "deepseek_vl2"),
        ("/srv/weights/a", {"model_type": "qwen2_5_vl"}, "qwen2_5_vl"),
        ("/srv/weights/b", {"model_type": "qwen3_vl_moe"}, "qwen3_vl"),
        ("/srv/weights/c", {"model_type": "deepseek_vl_v2"}, "deepseek_vl2"),
        ("/srv/weights/d", {"architectures": ["Qwen3VLForConditionalGeneration"]}, "qwen3_vl"),
        ("/srv/weights/e", {"model_type": "llava"}, "apolo"),
        ("/srv/qwen2.5-vl-runs/weights/llava-ft", {"model_type": "llava"}, "apolo"),  # where, not what
        ("C:\\models\\MedMO-4B", None, "medmo"),
        ("google/medgemma-4b-it", None, "apolo"),
        ("", {"model_type": 3, "architectures": "x"}, "apolo"),
    ],
)
def test_auto_picks_the_family_from_the_name_or_the_config(name: str, config: dict | None, expected: str) -> None:
    assert detect(name, config).name == expected
    assert choose("auto", name, config).name == expected


def test_a_named_profile_wins_over_auto_and_an_unknown_one_is_refused() -> None:
    assert choose("apolo", "Qwen/Qwen2.5-VL-7B-Instruct").name == "apolo"
    with pytest.raises(ValueError, match=r"\[vision\] profile must be one of auto, apolo.*got 'qwen'"):
        choose("qwen", "x")
    assert set(VISION_PROFILES) == {"auto", *PROFILES}


def test_only_deepseek_vl2_needs_remote_code_and_only_ours_sends_the_schema() -> None:
    assert [p.name for p in PROFILES.values() if p.trust_remote_code] == ["deepseek_vl2"]
    assert [p.name for p in PROFILES.values() if p.structured] == ["apolo"]


def test_deepseek_vl2_prompt_starts_with_its_grounding_token() -> None:
    text = PROFILES["deepseek_vl2"].user_text(CONTEXT)
    assert text.startswith("<|grounding|>Modality: DX. Body part: CHEST.")
    assert PROFILES["apolo"].user_text(CONTEXT) == prompts.user_prompt(CONTEXT)


# --- the openai backend asks and reads per profile ----------------------------------------


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    yield from serve(models={})


def test_openai_qwen2_5_vl_is_asked_natively_and_read_in_server_pixels(server: OpenAIServer) -> None:
    # 100x70 shown; the server's processor makes it 112x56 (70/28 = 2.5 rounds to even), the
    # pixels its bbox_2d are in.
    server.queue(Reply(body=chat_completion('[{"bbox_2d": [56, 28, 112, 56], "label": "mass"}]')))
    backend = OpenAIBackend(server.url, "Qwen/Qwen2.5-VL-7B-Instruct", timeout=2, retries=0)
    assert backend.profile.name == "qwen2_5_vl"
    described = backend.describe(model_image(100, 70), CONTEXT)
    backend.close()
    (request,) = server.received()
    assert "response_format" not in request.json
    (user,) = request.messages  # no system turn: the model's template keeps Qwen's own
    assert [part["type"] for part in user["content"]] == ["image_url", "text"]
    assert user["content"][1]["text"] == "Modality: DX. Body part: CHEST. " + profiles.GROUNDING_TASK
    assert labels_and_boxes(described) == [("mass", pytest.approx((0.5, 0.5, 1.0, 1.0)))]


def test_openai_our_profile_still_sends_our_system_prompt_and_schema(server: OpenAIServer) -> None:
    server.queue(Reply(body=chat_completion('{"findings": []}')))
    backend = OpenAIBackend(server.url, "qwen2.5-vl-7b", timeout=2, retries=0, profile="apolo")
    backend.describe(model_image(), CONTEXT)
    backend.close()
    (request,) = server.received()
    assert request.json["response_format"]["json_schema"]["schema"] == prompts.FINDINGS_SCHEMA
    assert request.messages[0] == {"role": "system", "content": prompts.SYSTEM_PROMPT}


def test_openai_reasoning_content_and_think_tags_are_the_trace(server: OpenAIServer) -> None:
    body = chat_completion("<think>second look</think>Fractures <box>[[100, 100, 200, 200]]</box>")
    body["choices"][0]["message"]["reasoning_content"] = "The cortex is broken."
    server.queue(Reply(body=body))
    backend = OpenAIBackend(server.url, "MBZUAI/MedMO-8B", timeout=2, retries=0)
    assert backend.profile.name == "medmo"
    described = backend.describe(model_image(), CONTEXT)
    backend.close()
    assert described.trace == ("The cortex is broken.", "second look")
    assert labels_and_boxes(described) == [("Fractures", pytest.approx((0.1, 0.1, 0.2, 0.2)))]


def test_openai_profile_comes_from_settings(server: OpenAIServer) -> None:
    settings = VisionSettings(backend="openai", model="served", url=server.url, profile="deepseek_vl2")
    backend = OpenAIBackend.from_settings(settings)
    assert backend.profile.name == "deepseek_vl2"
    backend.close()


# --- the transformers backend: every profile through the tiny model ------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_models import built_once, tiny_qwen2_5_vl, with_remote_code

    root = tmp_path_factory.mktemp("profiles")
    plain = built_once(tiny_qwen2_5_vl, tmp_path_factory, "tiny-qwen2.5-vl")
    remote = with_remote_code(Path(shutil.copytree(plain, root / "tiny-remote")))
    medmo = Path(shutil.copytree(plain, root / "tiny-medmo"))
    return {"plain": plain, "remote": remote, "medmo": medmo}


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    yield from hub_offline()


def transformers_backend(model: Path, profile: str = "auto"):  # noqa: ANN201 - imported late
    from apolo_node.vision.transformers_backend import TransformersBackend

    settings = VisionSettings(
        backend="transformers", model=str(model), device="cpu", max_new_tokens=8, batch_size=2, profile=profile
    )
    return TransformersBackend.from_settings(settings)


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "deepseek_vl2"])
def test_each_profile_frames_its_prompt_in_the_model_template_and_reads_the_answer(
    tiny_models: dict[str, Path], profile: str
) -> None:
    backend = transformers_backend(tiny_models["plain"], profile)
    chosen = PROFILES[profile]
    assert backend.profile is chosen
    image = model_image(128, 128)
    inputs = backend.encode([image], [CONTEXT])
    sent = backend.processor.tokenizer.decode(inputs["input_ids"][0])
    assert chosen.user_text(CONTEXT) in sent
    assert (prompts.SYSTEM_PROMPT in sent) == (chosen.system is not None)
    # the image part comes first in every family's turn
    assert sent.index("<|vision_start|>") < sent.index(chosen.task)
    coords = backend.coordinates(inputs, 0)
    assert coords.kind == ("pixels" if profile in ("qwen2_5_vl", "apolo") else "thousandths")
    (described,) = backend.describe_batch([image], [CONTEXT])
    assert isinstance(described, Described) and (described.findings or described.unparsed or described.trace)


def test_auto_reads_the_checkpoint_config_and_its_name(tiny_models: dict[str, Path]) -> None:
    assert transformers_backend(tiny_models["plain"]).profile.name == "qwen2_5_vl"
    assert transformers_backend(tiny_models["medmo"]).profile.name == "medmo"


def test_remote_code_runs_only_where_the_profile_trusts_it(tiny_models: dict[str, Path]) -> None:
    """A checkpoint with its own code (as DeepSeek-VL2's hub repositories): its classes load
    with the deepseek_vl2 profile, and transformers' own classes load with any other."""
    config = json.loads((tiny_models["remote"] / "config.json").read_text())
    assert "auto_map" in config
    trusted = transformers_backend(tiny_models["remote"], "deepseek_vl2")
    assert type(trusted.model).__name__ == "TinyRemoteModel"
    sent = trusted.processor.tokenizer.decode(trusted.encode([model_image(128, 128)], [CONTEXT])["input_ids"][0])
    assert "<|grounding|>Modality: DX." in sent
    assert trusted.describe(model_image(128, 128), CONTEXT) is not None
    untrusted = transformers_backend(tiny_models["remote"], "qwen2_5_vl")
    assert type(untrusted.model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_an_unknown_profile_is_refused_before_loading(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from apolo_node.vision.transformers_backend import TransformersBackend

    with pytest.raises(ValueError, match=r"profile must be one of"):
        TransformersBackend(str(tmp_path / "none"), profile="llava")


@pytest.mark.parametrize(
    "root, family", [("/models/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"), ("/models/llava-1.5", "apolo"), (None, "apolo")]
)
def test_openai_a_served_alias_is_known_by_the_weights_the_server_names(root: str | None, family: str) -> None:
    for server in serve(models={"vision": root} if root else {}):
        server.queue(Reply(body=chat_completion("[]")))
        backend = OpenAIBackend(server.url, "vision", timeout=2, retries=0)
        assert "profile='auto'" in repr(backend)  # nothing asked yet
        backend.describe(model_image(), CONTEXT)
        assert backend.profile.name == family and f"profile='{family}'" in repr(backend)
        (chat,) = server.received()
        assert ("response_format" in chat.json) == (family == "apolo")
        assert backend.algorithm.version == (root or "unknown")
        backend.close()
        assert len(server.received(path="/v1/models")) == 1  # asked once, for both
