"""A study's narrative (findings text and impression): made from the model's prose or templated,
written into the TID 1500 SR beside the findings, and read back."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import Engine, insert, select, update

from apolo_node.catalog import reports
from apolo_node.catalog.records import list_studies
from apolo_node.catalog.reports import report_for
from apolo_node.catalog.models import Report, Study
from apolo_node.catalog.search import Filters
from apolo_node.findings import Algorithm
from apolo_node.imaging import ModelImage
from apolo_node.vision.backend import Context, Described, VisionBackend
from apolo_node.vision.grounding import parse
from apolo_node.reasoning.ask import ask
from apolo_node.reasoning.retrieval import Retriever
from apolo_node.sr import read_measurement_report
from apolo_node.sr.narrative import (
    TEMPLATE_NOTE,
    TEXT_MAX,
    TRACE_MAX,
    Narrative,
    bounded,
    compose_narrative,
    split_prose,
)
from tests.peer_fixtures import dciodvfy_errors, need_tool
from tests.nodes import apolo
from tests.test_pipeline_describe import reported_phantom_study
from tests.test_reasoning_retrieval import three_studies
from tests.test_sr_measurement_report import ALGORITHM, build, findings_on, round_trip, study, write

__all__ = ["study"]  # the fixture, imported for these tests

DISCLAIMER = "Research use only."
NARRATIVE = Narrative(
    findings="Right upper lobe nodule, 8 mm.\nNo pleural effusion; café-au-lait and 肺 text kept.",
    impression="Pulmonary nodule; follow-up CT suggested.",
    trace="The round opacity could be a vessel seen end-on, but it does not branch.",
)


# --- composing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prose", "findings", "impression"),
    [
        ("No acute abnormality. Impression: normal chest", "No acute abnormality.", "normal chest"),
        ("**Findings:** clear lungs.\n\n**Impression:** Normal.", "clear lungs.", "Normal."),
        ("FINDINGS: a nodule.\nCONCLUSION: follow up", "a nodule.", "follow up"),
        ("Findings: the impression of a mass, not an impression heading.", "the impression of a mass, "
         "not an impression heading.", ""),
    ],
)
def test_prose_is_split_at_its_impression_heading(prose: str, findings: str, impression: str) -> None:
    assert split_prose(prose) == (findings, impression)


def test_prose_without_impression_keeps_its_text_and_gets_the_templated_impression(study) -> None:
    ct, us = study
    found = findings_on(ct, us)
    n = compose_narrative(["Lungs are clear.", "  ", "Heart size normal."], [], found, 4, ALGORITHM)
    assert n.findings == "Lungs are clear.\n\nHeart size normal."
    assert n.impression.startswith(TEMPLATE_NOTE) and "3 findings on 4 images" in n.impression
    assert "Pulmonary nodule, Free fluid, Shadowing" in n.impression and n.trace == ""


def test_each_answer_is_split_on_its_own_and_a_repeated_part_is_said_once() -> None:
    n = compose_narrative(
        ["Lungs clear. Impression: normal", "Heart normal.", "Lungs clear. Impression: normal"], [], [], 3, ALGORITHM
    )
    assert (n.findings, n.impression) == ("Lungs clear.\n\nHeart normal.", "normal")


def test_the_model_impression_is_kept_and_the_trace_is_apart(study) -> None:
    ct, us = study
    n = compose_narrative(
        ["No acute abnormality. Impression: normal chest"], ["Maybe a nodule? No, a vessel."],
        findings_on(ct, us), 1, ALGORITHM,
    )
    assert n == Narrative("No acute abnormality.", "normal chest", "Maybe a nodule? No, a vessel.")


def test_without_prose_the_template_names_each_label_once_and_says_it_is_non_diagnostic(study) -> None:
    ct, us = study
    n = compose_narrative([], [], findings_on(ct, us), 2, Algorithm("apolo-baseline", "1.0"))
    lines = n.findings.splitlines()
    assert len(lines) == 3 and lines[0].startswith("Pulmonary nodule: 1 finding on 1 image (")
    assert "right upper lobe" in lines[0] and "Round 8 mm opacity." in lines[0]
    assert lines[2] == "Shadowing: 1 finding on 1 image."
    assert n.impression == (
        f"{TEMPLATE_NOTE}. apolo-baseline 1.0 found 3 findings on 2 images: "
        "Pulmonary nodule, Free fluid, Shadowing."
    )


def test_a_label_seen_twice_is_one_line_whose_description_says_it_is_the_first(study) -> None:
    ct, us = study
    first, *rest = findings_on(ct, us)
    again = dataclasses.replace(first, tracking_uid=first.tracking_uid + ".2", description="Other words.")
    line = compose_narrative([], [], [first, again, *rest], 2, ALGORITHM).findings.splitlines()[0]
    assert line.startswith("Pulmonary nodule: 2 findings on 1 image") and "The first: Round 8 mm" in line
    assert "Other words." not in line


def test_nothing_found_still_makes_a_non_empty_report() -> None:
    n = compose_narrative([], [], [], 3, ALGORITHM)
    assert n.findings == "No finding on the 3 images looked at."
    assert n.impression.startswith(TEMPLATE_NOTE) and "found no finding on 3 images" in n.impression


def test_a_runaway_answer_is_cut_and_says_so() -> None:
    n = compose_narrative(["x" * (TEXT_MAX * 3)], ["y" * (TRACE_MAX * 2)], [], 1, ALGORITHM)
    assert len(n.findings) == TEXT_MAX and n.findings.endswith(f"[... cut at {TEXT_MAX} characters]")
    assert len(n.trace) == TRACE_MAX
    assert bounded("  short  ", 10) == "short"  # what fits is kept whole


def test_control_characters_are_dropped_and_line_ends_kept() -> None:
    n = compose_narrative(["Clear\x1b[31m lungs\x00.\r\nImpression: normal\x07"], ["a\tb\rc"], [], 1, ALGORITHM)
    assert (n.findings, n.impression, n.trace) == ("Clear[31m lungs.", "normal", "a\tb\nc")


# --- in the SR ---------------------------------------------------------------------------------


def test_the_narrative_and_trace_round_trip_with_findings_and_disclaimer(study, tmp_path: Path) -> None:
    ct, us = study
    found = findings_on(ct, us)
    content = round_trip(build(found, [ct, us], disclaimer=DISCLAIMER, narrative=NARRATIVE), tmp_path)
    assert content.narrative == NARRATIVE
    assert content.disclaimer == DISCLAIMER and len(content.findings) == 3


def test_an_sr_without_narrative_reads_back_none(study, tmp_path: Path) -> None:
    ct, us = study
    assert round_trip(build([], [ct, us], disclaimer=DISCLAIMER), tmp_path).narrative is None


def test_an_empty_trace_leaves_no_item_and_no_local_scheme(study, tmp_path: Path) -> None:
    ct, us = study
    sr = build([], [ct, us], narrative=Narrative("Clear.", "Normal."))
    assert "CodingSchemeIdentificationSequence" not in sr  # no local code used anywhere
    assert round_trip(sr, tmp_path).narrative == Narrative("Clear.", "Normal.", "")
    traced = build([], [ct, us], narrative=NARRATIVE)
    assert traced.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99APOLO"


def test_dciodvfy_passes_and_dcmtk_renders_the_narrative(study, tmp_path: Path) -> None:
    ct, us = study
    path = write(build(findings_on(ct, us), [ct, us], disclaimer=DISCLAIMER, narrative=NARRATIVE), tmp_path)
    assert dciodvfy_errors(path) == []
    dump = subprocess.run([need_tool("dsrdump"), "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    for line in (NARRATIVE.impression, DISCLAIMER, "Right upper lobe nodule, 8 mm."):
        assert line in dump.stdout
    assert 'TEXT:(,,"Impression")="Pulmonary nodule' in dump.stdout
    assert 'TEXT:(,,"Finding")="Right upper lobe' in dump.stdout
    html_path = tmp_path / "sr.html"
    done = subprocess.run(
        [need_tool("dsr2html"), str(path), str(html_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    html = html_path.read_text(encoding="utf-8", errors="replace")
    assert "Impression" in html and "follow-up CT suggested" in html and "does not branch" in html
    assert read_measurement_report(dcmread(path)).narrative == NARRATIVE


# --- searchable by ask -------------------------------------------------------------------------


def narrate(engine: Engine, study_uid: str, findings: str, impression: str) -> None:
    """Give a catalogued study's report this narrative, as the vision stage stores it."""
    with engine.begin() as conn:
        study_id = conn.execute(select(Study.id).where(Study.study_uid == study_uid)).scalar_one()
        conn.execute(update(Report).where(Report.study_id == study_id).values(
            narrative_findings=findings, impression=impression))


