"""The answerers behind ``answer(question, evidence)``: extractive, transformers, openai; citations, traces."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from apolo_node.config import ReasoningSettings
from apolo_node.findings import Box, Code, Finding, Measurement
from apolo_node.reasoning import prompts
from apolo_node.reasoning.backend import (
    NOTHING_FOUND,
    AnswerFailed,
    ReasoningUnavailable,
)
from apolo_node.reasoning.backends import make_answerer
from apolo_node.reasoning.citations import resolve, split_trace
from apolo_node.reasoning.evidence import Evidence
from apolo_node.reasoning.extractive import ExtractiveAnswerer
from apolo_node.reasoning.openai_backend import OpenAIAnswerer
from tests.openai_server import (
    CHAT_PATH,
    OpenAIServer,
    Reply,
    chat_completion,
    error_body,
)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def evidence_item(n: int, study: str, label: str, *, confidence: float | None = 0.7, score: float = 0.5) -> Evidence:
    finding = Finding(
        tracking_uid=f"2.25.77{n}", label=label, code=Code(f"X{n}", "99APOLO", label),
        sop_instance_uid=f"2.25.66{n}", sop_class_uid=CT_IMAGE, frame=n, description=f"{label} seen on frame {n}",
        box=Box(10 * n, 20, 10 * n + 40, 60), confidence=confidence, laterality="left" if n == 1 else None,
        measurements=(Measurement(Code("42798000", "SCT", "Area"), 3.5 * n, Code("mm2", "UCUM", "mm2")),),
    )
    return Evidence(finding, study, f"{study}.5", f"{study}.4", "CT", "CHEST", dt.date(2024, 1, n), score)


@pytest.fixture
def evidence() -> list[Evidence]:
    return [
        evidence_item(1, "2.25.501", "Pneumothorax", confidence=0.9, score=0.8),
        evidence_item(2, "2.25.502", "Nodule", confidence=0.4, score=0.6),
        evidence_item(3, "2.25.501", "Pleural effusion", confidence=None, score=0.3),
    ]


REF = re.compile(r"\[F(\d+)\]")


def test_citations_map_references_and_uids_and_drop_the_rest(evidence: list[Evidence]) -> None:
    text = (
        "A left pneumothorax [F1] and a nodule [F2, F9]; see also [f3] and 2.25.773. "
        "Study 2.25.501 (SR 2.25.501.5) has no [F0]; 2.25.999999 is not evidence; "
        "class 1.2.840.10008.5.1.4.1.1.2 is a mention. Numbers 12.5 and 1.2 are not UIDs."
    )
    cited = resolve(text, evidence)
    assert cited.citations == ("2.25.771", "2.25.772", "2.25.773")
    assert cited.dropped == 3  # F9, F0 and 2.25.999999


@pytest.mark.parametrize(
    ("raw", "trace", "answer"),
    [
        ("<think>compare F1 and F2</think>Left pneumothorax [F1].", "compare F1 and F2", "Left pneumothorax [F1]."),
        ("opened by the template</think>\n\nThe answer.", "opened by the template", "The answer."),
        ("<think>still thinking when cut off", "still thinking when cut off", ""),
        ("No thinking here [F2].", "", "No thinking here [F2]."),
        ("<think>a</think>first <think>b</think>second", "a\n\nb", "first second"),
        ("<think></think>Empty trace.", "", "Empty trace."),
    ],
)
def test_the_trace_is_split_from_the_answer(raw: str, trace: str, answer: str) -> None:
    assert split_trace(raw) == (trace, answer)


def test_extractive_answer_cites_exactly_the_findings_it_mentions(evidence: list[Evidence]) -> None:
    answer = ExtractiveAnswerer().answer("Is there a pneumothorax?", evidence)
    mentioned = [evidence[int(n) - 1].tracking_uid for n in REF.findall(answer.text)]
    assert set(answer.citations) == set(mentioned) == {e.tracking_uid for e in evidence}
    assert answer.dropped_citations == 0 and answer.backend == "extractive"
    assert resolve(answer.text, evidence).citations == answer.citations  # the order they appear in
    for study in ("2.25.501", "2.25.502"):
        assert f"Study {study} (2024-01-0" in answer.text
    # where, how sure, how much
    assert (
        "Pneumothorax (left) [F1]: instance ...2.25.661, frame 1, box (10, 20, 50, 60) px; confidence 0.90; "
        "Area 3.5 mm2"
    ) in answer.text
    assert "confidence not given" in answer.text and "Most confident: Pneumothorax (left) [F1] at 0.90." in answer.text
    assert "not reviewed by a radiologist" in answer.text
    assert "no language model" in answer.trace and "0.800 to 0.300" in answer.trace


def test_extractive_cites_a_subset_when_given_a_subset(evidence: list[Evidence]) -> None:
    answer = ExtractiveAnswerer().answer("nodule?", evidence[1:2])
    assert answer.citations == ("2.25.772",) and REF.findall(answer.text) == ["1"]


def test_with_no_evidence_no_model_is_asked_and_nothing_is_cited() -> None:
    answer = ExtractiveAnswerer().answer("Any fracture?", [])
    assert (answer.text, answer.citations, answer.dropped_citations) == (NOTHING_FOUND, (), 0)
    with OpenAIServer() as server:
        silent = OpenAIAnswerer(server.url, "test-model").answer("Any fracture?", [])
        assert silent.text == NOTHING_FOUND and server.received() == []


def test_evidence_lines_give_a_model_what_where_and_how_sure(evidence: list[Evidence]) -> None:
    line = prompts.evidence_line(0, evidence[0])
    assert line.startswith("[F1] study 2.25.501 (2024-01-01, CT CHEST): Pneumothorax (left)")
    assert "code 99APOLO X1 'Pneumothorax'" in line and "frame 1, box (10, 20, 50, 60) px" in line
    assert "confidence 0.90" in line and "measurements Area 3.5 mm2" in line


# -- openai ------------------------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as s:
        yield s


def reply_with(content: str | None, **message: object) -> Reply:
    body = chat_completion(content)
    body["choices"][0]["message"].update(message)
    return Reply(body=body)


def test_openai_answer_sends_the_evidence_and_maps_citations(server: OpenAIServer, evidence: list[Evidence]) -> None:
    server.queue(reply_with(
        "A left pneumothorax [F1] in study 2.25.501, and [F7] nowhere; also 2.25.772.",
        reasoning_content="F1 is the pneumothorax; F2 is unrelated.",
    ))
    answerer = OpenAIAnswerer(server.url + "/chat/completions", "served-llm", api_key="sk-secret", max_new_tokens=99)
    answer = answerer.answer("  Is there a pneumothorax?  ", evidence)
    [request] = server.received(CHAT_PATH)
    body = request.json
    assert body["model"] == "served-llm" and body["max_tokens"] == 99 and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "[F1]" in body["messages"][0]["content"]  # asked to cite
    user = body["messages"][1]["content"]
    assert user.startswith("Question: Is there a pneumothorax?\n")
    for k, e in enumerate(evidence):
        assert prompts.evidence_line(k, e) in user
    assert request.headers["authorization"] == "Bearer sk-secret" and "sk-secret" not in repr(answerer)
    assert answer.citations == ("2.25.771", "2.25.772")
    assert answer.dropped_citations == 1  # F7
    assert answer.trace == "F1 is the pneumothorax; F2 is unrelated."
    assert answer.text.startswith("A left pneumothorax [F1]") and answer.backend == "openai:served-llm"
    answerer.close()


def test_openai_think_block_goes_to_the_trace_and_failures_retry(
    server: OpenAIServer, evidence: list[Evidence]
) -> None:
    server.queue(Reply(503, error_body("busy", 503)), reply_with("<think>weighing F2</think>A nodule [F2]."))
    answerer = OpenAIAnswerer(server.url, "m", retries=2, backoff=0.01)
    answer = answerer.answer("nodule?", evidence)
    assert len(server.received(CHAT_PATH)) == 2
    assert (answer.trace, answer.text, answer.citations) == ("weighing F2", "A nodule [F2].", ("2.25.772",))


def test_openai_refusal_fails_clearly_without_the_key(server: OpenAIServer, evidence: list[Evidence]) -> None:
    server.queue(Reply(400, error_body("bad model for key sk-secret", 400)))
    answerer = OpenAIAnswerer(server.url, "m", api_key="sk-secret", retries=3, backoff=0.01)
    with pytest.raises(AnswerFailed, match=r"answered POST /chat/completions with HTTP 400, not retried") as info:
        answerer.answer("nodule?", evidence)
    assert "sk-secret" not in str(info.value) and "<api_key>" in str(info.value)
    assert len(server.received(CHAT_PATH)) == 1


def test_openai_settings_build_the_answerer(server: OpenAIServer) -> None:
    settings = ReasoningSettings(backend="openai", model="served-llm", url=server.url, retries=0)
    answerer = make_answerer(settings)
    assert isinstance(answerer, OpenAIAnswerer) and answerer.name == "openai:served-llm"


# -- transformers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from tests.tiny_models import tiny_causal_lm

    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen3"))


def test_transformers_answer_from_a_tiny_local_causal_lm(
    tiny_lm: Path, evidence: list[Evidence], monkeypatch: pytest.MonkeyPatch
) -> None:
    from apolo_node.reasoning.transformers_backend import TransformersAnswerer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = ReasoningSettings(backend="transformers", model=str(tiny_lm), device="cpu", max_new_tokens=24)
    answerer = make_answerer(settings)
    assert isinstance(answerer, TransformersAnswerer) and answerer.name == f"transformers:{tiny_lm.name}"
    prompt = answerer.prompt("Is there a pneumothorax?", evidence)
    assert prompt.startswith("<|im_start|>system\n" + prompts.SYSTEM_PROMPT)  # the model's own template
    assert prompt.endswith("<|im_start|>assistant\n") and prompts.evidence_line(2, evidence[2]) in prompt
    raw = answerer.generate(prompt)
    assert isinstance(raw, str) and "<|im_end|>" not in raw and "<|endoftext|>" not in raw
    answer = answerer.answer("Is there a pneumothorax?", evidence)
    # Gibberish, but the same gibberish, read by the same parsers: citations checked, the rest counted.
    _, text = split_trace(raw)
    expected = resolve(answer.text, evidence)
    assert (answer.citations, answer.dropped_citations) == (expected.citations, expected.dropped)
    assert set(answer.citations) <= {e.tracking_uid for e in evidence}
    assert answer.text == (text or "The model gave no answer.")
    answerer.close()


def test_transformers_model_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    settings = ReasoningSettings(backend="transformers", model=str(tmp_path / "no-such-model"), device="cpu")
    path_missing = r"\[reasoning\] model '.*no-such-model' is a path, but no such folder"
    with pytest.raises(ReasoningUnavailable, match=path_missing):
        make_answerer(settings)
