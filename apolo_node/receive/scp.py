"""The Storage SCP: C-ECHO and C-STORE for every storage SOP class and transfer syntax.

Who may associate is decided before any DICOM is read: a source address outside
``allowed_addresses`` has its connection closed at accept; a calling AE title outside
``allowed_aets`` gets an A-ASSOCIATE-RJ. C-STORE statuses, all from ``InstanceStore``:

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
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from apolo_node.config import ConfigError, ReceiveSettings
from apolo_node.logs import event, get_logger
from apolo_node.receive.store import InstanceStore, StoreStatus

log = get_logger("receive")


class AllowListServer(ThreadedAssociationServer):
    """An association server that closes connections from addresses not on the allow-list."""

    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if not self.allowed_networks:
            return True
        try:
            addr = ipaddress.ip_address(client_address[0])
        except (ValueError, TypeError, IndexError):
            return False
        if any(addr in net for net in self.allowed_networks):
            return True
        event(log, "association.refused", 30, peer=str(client_address[0]), reason="address")
        return False


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
        self.ae = self._make_ae()
        self.server: AllowListServer | None = None
        self._ssl = tls_context(settings)
        self._networks = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.allowed_addresses
        )

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.maximum_pdu_size = s.max_pdu
        ae.network_timeout = s.network_timeout
        ae.acse_timeout = 30
        ae.dimse_timeout = s.network_timeout
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        if s.allowed_aets:
            ae.require_calling_aet = [a.strip() for a in s.allowed_aets]
        return ae

    @property
    def port(self) -> int:
        if self.server is None:
            raise RuntimeError("SCP not started")
        return int(self.server.server_address[1])

    def start(self) -> None:
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_closed, ["released"]),
            (evt.EVT_ABORTED, self._on_closed, ["aborted"]),
        ]
        server = self.ae.make_server(
            (self.settings.host, self.settings.port),
            evt_handlers=handlers,  # type: ignore[arg-type]
            ssl_context=self._ssl,
            server_class=AllowListServer,
        )
        server.allowed_networks = self._networks
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ae._servers.append(server)
        threading.Thread(
            target=server.serve_forever, name="scp-accept", daemon=True
        ).start()
        self.server = server  # type: ignore[assignment]
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
        # Stop the accept loop and close the listening socket, but keep the associations.
        socketserver.BaseServer.shutdown(server)
        server.server_close()
        # Only established associations carry work to finish. A connection that never sent an
        # A-ASSOCIATE-RQ (a port probe, a health check) would otherwise hold the stop for
        # pynetdicom's 30 s ACSE timeout.
        deadline = time.monotonic() + timeout
        while (
            any(a.is_established for a in server.active_associations)
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        left = [(a, a.is_established) for a in server.active_associations]
        cut_short = sum(1 for _, established in left if established)
        for assoc, _ in left:
            assoc.abort()
        for assoc, established in left:
            # An unassociated acceptor thread is a daemon blocked on its socket: don't wait.
            assoc.join(timeout=5 if established else 0.2)
        if server in self.ae._servers:
            self.ae._servers.remove(server)
        self.server = None
        event(log, "scp.stopped", aborted=cut_short, unassociated_closed=len(left) - cut_short)
        return cut_short

    # -- event handlers: each returns quickly and never raises into pynetdicom --

    def _on_store(self, event_: evt.Event) -> Dataset:
        assoc = event_.assoc
        calling = assoc.requestor.ae_title.strip() if assoc.requestor.ae_title else None
        try:
            raw = event_.encoded_dataset()
            request = event_.request
            result = self.store.store(
                raw,
                calling_aet=calling,
                affected_sop_class=str(request.AffectedSOPClassUID or "") or None,
                affected_sop_instance=str(request.AffectedSOPInstanceUID or "") or None,
            )
        except Exception as exc:  # encoding of the received stream failed
            status = Dataset()
            status.Status = int(StoreStatus.CANNOT_UNDERSTAND)
            status.ErrorComment = f"unreadable request ({type(exc).__name__})"[:64]
            return status
        status = Dataset()
        status.Status = int(result.status)
        if result.comment:
            status.ErrorComment = result.comment[:64]
        return status

    def _on_echo(self, event_: evt.Event) -> int:
        event(log, "echo", calling_aet=event_.assoc.requestor.ae_title.strip())
        return 0x0000

    def _on_accepted(self, event_: evt.Event) -> None:
        a = event_.assoc
        event(
            log, "association.accepted", calling_aet=a.requestor.ae_title.strip(),
            peer=a.requestor.address, thread=threading.current_thread().name,
        )

    def _on_rejected(self, event_: evt.Event) -> None:
        a = event_.assoc
        event(
            log, "association.rejected", 30, calling_aet=a.requestor.ae_title.strip(),
            peer=a.requestor.address,
        )

    def _on_closed(self, event_: evt.Event, how: str) -> None:
        a = event_.assoc
        event(log, f"association.{how}", calling_aet=a.requestor.ae_title.strip(), peer=a.requestor.address)
