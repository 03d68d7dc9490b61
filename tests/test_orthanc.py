"""Orthanc as the PACS: it sends a study to the node, which finds it stable and cleans it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apolo_node.config import Config
from apolo_node.pseudonym import UIDMapper
from tests.nodes import ServeProcess, apolo
from tests.peers import Orthanc, wait_until
from tests.synthetic import write_study

pytestmark = pytest.mark.usefixtures("need_orthanc")


def test_orthanc_routes_a_study_to_the_node(cfg: Config, orthanc: Orthanc, tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=2, per_series=3)
    for path in study.files:
        orthanc.upload(path)
    orthanc_id = orthanc.find_study_by_uid(study.study_uid)
    assert orthanc_id is not None
    orthanc.add_modality("APOLO", cfg.receive.ae_title, "127.0.0.1", cfg.receive.port)
    with ServeProcess(cfg, tmp_path / "serve.log") as node:
        assert orthanc.echo("APOLO")
        orthanc.send_study(orthanc_id, "APOLO")

        def cleaned() -> list[dict[str, object]]:
            done = apolo(cfg, "studies", "--json")
            return [s for s in json.loads(done.stdout) if s["status"] == "reported"]

        wait_until(lambda: bool(cleaned()), what="the study to be de-identified and reported", timeout=60)
        [row] = cleaned()
        assert row["study_uid"] == UIDMapper(cfg.deid.key.encode())(study.study_uid)
        assert row["instances"] == 6 and row["series"] == 2
        assert node.terminate() == 0
