"""Answer Report: a clinician's question, the answer, its reasoning and cited findings, as a Comprehensive SR.

What goes back to the PACS after ``apolo-node ask``: the same study, a new series, a document a
PACS SR view shows as text, and ``read_answer_report`` gives back what ``answer_report`` wrote.

The content tree borrows the vocabulary of TID 2000 Basic Diagnostic Imaging Report without
claiming the template (it has no sections); every item hangs from the root (PS3.16):

- root: LN 18748-4 "Diagnostic Imaging Report" (CID 7000 Diagnostic Imaging Report Document
  Titles), with Language (TID 1204) and a device observer (TID 1004) for the algorithm, exactly
  as the TID 1500 reports name it, and TID 4019 Algorithm Identification (HAS CONCEPT MOD);
- the question: TEXT LN 55115-0 "Request" (CID 7002 Diagnostic Imaging Report Elements);
- the answer: TEXT DCM 121077 "Conclusion" (CID 7002);
- the reasoning trace: TEXT 99APOLO "reasoning-trace" "Reasoning trace" (no standard concept
  says "how a model reached its answer"; our local scheme is declared in the Coding Scheme
  Identification Sequence). TEXT is UT, up to 2^32-2 bytes, so the trace is kept whole; an
  empty trace is left out and reads back as "" (trailing spaces are padding in DICOM text, so
  no text gets them back);
- per cited finding a CONTAINER DCM 121071 "Finding" holding its Tracking Unique Identifier
  (UIDREF DCM 112040, first, as in TID 1500 groups), Tracking Identifier (TEXT DCM 112039, the
  label), Finding (CODE DCM 121071, its code), the image it was seen on (IMAGE DCM 121324
  "Source image", with Referenced Frame Number on a multi-frame instance) and the TID 1500 SR
  that holds it (COMPOSITE DCM 128225 "Source report").

Every object the tree references (images and TID 1500 SRs) must be passed in ``evidence``, so
that the Current Requested Procedure Evidence Sequence lists it; a cited SR is read back with
``read_measurement_report`` and must hold the cited finding, on the same image and frame.
The document is PRELIMINARY and UNVERIFIED: no person has signed it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage

from apolo_node.findings import Algorithm, Code, Finding
from apolo_node.sr.measurement_report import (
    FINDING,
    REASONING_TRACE,
    _check_findings,
    _code,
    _coded,
    _comprehensive_sr,
    _evidence_by_uid,
    _observer,
    _frames,
    _items,
    _text,
    _values,
    read_measurement_report,
)

DOCUMENT_TITLE = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic Imaging Report")  # CID 7000
CHINESE = hd.sr.CodedConcept("zh", "RFC5646", "Chinese")  # CID 5000 Languages
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
REQUEST = hd.sr.CodedConcept("55115-0", "LN", "Request")  # CID 7002
CONCLUSION = hd.sr.CodedConcept("121077", "DCM", "Conclusion")  # CID 7002
TRACKING_IDENTIFIER = hd.sr.CodedConcept("112039", "DCM", "Tracking Identifier")
SOURCE_IMAGE = hd.sr.CodedConcept("121324", "DCM", "Source image")
SOURCE_REPORT = hd.sr.CodedConcept("128225", "DCM", "Source report")
ALGORITHM_NAME = hd.sr.CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = hd.sr.CodedConcept("111003", "DCM", "Algorithm Version")


@dataclass(frozen=True)
class CitedFinding:
    """A finding the answer cites, and the TID 1500 SR (Comprehensive SR by default) that holds it."""

    finding: Finding
    report_sop_instance_uid: str
    report_series_uid: str
    report_sop_class_uid: str = ComprehensiveSRStorage


@dataclass(frozen=True)
class Citation:
    """A cited finding as an answer report records it: who, what, where, and in which report."""

    tracking_uid: str
    label: str
    code: Code
    sop_instance_uid: str
    sop_class_uid: str
    frame: int
    report_sop_instance_uid: str
    report_sop_class_uid: str
    report_series_uid: str | None  # from the evidence list; None if the SR is not listed there


@dataclass(frozen=True)
class AnswerReportContent:
    """What one of our answer reports says."""

    question: str
    answer: str
    trace: str
    algorithm: Algorithm
    citations: tuple[Citation, ...]


def answer_report(
    question: str,
    answer: str,
    trace: str,
    cited: Sequence[CitedFinding],
    evidence: Sequence[Dataset],
    algorithm: Algorithm,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 991,
    instance_number: int = 1,
) -> hd.sr.ComprehensiveSR:
    """The answer to ``question`` with its ``trace`` and ``cited`` findings, as a Comprehensive SR.

    ``evidence`` holds every image a cited finding was seen on and every TID 1500 SR that holds
    one (all of one study; the SR joins it in a new series). Raises ValueError when question or
    answer is empty, when a reference does not resolve to an ``evidence`` object (naming the
    UID), or when a cited SR does not hold its finding as cited. Never touches the disk and
    never changes its arguments.
    """
    if not question.strip():
        raise ValueError("question must be non-empty text, got an empty string")
    if not answer.strip():
        raise ValueError("answer must be non-empty text, got an empty string")
    objects = _evidence_by_uid(evidence, "evidence", "an answer report")
    reports = {uid: ds for uid, ds in objects.items() if ds.get("Modality") == "SR"}
    images = {uid: ds for uid, ds in objects.items() if uid not in reports}
    _check_findings([c.finding for c in cited], images)
    _check_reports(cited, reports)

    root = hd.sr.ContainerContentItem(name=DOCUMENT_TITLE, is_content_continuous=False)
    root.ContentSequence = hd.sr.ContentSequence()
    language = hd.sr.LanguageOfContentItemAndDescendants(content_language(question, answer))
    root.ContentSequence.extend(language)
    root.ContentSequence.extend(_observer(algorithm))
    root.ContentSequence.extend(hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version))
    root.ContentSequence.append(_text(REQUEST, question))
    root.ContentSequence.append(_text(CONCLUSION, answer))
    if trace.strip():
        root.ContentSequence.append(_text(REASONING_TRACE, trace))
    root.ContentSequence.extend(_cited_container(c, images[c.finding.sop_instance_uid]) for c in cited)
    return _comprehensive_sr(
        root, objects.values(), series_instance_uid=series_instance_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=instance_number,
        series_description="apolo-node answer", local_scheme="apolo-node local codes",
    )


def content_language(question: str, answer: str) -> hd.sr.CodedConcept:
    """TID 1204's language of the answer: Chinese when its text holds Han characters, else English.

    The text itself is UTF-8 whatever its language (Specific Character Set ISO_IR 192).
    """
    return CHINESE if HAN.search(question + answer) else hd.sr.templates.DEFAULT_LANGUAGE


def read_answer_report(ds: Dataset) -> AnswerReportContent:
    """The question, answer, trace, algorithm and citations of an SR that ``answer_report`` wrote."""
    concept = ds.get("ConceptNameCodeSequence")
    title = (concept[0].get("CodeValue"), concept[0].get("CodingSchemeDesignator")) if concept else None
    expected = (DOCUMENT_TITLE.value, DOCUMENT_TITLE.scheme_designator)
    if ds.get("ValueType") != "CONTAINER" or title != expected:
        raise ValueError(
            f"dataset {ds.get('SOPInstanceUID', '(no SOP Instance UID)')} is not an apolo-node answer "
            f"report: its root content item must be a CONTAINER titled {DOCUMENT_TITLE.meaning} "
            f"({DOCUMENT_TITLE.scheme_designator} {DOCUMENT_TITLE.value})"
        )
    question, answer = _one_text(ds, REQUEST), _one_text(ds, CONCLUSION)
    trace = next((str(i.TextValue) for i in _items(ds, REASONING_TRACE, "TEXT")), "")
    names = _items(ds, ALGORITHM_NAME, "TEXT")
    versions = _items(ds, ALGORITHM_VERSION, "TEXT")
    if not names or not versions:
        raise ValueError("answer report has no TID 4019 Algorithm Name and Version: apolo-node writes both")
    algorithm = Algorithm(name=str(names[0].TextValue), version=str(versions[0].TextValue))
    series_of = _evidence_series(ds)
    citations = tuple(_read_citation(item, series_of) for item in _items(ds, FINDING, "CONTAINER"))
    return AnswerReportContent(
        question=question, answer=answer, trace=trace, algorithm=algorithm, citations=citations
    )


# --- building ---------------------------------------------------------------------------------


def _check_reports(cited: Sequence[CitedFinding], reports: dict[str, Dataset]) -> None:
    """Each cited SR is in the evidence, is what the citation says, and holds the finding as cited."""
    held: dict[str, dict[str, Finding]] = {}
    for c in cited:
        uid = c.report_sop_instance_uid
        report = reports.get(uid)
        if report is None:
            raise ValueError(
                f"cited finding {c.finding.tracking_uid} is held by report_sop_instance_uid {uid}, which is "
                "not an SR in the evidence: pass every cited TID 1500 SR in evidence, so that the answer "
                "lists it in its Current Requested Procedure Evidence Sequence"
            )
        if (report.SOPClassUID, report.SeriesInstanceUID) != (c.report_sop_class_uid, c.report_series_uid):
            raise ValueError(
                f"cited finding {c.finding.tracking_uid} gives report_sop_class_uid {c.report_sop_class_uid} "
                f"and report_series_uid {c.report_series_uid}, but report {uid} is "
                f"{report.SOPClassUID} in series {report.SeriesInstanceUID}"
            )
        if uid not in held:
            held[uid] = {f.tracking_uid: f for f in read_measurement_report(report).findings}
        found = held[uid].get(c.finding.tracking_uid)
        if found is None:
            raise ValueError(
                f"cited finding {c.finding.tracking_uid} is not in report {uid}: a citation must name "
                "the TID 1500 SR that holds the finding"
            )
        if (found.sop_instance_uid, found.frame) != (c.finding.sop_instance_uid, c.finding.frame):
            raise ValueError(
                f"cited finding {c.finding.tracking_uid} is on instance {c.finding.sop_instance_uid} frame "
                f"{c.finding.frame}, but report {uid} has it on instance {found.sop_instance_uid} "
                f"frame {found.frame}"
            )


def _cited_container(c: CitedFinding, image: Dataset) -> hd.sr.ContainerContentItem:
    f = c.finding
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    container = hd.sr.ContainerContentItem(
        name=FINDING, relationship_type=contains, is_content_continuous=False
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.UIDRefContentItem(
                name=codes.DCM.TrackingUniqueIdentifier, value=f.tracking_uid, relationship_type=contains
            ),
            _text(TRACKING_IDENTIFIER, f.label),
            hd.sr.CodeContentItem(name=FINDING, value=_coded(f.code), relationship_type=contains),
            hd.sr.ImageContentItem(
                name=SOURCE_IMAGE,
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID,
                referenced_frame_numbers=[f.frame] if _frames(image) is not None else None,
                relationship_type=contains,
            ),
            hd.sr.CompositeContentItem(
                name=SOURCE_REPORT,
                referenced_sop_class_uid=c.report_sop_class_uid,
                referenced_sop_instance_uid=c.report_sop_instance_uid,
                relationship_type=contains,
            ),
        ]
    )
    return container


# --- reading ----------------------------------------------------------------------------------


def _one_text(item: Dataset, name: hd.sr.CodedConcept) -> str:
    found = _items(item, name, "TEXT")
    if len(found) != 1:
        raise ValueError(
            f"answer report must hold one TEXT {name.meaning} ({name.scheme_designator} {name.value}), "
            f"found {len(found)}"
        )
    return str(found[0].TextValue)


def _evidence_series(ds: Dataset) -> dict[str, str]:
    """SOP Instance UID -> Series Instance UID of every object the evidence sequences list."""
    series: dict[str, str] = {}
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(keyword, []):
            for item in study.get("ReferencedSeriesSequence", []):
                for ref in item.get("ReferencedSOPSequence", []):
                    series[str(ref.ReferencedSOPInstanceUID)] = str(item.SeriesInstanceUID)
    return series


def _read_citation(container: Dataset, series_of: dict[str, str]) -> Citation:
    uids = _items(container, codes.DCM.TrackingUniqueIdentifier, "UIDREF")
    labels = _items(container, TRACKING_IDENTIFIER, "TEXT")
    found = _items(container, FINDING, "CODE")
    images = _items(container, SOURCE_IMAGE, "IMAGE")
    reports = _items(container, SOURCE_REPORT, "COMPOSITE")
    if not (uids and labels and found and images and reports):
        raise ValueError(
            "a Finding container of the answer report lacks its Tracking Unique Identifier, Tracking "
            "Identifier, Finding code, Source image or Source report: apolo-node writes all five"
        )
    image = images[0].ReferencedSOPSequence[0]
    report = reports[0].ReferencedSOPSequence[0]
    frames = _values(image, "ReferencedFrameNumber")
    concept = found[0].ConceptCodeSequence[0]
    return Citation(
        tracking_uid=str(uids[0].UID),
        label=str(labels[0].TextValue),
        code=_code(hd.sr.CodedConcept.from_dataset(concept)),
        sop_instance_uid=str(image.ReferencedSOPInstanceUID),
        sop_class_uid=str(image.ReferencedSOPClassUID),
        frame=int(frames[0]) if frames else 1,  # type: ignore[call-overload]
        report_sop_instance_uid=str(report.ReferencedSOPInstanceUID),
        report_sop_class_uid=str(report.ReferencedSOPClassUID),
        report_series_uid=series_of.get(str(report.ReferencedSOPInstanceUID)),
    )
