"""The Storage SCP: C-ECHO and C-STORE for every storage SOP class and transfer syntax.

Who may associate is decided before any DICOM is read: a source address outside
``allowed_addresses`` (an IPv4 client of a dual-stack listener matched as IPv4), past
``max_per_address`` connections from its address, or past ``max_pending`` connections not yet
associated, has its connection closed at accept; a calling AE title outside ``allowed_aets``
gets an A-ASSOCIATE-RJ, and so does an association beyond ``max_associations``. Each
connection runs on one thread (``receive/association.py``) and is bounded in time: the whole
A-ASSOCIATE-RQ within ``artim_timeout``, each DIMSE message within ``request_timeout`` of its
first byte, and never more than ``network_timeout`` of silence. C-STORE statuses:

- 0x0000 Success: the file is fsynced in the spool and its catalog row committed
  (also for an instance already held: kept once, counted once)
- 0xA700 Out of resources: the spool or the catalog could not take it, or the data set is
  larger than ``max_instance_size`` (inflated, if deflated); retry later
- 0xA900 Data set does not match SOP class
- 0xC000 Cannot understand: not decodable, truncated, or without its identifying UIDs
"""

from __future__ import annotations

import errno
import ipaddress
import mmap
import socket
import socketserver
import ssl
import threading
import time
from typing import Any, cast

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from apolo_node.config import ConfigError, ReceiveSettings
from apolo_node.logs import event, get_logger
from apolo_node.receive.association import (
    Accepted,
    Expired,
    Link,
    PeerClosed,
    ProtocolError,
    Request,
    Silence,
    Terms,
    accept,
    check_request,
    read_request,
    reject,
    serve_messages,
)
from apolo_node.receive.dimse import C_ECHO_RQ, part10_header
from apolo_node.spool import StagingFile, spool_failed
from apolo_node.receive.store import InstanceStore, StoreStatus

log = get_logger("receive")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_PAUSE = 0.1  # seconds the accept loop rests when the process is out of descriptors


def source_address(client_address: Any) -> Address | None:
    """The client's address, an IPv4 client of a dual-stack socket (::ffff:a.b.c.d) as IPv4."""
    try:
        addr = ipaddress.ip_address(client_address[0])
    except (ValueError, TypeError, IndexError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def supported_contexts() -> list[PresentationContext]:
    """Verification and every storage SOP class, each with every transfer syntax pydicom knows."""
    contexts = [build_context(Verification, ALL_TRANSFER_SYNTAXES)]
    contexts += [
        build_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)  # type: ignore[arg-type]
        for cx in AllStoragePresentationContexts
    ]
    return contexts


