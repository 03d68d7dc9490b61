"""No patient identifier reaches the catalog, the logs, file names or error text."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
from sqlalchemy import MetaData, select

from apolo_node.catalog.engine import engine_for
from apolo_node.config import Config
from tests.conftest import make_config
from tests.nodes import ServeProcess, apolo
from tests.peers import storescu, wait_until
from tests.synthetic import write_study

pytestmark = pytest.mark.usefixtures("need_dcmtk")


def every_catalog_value(cfg: Config) -> str:
    """Every value of every row of every table, as one string."""
    engine = engine_for(cfg)
    meta = MetaData()
    meta.reflect(engine)
    parts: list[str] = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                parts.extend(str(v) for v in row)
    engine.dispose()
    return "\n".join(parts)


def test_planted_identifiers_reach_no_output(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, log={"level": "DEBUG"})
    study = write_study(tmp_path / "in", series=2, per_series=2)
    [marker] = study.markers
    originals = [study.study_uid, *study.series_uids, *study.sop_uids]
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(study.files[0].read_bytes()[:-300])  # refused, with an error
    log = tmp_path / "serve.log"
    with ServeProcess(cfg, log) as node:
        storescu(study.files, cfg.receive.port, calling_aet="PACS")
        wait_until(
            lambda: '"reported"' in apolo(cfg, "studies", "--json").stdout,
            what="the study to be de-identified and reported", timeout=60, interval=0.3,
        )
        [reported] = json.loads(apolo(cfg, "studies", "--json").stdout)
        report = apolo(cfg, "report", reported["study_uid"])
        report_json = apolo(cfg, "report", reported["study_uid"], "--json")
        refused = apolo(cfg, "ingest", str(broken))
        listing = apolo(cfg, "studies")
        listing_json = apolo(cfg, "studies", "--json")
        node.terminate()
    assert refused.returncode == 1 and "runs past its item or the data set" in refused.stderr
    outputs = {
        "logs": log.read_text(),
        "catalog": every_catalog_value(cfg),
        "spool file names": "\n".join(str(p) for p in cfg.spool_root.rglob("*")),
        "ingest error": refused.stdout + refused.stderr.replace(str(broken), "<path>"),
        "studies": listing.stdout + listing.stderr + listing_json.stdout,
        "report": report.stdout + report.stderr + report_json.stdout,
        "SR files": "\n".join(
            p.read_bytes().decode("latin-1") for p in (cfg.spool_root / "reports").rglob("*.dcm")
        ),
        "clean spool": "\n".join(
            p.read_bytes().decode("latin-1") for p in (cfg.spool_root / "clean").rglob("*.dcm")
        ),
    }
    assert outputs["clean spool"], "the clean spool must hold the cleaned study"
    assert outputs["SR files"] and '"findings"' in outputs["report"], "the study must be reported"
    assert "instance.stored" in outputs["logs"] and "2.25." in outputs["catalog"]
    for where, text in outputs.items():
        assert marker not in text, f"patient identifier found in {where}"
        for uid in originals:
            assert uid not in text, f"an original UID found in {where}"
    # The raw catalog file too, not only what SQL returns.
    for db_file in cfg.spool_root.glob("catalog.sqlite*"):
        assert marker.encode() not in db_file.read_bytes()
