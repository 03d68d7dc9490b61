"""Answer report SR: built from a question, answer, trace and cited findings; checked by dciodvfy and
dsrdump; read back from bytes. The cited findings live in a real TID 1500 SR made by measurement_report.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage

from apolo_node.findings import LOCAL_SCHEME, Algorithm, Box, Code, Finding
from apolo_node.sr import (
    AnswerReportContent,
    Citation,
    CitedFinding,
    answer_report,
    measurement_report,
    read_answer_report,
)
from tests.peer_fixtures import dciodvfy_errors, need_tool
from tests.sr_evidence import uid
from tests.test_sr_presentation_state import ct_slice, multiframe

VISION = Algorithm(name="apolo-baseline", version="0.3.1")
REASONING = Algorithm(name="apolo-extractive", version="1.2.0")
QUESTION = "Is there a lung nodule, and where?"
ANSWER = "Yes: one 8 mm nodule in the right upper lobe (slice 1); fluid on frame 3 of the cine."
# a long trace, beyond what ST/LT hold, with text beyond ASCII and line breaks: kept whole
TRACE = "\n".join(f"Passo {i}: vi a opacidade ≥ 8 mm e cito o achado." for i in range(2000))


@dataclasses.dataclass
class Case:
    """One de-identified study with a TID 1500 SR holding three findings."""

    ct: Dataset
    mf: Dataset
    sr: Dataset
    findings: list[Finding]

    def cite(self, *indices: int) -> list[CitedFinding]:
        return [
            CitedFinding(self.findings[i], self.sr.SOPInstanceUID, self.sr.SeriesInstanceUID) for i in indices
        ]


@pytest.fixture
def case() -> Case:
    study = uid()
    ct, mf = ct_slice(study), multiframe(study)
    findings = [
        Finding(uid(), "Pulmonary nodule", Code("27925004", "SCT", "Nodule"), ct.SOPInstanceUID,
                ct.SOPClassUID, box=Box(10.5, 12.25, 30, 40), confidence=0.87),
        Finding(uid(), "Free fluid", Code("free-fluid", LOCAL_SCHEME, "Free fluid"), mf.SOPInstanceUID,
                mf.SOPClassUID, frame=3),
        Finding(uid(), "Shadowing", Code("shadowing", LOCAL_SCHEME, "Shadowing"), mf.SOPInstanceUID,
                mf.SOPClassUID, frame=2, box=Box(1, 2, 63, 47.5)),
    ]
    sr = measurement_report(findings, [ct, mf], VISION, series_instance_uid=uid(), sop_instance_uid=uid())
    return Case(ct, mf, reread(sr), findings)


def reread(ds: Dataset) -> Dataset:
    """``ds`` written and read back, as the pipeline loads a report from its file."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def build(case: Case, cited: list[CitedFinding], evidence: list[Dataset] | None = None, **kwargs) -> Dataset:
    kwargs.setdefault("question", QUESTION)
    kwargs.setdefault("answer", ANSWER)
    kwargs.setdefault("trace", TRACE)
    return answer_report(
        cited=cited, evidence=[case.ct, case.mf, case.sr] if evidence is None else evidence,
        algorithm=REASONING, series_instance_uid=uid(), sop_instance_uid=uid(), **kwargs,
    )


def write(ds: Dataset, tmp_path: Path) -> Path:
    path = tmp_path / "answer.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def children(item: Dataset, code_value: str, value_type: str | None = None) -> list[Dataset]:
    return [
        c for c in item.get("ContentSequence", [])
        if c.ConceptNameCodeSequence[0].CodeValue == code_value and value_type in (None, c.ValueType)
    ]


def expected_citation(case: Case, finding: Finding, frame: int) -> Citation:
    return Citation(
        tracking_uid=finding.tracking_uid, label=finding.label, code=finding.code,
        sop_instance_uid=finding.sop_instance_uid, sop_class_uid=finding.sop_class_uid, frame=frame,
        report_sop_instance_uid=case.sr.SOPInstanceUID, report_sop_class_uid=ComprehensiveSRStorage,
        report_series_uid=case.sr.SeriesInstanceUID,
    )


# --- round trip -------------------------------------------------------------------------------


def test_question_answer_trace_algorithm_and_citations_survive_a_round_trip(case, tmp_path) -> None:
    content = read_answer_report(dcmread(write(build(case, case.cite(0, 1, 2)), tmp_path)))
    assert content == AnswerReportContent(
        question=QUESTION, answer=ANSWER, trace=TRACE, algorithm=REASONING,
        citations=(
            expected_citation(case, case.findings[0], 1),
            expected_citation(case, case.findings[1], 3),
            expected_citation(case, case.findings[2], 2),
        ),
    )
    assert len(TRACE.encode()) > 65_534  # longer than any LT value: UT keeps it whole


