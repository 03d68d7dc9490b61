"""The receiver's own upper layer, PDU by PDU: what a peer that breaks PS3.8 gets, and that
the node keeps serving after it. Real sockets on 127.0.0.1; the requests are encoded by
pynetdicom and pydicom, not by the code under test."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from apolo_node.catalog.models import Instance
from apolo_node.catalog.records import list_studies
from apolo_node.config import Config
from apolo_node.pseudonym import UIDMapper
from apolo_node.receive.dimse import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    decode_command,
    encode_response,
    part10_header,
)
from apolo_node.spool import Spool
from apolo_node.receive.store import InstanceStore
from tests.conftest import make_config
from tests.nodes import running_node, upgraded_engine
from tests.peers import echoscu, storescu
from tests.synthetic import write_study

pytestmark = pytest.mark.usefixtures("need_dcmtk")
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


# -- requests built by pynetdicom and pydicom ---------------------------------------------------


def associate_rq(
    *, app_context: str = APPLICATION_CONTEXT, max_pdu: int = 16384, calling: str = "RAWSCU"
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = app_context
    primitive.calling_ae_title = calling
    primitive.called_ae_title = "APOLO"
    echo = build_context(Verification, [ImplicitVRLittleEndian])
    echo.context_id = 1
    ct = build_context(CTImageStorage, [ExplicitVRLittleEndian])
    ct.context_id = 3
    primitive.presentation_context_definition_list = [echo, ct]
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = "1.2.3.4"
    primitive.user_information = [length, uid]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def command(field: int, sop_class: str, message_id: int = 7, sop_instance: str = "", data: bool = False) -> bytes:
    ds = Dataset()
    ds.AffectedSOPClassUID = sop_class
    ds.CommandField = field
    ds.MessageID = message_id
    ds.CommandDataSetType = 0x0001 if data else 0x0101
    if sop_instance:
        ds.AffectedSOPInstanceUID = sop_instance
        ds.Priority = 0
    body = encode(ds, True, True)
    assert body is not None
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def p_data(context_id: int, control: int, payload: bytes) -> bytes:
    item = struct.pack(">IBB", len(payload) + 2, context_id, control) + payload
    return struct.pack(">BxI", 0x04, len(item)) + item


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """(type, body) of the next PDU, or (0, b"") once the node has closed the connection."""
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    try:
        kind, length = struct.unpack(">BxI", exact(6))
        return kind, exact(length)
    except (ConnectionError, OSError):
        return 0, b""


def closed(sock: socket.socket) -> bool:
    return read_pdu(sock) == (0, b"")


@contextmanager
def connection(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


@contextmanager
def associated(port: int, max_pdu: int = 16384) -> Iterator[socket.socket]:
    with connection(port) as sock:
        sock.sendall(associate_rq(max_pdu=max_pdu))
        kind, _ = read_pdu(sock)
        assert kind == 0x02, "A-ASSOCIATE-AC expected"
        yield sock


def expect_abort(sock: socket.socket) -> None:
    kind, body = read_pdu(sock)
    assert kind == 0x07, f"A-ABORT expected, got PDU type {kind:#04x}"
    assert body[2] == 2, "aborted by the service provider"
    assert closed(sock)


def catalogued(node) -> int:  # type: ignore[no-untyped-def]
    with node.engine.connect() as conn:
        return int(conn.execute(select(func.count(Instance.id))).scalar_one())


# -- the codec, checked against pydicom ---------------------------------------------------------


def test_command_sets_and_file_meta_read_back_with_pydicom() -> None:
    request = decode_command(command(0x0001, CTImageStorage, 513, "1.2.3.4.5", data=True)[0:])
    assert (request.field, request.message_id, request.sop_class_uid) == (1, 513, CTImageStorage)
    assert request.sop_instance_uid == "1.2.3.4.5" and request.has_data_set

    rsp = decode(BytesIO(encode_response(request, 0xC000, "SOPClassUID differs")), True, True)
    assert rsp.CommandField == 0x8001 and rsp.MessageIDBeingRespondedTo == 513
    assert rsp.Status == 0xC000 and rsp.ErrorComment == "SOPClassUID differs"
    assert rsp.AffectedSOPClassUID == CTImageStorage and rsp.AffectedSOPInstanceUID == "1.2.3.4.5"
    assert rsp.CommandDataSetType == 0x0101
    assert rsp.CommandGroupLength == len(encode_response(request, 0xC000, "SOPClassUID differs")) - 12

    echo = decode_command(command(0x0030, Verification, 9))
    rsp = decode(BytesIO(encode_response(echo, 0)), True, True)
    assert (rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo) == (0x8030, 0, 9)
    assert "AffectedSOPInstanceUID" not in rsp

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = CTImageStorage, "1.2.3.4.5", "X"
    body = encode(ds, False, True)
    assert body is not None
    kept = dcmread(BytesIO(part10_header(CTImageStorage, "1.2.3.4.5", ExplicitVRLittleEndian, "PACS") + body))
    meta = kept.file_meta
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "PACS"
    assert kept.PatientID == "X"


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00\x01\x04\x00\x00\x00", b"\x08\x00\x16\x00\x02\x00\x00\x00AB", b"\x00\x00\x00\x09"],
    ids=["no-command-field", "wrong-group", "cut-header"],
)
def test_malformed_command_sets_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_command(data)


# -- over the wire --------------------------------------------------------------------------------


@pytest.fixture
def node_cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path, receive={"max_pdu": 16384})


def test_an_unknown_application_context_is_rejected(node_cfg: Config) -> None:
    with running_node(node_cfg), connection(node_cfg.receive.port) as sock:
        sock.sendall(associate_rq(app_context="1.2.3.999"))
        kind, body = read_pdu(sock)
        assert kind == 0x03, "A-ASSOCIATE-RJ expected"
        assert tuple(body[1:4]) == (1, 1, 2)  # permanent, service user, context name not supported


def test_an_echo_answer_fits_the_peers_smallest_pdu(node_cfg: Config) -> None:
    with running_node(node_cfg), associated(node_cfg.receive.port, max_pdu=32) as sock:
        sock.sendall(p_data(1, 0x03, command(0x0030, Verification, 41)))
        payload = b""
        while True:
            kind, body = read_pdu(sock)
            assert kind == 0x04 and len(body) <= 32
            length, context_id, control = struct.unpack(">IBB", body[:6])
            assert context_id == 1 and control & 1
            payload += body[6 : 4 + length]
            if control & 2:
                break
        rsp = decode(BytesIO(payload), True, True)
        assert (rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo) == (0x8030, 0, 41)
        sock.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
        assert read_pdu(sock)[0] == 0x06, "A-RELEASE-RP expected"


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda: bytes([0x09, 0, 0, 0, 0, 2, 0, 0]), id="unknown-pdu-type"),
        pytest.param(lambda: p_data(99, 0x03, command(0x0030, Verification)), id="unaccepted-context"),
        pytest.param(lambda: p_data(3, 0x02, b"\x08\x00\x18\x00"), id="data-before-command"),
        pytest.param(lambda: p_data(1, 0x03, command(0x0020, Verification)), id="c-find-not-served"),
        pytest.param(lambda: p_data(1, 0x03, b"\x00\x00\x00\x09"), id="malformed-command"),
        pytest.param(lambda: struct.pack(">BxI", 0x04, 1 << 20), id="pdu-over-our-maximum"),
        pytest.param(
            lambda: p_data(3, 0x01, command(0x0001, CTImageStorage, 1, "1.2.3", data=True))
            + bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]),
            id="release-inside-a-message",
        ),
        pytest.param(lambda: associate_rq(), id="second-associate-rq"),
    ],
)
def test_a_peer_breaking_the_protocol_is_aborted_and_the_node_serves_on(node_cfg: Config, send) -> None:  # type: ignore[no-untyped-def]
    with running_node(node_cfg) as node, associated(node_cfg.receive.port) as sock:
        sock.sendall(send())
        expect_abort(sock)
        assert echoscu(node_cfg.receive.port).returncode == 0
        assert catalogued(node) == 0


def test_a_connection_cut_inside_a_data_set_stores_nothing(node_cfg: Config, tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=1)
    dataset = dcmread(study.files[0])
    body = encode(dataset, False, True)
    assert body is not None
    with running_node(node_cfg) as node:
        with associated(node_cfg.receive.port) as sock:
            sock.sendall(p_data(3, 0x03, command(0x0001, CTImageStorage, 1, dataset.SOPInstanceUID, data=True)))
            sock.sendall(p_data(3, 0x00, body[: len(body) // 2]))  # never the last fragment
        time.sleep(0.5)
        assert catalogued(node) == 0
        assert node.spool.incoming_files() == [] and list(node.spool.tmp.iterdir()) == []
        assert echoscu(node_cfg.receive.port).returncode == 0


def test_a_stored_instance_arrives_in_many_fragments_and_is_kept_whole(node_cfg: Config, tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=1)
    dataset = dcmread(study.files[0])
    body = encode(dataset, False, True)
    assert body is not None
    with running_node(node_cfg) as node, associated(node_cfg.receive.port) as sock:
        cmd = command(0x0001, CTImageStorage, 5, dataset.SOPInstanceUID, data=True)
        sock.sendall(p_data(3, 0x01, cmd[:20]) + p_data(3, 0x03, cmd[20:]))
        chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        for n, chunk in enumerate(chunks):
            sock.sendall(p_data(3, 0x02 if n == len(chunks) - 1 else 0x00, chunk))
        kind, body_rsp = read_pdu(sock)
        assert kind == 0x04
        rsp = decode(BytesIO(body_rsp[6:]), True, True)
        assert (rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo) == (0x8001, 0, 5)
        assert rsp.AffectedSOPInstanceUID == dataset.SOPInstanceUID
        assert catalogued(node) == 1
        (kept,) = node.spool.incoming_files()
        spooled = dcmread(node.spool.root / kept)
        assert spooled == dataset
        assert spooled.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_role_selection_async_window_and_user_identity_are_negotiated(node_cfg: Config, tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=1)
    ae = AE(ae_title="FULLSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 1
    identity.primary_field = b"radiology"
    identity.positive_response_requested = False
    ext = [build_role(CTImageStorage, scu_role=True, scp_role=True), identity]
    with running_node(node_cfg) as node:
        assoc = ae.associate("127.0.0.1", node_cfg.receive.port, ae_title="APOLO", ext_neg=ext)
        assert assoc.is_established
        try:
            assert assoc.acceptor.implementation_class_uid == IMPLEMENTATION_CLASS_UID
            assert assoc.acceptor.implementation_version_name == IMPLEMENTATION_VERSION_NAME
            assert assoc.acceptor.maximum_length == 16384
            assert int(assoc.send_c_store(dcmread(study.files[0])).Status) == 0
        finally:
            assoc.release()
        assert catalogued(node) == 1


def test_a_silent_association_is_dropped_after_the_network_timeout(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={"network_timeout": 1.0})
    with running_node(cfg), associated(cfg.receive.port) as sock:
        started = time.monotonic()
        expect_abort(sock)
        assert 0.5 < time.monotonic() - started < 8


def test_associations_in_parallel_each_store_their_study(node_cfg: Config, tmp_path: Path) -> None:
    studies = [write_study(tmp_path / f"in{n}", series=2, per_series=4) for n in range(3)]
    with running_node(node_cfg) as node:
        with ThreadPoolExecutor(3) as pool:
            runs = list(
                pool.map(lambda s: storescu(s.files, node_cfg.receive.port, calling_aet="PACS", check=False), studies)
            )
        assert [r.returncode for r in runs] == [0, 0, 0], [r.stdout[-300:] for r in runs]
        assert catalogued(node) == 24
        assert sorted(s.instances for s in list_studies(node.engine)) == [8, 8, 8]


def test_a_staging_file_that_hits_a_full_disk_is_refused_and_leaves_nothing(cfg: Config, tmp_path: Path) -> None:
    """The data set is written to tmp/ as it arrives; here its writes fail with ENOSPC (the file's
    descriptor is pointed at /dev/full), the answer is 0xA700, and no file or row is left."""
    study = write_study(tmp_path / "in", series=1, per_series=1)
    raw = study.files[0].read_bytes()
    engine = upgraded_engine(cfg)
    spool = Spool(cfg.spool_root)
    store = InstanceStore(spool, engine, UIDMapper(cfg.deid.key.encode()))
    staged = spool.open_staging()
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, staged._fd)  # type: ignore[arg-type]
    os.close(full)
    staged.write(memoryview(raw)[:1000])
    staged.write(memoryview(raw)[1000:])
    result = store.store(raw, staged=staged)
    assert result.status == 0xA700 and "ENOSPC" not in result.comment and "errno 28" in result.comment
    assert spool.incoming_files() == [] and list(spool.tmp.iterdir()) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count(Instance.id))).scalar_one() == 0
    # The same bytes through a healthy staging file are stored.
    staged = spool.open_staging()
    staged.write(memoryview(raw))
    assert store.store(raw, staged=staged).ok
    assert len(spool.incoming_files()) == 1 and list(spool.tmp.iterdir()) == []
    engine.dispose()
