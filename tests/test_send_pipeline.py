"""The send worker with a real PACS (Orthanc): results land in the original study, once, even
when the PACS is down for a while; what retrying cannot fix fails with its reason."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from sqlalchemy import Engine

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.models import utcnow
from apolo_node.catalog.outbox import enqueue, outbox_rows
from apolo_node.catalog.records import list_studies
from apolo_node.config import Config
from apolo_node.deid.vault import Vault
from apolo_node.pipeline import sender
from apolo_node.pipeline.ingest import ingest
from apolo_node.pseudonym import UIDMapper
from apolo_node.spool import Spool
from apolo_node.sr import read_measurement_report
from tests.conftest import make_config
from tests.nodes import upgraded_engine
from tests.peers import LOCALHOST, Orthanc, free_port, wait_until
from tests.synthetic import Study, write_study

WORKER = "test:send0"


@dataclass
class Node:
    """What the send worker needs, on a catalog where ``studies`` went through the pipeline."""

    cfg: Config
    engine: Engine
    studies: list[Study]

    @property
    def spool(self) -> Spool:
        return Spool(self.cfg.spool_root)

    @property
    def vault(self) -> Vault:
        return Vault.from_config(self.cfg)

    @property
    def mapper(self) -> UIDMapper:
        return UIDMapper(self.cfg.deid.key.encode())

    def run_once(self, vault: Vault | None = None) -> bool:
        return sender.run_once(self.cfg, self.engine, self.spool, vault or self.vault, self.mapper, WORKER)

    def drain(self) -> int:
        n = 0
        while self.run_once():
            n += 1
        return n

    def statuses(self) -> list[str]:
        return sorted(s.status for s in list_studies(self.engine))


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Make a node whose PACS is at ``pacs_port``, with ``n_studies`` studies reported and queued."""
    engines: list[Engine] = []

    def make(pacs_port: int, n_studies: int = 1, **send: object) -> Node:
        cfg = make_config(
            tmp_path,
            send={
                "enabled": True, "host": LOCALHOST, "port": pacs_port, "ae_title": "ORTHANC",
                "timeout": 5.0, "retry_base": 0.2, "retry_max": 0.8, **send,
            },
            deid={"vault_key": Fernet.generate_key().decode()},
        )
        studies = [write_study(tmp_path / f"in{i}", series=2, per_series=2) for i in range(n_studies)]
        upgraded_engine(cfg).dispose()
        ingest(cfg, [tmp_path / f"in{i}" for i in range(n_studies)])
        engines.append(engine_for(cfg))
        node = Node(cfg, engines[-1], studies)
        assert [r.state for r in outbox_rows(node.engine)] == ["pending"] * n_studies
        return node

    yield make
    for engine in engines:
        engine.dispose()


def phi_of(study: Study) -> list[str]:
    return [*study.markers, study.study_uid, *study.series_uids, *study.sop_uids]


