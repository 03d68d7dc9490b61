"""TID 1500 Measurement Report: built from findings, checked by dciodvfy and dsrdump, read back from bytes."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComprehensiveSRStorage,
    CTImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from apolo_node.findings import LOCAL_SCHEME, Algorithm, Box, Code, Finding, Measurement
from apolo_node.sr import (
    MeasurementReportContent,
    measurement_report,
    read_measurement_report,
)
from tests.peer_fixtures import need_tool
from tests.sr_evidence import deidentified, uid

ALGORITHM = Algorithm(name="apolo-baseline", version="0.3.1")
DISCLAIMER = "Non-diagnostic baseline: not for clinical use."
AREA = Code("42798000", "SCT", "Area")
MM2 = Code("mm2", "UCUM", "square millimeter")
MEAN = Code("373098007", "SCT", "Mean")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")


def image(sop_class: str, modality: str, study: str, *, rows: int, columns: int) -> Dataset:
    """A de-identified 8-bit image header with a frame of reference."""
    ds = deidentified(sop_class, modality, study, rows=rows, columns=columns, bits=8)
    ds.FrameOfReferenceUID = uid()
    return ds


def ct_slice(study: str) -> Dataset:
    """A 64x64 CT slice with the geometry an Image Library entry describes, and pixels."""
    ds = image(CTImageStorage, "CT", study, rows=64, columns=64)
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-22.4, -22.4, 10]
    ds.SliceThickness = 1.25
    ds.PixelData = np.zeros((64, 64), dtype=np.uint8).tobytes()
    return ds


def us_cine(study: str) -> Dataset:
    """A 3-frame 48x64 ultrasound multi-frame image."""
    ds = image(UltrasoundMultiFrameImageStorage, "US", study, rows=48, columns=64)
    ds.NumberOfFrames = 3
    return ds


@pytest.fixture
def study() -> tuple[Dataset, Dataset]:
    """One de-identified study: a CT slice and a 3-frame ultrasound cine."""
    study_uid = uid()
    return ct_slice(study_uid), us_cine(study_uid)


def findings_on(ct: Dataset, us: Dataset) -> list[Finding]:
    """A finding with every field on the CT, one without a box and one with a box on US frame 3."""
    return [
        Finding(
            tracking_uid=uid(), label="Pulmonary nodule", code=Code("27925004", "SCT", "Nodule"),
            sop_instance_uid=ct.SOPInstanceUID, sop_class_uid=ct.SOPClassUID,
            description="Round 8 mm opacity.", box=Box(10.5, 12.25, 30, 40), confidence=0.87,
            laterality="right", location="right upper lobe",
            measurements=(Measurement(AREA, 123.4, MM2), Measurement(MEAN, -12.5, HU)),
        ),
        Finding(
            tracking_uid=uid(), label="Free fluid", code=Code("free-fluid", LOCAL_SCHEME, "Free fluid"),
            sop_instance_uid=us.SOPInstanceUID, sop_class_uid=us.SOPClassUID, frame=3,
            description="Anechoic fluid.", confidence=0.4,
        ),
        Finding(
            tracking_uid=uid(), label="Shadowing", code=Code("shadowing", LOCAL_SCHEME, "Shadowing"),
            sop_instance_uid=us.SOPInstanceUID, sop_class_uid=us.SOPClassUID, frame=3,
            box=Box(1, 2, 63, 47.5),
        ),
    ]


def build(findings: Sequence[Finding], evidence: Sequence[Dataset], **kwargs: object) -> Dataset:
    return measurement_report(
        findings, evidence, ALGORITHM, series_instance_uid=uid(), sop_instance_uid=uid(), **kwargs
    )


def write(sr: Dataset, tmp_path: Path, name: str = "sr.dcm") -> Path:
    path = tmp_path / name
    sr.save_as(path, enforce_file_format=True)
    return path


def round_trip(sr: Dataset, tmp_path: Path) -> MeasurementReportContent:
    return read_measurement_report(dcmread(write(sr, tmp_path)))


def assert_same_findings(got: Sequence[Finding], expected: Sequence[Finding]) -> None:
    """Equal field by field, floats (box, confidence, measurement values) approximately."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        plain = {"box": None, "confidence": None, "measurements": ()}
        assert dataclasses.replace(g, **plain) == dataclasses.replace(e, **plain)
        assert (g.box is None) == (e.box is None)
        if e.box is not None:
            assert g.box is not None and g.box.as_list() == pytest.approx(e.box.as_list(), rel=1e-6)
        assert g.confidence == (None if e.confidence is None else pytest.approx(e.confidence))
        assert [(m.name, m.unit) for m in g.measurements] == [(m.name, m.unit) for m in e.measurements]
        assert [m.value for m in g.measurements] == pytest.approx([m.value for m in e.measurements])