class AssociationServer(socketserver.ThreadingTCPServer):
    """Accepts connections, drops those from addresses off the allow-list, and hands the rest
    to ``StorageSCP.serve_connection`` on a thread of their own."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64  # a PACS may open many associations at once

    def __init__(self, address: tuple[str, int], scp: StorageSCP) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.scp = scp
        self._short_logged = 0.0
        super().__init__(address, socketserver.BaseRequestHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # "::" takes IPv4 clients too
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; out of file descriptors, rest a moment first, so that the connections
        waiting in the backlog do not turn the accept loop into a busy one."""
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                now = time.monotonic()
                if now - self._short_logged > 10:
                    self._short_logged = now
                    event(log, "accept.failed", 30, reason=f"out of descriptors (errno {exc.errno})")
                time.sleep(ACCEPT_PAUSE)
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.scp.admit(client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started: give the admission back
            self.scp.release(client_address, associated=False)
            event(log, "association.refused", 30, peer=str(client_address[0]), reason="no thread")
            self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.scp.serve_connection(request, client_address)


def tls_context(settings: ReceiveSettings) -> ssl.SSLContext | None:
    """Server TLS context from the configured PEM files, or None for plain TCP."""
    if not settings.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_ca:
            ctx.load_verify_locations(settings.tls_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[receive] tls_cert/tls_key/tls_ca could not be loaded: {exc.__class__.__name__}: {exc}"
        ) from None
    return ctx


class StorageSCP:
    """The node's listening AE; ``start`` returns at once, ``stop`` drains then closes."""

    def __init__(self, settings: ReceiveSettings, store: InstanceStore) -> None:
        self.settings = settings
        self.store = store
        self.terms = Terms(
            ae_title=settings.ae_title,
            max_pdu=settings.max_pdu,
            contexts=supported_contexts(),
            allowed_aets=frozenset(a.strip() for a in settings.allowed_aets),
            check_called_aet=settings.check_called_aet,
        )
        self.server: AssociationServer | None = None
        self._ssl = tls_context(settings)
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.allowed_addresses
        )
        self._lock = threading.Lock()
        self._open: dict[Link, bool] = {}  # every connection -> whether it is an association
        self._threads: set[threading.Thread] = set()
        self._pending = 0  # connections admitted and not yet associated
        self._per_address: dict[Address | None, int] = {}  # connections admitted, by source

    @property
    def port(self) -> int:
        if self.server is None:
            raise RuntimeError("SCP not started")
        return int(self.server.server_address[1])

    def start(self) -> None:
        server = AssociationServer((self.settings.host, self.settings.port), self)
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=server.serve_forever, name="scp-accept", daemon=True).start()
        self.server = server
        event(
            log, "scp.listening", ae_title=self.settings.ae_title, host=self.settings.host,
            port=self.port, tls=self._ssl is not None,
        )

    def stop(self, drain_timeout: float | None = None) -> int:
        """Stop accepting, let associations in flight finish (up to the timeout), then close.

        Returns how many associations had to be aborted.
        """
        server = self.server
        if server is None:
            return 0
        timeout = self.settings.drain_timeout if drain_timeout is None else drain_timeout
        server.shutdown()  # no new connections from here on
        server.server_close()
        # Only associations carry work to finish. A connection that never sent an
        # A-ASSOCIATE-RQ (a port probe, a health check) must not hold the stop.
        deadline = time.monotonic() + timeout
        while self._associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            left = list(self._open.items())
            threads = list(self._threads)
        cut_short = sum(1 for _, established in left if established)
        for link, established in left:
            if established:
                link.abort(source=0)
            else:
                link.shut()
        for thread in threads:
            thread.join(timeout=5)
        self.server = None
        event(log, "scp.stopped", aborted=cut_short, unassociated_closed=len(left) - cut_short)
        return cut_short

    def _associations(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def address_allowed(self, client_address: Any) -> bool:
        """Whether ``allowed_addresses`` lets the client in (IPv4-mapped clients as IPv4)."""
        if not self._networks:
            return True
        addr = source_address(client_address)
        if addr is None:
            return False
        raw = ipaddress.ip_address(client_address[0])
        if any(a in net for a in {addr, raw} for net in self._networks if a.version == net.version):
            return True
        event(log, "association.refused", 30, peer=str(client_address[0]), reason="address")
        return False

    def admit(self, client_address: Any) -> bool:
        """Take a new connection, or say no (it is closed at once): off the allow-list, past
        ``max_per_address`` from its source, or past ``max_pending`` not yet associated."""
        if not self.address_allowed(client_address):
            return False
        source = source_address(client_address)
        with self._lock:
            if self._pending >= self.settings.max_pending:
                reason = "max-pending"
            elif self._per_address.get(source, 0) >= self.settings.max_per_address:
                reason = "max-per-address"
            else:
                self._pending += 1
                self._per_address[source] = self._per_address.get(source, 0) + 1
                return True
        event(log, "association.refused", 30, peer=str(client_address[0]), reason=reason)
        return False

    def release(self, client_address: Any, associated: bool) -> None:
        """Give back what ``admit`` took for a connection that has ended."""
        source = source_address(client_address)
        with self._lock:
            if not associated:
                self._pending -= 1
            left = self._per_address.get(source, 1) - 1
            if left > 0:
                self._per_address[source] = left
            else:
                self._per_address.pop(source, None)

    # -- one connection, on its own thread --

    def serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        """Run one connection from accept to close; never raises."""
        peer = str(client_address[0])
        link = Link(sock, self.settings.network_timeout)
        link.deadline = time.monotonic() + self.settings.artim_timeout  # PS3.8 ARTIM, from accept
        with self._lock:
            self._open[link] = False
            self._threads.add(threading.current_thread())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                link.sock = self._handshake(sock, link.deadline, peer)
            self._associate_and_serve(link, peer)
        except ProtocolError as exc:
            event(log, "association.aborted", 30, calling_aet=link.calling_aet, peer=peer, reason=str(exc))
            link.abort(exc.reason)
        except PeerClosed as exc:
            with self._lock:
                established = self._open.get(link, False)
            if established:
                event(
                    log, "association.aborted", 30, calling_aet=link.calling_aet, peer=peer,
                    reason=str(exc),
                )
                if isinstance(exc, Silence):
                    link.abort()
            elif isinstance(exc, Expired):
                event(log, "connection.closed", 30, peer=peer, reason="no whole A-ASSOCIATE-RQ within artim_timeout")
        except Exception:  # a bug here must not take the server down
            log.error("association.failed", exc_info=True, extra={"fields": {"peer": peer}})
            link.abort()
        finally:
            with self._lock:
                established = self._open.pop(link, False)
                self._threads.discard(threading.current_thread())
            self.release(client_address, associated=established)
            link.shut()
            link.sock.close()
            sock.close()

    def _handshake(self, sock: socket.socket, deadline: float, peer: str) -> ssl.SSLSocket:
        """The TLS handshake, all of it within what is left of ARTIM (the timeout is whole-call)."""
        assert self._ssl is not None
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            return self._ssl.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            event(log, "association.refused", 30, peer=peer, reason=f"tls ({type(exc).__name__})")
            raise PeerClosed("TLS handshake failed") from None

    def _associate_and_serve(self, link: Link, peer: str) -> None:
        request, version = read_request(link, self.settings.artim_timeout)
        calling = link.calling_aet = request.calling_ae_title.strip()
        with self._lock:
            admitted = sum(self._open.values()) < self.settings.max_associations
            rejection = check_request(request, version, self.terms, admitted)
            if rejection is None:
                self._open[link] = True
                self._pending -= 1  # associated: its slot among the pending is free
        if rejection is not None:
            reject(link, request, rejection)
            event(log, "association.rejected", 30, calling_aet=calling, peer=peer, reason=rejection.why)
            return
        accepted = accept(link, request, self.terms)
        event(
            log, "association.accepted", calling_aet=calling, peer=peer,
            contexts=len(accepted.contexts), thread=threading.current_thread().name,
        )
        how = serve_messages(link, accepted, self.terms, self, self.settings.request_timeout)
        event(log, f"association.{how}", calling_aet=calling, peer=peer)

    # -- the service: what each request gets --

    def begin(self, accepted: Accepted, request: Request) -> None:
        """A C-STORE's data set is coming: stage it as it arrives, behind its file meta."""
        command = request.command
        if command.field == C_ECHO_RQ:
            return
        request.prefix = part10_header(
            command.sop_class_uid,
            command.sop_instance_uid,
            str(request.context.transfer_syntax[0]),
            accepted.calling_aet,
        )
        try:
            sink = self.store.spool.open_staging(len(request.prefix) + self.settings.max_instance_size)
        except OSError:
            return  # answer() finds no sink and answers 0xA700
        sink.write(memoryview(request.prefix))
        request.sink = sink

    def answer(self, accepted: Accepted, request: Request) -> tuple[int, str]:
        """The status and error comment answering one complete request."""
        command = request.command
        if command.field == C_ECHO_RQ:
            event(log, "echo", calling_aet=accepted.calling_aet)
            return 0x0000, ""
        sink = cast("StagingFile | None", request.sink)  # begin() set it, or nothing
        request.sink = None
        if not request.size:
            if sink is not None:
                sink.discard()
            return int(StoreStatus.CANNOT_UNDERSTAND), "C-STORE-RQ without a data set"
        if sink is None:
            return self._refused(accepted, request, "spool unavailable (no staging file)")
        try:
            raw = sink.mapped()
        except OSError as exc:
            sink.discard()
            return self._refused(accepted, request, spool_failed(exc))
        try:
            result = self.store.store(
                raw,
                calling_aet=accepted.calling_aet or None,
                affected_sop_class=command.sop_class_uid or None,
                affected_sop_instance=command.sop_instance_uid or None,
                staged=sink,
            )
        finally:
            _unmap(raw)
        return int(result.status), result.comment

    def _refused(self, accepted: Accepted, request: Request, comment: str) -> tuple[int, str]:
        """0xA700 for a data set refused before the store saw it, logged as the store would."""
        event(
            log, "instance.refused", 30, status=f"0x{StoreStatus.OUT_OF_RESOURCES:04X}",
            comment=comment, calling_aet=accepted.calling_aet or None, size=request.size,
        )
        return int(StoreStatus.OUT_OF_RESOURCES), comment


def _unmap(raw: mmap.mmap) -> None:
    try:
        raw.close()
    except BufferError:  # a view of it is still alive somewhere: the collector unmaps it
        pass
