"""No slow or greedy sender can stop the receiver: time, connection and memory bounds, each
followed by an echo and a store that must succeed. Real sockets on 127.0.0.1 (attackers bind
other loopback addresses, 127.0.0.2 and up, so that the per-address cap is theirs alone), real
dcmtk peers, and ``apolo-node serve`` as a process where its descriptors or memory are measured."""

from __future__ import annotations

import logging
import os
import random
import resource
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from apolo_node.config import Config
from apolo_node.receive.scp import source_address
from tests.conftest import make_config
from tests.nodes import ServeProcess, running_node
from tests.peers import echoscu, storescu
from tests.synthetic import write_study
from tests.test_receive_protocol import (
    associate_rq,
    catalogued,
    command,
    expect_abort,
    p_data,
    read_pdu,
)

pytestmark = pytest.mark.usefixtures("need_dcmtk")
SHORT = {"artim_timeout": 1.0, "request_timeout": 1.0, "network_timeout": 5.0, "max_pdu": 16384}


# -- helpers --------------------------------------------------------------------------------------


def client(port: int, source: str = "127.0.0.2", host: str = "127.0.0.1") -> socket.socket:
    """A connection to the node from the loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((host, port))
    return sock


def still_open(sock: socket.socket, wait: float = 0.3) -> bool:
    """Whether the node keeps the connection open for ``wait`` seconds (no close, no reset)."""
    sock.settimeout(wait)
    try:
        return sock.recv(1 << 16) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the node closed the connection (reading what it sends), or None."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(1 << 16):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def serves(port: int, folder: Path) -> None:
    """The node answers an echo and stores a fresh one-instance study."""
    assert echoscu(port).returncode == 0
    study = write_study(folder, series=1, per_series=1)
    done = storescu(study.files, port, check=False)
    assert done.returncode == 0, done.stdout[-500:]


def store_command(uid: str, message_id: int = 1) -> bytes:
    return p_data(3, 0x03, command(0x0001, CTImageStorage, message_id, uid, data=True))


def c_store_status(sock: socket.socket) -> int:
    kind, body = read_pdu(sock)
    assert kind == 0x04, f"P-DATA-TF expected, got PDU type {kind:#04x}"
    return int(decode(BytesIO(body[6:]), True, True).Status)


def dataset(tmp_path: Path) -> tuple[str, bytes]:
    """A small CT instance's SOP Instance UID and its data set in explicit VR little endian."""
    ds = dcmread(write_study(tmp_path / "one", series=1, per_series=1).files[0])
    body = encode(ds, False, True)
    assert body is not None
    return str(ds.SOPInstanceUID), body


@pytest.fixture
def short(tmp_path: Path) -> Config:
    return make_config(tmp_path, receive=SHORT)


# -- time -------------------------------------------------------------------------------------------


def test_artim_closes_a_connection_dribbling_its_associate_rq(short: Config, tmp_path: Path) -> None:
    request = associate_rq()
    with running_node(short), client(short.receive.port) as sock:
        started = time.monotonic()
        for byte in request[:-1]:  # one byte every 0.1 s: each read is quick, the whole is not
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            if time.monotonic() - started > 4:
                break
        took = closed_within(sock, 3)
        assert took is not None, "the dribbling connection outlived ARTIM"
        assert time.monotonic() - started < 3.5
        serves(short.receive.port, tmp_path / "ok")