def children(item: Dataset, code_value: str, value_type: str | None = None) -> list[Dataset]:
    """Content items under ``item`` whose concept name has ``code_value`` (and ``value_type``)."""
    return [
        c for c in item.get("ContentSequence", [])
        if c.ConceptNameCodeSequence[0].CodeValue == code_value and value_type in (None, c.ValueType)
    ]


def groups_of(sr: Dataset) -> list[Dataset]:
    (measurements,) = children(sr, "126010", "CONTAINER")
    return children(measurements, "125007", "CONTAINER")


# --- round trip -------------------------------------------------------------------------------


def test_findings_algorithm_and_disclaimer_survive_a_round_trip_through_bytes(study, tmp_path: Path) -> None:
    ct, us = study
    findings = findings_on(ct, us)
    content = round_trip(build(findings, [ct, us], disclaimer=DISCLAIMER), tmp_path)
    assert content.algorithm == ALGORITHM
    assert content.disclaimer == DISCLAIMER
    assert_same_findings(content.findings, findings)


def test_a_box_at_arbitrary_source_coordinates_reads_back_within_float32(study, tmp_path: Path) -> None:
    ct, _ = study
    box = Box(0.123 * 64, 0.377 * 64, 0.9012 * 64, 0.99 * 64)
    finding = Finding(uid(), "Opacity", Code("opacity", LOCAL_SCHEME, "Opacity"), ct.SOPInstanceUID,
                      ct.SOPClassUID, box=box, confidence=0.29)
    (read,) = round_trip(build([finding], [ct]), tmp_path).findings
    assert read.box is not None and read.box.as_list() == pytest.approx(box.as_list(), rel=1e-6)
    assert read.confidence == pytest.approx(0.29)


@pytest.mark.parametrize(
    ("laterality", "snomed"),
    [("left", "7771000"), ("right", "24028007"), ("bilateral", "51440002"), ("unilateral", "66459002")],
)
def test_laterality_is_a_coded_evaluation_with_its_snomed_value(study, tmp_path, laterality, snomed) -> None:
    ct, _ = study
    finding = Finding(uid(), "Effusion", Code("effusion", LOCAL_SCHEME, "Effusion"), ct.SOPInstanceUID,
                      ct.SOPClassUID, laterality=laterality)
    sr = build([finding], [ct])
    (item,) = children(groups_of(sr)[0], "272741003", "CODE")
    assert item.ConceptNameCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert (item.ConceptCodeSequence[0].CodingSchemeDesignator, item.ConceptCodeSequence[0].CodeValue) == (
        "SCT", snomed,
    )
    (read,) = round_trip(sr, tmp_path).findings
    assert read.laterality == laterality


def test_text_beyond_ascii_round_trips(study, tmp_path: Path) -> None:
    ct, _ = study
    finding = Finding(uid(), "Nódulo pulmonar", Code("nodulo", LOCAL_SCHEME, "Nódulo"), ct.SOPInstanceUID,
                      ct.SOPClassUID, description="Opacidade ≥ 8 mm", location="lobo superior direito")
    content = round_trip(build([finding], [ct], disclaimer="Não diagnóstico"), tmp_path)
    assert content.findings == (finding,)
    assert content.disclaimer == "Não diagnóstico"


