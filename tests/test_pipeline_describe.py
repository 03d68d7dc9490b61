"""A de-identified study goes through the vision stage: SR on disk, findings in the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import Engine, text

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.records import list_studies
from apolo_node.catalog.reports import ReportRecord, record_report, report_for
from apolo_node.config import Config
from apolo_node.findings import Algorithm, Box, Code, Finding, Measurement
from apolo_node.pipeline.ingest import ingest
from apolo_node.sr import read_measurement_report
from apolo_node.sr.narrative import TEMPLATE_NOTE
from tests.nodes import apolo, upgraded_engine
from tests.peer_fixtures import dciodvfy_errors
from tests.synthetic import enhanced_ct_phantom, new_marker, phantom_ct

TISSUES = {"Air", "Fat", "Soft tissue", "Bone", "Metal"}


def write_phantom_study(folder: Path, marker: str) -> None:
    """A 5-slice CT series and a 3-frame Enhanced CT whose metal clip is on frame 2."""
    folder.mkdir(parents=True)
    study = generate_uid()
    series = generate_uid()
    for n in range(1, 6):
        phantom_ct(study_uid=study, series_uid=series, number=n, marker=marker).save_as(
            folder / f"ct{n}.dcm", enforce_file_format=True
        )
    multi = enhanced_ct_phantom(study_uid=study, series_uid=generate_uid(), frames=3, metal_frame=2, marker=marker)
    multi.save_as(folder / "enhanced.dcm", enforce_file_format=True)



def reported_phantom_study(cfg: Config, tmp_path: Path) -> Engine:
    """The phantom study ingested into a fresh catalog (so reported); an engine on that catalog."""
    write_phantom_study(tmp_path / "in", new_marker())
    upgraded_engine(cfg).dispose()
    ingest(cfg, [tmp_path / "in"])
    return engine_for(cfg)

def test_an_ingested_study_ends_reported_with_a_valid_sr_and_findings_rows(tmp_path: Path, cfg: Config) -> None:
    import dataclasses

    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, frames="all"))
    marker = new_marker()
    write_phantom_study(tmp_path / "in", marker)
    upgraded_engine(cfg).dispose()
    summary = ingest(cfg, [tmp_path / "in"])
    assert summary.stored == 6
    engine = engine_for(cfg)
    try:
        [study] = list_studies(engine)
        assert study.status == "reported"
        stored = report_for(engine, study.study_uid)
    finally:
        engine.dispose()
    assert stored is not None
    sr_path = cfg.spool_root / stored.record.path
    assert sr_path.is_file() and stored.record.images == 8  # 5 slices and 3 frames
    assert dciodvfy_errors(sr_path) == []
    assert marker.encode() not in sr_path.read_bytes() and marker not in json.dumps(stored.as_json())

    clean = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dcmread(p, stop_before_pixels=True)
             for p in (cfg.spool_root / "clean").rglob("*.dcm")}
    for f in stored.findings:
        source = clean[f.sop_instance_uid]  # every finding is on a de-identified instance
        assert f.box is not None and f.box.within(int(source.Columns), int(source.Rows))
        assert 1 <= f.frame <= int(source.get("NumberOfFrames", 1))
    by_frame = {(f.sop_instance_uid, f.frame) for f in stored.findings if f.label == "Metal"}
    enhanced = next(uid for uid, ds in clean.items() if int(ds.get("NumberOfFrames", 1)) == 3)
    assert (enhanced, 2) in by_frame and (enhanced, 1) not in by_frame and (enhanced, 3) not in by_frame
    assert {f.label for f in stored.findings} == TISSUES
    with engine_for(cfg).connect() as conn:  # kept for the clinicians' filters
        assert set(conn.execute(text("SELECT body_part FROM series")).scalars()) == {"CHEST"}
        assert conn.execute(text("SELECT study_date FROM study")).scalar() is not None

    # The catalog can be rebuilt from the SR alone.
    content = read_measurement_report(dcmread(sr_path))
    assert content.algorithm == stored.record.algorithm
    assert "Non-diagnostic baseline" in (content.disclaimer or "")
    # The baseline's templated narrative: in the SR, and the same in the catalog.
    assert content.narrative is not None and content.narrative.impression.startswith(TEMPLATE_NOTE)
    assert "Metal" in content.narrative.impression and "Metal:" in content.narrative.findings
    assert (stored.record.narrative_findings, stored.record.impression) == (
        content.narrative.findings, content.narrative.impression
    )
    rebuilt = {f.tracking_uid: f for f in content.findings}
    assert set(rebuilt) == {f.tracking_uid for f in stored.findings}
    for f in stored.findings:
        r = rebuilt[f.tracking_uid]
        assert (r.label, r.code, r.sop_instance_uid, r.frame) == (f.label, f.code, f.sop_instance_uid, f.frame)
        assert r.box is not None and f.box is not None
        assert r.box.as_list() == pytest.approx(f.box.as_list(), abs=1e-3)

    done = apolo(cfg, "report", study.study_uid, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["study_uid"] == study.study_uid
    assert shown["sr_path"] == str(cfg.spool_root / stored.record.path)  # absolute: opened as printed
    assert shown["narrative"]["impression"] == content.narrative.impression != ""
    assert shown["narrative"]["findings"] == content.narrative.findings
    assert len(shown["findings"]) == len(stored.findings)
    for f in shown["findings"]:
        assert {"tracking_uid", "label", "code", "box", "sop_instance_uid", "frame", "confidence"} <= set(f)
        assert len(f["box"]) == 4
    table = apolo(cfg, "report", study.study_uid)
    assert table.returncode == 0 and "Metal" in table.stdout and "SCT 425620007" in table.stdout
    assert "Impression" in table.stdout and TEMPLATE_NOTE in table.stdout


def test_report_on_an_unknown_study_is_bad_input(cfg: Config) -> None:
    upgraded_engine(cfg).dispose()
    done = apolo(cfg, "report", "2.25.1234")
    assert done.returncode == 2 and "2.25.1234 is not in the catalog" in done.stderr


def _finding(uid: str, label: str = "Nodule") -> Finding:
    return Finding(
        tracking_uid=uid, label=label, code=Code("27925004", "SCT", "Nodule"),
        sop_instance_uid="2.25.7", sop_class_uid="1.2.840.10008.5.1.4.1.1.2", frame=2,
        description="a nodule", box=Box(10, 20, 30.5, 40), confidence=0.75, laterality="left",
        location="upper lobe",
        measurements=(Measurement(Code("42798000", "SCT", "Area"), 12.5, Code("mm2", "UCUM", "square millimeter")),),
    )


def test_reports_are_stored_replaced_and_read_back_on_each_catalog(engine: Engine) -> None:
    from apolo_node.catalog.records import InstanceRecord, queue_stable_studies, record_instance
    from apolo_node.catalog.cleaning import mark_clean, pending_instances, settle_study
    from apolo_node.catalog import jobs

    record_instance(engine, InstanceRecord("2.25.1", "2.25.2", "2.25.7", "1.2.840.10008.5.1.4.1.1.2",
                                           "1.2.840.10008.1.2.1", "CT", "incoming/x.dcm", 10))
    queue_stable_studies(engine, 0)
    [pending] = pending_instances(engine, 1)
    mark_clean(engine, pending.id, "clean/x.dcm")
    assert settle_study(engine, 1) == "deidentified"
    assert jobs.job_states(engine, "2.25.1")[-1] == ("describe", "pending")  # queued with the status
    algo = Algorithm("model-a", "1")
    first = ReportRecord("2.25.1", "2.25.100", "2.25.101", "reports/2.25.1/2.25.100.dcm", algo, 3, 1)
    assert record_report(engine, first, [_finding("2.25.50"), _finding("2.25.51", "Mass")]) is True
    stored = report_for(engine, "2.25.1")
    assert stored is not None and stored.record == first
    assert stored.findings == [_finding("2.25.50"), _finding("2.25.51", "Mass")]
    second = ReportRecord("2.25.1", "2.25.200", "2.25.201", "reports/2.25.1/2.25.200.dcm", algo, 3, 0)
    assert record_report(engine, second, [_finding("2.25.50")]) is False  # already reported
    again = report_for(engine, "2.25.1")
    assert again is not None and again.record == second and [f.tracking_uid for f in again.findings] == ["2.25.50"]
    assert report_for(engine, "2.25.999") is None
    with pytest.raises(LookupError, match="2.25.999 is not in the catalog"):
        record_report(engine, ReportRecord("2.25.999", "2.25.3", "2.25.4", "r", algo, 0, 0), [])


def test_a_stop_gives_the_job_back_and_describing_again_replaces_the_report(tmp_path: Path, cfg: Config) -> None:
    import threading

    from sqlalchemy import insert

    from apolo_node.catalog import jobs
    from apolo_node.catalog.models import Job, Study
    from apolo_node.pipeline import describe
    from apolo_node.spool import Spool
    from apolo_node.vision.baseline import BaselineBackend

    engine = reported_phantom_study(cfg, tmp_path)
    try:
        [study] = list_studies(engine)
        first = report_for(engine, study.study_uid)
        assert first is not None
        with engine.begin() as conn:
            study_id = conn.execute(Study.__table__.select().where(Study.study_uid == study.study_uid)).first()[0]
            conn.execute(insert(Job).values(kind="describe", study_id=study_id, state="pending", attempts=0))
        spool, backend = Spool(cfg.spool_root), BaselineBackend()
        stop = threading.Event()
        stop.set()
        assert describe.run_once(engine, spool, backend, cfg, "w1", stop) is True
        assert jobs.job_states(engine, study.study_uid)[-1] == ("describe", "pending")
        assert len(list((cfg.spool_root / "reports").rglob("*.dcm"))) == 1, "nothing written on stop"
        assert describe.run_once(engine, spool, backend, cfg, "w1") is True
        assert jobs.job_states(engine, study.study_uid)[-1] == ("describe", "done")
        second = report_for(engine, study.study_uid)
    finally:
        engine.dispose()
    assert second is not None and second.record.sop_instance_uid != first.record.sop_instance_uid
    assert [f.tracking_uid for f in second.findings] == [f.tracking_uid for f in first.findings]
    assert [p.relative_to(cfg.spool_root).as_posix() for p in (cfg.spool_root / "reports").rglob("*.dcm")] == [
        second.record.path
    ], "the replaced SR file is gone"


def test_the_catalog_is_rebuilt_from_the_sr_files_alone(tmp_path: Path, cfg: Config) -> None:
    engine = reported_phantom_study(cfg, tmp_path)
    try:
        [study] = list_studies(engine)
        before = report_for(engine, study.study_uid)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM finding"))
            conn.execute(text("DELETE FROM report"))
        assert report_for(engine, study.study_uid) is None
        (cfg.spool_root / "reports" / "2.25.999").mkdir()
        (cfg.spool_root / "reports" / "2.25.999" / "x.dcm").write_bytes(b"not dicom")
        done = apolo(cfg, "db", "rebuild-reports", "--json")
        assert done.returncode == 1, done.stderr  # one unreadable file is reported, by path only
        summary = json.loads(done.stdout)
        assert summary["reports"] == 1 and summary["findings"] == len(before.findings)
        assert summary["unreadable"] == ["reports/2.25.999/x.dcm (InvalidDicomError)"]
        after = report_for(engine, study.study_uid)
    finally:
        engine.dispose()
    assert after is not None and before is not None
    assert after.record.path == before.record.path and after.record.algorithm == before.record.algorithm
    assert (after.record.narrative_findings, after.record.impression, after.record.trace) == (
        before.record.narrative_findings, before.record.impression, before.record.trace
    ) and after.record.impression
    assert [f.tracking_uid for f in after.findings] == [f.tracking_uid for f in before.findings]
    for a, b in zip(after.findings, before.findings):
        assert (a.label, a.code, a.sop_instance_uid, a.frame, a.measurements) == (
            b.label, b.code, b.sop_instance_uid, b.frame, b.measurements)
        assert a.box is not None and b.box is not None
        assert a.box.as_list() == pytest.approx(b.box.as_list(), abs=1e-3)