def narrated_studies(engine: Engine) -> None:
    """Three studies; the head MR's impression says what none of its findings' texts says."""
    three_studies(engine)
    narrate(engine, "2.25.103", "Periventricular lesions.", "Pattern suggests demyelination; MS clinic.")
    templated = compose_narrative([], [], [], 1, ALGORITHM)
    for uid in ("2.25.101", "2.25.102"):
        narrate(engine, uid, templated.findings, templated.impression)


def test_words_of_an_impression_find_its_study_through_ask(engine: Engine, cfg) -> None:
    narrated_studies(engine)
    got = Retriever(engine, limit=5).retrieve("Any demyelination?", Filters())
    assert got.mode == "text" and {e.study_uid for e in got.evidence} == {"2.25.103"}
    assert all(0 < e.score <= 1 for e in got.evidence)
    answered = ask(  # text retrieval: the embedder, when installed, would weigh every finding
        engine, cfg.reasoning, "Any demyelination?", Filters(), actor="tester", retriever=Retriever(engine, limit=5)
    )
    assert answered.studies == ["2.25.103"] and answered.answer.citations
    within = Retriever(engine, limit=5).retrieve("demyelination", Filters(study_uid="2.25.101"))
    assert "2.25.103" not in {e.study_uid for e in within.evidence}, "filters hold for narrative hits"


