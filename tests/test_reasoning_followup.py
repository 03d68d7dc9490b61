"""Follow-ups: ``ask --follow-up ANSWER_ID`` keeps the earlier turn as context, and the audit links the two."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine

from apolo_node import config as config_mod
from apolo_node.catalog.answers import answer_by_id, audit_of
from apolo_node.config import Config, ReasoningSettings
from apolo_node.reasoning.ask import Filters, UnknownAnswer, ask, refers_back
from apolo_node.reasoning.openai_backend import OpenAIAnswerer
from tests.nodes import apolo, upgraded_engine
from tests.openai_server import OpenAIServer
from tests.test_reasoning_retrieval import three_studies

TEXT_ONLY = ReasoningSettings(semantic=False)


@pytest.mark.parametrize(
    ("question", "back"),
    [("Is it bigger?", True), ("How large is that finding?", True), ("它有多大？", True),
     ("Any fracture?", False), ("And pleural effusion in the chest?", False)],
)
def test_a_follow_up_refers_back_by_pronoun_only(question: str, back: bool) -> None:
    assert refers_back(question) is back


def test_it_resolves_to_the_findings_the_earlier_answer_cited(engine: Engine) -> None:
    three_studies(engine)
    first = ask(engine, TEXT_ONLY, "Is there a nodule?", Filters(), actor="dr-who")
    assert [e.finding.label for e in first.evidence] == ["Nodule"]
    then = ask(engine, TEXT_ONLY, "How large is it?", Filters(), actor="dr-who", follow_up=first.answer_id)
    assert then.evidence[0].tracking_uid == first.answer.citations[0]  # "it": the nodule, named first
    assert then.answer.citations[0] == first.answer.citations[0]
    assert f'This follows up answer {first.answer_id}: "it" is taken to mean the findings that answer cited: ' \
           "Nodule (right upper lobe) [F1]." in then.answer.text
    assert then.follows == first.answer_id and then.as_json()["follows"] == first.answer_id
    stored = answer_by_id(engine, then.answer_id)
    assert stored is not None and stored.follows == first.answer_id
    assert answer_by_id(engine, first.answer_id).follows is None  # type: ignore[union-attr]
    [audit] = audit_of(engine, then.answer_id)
    assert audit.detail == f"follow-up of answer {first.answer_id}: How large is it?"

    # a follow-up with words of its own keeps its own hits first, and the earlier ones after
    own = ask(engine, TEXT_ONLY, "And a pleural effusion?", Filters(), follow_up=first.answer_id)
    assert [e.finding.label for e in own.evidence] == ["Pleural effusion", "Nodule"]

    with pytest.raises(UnknownAnswer, match="answer 9999 is not in the catalog"):
        ask(engine, TEXT_ONLY, "and it?", Filters(), follow_up=9999)


def test_a_model_gets_the_earlier_turn_in_its_prompt(engine: Engine) -> None:
    three_studies(engine)
    first = ask(engine, TEXT_ONLY, "Is there a pneumothorax?", Filters())
    with OpenAIServer(default_content="It is on the left [F1].") as server:
        answerer = OpenAIAnswerer(server.url, "test-model")
        try:
            then = ask(engine, TEXT_ONLY, "Which side is it on?", Filters(), answerer=answerer,
                       follow_up=first.answer_id)
        finally:
            answerer.close()
        [request] = server.requests
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.messages[1]["content"] == "Question: Is there a pneumothorax?"
    assert "[F" not in request.messages[2]["content"]  # the earlier references numbered other evidence
    assert "Pneumothorax (lung apex)" in request.messages[2]["content"]
    assert "the findings it cited are [F1]" in request.messages[3]["content"]
    assert then.answer.citations == first.answer.citations[:1]

    # a follow-up of the follow-up: the model sees the whole conversation, oldest first
    with OpenAIServer(default_content="No [F1].") as server:
        answerer = OpenAIAnswerer(server.url, "test-model")
        try:
            ask(engine, TEXT_ONLY, "Has it grown?", Filters(), answerer=answerer, follow_up=then.answer_id)
        finally:
            answerer.close()
        [request] = server.requests
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in request.messages[1:5:2]] == [
        "Question: Is there a pneumothorax?", "Question: Which side is it on?"]
    assert request.messages[4]["content"] == "It is on the left."
    assert answer_by_id(engine, then.answer_id).follows == first.answer_id  # type: ignore[union-attr]


def test_the_earlier_answer_text_loses_its_references_only() -> None:
    from apolo_node.reasoning.prompts import earlier_answer

    assert earlier_answer("A nodule [F1] and an effusion [F2, F3]; see [note].") == "A nodule and an effusion; see [note]."


def test_follow_up_on_the_command_line(cfg: Config) -> None:
    engine = upgraded_engine(cfg)
    try:
        three_studies(engine)
    finally:
        engine.dispose()
    cfg = config_mod.replace(cfg, reasoning={"semantic": False})
    first = apolo(cfg, "ask", "Is there a nodule?", "--json")
    assert first.returncode == 0, first.stderr
    answer_id = json.loads(first.stdout)["answer_id"]
    then = apolo(cfg, "ask", "Is it solid?", "--follow-up", str(answer_id), "--json")
    assert then.returncode == 0, then.stderr
    shown = json.loads(then.stdout)
    assert shown["follows"] == answer_id and shown["evidence"][0]["label"] == "Nodule"
    unknown = apolo(cfg, "ask", "Is it solid?", "--follow-up", "4242")
    assert unknown.returncode == 2
    assert "answer 4242 is not in the catalog (--follow-up takes the answer_id ask gave)" in unknown.stderr
