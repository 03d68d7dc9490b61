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
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian
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


def deflated_stream(tmp_path: Path, pixel_bytes: int) -> tuple[str, bytes]:
    """A CT instance whose Pixel Data is ``pixel_bytes`` zeros (8,192 fill its image), deflated,
    the zeros a slice at a time so that a bomb costs this process nothing: its SOP Instance UID
    and its data set."""
    ds = dcmread(write_study(tmp_path, series=1, per_series=1).files[0])
    del ds.PixelData
    head = encode(ds, False, True)
    assert head is not None
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [squeeze.compress(head + struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", pixel_bytes))]
    zeros = bytes(min(pixel_bytes, 1 << 20))
    for start in range(0, pixel_bytes, len(zeros)):
        out.append(squeeze.compress(zeros[: pixel_bytes - start]))
    out.append(squeeze.flush())
    return str(ds.SOPInstanceUID), b"".join(out)


def associate_deflated() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = "RAWSCU", "APOLO"
    ct = build_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    ct.context_id = 3
    primitive.presentation_context_definition_list = [ct]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    primitive.user_information = [length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def send_data_set(sock: socket.socket, uid: str, data: bytes, message_id: int = 1) -> int:
    sock.sendall(store_command(uid, message_id))
    chunks = range(0, len(data), 16000)
    for n, start in enumerate(chunks):
        sock.sendall(p_data(3, 0x02 if n == len(chunks) - 1 else 0x00, data[start : start + 16000]))
    return c_store_status(sock)


def test_a_deflated_data_set_inflating_past_the_cap_is_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={**SHORT, "max_instance_size": 1 << 20})
    bomb_uid, bomb = deflated_stream(tmp_path / "bomb", 16 << 20)  # 16 MiB once inflated
    fine_uid, fine = deflated_stream(tmp_path / "fine", 8192)
    assert len(bomb) < 100_000
    with running_node(cfg) as node, client(cfg.receive.port) as sock:
        sock.sendall(associate_deflated())
        assert read_pdu(sock)[0] == 0x02
        assert send_data_set(sock, bomb_uid, bomb) == 0xA700
        assert catalogued(node) == 0
        assert send_data_set(sock, fine_uid, fine, 2) == 0x0000
        assert catalogued(node) == 1
        serves(cfg.receive.port, tmp_path / "ok")


# -- apolo-node serve under siege: descriptors, CPU and resident memory, measured ---------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int, key: str) -> int:
    """``VmRSS`` or ``VmHWM`` of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def busy(pid: int, seconds: float, keep_dribbling: Callable[[], None]) -> float:
    """The process's CPU share over ``seconds`` while ``keep_dribbling`` runs every 0.25 s."""
    started, cpu = time.monotonic(), cpu_seconds(pid)
    while time.monotonic() - started < seconds:
        keep_dribbling()
        time.sleep(0.25)
    return (cpu_seconds(pid) - cpu) / (time.monotonic() - started)


@contextmanager
def dribblers(port: int, sources: list[str], count: int) -> Iterator[Callable[[], None]]:
    """``count`` connections from ``sources`` in turn, each to send one byte of an A-ASSOCIATE-RQ
    each time the yielded function is called; closed on exit."""
    socks = []
    try:
        for n in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((sources[n % len(sources)], 0))
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))  # the handshake completes, or not, on its own

        request, sent = associate_rq(), 0

        def dribble() -> None:
            nonlocal sent
            for sock in socks:
                try:
                    sock.send(request[sent : sent + 1])
                except OSError:
                    pass
            sent = min(sent + 1, len(request) - 1)  # never the whole request

        yield dribble
    finally:
        for sock in socks:
            sock.close()


def test_a_thousand_dribblers_at_1024_descriptors_neither_spin_the_node_nor_block_echo(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={"artim_timeout": 30.0, "stable_after": 600.0})
    with ServeProcess(cfg, tmp_path / "serve.log") as node:
        assert node.proc is not None
        pid = node.proc.pid
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
        with dribblers(cfg.receive.port, ["127.0.0.2"], 1000) as dribble:
            share = busy(pid, 2.0, dribble)
            assert share < 0.1, f"the node used {share:.0%} of a core against 1,000 dribblers"
            assert len(os.listdir(f"/proc/{pid}/fd")) < 200
            serves(cfg.receive.port, tmp_path / "ok1")  # from 127.0.0.1, while they dribble
        # Out of descriptors altogether: accept fails, and the loop must rest, not spin.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 4, 1024))
        sources = [f"127.0.0.{n}" for n in range(3, 13)]
        with dribblers(cfg.receive.port, sources, 100) as dribble:
            share = busy(pid, 2.0, dribble)
            assert share < 0.1, f"the node used {share:.0%} of a core with no descriptor left"
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
        time.sleep(0.5)
        serves(cfg.receive.port, tmp_path / "ok2")
        assert '"accept.failed"' in (tmp_path / "serve.log").read_text()


