"""Results for a colour study (issue 12 item 4): pydicom's RGB ultrasound goes in, the baseline boxes
its content, ``ask`` cites it, and the boxes go back as a Color Softcopy Presentation State that
dcmpschk and dciodvfy accept, re-linked by the sender into the ORIGINAL study at a real storage
SCP on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt

from apolo_node import config as config_mod
from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.records import list_studies
from apolo_node.deid.vault import Vault
from apolo_node.pipeline import sender
from apolo_node.pipeline.ingest import ingest
from apolo_node.pipeline.results import queue_answer
from apolo_node.pseudonym import UIDMapper
from apolo_node.reasoning.ask import Filters, ask
from apolo_node.spool import Spool
from apolo_node.sr import read_grounding_presentation_state
from tests.conftest import make_config
from tests.nodes import upgraded_engine
from tests.peer_fixtures import dciodvfy_errors, need_tool
from tests.peers import LOCALHOST, free_port

CSPS = "1.2.840.10008.5.1.4.1.1.11.2"


@pytest.fixture
def pacs() -> Iterator[tuple[int, list[Dataset]]]:
    """A storage SCP on a free local port that keeps what it receives."""
    received: list[Dataset] = []

    def store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title="PACS")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server((LOCALHOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        yield port, received
    finally:
        server.shutdown()


def dcmpschk_passes(path: Path) -> bool:
    run = subprocess.run([need_tool("dcmpschk"), str(path)], check=False, capture_output=True, text=True, timeout=60)
    return run.returncode == 0 and "Test passed." in run.stdout + run.stderr


def test_an_asked_about_colour_ultrasound_gets_its_boxes_back_as_a_color_presentation_state(
    tmp_path: Path, pacs: tuple[int, list[Dataset]]
) -> None:
    port, received = pacs
    cfg = make_config(
        tmp_path,
        send={"enabled": True, "host": LOCALHOST, "port": port, "ae_title": "PACS", "timeout": 5.0},
        deid={"vault_key": Fernet.generate_key().decode()},
    )
    cfg = config_mod.replace(cfg, reasoning={"semantic": False})
    (tmp_path / "in").mkdir()
    source = Path(get_testdata_file("US1_UNCR.dcm"))  # RGB ultrasound, colour Doppler
    shutil.copy(source, tmp_path / "in" / source.name)
    original = dcmread(source, stop_before_pixels=True)
    upgraded_engine(cfg).dispose()
    assert ingest(cfg, [tmp_path / "in"]).stored == 1
    engine = engine_for(cfg)
    spool = Spool(cfg.spool_root)
    try:
        [study] = list_studies(engine)
        assert study.status == "reported"
        result = ask(engine, cfg.reasoning, "Where is the image content?", Filters())
        [content] = [e for e in result.evidence if e.finding.label == "Image content"]
        assert content.tracking_uid in result.answer.citations and content.finding.box is not None
        queued = {q.kind: q for q in queue_answer(engine, spool, result)}
        assert set(queued) == {"answer_sr", "gsps"}
        path = spool.root / queued["gsps"].path
        pr = dcmread(path)
        assert pr.SOPClassUID == CSPS and pr.StudyInstanceUID == study.study_uid  # de-identified
        [drawn] = read_grounding_presentation_state(pr)
        assert (drawn.sop_instance_uid, drawn.box) == (content.finding.sop_instance_uid, content.finding.box)
        assert dcmpschk_passes(path) and dciodvfy_errors(path) == []

        mapper = UIDMapper(cfg.deid.key.encode())
        while sender.run_once(cfg, engine, spool, Vault.from_config(cfg), mapper, "test:colour"):
            pass
        assert [s.status for s in list_studies(engine)] == ["sent"]
    finally:
        engine.dispose()
    [back] = [ds for ds in received if ds.SOPClassUID == CSPS]
    assert back.StudyInstanceUID == original.StudyInstanceUID  # the ORIGINAL study
    assert (back.PatientID, back.PatientName) == (original.PatientID, original.PatientName)
    referenced = {str(e.value) for e in back.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert referenced == {original.SOPInstanceUID}
    assert [(g.sop_instance_uid, g.box) for g in read_grounding_presentation_state(back)] == [
        (original.SOPInstanceUID, drawn.box)
    ]
    relinked = tmp_path / "back.dcm"
    back.save_as(relinked, enforce_file_format=True)
    assert dcmpschk_passes(relinked) and dciodvfy_errors(relinked) == []
