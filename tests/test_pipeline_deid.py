"""Received studies move through the de-identification stage in the running node."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import Row, select

from apolo_node.catalog.models import Instance, Job
from apolo_node.catalog.records import DEIDENTIFY, StudySummary, list_studies
from apolo_node.config import Config
from apolo_node.pipeline.node import Node
from tests.conftest import make_config
from tests.deep_nesting import deep_content_file
from tests.nodes import running_node
from tests.peers import storescu, wait_until
from tests.synthetic import undecodable_capture, write_study
from tests.dose_sr import slow_sr

pytestmark = pytest.mark.usefixtures("need_dcmtk")


def reported_study(node: Node) -> tuple[StudySummary, list[Row]]:
    """Once the node's one study is reported: its row and each instance's state, reason, file."""
    wait_until(
        lambda: [s.status for s in list_studies(node.engine)] == ["reported"],
        what="the study to be de-identified and reported", timeout=90, interval=0.2,
    )
    [row] = list_studies(node.engine)
    with node.engine.connect() as conn:
        states = conn.execute(select(Instance.state, Instance.reason, Instance.clean_path)).all()
    return row, list(states)


def assert_clean_files(cfg: Config, study_uid: str, states: list[Row], marker: str, count: int) -> None:
    """``count`` clean files, marked, free of the marker, catalogued; no original left in the clear."""
    clean_files = sorted((cfg.spool_root / "clean").rglob("*.dcm"))
    assert len(clean_files) == count
    for path in clean_files:
        assert marker.encode() not in path.read_bytes()
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == study_uid, "clean files carry the catalog's pseudonym"
        assert f"clean/{path.relative_to(cfg.spool_root / 'clean').as_posix()}" in {
            c for _, _, c in states
        }
    assert list((cfg.spool_root / "incoming").rglob("*.dcm")) == []


def test_a_stable_study_is_cleaned_and_what_cannot_be_is_quarantined(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=5)
    [marker] = study.markers
    # Its pixels need a burned-in text scan, which cannot decode them.
    undecodable_capture(dcmread(study.files[0])).save_as(study.files[0])
    with running_node(cfg) as node:
        storescu(study.files[:1], cfg.receive.port, extra_args=["--propose-jpeg8"])
        storescu(study.files[1:], cfg.receive.port)
        row, states = reported_study(node)
        assert row.reason == "1 of 5 instances quarantined"
    assert sorted(s for s, _, _ in states) == ["clean"] * 4 + ["quarantined"]
    [quarantine_reason] = [r for s, r, _ in states if s == "quarantined"]
    assert "burned-in text scan failed" in quarantine_reason and marker not in quarantine_reason
    assert_clean_files(cfg, row.study_uid, states, marker, 4)
    # Sending back is disabled: no original is kept but the quarantined one.
    [kept] = [p for p in (cfg.spool_root / "quarantine").rglob("*") if p.is_file()]
    assert kept.name.endswith(".dcm.enc")
    assert marker.encode() not in kept.read_bytes(), "the quarantined original is encrypted"


def test_a_late_instance_reopens_a_cleaned_study_and_only_it_is_cleaned(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    with running_node(cfg) as node:
        storescu(study.files[:2], cfg.receive.port)
        wait_until(
            lambda: [s.status for s in list_studies(node.engine)] == ["reported"],
            what="first part de-identified and reported", timeout=60, interval=0.2,
        )
        first = {p: p.stat().st_mtime_ns for p in (cfg.spool_root / "clean").rglob("*.dcm")}
        storescu(study.files[2:], cfg.receive.port)
        wait_until(
            lambda: [(s.status, s.instances) for s in list_studies(node.engine)]
            == [("reported", 3)],
            what="the late instance de-identified", timeout=60, interval=0.2,
        )
    now = {p: p.stat().st_mtime_ns for p in (cfg.spool_root / "clean").rglob("*.dcm")}
    assert len(now) == 3
    assert all(now[p] == t for p, t in first.items()), "cleaned files are not cleaned again"


def test_a_stable_study_is_cleaned_and_poison_instances_are_quarantined_not_retried(
    tmp_path: Path,
) -> None:
    """Too deep and too slow instances are quarantined with their reason; the job ends once."""
    cfg = make_config(
        tmp_path, deid={"instance_timeout": 0.5}, receive={"max_depth": 64},
    )
    study = write_study(tmp_path / "in", series=1, per_series=4)
    [marker] = study.markers
    uid = str(dcmread(study.files[0]).StudyInstanceUID)
    deep = deep_content_file(tmp_path / "deep.dcm", 40, study_uid=uid)
    slow = slow_sr(tmp_path / "slow.dcm", 3000, study_uid=uid)
    with running_node(cfg) as node:
        storescu([*study.files, deep, slow], cfg.receive.port)
        row, states = reported_study(node)
        assert row.reason == "2 of 6 instances quarantined"
        with node.engine.connect() as conn:
            deid_jobs = conn.execute(
                select(Job.state, Job.attempts).where(Job.kind == DEIDENTIFY)
            ).all()
    assert deid_jobs == [("done", 1)], "one run of the job: no retry of a poison instance"
    assert sorted(s for s, _, _ in states) == ["clean"] * 4 + ["quarantined"] * 2
    reasons = sorted(r for s, r, _ in states if s == "quarantined")
    assert reasons == [
        "de-identification took longer than [deid] instance_timeout (0.5 s)",
        "sequences nest deeper than [deid] max_depth (32)",
    ]
    assert_clean_files(cfg, row.study_uid, states, marker, 4)
    # Sending back is disabled: no original is kept but the quarantined ones, encrypted.
    assert len(list((cfg.spool_root / "quarantine").rglob("*.enc"))) == 2
