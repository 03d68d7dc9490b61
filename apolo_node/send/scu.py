"""C-STORE SCU: one result object to the PACS over one association, and a clear outcome.

Every way a C-STORE can end maps to one of three outcomes (``StoreResult``), and no network
error escapes as an exception:

- ``sent``: Success 0x0000, or a Warning (0xB000 coercion of data elements, 0xB006 elements
  discarded, 0xB007 data set does not match SOP class, and the general warnings 0x0001, 0x0107,
  0x0116): the PACS has the object.
- ``retry``: no association (nothing listens, connection or ACSE timeout, rejected, aborted), no
  accepted presentation context for the object's SOP class, no C-STORE response (DIMSE timeout,
  abort), Out of Resources 0xA7xx, Resource Limitation 0x0213, Cancel 0xFE00, or a status no
  standard lists. Trying again later may work; nothing is dropped.
- ``refused``: every other failure status (0xA9xx data set does not match SOP class, 0xCxxx
  cannot understand, 0x0117 invalid SOP instance, 0x0122 SOP class not supported, 0x0124 not
  authorised, ...), or an object that cannot be encoded: sending it again gets the same answer.

pynetdicom 3.0.4 as an SCU can miss a C-STORE response and wait out its DIMSE timeout
(shared/notes/dicom-network-facts.md); that ends as ``retry``. Its sockets leave Nagle's algorithm
on, which costs tens of milliseconds per response against dcmtk-based peers, so the association's
socket gets ``TCP_NODELAY``. With ``[send] tls_ca`` the association runs over TLS (``send.tls``);
a PACS whose certificate does not verify gets nothing and the result waits (``retry``), with the
handshake's reason in the detail.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from apolo_node.config import ConfigError, SendSettings
from apolo_node.send.tls import client_context


class StoreResult(str, enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    REFUSED = "refused"


@dataclass(frozen=True)
class StoreOutcome:
    """How one C-STORE ended: the result, the status if the PACS answered, and what happened.

    ``detail`` names statuses, AE titles and error kinds only, never a value of the object.
    """

    result: StoreResult
    status: int | None
    detail: str

    @property
    def sent(self) -> bool:
        return self.result is StoreResult.SENT


WARNINGS = frozenset({0x0001, 0x0107, 0x0116})
RETRYABLE = frozenset({0x0213, 0xFE00})
FAILURES = frozenset({
    0x0105, 0x0106, 0x0110, 0x0111, 0x0112, 0x0113, 0x0114, 0x0115, 0x0117, 0x0118, 0x0119,
    0x0120, 0x0121, 0x0122, 0x0123, 0x0124, 0x0210, 0x0211, 0x0212,
})


def classify_status(status: int) -> StoreResult:
    """The outcome of a C-STORE response status (PS3.4 B.2.3, PS3.7 C)."""
    if status == 0x0000 or status in WARNINGS or 0xB000 <= status <= 0xBFFF:
        return StoreResult.SENT
    if 0xA700 <= status <= 0xA7FF or status in RETRYABLE:
        return StoreResult.RETRY
    if status in FAILURES or 0xA000 <= status <= 0xAFFF or 0xC000 <= status <= 0xCFFF:
        return StoreResult.REFUSED
    return StoreResult.RETRY  # unknown to the standard: not a clear refusal, so never dropped


def c_store(ds: Dataset, settings: SendSettings) -> StoreOutcome:
    """Send ``ds`` to ``settings``' PACS; never raises for what the network or the PACS does."""
    sop_class = UID(str(ds.SOPClassUID))
    where = f"{settings.ae_title}@{settings.host}:{settings.port}"
    ae = AE(ae_title=settings.calling_ae_title)
    ae.acse_timeout = settings.timeout
    ae.dimse_timeout = settings.timeout
    ae.network_timeout = settings.timeout
    ae.connection_timeout = settings.timeout
    ae.add_requested_context(sop_class, proposed_transfer_syntaxes(ds))
    try:
        tls = client_context(settings)
    except ConfigError as exc:  # fixed by the operator, then sent: the row waits meanwhile
        return StoreOutcome(StoreResult.RETRY, None, str(exc))
    try:
        assoc = ae.associate(
            settings.host, settings.port, ae_title=settings.ae_title,
            tls_args=(tls, settings.host) if tls is not None else None,
        )
    except Exception as exc:  # a bad address, a socket error: the network, not the object
        return StoreOutcome(StoreResult.RETRY, None, f"no association with {where} ({type(exc).__name__})")
    if not assoc.is_established:
        if tls is not None and tls.handshake_failure:
            why = f"failed the TLS handshake ({tls.handshake_failure})"
        elif assoc.is_rejected:
            why = "rejected the association"
        elif assoc.rejected_contexts and not assoc.accepted_contexts:  # pynetdicom aborts then
            why = f"accepted no presentation context for SOP class {sop_class}"
        else:  # pynetdicom reports all three as an abort
            why = "gave no association (connection refused, timed out or aborted)"
        return StoreOutcome(StoreResult.RETRY, None, f"{where} {why}")
    try:
        return _store_on(assoc, ds, sop_class, where)
    finally:
        _close(assoc)


def _store_on(assoc: Association, ds: Dataset, sop_class: UID, where: str) -> StoreOutcome:
    _no_delay(assoc)
    if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
        return StoreOutcome(
            StoreResult.RETRY, None,
            f"{where} accepted no presentation context for SOP class {sop_class}",
        )
    try:
        rsp = assoc.send_c_store(ds)
    except (ValueError, AttributeError) as exc:  # pynetdicom could not encode the object
        return StoreOutcome(StoreResult.REFUSED, None, f"object cannot be encoded ({type(exc).__name__})")
    except Exception as exc:
        return StoreOutcome(StoreResult.RETRY, None, f"C-STORE to {where} failed ({type(exc).__name__})")
    status = rsp.get("Status") if rsp is not None else None
    if status is None:
        return StoreOutcome(
            StoreResult.RETRY, None, f"no C-STORE response from {where} (timeout or abort)"
        )
    status = int(status)
    result = classify_status(status)
    return StoreOutcome(result, status, f"{where} answered C-STORE status 0x{status:04X}")


def proposed_transfer_syntaxes(ds: Dataset) -> list[str]:
    """What the SCU proposes for ``ds``: its own transfer syntax first (if not one of these),
    then Explicit and Implicit VR Little Endian (docs/conformance.md lists the result)."""
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    meta = getattr(ds, "file_meta", None)
    own = meta.get("TransferSyntaxUID") if meta is not None else None
    if own and own not in syntaxes:
        syntaxes.insert(0, own)
    return syntaxes


def _no_delay(assoc: Association) -> None:
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _close(assoc: Association) -> None:
    try:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    except Exception:  # the peer is gone already
        pass
