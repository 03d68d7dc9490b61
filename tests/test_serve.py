"""``apolo-node serve`` as a process: real peers send to it, it stops cleanly, crashes lose nothing."""

from __future__ import annotations

import json
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.models import Instance
from apolo_node.config import Config
from apolo_node.pseudonym import UIDMapper
from tests.conftest import make_config
from tests.nodes import ServeProcess, apolo
from tests.peers import (
    peer_env,
    start_storescu,
    stop_process,
    storescu,
    storescu_command,
    wait_until,
)
from tests.peer_fixtures import dciodvfy_errors
from tests.synthetic import write_study

pytestmark = pytest.mark.usefixtures("need_dcmtk")


def studies_json(cfg: Config) -> list[dict[str, object]]:
    done = apolo(cfg, "studies", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_sent_study_is_deidentified_and_reported_and_sigterm_stops_cleanly(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=2, per_series=3)
    log = tmp_path / "serve.log"
    with ServeProcess(cfg, log) as node:
        storescu(study.files, cfg.receive.port)
        wait_until(
            lambda: [s["status"] for s in studies_json(cfg)] == ["reported"],
            what="the study to be queued, de-identified and reported", timeout=60, interval=0.3,
        )
        [row] = studies_json(cfg)
        assert row["instances"] == 6 and row["series"] == 2
        assert {"study_uid", "status", "instances", "received_at"} <= set(row)
        # The baseline's TID 1500 SR is in the catalog, valid, and its boxes lie on their images.
        done = apolo(cfg, "report", str(row["study_uid"]), "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert dciodvfy_errors(cfg.spool_root / report["sr_path"]) == []
        assert report["findings"], "the baseline measures the synthetic body"
        for finding in report["findings"]:
            x1, y1, x2, y2 = finding["box"]
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and finding["frame"] == 1
        started = time.monotonic()
        assert node.terminate() == 0
        # ServeProcess probed the port before any DICOM: that idle connection must not hold the
        # stop for pynetdicom's 30 s ACSE timeout.
        assert time.monotonic() - started < 4
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
    assert events.count("instance.stored") == 6
    assert events[-2:] == ["scp.stopped", "node.stopped"]


def test_sigterm_lets_an_association_in_flight_finish(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={"drain_timeout": 60.0})
    study = write_study(tmp_path / "in", series=1, per_series=150, rows=128, columns=128)
    with ServeProcess(cfg, tmp_path / "serve.log") as node:
        sender = start_storescu(study.files, cfg.receive.port)
        engine = engine_for(cfg)
        wait_until(lambda: _count(engine) >= 5, what="the first instances", timeout=30)
        assert node.terminate(timeout=120) == 0
        out, _ = sender.communicate(timeout=60)
        assert sender.returncode == 0, out
        assert _count(engine) == 150, "every instance sent before and during the stop is kept"
        engine.dispose()


def _count(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return len(conn.execute(select(Instance.id)).all())


def test_kill_9_mid_send_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    study = write_study(tmp_path / "in", series=1, per_series=200, rows=128, columns=128)
    mapper = UIDMapper(cfg.deid.key.encode())
    pseudo_to_file = {mapper(sop): path for sop, path in zip(study.sop_uids, study.files)}
    log = tmp_path / "serve.log"
    node = ServeProcess(cfg, log).start()
    sender_log = tmp_path / "storescu.log"
    with sender_log.open("w") as fh:  # -d output is large: a file, not a pipe nobody reads
        sender = subprocess.Popen(
            storescu_command(study.files, cfg.receive.port, extra_args=["-d"]),
            env=peer_env(), stdout=fh, stderr=subprocess.STDOUT,
        )
    engine = engine_for(cfg)
    try:
        wait_until(lambda: _count(engine) >= 60, what="60 instances", timeout=60)
        node.kill9()
        sender.wait(timeout=60)
    finally:
        stop_process(sender)
        stop_process(node.proc, sig=9)
    acknowledged = _acknowledged_sops(sender_log.read_text())
    assert 60 <= len(acknowledged) < 200, "the kill must land mid-send"
    with engine.connect() as conn:
        rows = dict(conn.execute(select(Instance.sop_instance_uid, Instance.path)).all())
    for original in acknowledged:
        pseudo = mapper(original)
        assert pseudo in rows, "an acknowledged instance is missing from the catalog"
        spooled = (cfg.spool_root / rows[pseudo]).read_bytes()
        assert dcmread(BytesIO(spooled)) == dcmread(pseudo_to_file[pseudo]), "spooled file damaged"

    with ServeProcess(cfg, log):  # restart; the PACS resends everything
        storescu(study.files, cfg.receive.port)
        with engine.connect() as conn:
            sops = conn.execute(select(Instance.sop_instance_uid)).scalars().all()
        assert sorted(sops) == sorted(pseudo_to_file), "all 200, each exactly once"
        wait_until(
            lambda: [(s["status"], s["instances"]) for s in studies_json(cfg)]
            == [("reported", 200)],
            what="the whole study de-identified", timeout=120, interval=0.5,
        )
        assert len(list((cfg.spool_root / "clean").rglob("*.dcm"))) == 200
        assert list((cfg.spool_root / "incoming").rglob("*.dcm")) == []
    engine.dispose()


def _acknowledged_sops(storescu_debug: str) -> set[str]:
    """SOP Instance UIDs that storescu saw answered with Success (from its -d output).

    A C-STORE-RSP block names its Affected SOP Instance UID, then its DIMSE Status.
    """
    acked: set[str] = set()
    last_uid: str | None = None
    for line in storescu_debug.splitlines():
        if "Affected SOP Instance UID" in line:
            last_uid = line.rsplit(":", 1)[-1].strip()
        elif "DIMSE Status" in line and last_uid and "0x0000" in line:
            acked.add(last_uid)
    return acked


def test_ingest_feeds_files_and_the_cli_reports_bad_input(cfg: Config, tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    assert apolo(cfg, "db", "upgrade").returncode == 0
    done = apolo(cfg, "ingest", str(tmp_path / "in"), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["stored"] == 3 and summary["duplicates"] == 0 and len(summary["skipped"]) == 1
    [row] = studies_json(cfg)
    assert row["status"] == "reported" and row["instances"] == 3
    assert len(list((cfg.spool_root / "clean").rglob("*.dcm"))) == 3
    again = json.loads(apolo(cfg, "ingest", str(tmp_path / "in"), "--json").stdout)
    assert again["stored"] == 0 and again["duplicates"] == 3

    missing = apolo(cfg, "ingest", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    bad_status = apolo(cfg, "studies", "--status", "lost")
    assert bad_status.returncode == 2 and "--status must be one of" in bad_status.stderr
    assert apolo(cfg, "frobnicate").returncode == 2
    assert apolo(cfg, "studies").returncode == 0


def test_bad_configuration_exits_2_with_one_line(cfg: Config, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[receive]\nmax_associations = 0\n")
    done = apolo(cfg, "--help")
    assert done.returncode == 0
    done = apolo(cfg, "studies", "--config", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "apolo-node: error: [receive] max_associations must be >= 1, got 0"
    ]


def test_serve_refuses_a_catalog_that_was_never_upgraded(cfg: Config) -> None:
    started = time.monotonic()
    done = apolo(cfg, "serve", timeout=60)
    assert done.returncode == 1
    assert "run `apolo-node db upgrade`" in done.stderr
    assert time.monotonic() - started < 60
