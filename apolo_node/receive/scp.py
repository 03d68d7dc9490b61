"""The Storage SCP: C-ECHO and C-STORE for every storage SOP class and transfer syntax.

Who may associate is decided before any DICOM is read: a source address outside
``allowed_addresses`` has its connection closed at accept; a calling AE title outside
``allowed_aets`` gets an A-ASSOCIATE-RJ, and so does an association beyond
``max_associations``. Each association runs on one thread (``receive/association.py``).
C-STORE statuses, all from ``InstanceStore``:

- 0x0000 Success: the file is fsynced in the spool and its catalog row committed
  (also for an instance already held: kept once, counted once)
- 0xA700 Out of resources: the spool or the catalog could not take it; retry later
- 0xA900 Data set does not match SOP class
- 0xC000 Cannot understand: not decodable, truncated, or without its identifying UIDs
"""

from __future__ import annotations

import ipaddress
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
from apolo_node.receive.spool import StagingFile
from apolo_node.receive.store import InstanceStore, StoreStatus

log = get_logger("receive")
ACSE_TIMEOUT = 30.0  # seconds a new connection has to send its A-ASSOCIATE-RQ
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        super().__init__(address, socketserver.BaseRequestHandler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.scp.address_allowed(client_address)

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
        )
        self.server: AssociationServer | None = None
        self._ssl = tls_context(settings)
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.allowed_addresses
        )
        self._lock = threading.Lock()
        self._open: dict[Link, bool] = {}  # every connection -> whether it is an association
        self._threads: set[threading.Thread] = set()

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
        if not self._networks:
            return True
        try:
            addr = ipaddress.ip_address(client_address[0])
        except (ValueError, TypeError, IndexError):
            return False
        if any(addr in net for net in self._networks):
            return True
        event(log, "association.refused", 30, peer=str(client_address[0]), reason="address")
        return False

    # -- one connection, on its own thread --

    def serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        """Run one connection from accept to close; never raises."""
        peer = str(client_address[0])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(ACSE_TIMEOUT)
        if self._ssl is not None:
            try:
                sock = self._ssl.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                event(log, "association.refused", 30, peer=peer, reason=f"tls ({type(exc).__name__})")
                return
        link = Link(sock)
        with self._lock:
            self._open[link] = False
            self._threads.add(threading.current_thread())
        try:
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
        except Exception:  # a bug here must not take the server down
            log.error("association.failed", exc_info=True, extra={"fields": {"peer": peer}})
            link.abort()
        finally:
            with self._lock:
                self._open.pop(link, None)
                self._threads.discard(threading.current_thread())
            link.shut()
            sock.close()

    def _associate_and_serve(self, link: Link, peer: str) -> None:
        request, version = read_request(link, ACSE_TIMEOUT)
        calling = link.calling_aet = request.calling_ae_title.strip()
        with self._lock:
            admitted = sum(self._open.values()) < self.settings.max_associations
            rejection = check_request(request, version, self.terms, admitted)
            if rejection is None:
                self._open[link] = True
        if rejection is not None:
            reject(link, request, rejection)
            event(log, "association.rejected", 30, calling_aet=calling, peer=peer, reason=rejection.why)
            return
        accepted = accept(link, request, self.terms)
        event(
            log, "association.accepted", calling_aet=calling, peer=peer,
            contexts=len(accepted.contexts), thread=threading.current_thread().name,
        )
        how = serve_messages(link, accepted, self.terms, self, self.settings.network_timeout)
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
            sink = self.store.spool.open_staging()
        except OSError:
            return  # the store stages it the ordinary way, and answers 0xA700 if that fails too
        sink.write(memoryview(request.prefix))
        request.sink = sink

    def answer(self, accepted: Accepted, request: Request) -> tuple[int, str]:
        """The status and error comment answering one complete request."""
        command = request.command
        if command.field == C_ECHO_RQ:
            event(log, "echo", calling_aet=accepted.calling_aet)
            return 0x0000, ""
        sink, request.sink = request.sink, None
        if not any(request.fragments):
            if sink is not None:
                sink.discard()
            return int(StoreStatus.CANNOT_UNDERSTAND), "C-STORE-RQ without a data set"
        result = self.store.store(
            b"".join((request.prefix, *request.fragments)),
            calling_aet=accepted.calling_aet or None,
            affected_sop_class=command.sop_class_uid or None,
            affected_sop_instance=command.sop_instance_uid or None,
            staged=cast("StagingFile | None", sink),  # begin() set it, or nothing
        )
        return int(result.status), result.comment
