"""``ask``: evidence, answer, and the answer and audit rows; ``apolo-node ask`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import Engine, text

from apolo_node import config as config_mod
from apolo_node.catalog.answers import answer_by_id, audit_of
from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.records import list_studies
from apolo_node.catalog.reports import report_for
from apolo_node.config import Config, ReasoningSettings
from apolo_node.pipeline.ingest import ingest
from apolo_node.reasoning.ask import Filters, UnknownStudy, ask, os_user
from apolo_node.reasoning.backend import NOTHING_FOUND
from tests.nodes import apolo, upgraded_engine
from tests.synthetic import new_marker, phantom_ct
from tests.test_reasoning_retrieval import three_studies

TEXT_ONLY = ReasoningSettings(semantic=False)
FINDING_KEYS = {"tracking_uid", "label", "code", "description", "box", "sop_instance_uid", "frame", "confidence",
                "laterality", "location", "measurements"}


def test_ask_answers_from_the_catalog_and_audits_the_question(engine: Engine) -> None:
    three_studies(engine)
    question = "Is there a pleural effusion or a nodule?"
    result = ask(engine, TEXT_ONLY, question, Filters(body_part="CHEST"), actor="dr-who")
    assert [e.finding.label for e in result.evidence] == ["Pleural effusion", "Nodule"]
    assert result.studies == ["2.25.102", "2.25.101"]
    assert set(result.answer.citations) == {e.tracking_uid for e in result.evidence}

    stored = answer_by_id(engine, result.answer_id)
    assert stored is not None
    assert (stored.question, stored.answer, stored.trace) == (question, result.answer.text, result.answer.trace)
    assert stored.citations == result.answer.citations and stored.backend == "extractive"
    [audit] = audit_of(engine, result.answer_id)
    assert (audit.actor, audit.action, audit.detail) == ("dr-who", "ask", question)
    assert audit.studies == ("2.25.102", "2.25.101")

    shown = result.as_json()
    assert shown["answer_id"] == result.answer_id and shown["dropped_citations"] == 0
    assert shown["citations"] == list(result.answer.citations)
    first = shown["evidence"][0]
    assert FINDING_KEYS <= set(first) and first["ref"] == "F1" and first["cited"] is True
    assert (first["study_uid"], first["sr_sop_instance_uid"]) == ("2.25.102", "2.25.102.8.1")
    assert shown["filters"]["body_part"] == "CHEST" and shown["retrieval"]["mode"] == "text"


def test_with_no_finding_in_reach_nothing_is_loaded_and_the_answer_says_so(engine: Engine) -> None:
    # A model that does not exist: never loaded, since there is nothing to answer from.
    settings = ReasoningSettings(backend="transformers", model="/no/such/model", semantic=True)
    result = ask(engine, settings, "Any fracture?", Filters())
    assert result.answer.text == NOTHING_FOUND and result.evidence == () and result.answer.citations == ()
    [audit] = audit_of(engine, result.answer_id)
    assert audit.actor == os_user() and audit.studies == ()
    with pytest.raises(UnknownStudy, match="study 2.25.4040 is not in the catalog"):
        ask(engine, settings, "Any fracture?", Filters(study_uid="2.25.4040"))


def text_only(cfg: Config) -> Config:
    """``cfg`` with text search only: the embedding model takes ~10 s to load in each subprocess."""
    return config_mod.replace(cfg, reasoning={"semantic": False})


def test_ask_end_to_end_on_an_ingested_study(tmp_path: Path, cfg: Config) -> None:
    cfg = text_only(cfg)
    marker = new_marker()
    (tmp_path / "in").mkdir()
    study, series = generate_uid(), generate_uid()
    for n in (1, 2):
        phantom_ct(study_uid=study, series_uid=series, number=n, marker=marker).save_as(
            tmp_path / "in" / f"ct{n}.dcm", enforce_file_format=True)
    upgraded_engine(cfg).dispose()
    assert ingest(cfg, [tmp_path / "in"]).stored == 2
    engine = engine_for(cfg)
    try:
        [reported] = list_studies(engine)
        stored = report_for(engine, reported.study_uid)
    finally:
        engine.dispose()
    assert reported.status == "reported" and stored is not None

    done = apolo(cfg, "ask", "Is there any metal or bone?", "--json",
                 "--modality", "ct", "--body-part", "chest", "--since", "1900-01-01")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert {"answer", "trace", "citations", "evidence", "dropped_citations", "answer_id"} <= set(shown)
    assert [e["label"] for e in shown["evidence"]][:2] == ["Metal", "Bone"]
    by_uid = {f.tracking_uid: f for f in stored.findings}
    for item in shown["evidence"]:
        assert item["study_uid"] == reported.study_uid
        assert item["sr_sop_instance_uid"] == stored.record.sop_instance_uid
        assert {k: item[k] for k in FINDING_KEYS} == by_uid[item["tracking_uid"]].as_json()
        assert isinstance(item["score"], float)
    assert shown["citations"] and set(shown["citations"]) <= set(by_uid)
    assert shown["dropped_citations"] == 0 and reported.study_uid in shown["answer"]

    table = apolo(cfg, "ask", "metal?")
    assert table.returncode == 0, table.stderr
    for shown_text in ("answer 2 (extractive)", "evidence: ", "Metal", "trace", reported.study_uid):
        assert shown_text in table.stdout, shown_text

    nothing = apolo(cfg, "ask", "metal?", "--json", "--modality", "MR")
    assert nothing.returncode == 0 and json.loads(nothing.stdout)["answer"] == NOTHING_FOUND

    engine = engine_for(cfg)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT actor, action, detail, studies, answer_id FROM audit ORDER BY id")).all()
            answers = conn.execute(text("SELECT question, answer, trace, citations FROM answer")).all()
    finally:
        engine.dispose()
    assert [(r.actor, r.action, r.detail, json.loads(r.studies)) for r in rows] == [
        (os_user(), "ask", "Is there any metal or bone?", [reported.study_uid]),
        (os_user(), "ask", "metal?", [reported.study_uid]),
        (os_user(), "ask", "metal?", []),
    ]
    assert [r.answer_id for r in rows] == [shown["answer_id"], shown["answer_id"] + 1, shown["answer_id"] + 2]
    written = done.stdout + table.stdout + json.dumps([list(r) for r in rows + answers])
    assert marker not in written and marker.lower() not in written.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2024-02-30"], "--since must be a date as YYYY-MM-DD (or YYYYMMDD), got '2024-02-30'"),
        (["--until", "yesterday"], "--until must be a date as YYYY-MM-DD (or YYYYMMDD), got 'yesterday'"),
        (["--since", "20240501", "--until", "2024-04-01"], "--since 2024-05-01 is after --until 2024-04-01"),
        (["--study", "2.25.4040"], "study 2.25.4040 is not in the catalog"),
    ],
)
def test_ask_refuses_bad_input_with_exit_2(tmp_path: Path, cfg: Config, args: list[str], message: str) -> None:
    upgraded_engine(cfg).dispose()
    done = apolo(text_only(cfg), "ask", "metal?", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