def test_a_report_without_findings_is_valid_and_reads_back_empty(study, tmp_path: Path) -> None:
    ct, us = study
    sr = build([], [ct, us])
    assert groups_of(sr) == []  # the Imaging Measurements container is there, empty, as OHIF needs
    content = round_trip(sr, tmp_path)
    assert content == MeasurementReportContent(algorithm=ALGORITHM, findings=(), disclaimer=None)


def test_evidence_without_optional_geometry_or_type2_attributes_still_makes_a_report(study, tmp_path) -> None:
    ct, _ = study
    del ct.SliceThickness, ct.AccessionNumber, ct.ReferringPhysicianName
    finding = findings_on(ct, study[1])[0]
    sr = build([finding], [ct])
    (library,) = children(sr, "111028", "CONTAINER")
    (entry,) = children(children(library, "126200")[0], "260753009", "IMAGE")
    assert not children(entry, "112225")  # no Slice Thickness descriptor without the attribute
    assert_same_findings(round_trip(sr, tmp_path).findings, [finding])


# --- structure (what the standard and OHIF need) ----------------------------------------------


def test_the_sr_joins_the_evidence_study_in_its_own_series(study) -> None:
    ct, us = study
    series, instance = uid(), uid()
    sr = measurement_report(findings_on(ct, us), [ct, us], ALGORITHM, series_instance_uid=series,
                            sop_instance_uid=instance)
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (series, instance)
    assert (sr.SeriesNumber, sr.InstanceNumber) == (990, 1)
    assert sr.Modality == "SR" and sr.Manufacturer == "apolo-node"
    assert sr.StudyInstanceUID == ct.StudyInstanceUID
    assert (sr.PatientID, sr.PatientName) == (ct.PatientID, ct.PatientName)
    assert sr.SeriesInstanceUID not in (ct.SeriesInstanceUID, us.SeriesInstanceUID)
    evidence = {
        i.ReferencedSOPInstanceUID
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series_item in study_item.ReferencedSeriesSequence
        for i in series_item.ReferencedSOPSequence
    }
    assert evidence == {ct.SOPInstanceUID, us.SOPInstanceUID}
    root = sr.ConceptNameCodeSequence[0]
    assert (root.CodeValue, root.CodingSchemeDesignator) == ("126000", "DCM")
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"


def test_the_image_library_lists_every_evidence_instance(study) -> None:
    ct, us = study
    only_ct = [f for f in findings_on(ct, us) if f.sop_instance_uid == ct.SOPInstanceUID]
    sr = build(only_ct, [ct, us])
    (library,) = children(sr, "111028", "CONTAINER")
    listed = {
        image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for group in children(library, "126200", "CONTAINER")
        for image in children(group, "260753009", "IMAGE")
    }
    assert listed == {ct.SOPInstanceUID, us.SOPInstanceUID}


def test_each_finding_is_one_group_with_tracking_finding_and_algorithm(study) -> None:
    ct, us = study
    findings = findings_on(ct, us)
    groups = groups_of(build(findings, [ct, us]))
    assert len(groups) == len(findings)
    for group, finding in zip(groups, findings, strict=True):
        templates = {"1410" if finding.box else "1501"}
        assert {group.ContentTemplateSequence[0].TemplateIdentifier} == templates
        uidrefs = [c for c in group.ContentSequence if c.ValueType == "UIDREF"]
        assert uidrefs[0].ConceptNameCodeSequence[0].CodeValue == "112040"  # OHIF takes the first UIDREF
        assert uidrefs[0].UID == finding.tracking_uid
        assert children(group, "112039", "TEXT")[0].TextValue == finding.label
        concept = children(group, "121071", "CODE")[0].ConceptCodeSequence[0]
        assert (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning) == (
            finding.code.value, finding.code.scheme, finding.code.meaning,
        )
        assert children(group, "111001", "TEXT")[0].TextValue == ALGORITHM.name  # TID 4019
        assert children(group, "111003", "TEXT")[0].TextValue == ALGORITHM.version