def test_an_answer_without_citations_or_trace_reads_back_empty(case, tmp_path) -> None:
    sr = build(case, [], evidence=[case.ct], trace="")
    assert not children(sr, "reasoning-trace")  # an empty trace is left out, not written empty
    content = read_answer_report(dcmread(write(sr, tmp_path)))
    assert (content.question, content.answer, content.trace, content.citations) == (QUESTION, ANSWER, "", ())


# --- structure --------------------------------------------------------------------------------


def test_the_answer_joins_the_study_and_lists_every_referenced_object_as_evidence(case) -> None:
    series, instance = uid(), uid()
    sr = answer_report(QUESTION, ANSWER, TRACE, case.cite(0, 1), [case.ct, case.mf, case.sr], REASONING,
                       series_instance_uid=series, sop_instance_uid=instance)
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (series, instance)
    assert (sr.SeriesNumber, sr.InstanceNumber) == (991, 1)
    assert (sr.StudyInstanceUID, sr.PatientID) == (case.ct.StudyInstanceUID, case.ct.PatientID)
    # nobody has signed it: unverified and preliminary
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "COMPLETE", "UNVERIFIED", "PRELIMINARY",
    )
    listed = {
        (series_item.SeriesInstanceUID, item.ReferencedSOPInstanceUID)
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series_item in study_item.ReferencedSeriesSequence
        for item in series_item.ReferencedSOPSequence
    }
    assert listed == {(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in (case.ct, case.mf, case.sr)}


def test_the_content_tree_says_request_conclusion_trace_and_algorithm(case) -> None:
    sr = build(case, case.cite(0))
    title = sr.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "18748-4", "LN", "Diagnostic Imaging Report",
    )
    assert sr.ContinuityOfContent == "SEPARATE"  # separate statements, not one narrative
    assert [c.TextValue for c in children(sr, "55115-0", "TEXT")] == [QUESTION]
    assert [c.TextValue for c in children(sr, "121077", "TEXT")] == [ANSWER]
    (trace,) = children(sr, "reasoning-trace", "TEXT")
    assert trace.ConceptNameCodeSequence[0].CodingSchemeDesignator == LOCAL_SCHEME
    assert [i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence] == [LOCAL_SCHEME]
    assert [c.TextValue for c in children(sr, "111001", "TEXT")] == [REASONING.name]  # TID 4019
    assert [c.TextValue for c in children(sr, "111003", "TEXT")] == [REASONING.version]
    (device,) = children(sr, "121013", "TEXT")  # TID 1004 Device Observer Name
    assert (device.TextValue, device.RelationshipType) == (REASONING.name, "HAS OBS CONTEXT")


def test_each_cited_finding_is_a_container_with_tracking_code_image_and_report(case) -> None:
    sr = build(case, case.cite(0, 1))
    containers = children(sr, "121071", "CONTAINER")
    assert len(containers) == 2
    for container, finding, frame in zip(containers, case.findings[:2], (None, 3), strict=True):
        first = container.ContentSequence[0]
        assert (first.ValueType, first.ConceptNameCodeSequence[0].CodeValue, first.UID) == (
            "UIDREF", "112040", finding.tracking_uid,
        )
        assert children(container, "112039", "TEXT")[0].TextValue == finding.label
        concept = children(container, "121071", "CODE")[0].ConceptCodeSequence[0]
        assert (concept.CodeValue, concept.CodingSchemeDesignator) == (finding.code.value, finding.code.scheme)
        image = children(container, "121324", "IMAGE")[0].ReferencedSOPSequence[0]
        assert image.ReferencedSOPInstanceUID == finding.sop_instance_uid
        assert image.get("ReferencedFrameNumber") == frame  # only on the multi-frame instance
        report = children(container, "128225", "COMPOSITE")[0].ReferencedSOPSequence[0]
        assert (report.ReferencedSOPClassUID, report.ReferencedSOPInstanceUID) == (
            ComprehensiveSRStorage, case.sr.SOPInstanceUID,
        )


def test_the_builder_leaves_its_evidence_untouched(case) -> None:
    before = copy.deepcopy([case.ct, case.mf, case.sr])
    build(case, case.cite(0, 1, 2))
    assert [case.ct, case.mf, case.sr] == before and "PixelData" in case.ct


# --- the tools: dciodvfy (dicom3tools) and dsrdump (dcmtk) --------------------------------------


