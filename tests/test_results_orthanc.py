"""The whole loop with Orthanc as the PACS: Orthanc routes a study to ``apolo-node serve``, the
node reports it, a clinician asks with ``--send``, and the answer SR and the GSPS land in the
ORIGINAL study of the ORIGINAL patient in Orthanc, each in its own series, with references that
resolve to instances Orthanc holds."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from apolo_node.config import Config
from tests.conftest import make_config
from tests.nodes import ServeProcess, apolo
from tests.peer_fixtures import dciodvfy_errors
from tests.peers import LOCALHOST, Orthanc, wait_until
from tests.synthetic import new_marker, phantom_ct

pytestmark = pytest.mark.usefixtures("need_orthanc", "need_dcmtk")


def stored_file(orthanc: Orthanc, instance_id: str, folder: Path) -> tuple[Dataset, Path]:
    with urllib.request.urlopen(f"{orthanc.url}/instances/{instance_id}/file", timeout=30) as answer:
        data = answer.read()
    path = folder / f"{instance_id}.dcm"
    path.write_bytes(data)
    return dcmread(io.BytesIO(data)), path


def studies(cfg: Config) -> list[dict[str, object]]:
    done = apolo(cfg, "studies", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ask_send_puts_the_answer_and_its_boxes_in_the_original_study(orthanc: Orthanc, tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        send={"enabled": True, "host": LOCALHOST, "port": orthanc.dicom_port, "ae_title": orthanc.aet,
              "retry_base": 0.5, "retry_max": 2.0},
        deid={"vault_key": Fernet.generate_key().decode()},
    )
    marker = new_marker()
    study_uid, series_uid = generate_uid(), generate_uid()
    originals = []
    for n in (1, 2, 3):
        ds = phantom_ct(study_uid=study_uid, series_uid=series_uid, number=n, marker=marker)
        path = tmp_path / f"ct{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        orthanc.upload(path)
        originals.append(str(ds.SOPInstanceUID))
    orthanc_study = orthanc.find_study_by_uid(study_uid)
    orthanc.add_modality("APOLO", cfg.receive.ae_title, LOCALHOST, cfg.receive.port)

    with ServeProcess(cfg, tmp_path / "serve.log"):
        orthanc.send_study(orthanc_study, "APOLO")
        wait_until(lambda: [s["status"] for s in studies(cfg)] == ["sent"],
                   what="the study reported and its TID 1500 SR sent back", timeout=90, interval=0.5)
        done = apolo(cfg, "ask", "Where is the metal?", "--send", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["citations"], answer
        assert {o["kind"] for o in answer["sent"]} == {"answer_sr", "gsps"}
        wait_until(lambda: len(orthanc.instances_of_study(study_uid)) == 3 + 3,
                   what="the answer SR and the GSPS in Orthanc", timeout=60, interval=0.5)

    assert len(orthanc.request("GET", "/patients")) == 1 and len(orthanc.studies()) == 1
    instances = orthanc.instances_of_study(study_uid)
    by_sop = {i["MainDicomTags"]["SOPInstanceUID"]: i for i in instances}
    queued = {o["sop_instance_uid"]: o["kind"] for o in answer["sent"]}
    assert set(queued) <= set(by_sop)
    results = {kind: stored_file(orthanc, by_sop[sop]["ID"], tmp_path) for sop, kind in queued.items()}
    series = set()
    report_sops = set(by_sop) - set(originals) - set(queued)  # the TID 1500 SR sent on its own
    assert len(report_sops) == 1
    for kind, (ds, path) in results.items():
        assert ds.StudyInstanceUID == study_uid, kind  # the ORIGINAL study
        assert (ds.PatientID, str(ds.PatientName)) == (f"{marker}ID", f"{marker}^NAME"), kind
        assert ds.SeriesInstanceUID != series_uid
        series.add(str(ds.SeriesInstanceUID))
        referenced = {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        assert referenced and referenced <= set(originals) | report_sops, kind  # all resolve in Orthanc
        assert dciodvfy_errors(path) == [], kind
    assert len(series) == 2, "each result in its own series"
    assert results["gsps"][0].Modality == "PR" and results["answer_sr"][0].Modality == "SR"
    metal = next(e for e in answer["evidence"] if e["label"] == "Metal" and e["cited"])
    boxes = [g for g in results["gsps"][0].GraphicAnnotationSequence if "GraphicObjectSequence" in g]
    drawn = [list(g.GraphicObjectSequence[0].GraphicData) for g in boxes]
    x1, y1, x2, y2 = metal["box"]
    outline = [x1, y1, x2, y1, x2, y2, x1, y2, x1, y1]
    assert any([float(v) for v in d] == pytest.approx(outline, abs=1e-3) for d in drawn), drawn

    # A user who holds the vault key may see the original accession number; it is audited, and
    # the audit row names the kind of value, never the value.
    shown = apolo(cfg, "ask", "Where is the metal?", "--reveal", "--json")
    assert shown.returncode == 0, shown.stderr
    revealed = json.loads(shown.stdout)
    [(pseudo_study, accession)] = revealed["accession_numbers"].items()
    assert revealed["dates"] == "real" and {e["study_date"] for e in revealed["evidence"]} == {"2026-01-02"}
    assert pseudo_study != study_uid and accession == f"{marker}AC"[:16]
    from sqlalchemy import text

    from apolo_node.catalog.engine import engine_for

    engine = engine_for(cfg)
    with engine.connect() as conn:
        audit = conn.execute(text("SELECT action, detail, studies FROM audit ORDER BY id")).all()
    engine.dispose()
    actions = [a for a, _, _ in audit]
    # the sender audits each object it delivered (report SR, answer SR, GSPS), ask --send its queueing
    assert actions[-3:] == ["ask", "real dates", "reveal"] and actions.count("ask") == 2 and actions.count("send") == 4
    assert actions.count("real dates") == 2  # a user holding the vault key sees real dates, audited
    assert audit[-1][1] == "accession number" and pseudo_study in audit[-1][2]
    assert not any(marker in f"{d} {s}" for _, d, s in audit)
    refused = apolo(make_config(tmp_path / "other"), "ask", "x", "--reveal")
    assert refused.returncode == 2 and "--reveal need sending back enabled" in refused.stderr