def test_a_box_is_a_closed_polyline_selected_from_its_instance_and_frame(study) -> None:
    ct, us = study
    on_ct, _, on_us = findings_on(ct, us)
    groups = groups_of(build([on_ct, on_us], [ct, us]))
    for group, finding, frame in ((groups[0], on_ct, None), (groups[1], on_us, 3)):
        (region,) = children(group, "111030", "SCOORD")
        assert region.GraphicType == "POLYLINE"
        assert finding.box is not None
        assert list(region.GraphicData) == pytest.approx([v for p in finding.box.polyline() for v in p])
        (source,) = region.ContentSequence
        assert source.RelationshipType == "SELECTED FROM"
        reference = source.ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == finding.sop_instance_uid
        assert reference.get("ReferencedFrameNumber") == frame  # only on the multi-frame instance


def test_a_finding_without_a_box_names_its_source_image_and_frame(study) -> None:
    ct, us = study
    no_box = findings_on(ct, us)[1]
    (group,) = groups_of(build([no_box], [ct, us]))
    assert not children(group, "111030")
    (source,) = children(group, "121112", "IMAGE")
    reference = source.ReferencedSOPSequence[0]
    assert (reference.ReferencedSOPInstanceUID, reference.ReferencedFrameNumber) == (us.SOPInstanceUID, 3)


def test_confidence_is_certainty_of_finding_in_percent_and_measurements_are_num_items(study) -> None:
    ct, us = study
    finding = findings_on(ct, us)[0]
    (group,) = groups_of(build([finding], [ct]))
    (certainty,) = children(group, "111012", "NUM")
    value = certainty.MeasuredValueSequence[0]
    assert float(value.NumericValue) == pytest.approx(87.0)
    assert value.MeasurementUnitsCodeSequence[0].CodeValue == "%"
    (area,) = children(group, AREA.value, "NUM")
    assert float(area.MeasuredValueSequence[0].NumericValue) == pytest.approx(123.4)
    assert area.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm2"
    assert children(group, "121106", "TEXT")[0].TextValue == finding.description
    assert children(group, "363698007", "TEXT")[0].TextValue == finding.location


def test_the_disclaimer_is_a_text_item_of_the_report(study) -> None:
    ct, _ = study
    sr = build([], [ct], disclaimer=DISCLAIMER)
    (evaluations,) = children(sr, "C0034375", "CONTAINER")
    assert [c.TextValue for c in children(evaluations, "121106", "TEXT")] == [DISCLAIMER]


def test_the_local_coding_scheme_is_declared_when_used(study) -> None:
    ct, us = study
    local, standard = findings_on(ct, us)[1], findings_on(ct, us)[0]
    declared = build([local], [ct, us]).CodingSchemeIdentificationSequence
    assert [item.CodingSchemeDesignator for item in declared] == [LOCAL_SCHEME]
    assert "CodingSchemeIdentificationSequence" not in build([standard], [ct])


def test_the_builder_leaves_the_evidence_untouched(study) -> None:
    ct, us = study
    before = [copy.deepcopy(ct), copy.deepcopy(us)]
    build(findings_on(ct, us), [ct, us], disclaimer=DISCLAIMER)
    assert [ct, us] == before and "PixelData" in ct


# --- the tools: dciodvfy (dicom3tools) and dsrdump (dcmtk) --------------------------------------


@pytest.mark.parametrize("with_findings", [True, False], ids=["findings", "empty"])
def test_dciodvfy_finds_no_errors(study, tmp_path: Path, with_findings: bool) -> None:
    dciodvfy = need_tool("dciodvfy")
    ct, us = study
    findings = findings_on(ct, us) if with_findings else []
    path = write(build(findings, [ct, us], disclaimer=DISCLAIMER), tmp_path)
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    warnings = [line for line in lines if line.startswith("Warning")]
    # expected: the empty Study ID of de-identified evidence (a DICOMDIR would want one), and
    # 99APOLO, our local coding scheme, once per use (declared in the Coding Scheme Identification)
    print("\n".join(warnings))
    assert [line for line in lines if "Error" in line] == []
    assert "ComprehensiveSR" in lines