def test_dciodvfy_finds_no_errors(case, tmp_path: Path) -> None:
    path = write(build(case, case.cite(0, 1, 2)), tmp_path)
    assert dciodvfy_errors(path) == []
    run = subprocess.run([need_tool("dciodvfy"), str(path)], check=False, capture_output=True, text=True,
                         timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    assert "ComprehensiveSR" in lines
    print("\n".join(line for line in lines if line.startswith("Warning")))


def test_dsrdump_shows_the_question_answer_and_tracking_uids(case, tmp_path: Path) -> None:
    dsrdump = need_tool("dsrdump")
    path = write(build(case, case.cite(0, 1), trace="Short trace."), tmp_path)
    result = subprocess.run([dsrdump, "+Pl", "+Pu", str(path)], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Diagnostic Imaging Report" in result.stdout
    for text in (QUESTION, ANSWER, "Short trace.", *(f.tracking_uid for f in case.findings[:2])):
        assert f'"{text}"' in result.stdout
    assert f'(ComprehensiveSRStorage,"{case.sr.SOPInstanceUID}")' in result.stdout  # the Source report


# --- errors -----------------------------------------------------------------------------------


def test_every_reference_must_resolve_to_the_evidence(case) -> None:
    missing_image = rf"sop_instance_uid {case.mf.SOPInstanceUID}, which is not in the evidence"
    with pytest.raises(ValueError, match=missing_image):
        build(case, case.cite(0, 1), evidence=[case.ct, case.sr])
    missing_report = rf"report_sop_instance_uid {case.sr.SOPInstanceUID}, which is not an SR"
    with pytest.raises(ValueError, match=missing_report):
        build(case, case.cite(0, 1), evidence=[case.ct, case.mf])


def test_a_citation_must_match_the_report_that_holds_it(case) -> None:
    (cited,) = case.cite(0)
    wrong_series = dataclasses.replace(cited, report_series_uid=uid())
    with pytest.raises(ValueError, match=rf"report_series_uid {wrong_series.report_series_uid}, but report"):
        build(case, [wrong_series])
    stranger = Finding(uid(), "Nodule", Code("27925004", "SCT", "Nodule"), case.ct.SOPInstanceUID,
                       case.ct.SOPClassUID)
    with pytest.raises(ValueError, match=rf"cited finding {stranger.tracking_uid} is not in report"):
        build(case, [dataclasses.replace(cited, finding=stranger)])
    moved = dataclasses.replace(case.findings[1], frame=1)
    with pytest.raises(ValueError, match=r"frame 1, but report .* has it on instance .* frame 3"):
        build(case, [dataclasses.replace(cited, finding=moved)])


def test_question_and_answer_must_be_text_and_evidence_one_study(case) -> None:
    with pytest.raises(ValueError, match="question must be non-empty"):
        build(case, case.cite(0), question=" ")
    with pytest.raises(ValueError, match="answer must be non-empty"):
        build(case, case.cite(0), answer="")
    with pytest.raises(ValueError, match="one study"):
        build(case, case.cite(0), evidence=[case.ct, case.mf, case.sr, ct_slice(uid())])
    with pytest.raises(ValueError, match="at least one"):
        build(case, [], evidence=[])


def test_the_reader_refuses_what_is_not_an_answer_report(case) -> None:
    with pytest.raises(ValueError, match="is not an apolo-node answer report"):
        read_answer_report(case.sr)  # a TID 1500 Imaging Measurement Report


def test_a_chinese_answer_is_utf8_in_chinese_and_dsrdump_reads_it(case, tmp_path: Path) -> None:
    question, answer = "有金属吗？", "与问题相关的发现共 1 项：Pulmonary nodule [F1]。以上发现由 AI 模型生成。"
    path = write(build(case, case.cite(0), question=question, answer=answer, trace=""), tmp_path)
    ds = dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    [language] = children(ds, "121049", "CODE")  # Language of Content Item and Descendants
    assert language.ConceptCodeSequence[0].CodeValue == "zh"
    content = read_answer_report(ds)
    assert (content.question, content.answer) == (question, answer)
    run = subprocess.run([need_tool("dsrdump"), "+U8", "+Pl", str(path)], check=False, capture_output=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    shown = run.stdout.decode("utf-8")
    assert f'"{question}"' in shown and f'"{answer}"' in shown
    english = dcmread(write(build(case, case.cite(0)), tmp_path))  # the same path: after dsrdump
    assert children(english, "121049", "CODE")[0].ConceptCodeSequence[0].CodeValue == "en-US"