@pytest.mark.usefixtures("need_orthanc")
def test_the_report_lands_in_the_original_study_of_the_original_patient(
    orthanc: Orthanc, make_node: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="apolo")
    node = make_node(orthanc.port)
    [study] = node.studies
    [marker] = study.markers
    for path in study.files:  # the PACS holds the original study, as it sent it to us
        orthanc.upload(path)
    [row] = outbox_rows(node.engine)
    sr_series = str(dcmread(node.cfg.spool_root / row.path).SeriesInstanceUID)

    assert node.drain() == 1
    [row] = outbox_rows(node.engine)
    assert (row.state, row.attempts, row.last_error) == ("sent", 0, None) and row.sent_at is not None
    assert node.statuses() == ["sent"]

    assert len(orthanc.request("GET", "/patients")) == 1 and len(orthanc.studies()) == 1
    instances = orthanc.instances_of_study(study.study_uid)
    assert len(instances) == len(study.files) + 1
    [sr] = [i for i in instances if i["MainDicomTags"]["SOPInstanceUID"] == row.sop_instance_uid]
    tags = orthanc.request("GET", f"/instances/{sr['ID']}/simplified-tags")
    assert tags["StudyInstanceUID"] == study.study_uid
    assert (tags["PatientID"], tags["PatientName"]) == (f"{marker}ID", f"{marker}^NAME")
    assert tags["Modality"] == "SR"
    assert tags["SeriesInstanceUID"] == sr_series and sr_series not in study.series_uids  # its own series
    with urllib.request.urlopen(f"{orthanc.url}/instances/{sr['ID']}/file", timeout=30) as answer:
        stored = dcmread(io.BytesIO(answer.read()))  # the file as the PACS keeps it
    referenced = {str(e.value) for e in stored.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert referenced and referenced <= set(study.sop_uids)
    narrative = read_measurement_report(stored).narrative  # the report's words travel in the same SR
    assert narrative is not None and narrative.impression and marker not in narrative.impression

    # A later result citing the report SR (as an answer SR does) keeps that reference as it is:
    # the report went to the PACS under its own UIDs.
    citing = dcmread(node.cfg.spool_root / row.path)
    citing.SOPInstanceUID, citing.SeriesInstanceUID = generate_uid(prefix=None), generate_uid(prefix=None)
    cited = Dataset()
    cited.SeriesInstanceUID = sr_series
    cited.ReferencedSOPSequence = [Dataset()]
    cited.ReferencedSOPSequence[0].ReferencedSOPClassUID = citing.SOPClassUID
    cited.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = row.sop_instance_uid
    citing.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence.append(cited)
    path = f"reports/{row.study_uid}/{citing.SOPInstanceUID}.dcm"
    citing.save_as(node.cfg.spool_root / path, enforce_file_format=True)
    assert enqueue(node.engine, row.study_uid, "answer_sr", str(citing.SOPInstanceUID), path)
    assert node.drain() == 1
    assert [r.state for r in outbox_rows(node.engine)] == ["sent", "sent"]
    [answer] = [i for i in orthanc.instances_of_study(study.study_uid)
                if i["MainDicomTags"]["SOPInstanceUID"] == citing.SOPInstanceUID]
    with urllib.request.urlopen(f"{orthanc.url}/instances/{answer['ID']}/file", timeout=30) as got:
        referenced = {str(e.value) for e in dcmread(io.BytesIO(got.read())).iterall()
                      if e.keyword == "ReferencedSOPInstanceUID"}
    assert row.sop_instance_uid in referenced and referenced - {row.sop_instance_uid} <= set(study.sop_uids)

    events = [r for r in caplog.records if r.name.startswith("apolo.send")]
    assert {r.getMessage() for r in events} >= {"outbox.sent", "study.sent"}
    for record in caplog.records:
        text = record.getMessage() + json.dumps(getattr(record, "fields", {}), default=str)
        assert not any(value in text for value in phi_of(study)), record.getMessage()


@pytest.mark.usefixtures("need_orthanc")
def test_results_queued_while_the_pacs_is_down_arrive_once_when_it_is_back(
    orthanc: Orthanc, make_node: Callable[..., Node]
) -> None:
    node = make_node(orthanc.port, n_studies=2, retry_base=1.0, retry_max=4.0)
    orthanc.stop()

    def failed_once_more(previous: int) -> list[dt.timedelta]:
        """Run every due row once (the PACS is down); each waits longer than the time before."""
        started = utcnow()
        assert node.run_once() and node.run_once()
        rows = outbox_rows(node.engine)
        assert [(r.state, r.attempts) for r in rows] == [("pending", previous + 1)] * 2
        assert all("connection refused" in (r.last_error or "") for r in rows)
        return [r.next_attempt_at - started for r in rows]

    first = failed_once_more(0)
    # base 1 s, +10% jitter at most, plus the time the refused attempt took on a loaded machine
    assert all(dt.timedelta(seconds=1.0) <= wait <= dt.timedelta(seconds=1.9) for wait in first)
    assert not node.run_once()  # nothing is due yet
    wait_until(lambda: all(r.next_attempt_at <= utcnow() for r in outbox_rows(node.engine)),
               what="the first retry to be due", timeout=5)
    second = failed_once_more(1)
    assert all(dt.timedelta(seconds=2.0) <= wait <= dt.timedelta(seconds=3.5) for wait in second)  # doubled
    assert node.statuses() == ["reported", "reported"]

    # The PACS comes back: a fresh Orthanc on the same ports and storage; the node's worker runs.
    back = Orthanc(orthanc.workdir)
    back.http_port, back.dicom_port = orthanc.http_port, orthanc.dicom_port
    stop = threading.Event()
    worker = threading.Thread(
        target=sender.watch, args=(node.cfg, node.engine, node.spool, node.vault, node.mapper, stop)
    )
    with back:
        worker.start()
        try:
            wait_until(lambda: {r.state for r in outbox_rows(node.engine)} == {"sent"},
                       what="every queued result to be sent", timeout=20, interval=0.1)
        finally:
            stop.set()
            worker.join(timeout=30)
        assert not worker.is_alive()
        rows = outbox_rows(node.engine)
        assert all(r.attempts >= 2 for r in rows)
        held = back.request("GET", "/instances?expand")
        held_sops = sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in held)
        assert held_sops == sorted(r.sop_instance_uid for r in rows)
        tags = [back.request("GET", f"/instances/{i['ID']}/simplified-tags") for i in held]
        assert {t["StudyInstanceUID"] for t in tags} == {s.study_uid for s in node.studies}
        assert node.statuses() == ["sent", "sent"]
        # sent once: nothing is due any more, and queuing the same object again is a no-op
        assert not node.run_once()
        again = rows[0]
        assert not enqueue(node.engine, again.study_uid, again.kind, again.sop_instance_uid, again.path)
        assert len(back.request("GET", "/instances")) == 2


def test_what_retrying_cannot_fix_fails_with_its_reason(make_node: Callable[..., Node]) -> None:
    """A vault entry that does not open, a PACS that refuses the object, a file that is gone."""
    ae = AE(ae_title="ORTHANC")
    ae.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = ae.start_server(
        (LOCALHOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0xA900)]
    )
    try:
        node = make_node(port, n_studies=2)
        first, second = outbox_rows(node.engine)
        gone = f"reports/{first.study_uid}/2.25.1.dcm"
        assert enqueue(node.engine, first.study_uid, "gsps", "2.25.1", gone)
        assert node.run_once(vault=Vault(node.cfg.spool_root, Fernet.generate_key()))  # another key
        assert node.run_once() and node.run_once() and not node.run_once()
    finally:
        server.shutdown()
    rows = {r.sop_instance_uid: r for r in outbox_rows(node.engine)}
    assert [r.state for r in rows.values()] == ["failed"] * 3
    assert "does not open with this key" in (rows[first.sop_instance_uid].last_error or "")
    assert rows[second.sop_instance_uid].last_error == (
        f"refused: ORTHANC@{LOCALHOST}:{port} answered C-STORE status 0xA900"
    )
    assert rows["2.25.1"].last_error == "result file unreadable (FileNotFoundError)"
    assert node.statuses() == ["reported", "reported"]  # not sent, and not dropped silently
    for row in rows.values():
        assert not any(value in (row.last_error or "") for s in node.studies for value in phi_of(s))