def test_dsrdump_reads_the_report_with_labels_and_tracking_uids(study, tmp_path: Path) -> None:
    dsrdump = need_tool("dsrdump")
    ct, us = study
    findings = findings_on(ct, us)
    path = write(build(findings, [ct, us], disclaimer=DISCLAIMER), tmp_path)
    result = subprocess.run([dsrdump, "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Imaging Measurement Report" in result.stdout
    for finding in findings:
        assert f'"{finding.label}"' in result.stdout
        assert f'"{finding.tracking_uid}"' in result.stdout
    assert DISCLAIMER in result.stdout
    assert "(POLYLINE," in result.stdout


# --- errors -----------------------------------------------------------------------------------


def test_a_finding_on_an_instance_outside_the_evidence_is_refused(study) -> None:
    ct, us = study
    stray = dataclasses.replace(findings_on(ct, us)[0], sop_instance_uid=uid())
    rule = rf"sop_instance_uid {stray.sop_instance_uid}, which is not in the evidence.*must be one of the evidence"
    with pytest.raises(ValueError, match=rule):
        build([stray], [ct, us])


def test_a_box_outside_the_frame_is_refused_with_box_frame_size_and_instance(study) -> None:
    ct, us = study
    outside = dataclasses.replace(findings_on(ct, us)[0], box=Box(10, 10, 70, 20))
    with pytest.raises(ValueError, match=re.escape("box (10, 10, 70, 20) lies outside the 64x64")) as error:
        build([outside], [ct])
    assert ct.SOPInstanceUID in str(error.value)
    tall = dataclasses.replace(findings_on(ct, us)[2], box=Box(1, 1, 60, 48.5))  # US is 64 wide, 48 high
    with pytest.raises(ValueError, match=rf"64x48 .*frame 3 of instance {us.SOPInstanceUID}"):
        build([tall], [us])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"frame": 4}, r"on frame 4, but instance .* has 3 frame"),
        ({"sop_class_uid": CTImageStorage}, r"gives sop_class_uid .* but instance"),
    ],
)
def test_a_finding_must_match_its_instance(study, change: dict[str, object], match: str) -> None:
    ct, us = study
    finding = dataclasses.replace(findings_on(ct, us)[1], **change)
    with pytest.raises(ValueError, match=match):
        build([finding], [ct, us])


def test_a_single_frame_instance_has_only_frame_1(study) -> None:
    ct, us = study
    finding = dataclasses.replace(findings_on(ct, us)[0], frame=2)
    with pytest.raises(ValueError, match=r"on frame 2, but instance .* has 1 frame"):
        build([finding], [ct])


def test_tracking_uids_must_be_unique(study) -> None:
    ct, us = study
    first, second, _ = findings_on(ct, us)
    twin = dataclasses.replace(second, tracking_uid=first.tracking_uid)
    with pytest.raises(ValueError, match=rf"tracking UID {first.tracking_uid} is used twice"):
        build([first, twin], [ct, us])


def test_evidence_must_be_one_study_and_not_empty(study) -> None:
    ct, _ = study
    elsewhere = ct_slice(uid())
    with pytest.raises(ValueError, match="covers one study"):
        build([], [ct, elsewhere])
    with pytest.raises(ValueError, match="given twice"):
        build([], [ct, ct])
    with pytest.raises(ValueError, match="at least one image"):
        build([], [])
    with pytest.raises(ValueError, match="disclaimer"):
        build([], [ct], disclaimer="  ")


def test_the_reader_refuses_what_is_not_a_measurement_report(study) -> None:
    ct, _ = study
    with pytest.raises(ValueError, match="not a TID 1500 Measurement Report"):
        read_measurement_report(ct)