def test_an_associate_rq_sent_in_pieces_within_artim_is_accepted(short: Config) -> None:
    request = associate_rq()
    with running_node(short), client(short.receive.port) as sock:
        for start in range(0, len(request), len(request) // 4 + 1):
            sock.sendall(request[start : start + len(request) // 4 + 1])
            time.sleep(0.15)
        assert read_pdu(sock)[0] == 0x02, "A-ASSOCIATE-AC expected"


def test_a_message_whose_bytes_trickle_is_aborted_at_the_request_timeout(short: Config, tmp_path: Path) -> None:
    uid, body = dataset(tmp_path)
    with running_node(short) as node, client(short.receive.port) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == 0x02
        started = time.monotonic()
        sock.sendall(store_command(uid))
        for start in range(0, 40):  # a fragment every 0.1 s, never the last
            try:
                sock.sendall(p_data(3, 0x00, body[start * 10 : start * 10 + 10]))
            except OSError:
                break
            time.sleep(0.1)
            if not still_open(sock, 0.01):
                break
        assert time.monotonic() - started < 3
        assert catalogued(node) == 0 and list(node.spool.tmp.iterdir()) == []
        serves(short.receive.port, tmp_path / "ok")


def test_an_idle_association_between_messages_is_not_cut_by_the_request_timeout(short: Config) -> None:
    with running_node(short), client(short.receive.port) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == 0x02
        time.sleep(1.5)  # longer than request_timeout, shorter than network_timeout
        sock.sendall(p_data(1, 0x03, command(0x0030, Verification, 3)))
        assert c_store_status(sock) == 0x0000


def test_slow_associations_give_back_their_slots(tmp_path: Path) -> None:
    """Two associations trickling C-STOREs hold both slots only until the request timeout."""
    cfg = make_config(tmp_path, receive={**SHORT, "max_associations": 2, "request_timeout": 1.5})
    uid, body = dataset(tmp_path)
    with running_node(cfg), ExitStack() as stack:
        slow = [stack.enter_context(client(cfg.receive.port, f"127.0.0.{n}")) for n in (2, 3)]
        for sock in slow:
            sock.sendall(associate_rq())
            assert read_pdu(sock)[0] == 0x02
            sock.sendall(store_command(uid) + p_data(3, 0x00, body[:10]))
        assert echoscu(cfg.receive.port).returncode != 0, "both slots should be held for now"
        deadline = time.monotonic() + 5
        for sock in slow:
            while still_open(sock, 0.05) and time.monotonic() < deadline:
                try:
                    sock.sendall(p_data(3, 0x00, body[:2]))
                except OSError:
                    break
                time.sleep(0.2)
        assert time.monotonic() < deadline, "slow associations kept their slots"
        serves(cfg.receive.port, tmp_path / "ok")


# -- connections --------------------------------------------------------------------------------------


def test_past_max_pending_a_new_connection_is_closed_at_accept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, receive={**SHORT, "max_pending": 3})
    with running_node(cfg), ExitStack() as stack:
        silent = [stack.enter_context(client(cfg.receive.port, f"127.0.0.{n}")) for n in (2, 3, 4)]
        time.sleep(0.2)
        assert all(still_open(s, 0.05) for s in silent)
        late = stack.enter_context(client(cfg.receive.port, "127.0.0.5"))
        assert closed_within(late, 1) is not None, "the fourth pending connection was kept"
        refused = [r for r in caplog.records if r.getMessage() == "association.refused"]
        assert [r.fields["reason"] for r in refused] == ["max-pending"]  # type: ignore[attr-defined]
        assert refused[0].fields["peer"] == "127.0.0.5"  # type: ignore[attr-defined]
        assert all(closed_within(s, 3) is not None for s in silent), "ARTIM did not shed them"
        serves(cfg.receive.port, tmp_path / "ok")


def test_past_max_per_address_only_that_address_is_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={**SHORT, "artim_timeout": 5.0, "max_per_address": 2})
    with running_node(cfg), ExitStack() as stack:
        mine = [stack.enter_context(client(cfg.receive.port, "127.0.0.2")) for _ in range(2)]
        time.sleep(0.2)
        third = stack.enter_context(client(cfg.receive.port, "127.0.0.2"))
        assert closed_within(third, 1) is not None, "a third connection from one address was kept"
        other = stack.enter_context(client(cfg.receive.port, "127.0.0.3"))
        other.sendall(associate_rq())
        assert read_pdu(other)[0] == 0x02, "another address is served while the first is capped"
        assert all(still_open(s, 0.05) for s in mine)
        serves(cfg.receive.port, tmp_path / "ok")  # from 127.0.0.1


def test_ipv4_mapped_clients_of_a_dual_stack_listener_match_ipv4_entries(tmp_path: Path) -> None:
    assert str(source_address(("::ffff:10.1.2.3", 104, 0, 0))) == "10.1.2.3"
    assert str(source_address(("::1", 104, 0, 0))) == "::1"
    assert source_address(("not an address", 104)) is None
    allowed = make_config(tmp_path / "a", receive={"host": "::", "allowed_addresses": ["127.0.0.0/8"]})
    with running_node(allowed) as node:
        assert node.scp.address_allowed(("::ffff:127.0.0.1", 1, 0, 0))
        assert not node.scp.address_allowed(("::ffff:10.0.0.1", 1, 0, 0))
        serves(allowed.receive.port, tmp_path / "ok")  # echoscu and storescu over IPv4
    barred = make_config(tmp_path / "b", receive={"host": "::", "allowed_addresses": ["10.0.0.0/8"]})
    with running_node(barred):
        assert echoscu(barred.receive.port).returncode != 0


# -- memory ---------------------------------------------------------------------------------------------


def test_a_command_set_over_the_cap_is_aborted(short: Config, tmp_path: Path) -> None:
    with running_node(short), client(short.receive.port) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == 0x02
        for _ in range(5):  # 5 x 16 KB of command fragments, never the last
            sock.sendall(p_data(1, 0x01, b"\0" * 16000))
        expect_abort(sock)
        serves(short.receive.port, tmp_path / "ok")


def test_empty_fragments_are_skipped_and_the_data_set_is_stored(short: Config, tmp_path: Path) -> None:
    uid, body = dataset(tmp_path)
    empties = struct.pack(">IBB", 2, 3, 0x00) * 2700  # 16,200 bytes of empty PDVs per PDU
    pdu = struct.pack(">BxI", 0x04, len(empties)) + empties
    with running_node(short) as node, client(short.receive.port) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == 0x02
        sock.sendall(store_command(uid) + pdu * 40 + p_data(3, 0x00, body[:100]) + pdu)
        sock.sendall(p_data(3, 0x02, body[100:]))
        assert c_store_status(sock) == 0x0000
        assert catalogued(node) == 1
        (kept,) = node.spool.incoming_files()
        assert dcmread(node.spool.root / kept).SOPInstanceUID == uid


def test_a_data_set_over_max_instance_size_is_read_to_its_end_and_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={**SHORT, "max_instance_size": 100_000})
    uid, body = dataset(tmp_path)
    big = body + b"\0" * 200_000  # trailing padding: only its size matters
    with running_node(cfg) as node, client(cfg.receive.port) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == 0x02
        sock.sendall(store_command(uid))
        chunks = range(0, len(big), 16000)
        for n, start in enumerate(chunks):
            sock.sendall(p_data(3, 0x02 if n == len(chunks) - 1 else 0x00, big[start : start + 16000]))
            if n == 10:  # past the cap, the staging file is already gone
                time.sleep(0.2)
                assert list(node.spool.tmp.iterdir()) == []
        assert c_store_status(sock) == 0xA700
        sock.sendall(store_command(uid, 2) + p_data(3, 0x02, body))  # the same association serves on
        assert c_store_status(sock) == 0x0000
        assert catalogued(node) == 1
        serves(cfg.receive.port, tmp_path / "ok")


def send_data_set(sock: socket.socket, uid: str, data: bytes, message_id: int = 1) -> int:
    sock.sendall(store_command(uid, message_id))
    chunks = range(0, len(data), 16000)
    for n, start in enumerate(chunks):
        sock.sendall(p_data(3, 0x02 if n == len(chunks) - 1 else 0x00, data[start : start + 16000]))
    return c_store_status(sock)
