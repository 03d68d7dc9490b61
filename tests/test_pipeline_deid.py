"""Received studies move through the de-identification stage in the running node."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from apolo_node.catalog.models import Instance
from apolo_node.catalog.records import list_studies
from apolo_node.config import Config
from tests.nodes import running_node
from tests.peers import storescu, wait_until
from tests.synthetic import undecodable_capture, write_study

pytestmark = pytest.mark.usefixtures("need_dcmtk")


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
        wait_until(
            lambda: [s.status for s in list_studies(node.engine)] == ["reported"],
            what="the study to be de-identified and reported", timeout=60, interval=0.2,
        )
        [row] = list_studies(node.engine)
        assert row.reason == "1 of 5 instances quarantined"
        with node.engine.connect() as conn:
            states = conn.execute(select(Instance.state, Instance.reason, Instance.clean_path)).all()
    assert sorted(s for s, _, _ in states) == ["clean"] * 4 + ["quarantined"]
    [quarantine_reason] = [r for s, r, _ in states if s == "quarantined"]
    assert "burned-in text scan failed" in quarantine_reason and marker not in quarantine_reason
    clean_files = sorted((cfg.spool_root / "clean").rglob("*.dcm"))
    assert len(clean_files) == 4
    for path in clean_files:
        assert marker.encode() not in path.read_bytes()
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == row.study_uid, "clean files carry the catalog's pseudonym"
        assert f"clean/{path.relative_to(cfg.spool_root / 'clean').as_posix()}" in {
            c for _, _, c in states
        }
    # Sending back is disabled: no original is kept but the quarantined one.
    assert list((cfg.spool_root / "incoming").rglob("*.dcm")) == []
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