def test_narrative_hits_rank_after_finding_text_hits_and_are_not_repeated(engine: Engine) -> None:
    narrated_studies(engine)
    narrate(engine, "2.25.101", "A pneumothorax and a nodule.", "Pneumothorax; see also the effusion.")
    got = Retriever(engine, limit=10).retrieve("pneumothorax effusion", Filters())
    uids = [e.tracking_uid for e in got.evidence]
    assert len(uids) == len(set(uids))
    text_first = [e.finding.label for e in got.evidence[:2]]
    assert set(text_first) == {"Pneumothorax", "Pleural effusion"}  # their own text holds the words
    assert got.evidence[-1].finding.label == "Nodule" and got.evidence[-1].score < got.evidence[1].score


def test_the_templated_note_and_part_words_match_nothing(engine: Engine) -> None:
    narrated_studies(engine)
    assert reports.narrative_matches(engine, ["radiologist", "automated", "summary"]) == []
    assert reports.narrative_matches(engine, ["demyelin"]) == []  # whole words, not their parts
    assert reports.narrative_matches(engine, ["demyelination", "ms", "x%_"]) == [("2.25.103", 2 / 3)]
    assert reports.TEMPLATED_NOTE == TEMPLATE_NOTE.lower()


# --- through the vision stage ------------------------------------------------------------------


# A reasoning model's answer (issue 12): a box inside its <think> block, prose outside it.
THINKING = (
    "<think>Maybe a nodule <box>[[100,100,200,200]]</box>? No, a vessel.</think>"
    "Findings: no acute abnormality. Impression: normal chest"
)


class ProseBackend(VisionBackend):
    """A backend that answers every image with ``THINKING``, read by the grounding parser."""

    algorithm = Algorithm("prose-model", "2")

    def describe_batch(self, images: Sequence[ModelImage], contexts: Sequence[Context]) -> list[Described]:
        return [parse(THINKING) for _ in images]


def test_a_model_narrative_and_its_trace_reach_the_sr_the_catalog_and_report(tmp_path: Path, cfg) -> None:
    from apolo_node.catalog import jobs
    from apolo_node.catalog.models import Job
    from apolo_node.pipeline import describe
    from apolo_node.spool import Spool

    engine = reported_phantom_study(cfg, tmp_path)  # the baseline's report first, then the model's
    try:
        [study] = list_studies(engine)
        with engine.begin() as conn:
            study_id = conn.execute(select(Study.id).where(Study.study_uid == study.study_uid)).scalar_one()
            conn.execute(insert(Job).values(kind="describe", study_id=study_id, state="pending", attempts=0))
        assert describe.run_once(engine, Spool(cfg.spool_root), ProseBackend(), cfg, "w1") is True
        assert jobs.job_states(engine, study.study_uid)[-1] == ("describe", "done")
        stored = report_for(engine, study.study_uid)
    finally:
        engine.dispose()
    assert stored is not None and stored.findings == [], "no finding from inside the <think> block"
    # every image gave the same answer and the same trace: each said once (vision.look keeps a
    # study's repeated prose and trace lines once)
    assert (stored.record.narrative_findings, stored.record.impression) == ("no acute abnormality.", "normal chest")
    assert stored.record.trace.count("No, a vessel.") == 1 and stored.record.images > 1
    sr_path = cfg.spool_root / stored.record.path
    assert dciodvfy_errors(sr_path) == []
    content = read_measurement_report(dcmread(sr_path))
    assert content.narrative == Narrative(
        stored.record.narrative_findings, stored.record.impression, stored.record.trace
    )
    shown = json.loads(apolo(cfg, "report", study.study_uid, "--json").stdout)
    assert shown["narrative"]["impression"] == "normal chest" and "<box>" in shown["narrative"]["trace"]
    assert "<box>" in content.narrative.trace  # the trace is in the SR


def test_a_question_scans_the_newest_narratives_only_unless_it_names_the_study(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    narrated_studies(engine)  # 2.25.101 was reported first, 2.25.103 last
    narrate(engine, "2.25.101", "Old sarcoidosis.", "Sarcoidosis.")
    monkeypatch.setattr(reports, "NARRATIVE_SCAN_MAX", 2)
    assert reports.narrative_matches(engine, ["sarcoidosis"]) == []
    assert reports.narrative_matches(engine, ["sarcoidosis"], "2.25.101") == [("2.25.101", 1.0)]
    assert reports.narrative_matches(engine, ["demyelination"]) == [("2.25.103", 1.0)]
