"""The C-STORE SCU against real peers: every way a send can end has its outcome, none raises."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage, CTImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts

from apolo_node.config import Config, SendSettings
from apolo_node.findings import Algorithm
from apolo_node.send.scu import StoreResult, c_store, classify_status
from apolo_node.sr import measurement_report
from tests.peers import LOCALHOST, Storescp, free_port
from tests.synthetic import ct_slice, new_marker


def an_sr() -> Dataset:
    """A TID 1500 Comprehensive SR (no findings) on one CT slice, as the vision stage writes it."""
    ct = ct_slice(
        study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
        number=1, marker=new_marker(),
    )
    return measurement_report(
        [], [ct], Algorithm("test", "1"),
        series_instance_uid=generate_uid(prefix=None), sop_instance_uid=generate_uid(prefix=None),
    )


def settings(cfg: Config, port: int, ae_title: str, timeout: float = 5.0) -> SendSettings:
    return dataclasses.replace(
        cfg.send, host=LOCALHOST, port=port, ae_title=ae_title, calling_ae_title="APOLO", timeout=timeout
    )


def test_an_sr_sent_to_storescp_is_received(cfg: Config, storescp: Storescp) -> None:
    sr = an_sr()
    outcome = c_store(sr, settings(cfg, storescp.port, storescp.ae_title))
    assert (outcome.result, outcome.status, outcome.sent) == (StoreResult.SENT, 0x0000, True)
    [received] = storescp.files()
    assert str(sr.SOPInstanceUID) in received.name


def test_no_peer_is_a_retry_not_an_exception(cfg: Config) -> None:
    started = time.monotonic()
    outcome = c_store(an_sr(), settings(cfg, free_port(), "NOBODY"))
    assert outcome.result is StoreResult.RETRY and outcome.status is None
    assert "NOBODY@127.0.0.1" in outcome.detail and "connection refused" in outcome.detail
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "args, detail",
    [
        (["--refuse"], "rejected the association"),
        (["--abort-after"], "no C-STORE response"),
        (["--sleep-during", "5"], "no C-STORE response"),  # the DIMSE timeout (1 s) ends it
    ],
    ids=["refused-association", "abort-after-request", "dimse-timeout"],
)
def test_storescp_that_refuses_aborts_or_stalls_is_a_retry(
    cfg: Config, tmp_path: Path, need_dcmtk: None, args: list[str], detail: str
) -> None:
    with Storescp(tmp_path / "scp", extra_args=args) as scp:
        started = time.monotonic()
        outcome = c_store(an_sr(), settings(cfg, scp.port, scp.ae_title, timeout=1.0))
        assert outcome.result is StoreResult.RETRY, outcome
        assert detail in outcome.detail
        assert time.monotonic() - started < 10


def test_a_peer_that_never_answers_the_association_request_times_out(cfg: Config) -> None:
    with socket.socket() as silent:  # the kernel accepts the connection; nobody ever reads
        silent.bind((LOCALHOST, 0))
        silent.listen(1)
        started = time.monotonic()
        outcome = c_store(an_sr(), settings(cfg, silent.getsockname()[1], "SILENT", timeout=0.5))
    assert outcome.result is StoreResult.RETRY
    assert time.monotonic() - started < 5


@pytest.fixture
def status_scp() -> Iterator[tuple[int, dict[str, int]]]:
    """A pynetdicom storage SCP on a free port answering ``holder['status']`` to every C-STORE."""
    holder = {"status": 0x0000}
    ae = AE(ae_title="STATUSSCP")
    ae.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = ae.start_server(
        (LOCALHOST, port), block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: holder["status"])],
    )
    try:
        yield port, holder
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "status, result",
    [
        (0xB000, StoreResult.SENT),  # coercion of data elements: the PACS has it
        (0xB007, StoreResult.SENT),
        (0xA700, StoreResult.RETRY),  # out of resources
        (0xA702, StoreResult.RETRY),
        (0xA900, StoreResult.REFUSED),  # data set does not match SOP class
        (0xC000, StoreResult.REFUSED),  # cannot understand
        (0x0122, StoreResult.REFUSED),  # SOP class not supported
    ],
    ids=lambda v: f"0x{v:04X}" if isinstance(v, int) else v.value,
)
def test_each_c_store_status_has_its_outcome(
    cfg: Config, status_scp: tuple[int, dict[str, int]], status: int, result: StoreResult
) -> None:
    port, holder = status_scp
    holder["status"] = status
    outcome = c_store(an_sr(), settings(cfg, port, "STATUSSCP"))
    assert (outcome.result, outcome.status) == (result, status)
    assert f"0x{status:04X}" in outcome.detail
    assert classify_status(status) is result


def test_a_pacs_that_accepts_no_context_for_the_sop_class_is_a_retry(cfg: Config) -> None:
    ae = AE(ae_title="CTONLY")
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    server = ae.start_server((LOCALHOST, port), block=False)
    try:
        outcome = c_store(an_sr(), settings(cfg, port, "CTONLY"))
    finally:
        server.shutdown()
    assert outcome.result is StoreResult.RETRY
    assert f"accepted no presentation context for SOP class {ComprehensiveSRStorage}" in outcome.detail


def test_status_table() -> None:
    sent = [0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007]
    retry = [0xA700, 0xA7FF, 0x0213, 0xFE00, 0x1234]
    refused = [0xA900, 0xA9FF, 0xA801, 0xC000, 0xCFFF, 0x0117, 0x0124, 0x0210, 0x0212]
    assert [classify_status(s) for s in sent] == [StoreResult.SENT] * len(sent)
    assert [classify_status(s) for s in retry] == [StoreResult.RETRY] * len(retry)
    assert [classify_status(s) for s in refused] == [StoreResult.REFUSED] * len(refused)