def test_resident_memory_stays_flat_under_message_bombs(tmp_path: Path) -> None:
    """Empty fragments by the million, a data set whose last fragment never comes, one past
    max_instance_size, and a deflate bomb: the node's peak resident memory barely moves."""
    cap = 32 << 20
    cfg = make_config(tmp_path, receive={"max_instance_size": cap, "stable_after": 600.0})
    uid, body = dataset(tmp_path)
    bomb_uid, bomb = deflated_stream(tmp_path / "bomb", 256 << 20)
    with ServeProcess(cfg, tmp_path / "serve.log") as node:
        assert node.proc is not None
        pid = node.proc.pid
        serves(cfg.receive.port, tmp_path / "warm")  # every path has run once
        baseline = memory_kib(pid, "VmRSS")
        with client(cfg.receive.port) as sock:
            sock.sendall(associate_rq())
            assert read_pdu(sock)[0] == 0x02
            empties = struct.pack(">IBB", 2, 3, 0x00) * 2700
            pdu = struct.pack(">BxI", 0x04, len(empties)) + empties
            sock.sendall(store_command(uid))
            for _ in range(370):  # 999,000 empty PDVs
                sock.sendall(pdu)
            sock.sendall(p_data(3, 0x02, body))
            assert c_store_status(sock) == 0x0000
            assert send_data_set(sock, uid, body + bytes(cap + (8 << 20)), 2) == 0xA700
            sock.sendall(store_command(uid, 3))
            for _ in range((cap - (2 << 20)) // 16000):  # just under the cap, and no last fragment
                sock.sendall(p_data(3, 0x00, bytes(16000)))
            time.sleep(0.5)
            held = memory_kib(pid, "VmRSS") - baseline
        with client(cfg.receive.port) as sock:
            sock.sendall(associate_deflated())
            assert read_pdu(sock)[0] == 0x02
            assert send_data_set(sock, bomb_uid, bomb) == 0xA700
        peak = memory_kib(pid, "VmHWM") - baseline
        assert held < 16 << 10, f"an unfinished data set holds {held} KiB of memory"
        assert peak < 64 << 10, f"the bombs raised the peak resident memory by {peak} KiB"
        serves(cfg.receive.port, tmp_path / "ok")


# -- fuzz ---------------------------------------------------------------------------------------------

FUZZ_SEED = 20261202
FUZZ_CASES = int(os.environ.get("RECEIVE_FUZZ_CASES", "1000"))  # more by hand: RECEIVE_FUZZ_CASES=100000
RELEASE_RQ = bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with one to four random edits: flips, extreme bytes, insertions, cuts, repeats."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        edit = rng.randrange(6)
        if edit == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif edit == 1 and out:
            out[min(at, len(out) - 1)] = rng.choice((0x00, 0xFF, 0x7F, 0x80))
        elif edit == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif edit == 3:
            del out[at : at + rng.randint(1, 64)]
        elif edit == 4:
            del out[at:]
        else:
            out[at:at] = out[at : at + rng.randint(1, 64)]
    return bytes(out)


def random_pdus(rng: random.Random) -> bytes:
    pdus = b""
    for _ in range(rng.randint(1, 4)):
        body = rng.randbytes(rng.randint(0, 64))
        length = rng.choice((len(body), len(body), rng.randrange(1 << 32)))
        pdus += struct.pack(">BxI", rng.randint(0, 9), length) + body
    return pdus


def fuzz_case(rng: random.Random, message: bytes, data_set: bytes, uid: str) -> tuple[bool, bytes]:
    """(whether to associate first, what to send then), one of six kinds of hostile input."""
    kind = rng.randrange(6)
    if kind == 0:
        return False, rng.randbytes(rng.randint(0, 400))
    if kind == 1:
        return False, mutate(rng, associate_rq())
    if kind == 2:
        return True, mutate(rng, message) + RELEASE_RQ
    if kind == 3:
        return True, random_pdus(rng)
    if kind == 4:
        return True, mutate(rng, p_data(1, 0x03, command(0x0030, Verification, 9))) + RELEASE_RQ
    return True, store_command(uid) + p_data(3, 0x02, mutate(rng, data_set)) + RELEASE_RQ


def run_case(port: int, associate: bool, payload: bytes) -> bool:
    """Send one case and half-close; whether the node then closed the connection in time."""
    with client(port) as sock:
        if associate:
            sock.sendall(associate_rq())
            assert read_pdu(sock)[0] == 0x02
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return True  # the node closed it already
        return closed_within(sock, 5) is not None


def test_fuzzed_pdus_neither_stop_the_node_nor_reach_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seeded random and mutated PDUs, associations, command sets and data sets against one
    node; then an echo and a store, and no traceback in its log or on stderr."""
    cfg = make_config(
        tmp_path,
        receive={"artim_timeout": 2.0, "request_timeout": 2.0, "network_timeout": 2.0,
                 "max_pdu": 16384, "stable_after": 600.0},
    )
    crashed: list[str] = []
    monkeypatch.setattr("threading.excepthook", lambda args: crashed.append(args.exc_type.__name__))
    caplog.set_level(logging.INFO, logger="apolo")
    uid, body = dataset(tmp_path)
    message = store_command(uid) + p_data(3, 0x02, body)
    rng = random.Random(FUZZ_SEED)
    with running_node(cfg):
        hung = [n for n in range(FUZZ_CASES) if not run_case(cfg.receive.port, *fuzz_case(rng, message, body, uid))]
        serves(cfg.receive.port, tmp_path / "ok")
    assert hung == [], "cases after which the node kept the connection open"
    assert crashed == []
    # pynetdicom logs its own decoding errors with tracebacks; the node holds its loggers off
    # (apolo_node.logs.setup), so only ours are the node's log.
    ours = [r for r in caplog.records if r.name.startswith("apolo")]
    assert [r.getMessage() for r in ours if r.levelno >= logging.ERROR or r.exc_info] == []
    assert "Traceback" not in capfd.readouterr().err
    assert any(r.getMessage() == "instance.refused" for r in ours), "no mutated data set reached the store"
