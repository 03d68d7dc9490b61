"""One association, as the acceptor: negotiate it, take its C-STOREs and C-ECHOs, end it.

pynetdicom runs every association on two threads that poll each other every millisecond and
decodes each PDU into objects; on this machine that costs more than the fsync we owe each
instance (see the notes on issue 2). Here one thread reads the socket with blocking calls,
collects each message's fragments into one buffer, and answers when the handler returns, so
the time per instance is the network plus the handler. pynetdicom still does what it is good at
and what happens once per association: decoding the A-ASSOCIATE-RQ, negotiating presentation
contexts and roles, and encoding the A-ASSOCIATE-AC and -RJ.

What the peer sends that breaks PS3.8 (an unexpected or malformed PDU, a fragment on a context
it was not given, a PDU over the length we announced) ends the association with an A-ABORT, and
an unfinished message is dropped unanswered, so the peer knows it was not stored.
"""

from __future__ import annotations

import enum
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from apolo_node.receive.dimse import (
    C_ECHO_RQ,
    C_STORE_RQ,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    Command,
    MalformedCommand,
    decode_command,
    encode_response,
)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
A_ASSOCIATE_RQ_TYPE, P_DATA_TF, A_RELEASE_RQ, A_ABORT = 0x01, 0x04, 0x05, 0x07
_HEADER = struct.Struct(">BxI")
_PDV = struct.Struct(">IBB")
RELEASE_RP = bytes([0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0])
MAX_ASSOCIATE_RQ = 1 << 20  # a request proposing every SOP class is well under this
UNLIMITED_PDU_CAP = 64 << 20  # what "0: unlimited" means for one PDU's length
MAX_COMMAND = 64 << 10  # a C-STORE-RQ's command set is a few hundred bytes; more is an attack


class Abort(enum.IntEnum):
    """A-ABORT reasons of the service provider (PS3.8 9.3.8)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    INVALID_PARAMETER = 6


class ProtocolError(Exception):
    """The peer broke PS3.8; the association is aborted with ``reason``."""

    def __init__(self, message: str, reason: Abort = Abort.INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class PeerClosed(Exception):
    """The connection ended (closed or reset) outside a release."""


class Silence(PeerClosed):
    """The peer sent nothing for the timeout; an association is then aborted (PS3.8 9.1.5)."""


class Expired(Silence):
    """The peer did not finish an A-ASSOCIATE-RQ or a DIMSE message in the time it had."""


@dataclass(frozen=True)
class Rejection:
    """Why an A-ASSOCIATE-RQ is refused: the A-ASSOCIATE-RJ fields (PS3.8 9.3.4) and a word for the log."""

    result: int
    source: int
    diagnostic: int
    why: str


PROTOCOL_VERSION = Rejection(1, 2, 2, "protocol-version")
APPLICATION_CONTEXT_UNSUPPORTED = Rejection(1, 1, 2, "application-context")
CALLING_AET_UNKNOWN = Rejection(1, 1, 3, "calling-aet")
CALLED_AET_UNKNOWN = Rejection(1, 1, 7, "called-aet")
#: A presentation context without its abstract syntax or any transfer syntax (PS3.8 9.3.2.2).
MALFORMED_CONTEXT = Rejection(1, 2, 1, "malformed-presentation-context")
TOO_MANY = Rejection(2, 3, 2, "max-associations")


@dataclass
class Accepted:
    """An established association's terms."""

    calling_aet: str
    called_aet: str
    contexts: dict[int, PresentationContext]
    peer_max_pdu: int


@dataclass
class Request:
    """A DIMSE request: its command, its context, and how many data set bytes came. The data
    set itself goes only to ``sink``, as it arrives: none of it is held here."""

    command: Command
    context: PresentationContext
    size: int = 0  # data set bytes received
    prefix: bytes = b""  # what the service puts before the data set (a file meta header)
    sink: DataSink | None = None  # where the service wants the fragments written as they come


class DataSink(Protocol):
    """Takes a data set's fragments as they arrive; dropped if the message never completes."""

    def write(self, data: memoryview) -> None: ...

    def discard(self) -> None: ...


class Service(Protocol):
    """What the association asks of the application: told when a data set is about to come
    (so it can set ``request.sink``), and asked for the status answering each complete request."""

    def begin(self, accepted: Accepted, request: Request) -> None: ...

    def answer(self, accepted: Accepted, request: Request) -> tuple[int, str]: ...


class Link:
    """The association's socket: whole PDUs in, whole PDUs out, one writer at a time.

    Reads are bounded twice: ``silence`` is the longest wait for the next byte, and
    ``deadline`` (monotonic seconds), when set, is when the exchange under way must be whole,
    however its bytes trickle (a per-read timeout alone lets one byte a second hold a
    connection forever). With ``window`` set and no deadline, the first byte read starts one
    ``window`` seconds long: each DIMSE message gets that long from its first byte to its last.
    """

    def __init__(self, sock: socket.socket, silence: float) -> None:
        self.sock = sock
        self.silence = silence
        self.deadline: float | None = None
        self.window: float | None = None
        self.calling_aet: str | None = None  # once the A-ASSOCIATE-RQ is read, for the log
        self._send = threading.Lock()

    def _wait(self) -> None:
        """Set the socket's timeout to what is left before the next byte is overdue."""
        timeout = self.silence
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise Expired("deadline passed before the message was whole")
            timeout = min(timeout, left)
        if self.sock.gettimeout() != timeout:
            self.sock.settimeout(timeout)

    def _read_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        try:
            while got < n:
                self._wait()
                read = self.sock.recv_into(view[got:], min(n - got, 1 << 20))
                if read == 0:
                    raise PeerClosed("connection closed by the peer")
                got += read
                if self.deadline is None and self.window is not None:
                    self.deadline = time.monotonic() + self.window
        except (TimeoutError, socket.timeout):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise Expired("deadline passed before the message was whole") from None
            raise Silence("network timeout") from None
        except OSError as exc:
            raise PeerClosed(f"connection lost ({type(exc).__name__})") from None
        return buf

    def read_pdu(self, limit: int) -> tuple[int, bytearray, bytearray]:
        """(type, header, body) of the next PDU; a body over ``limit`` bytes is refused unread."""
        header = self._read_exact(6)
        kind, length = _HEADER.unpack(header)
        if length > limit:
            raise ProtocolError(f"PDU of type {kind:#04x} is {length} bytes, over {limit}")
        return kind, header, self._read_exact(length)

    def send(self, data: bytes) -> None:
        with self._send:
            try:
                self.sock.sendall(data)
            except (TimeoutError, socket.timeout):
                raise PeerClosed("network timeout while sending") from None
            except OSError as exc:
                raise PeerClosed(f"connection lost while sending ({type(exc).__name__})") from None

    def abort(self, reason: Abort = Abort.NOT_SPECIFIED, source: int = 2) -> None:
        """Send an A-ABORT if the socket still takes it, then shut the socket (waking its reader)."""
        try:
            self.send(bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, source, int(reason)]))
        except PeerClosed:
            pass
        self.shut()

    def shut(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def p_data(context_id: int, payload: bytes, command: bool, max_pdu: int) -> list[bytes]:
    """``payload`` as P-DATA-TF PDUs of one PDV each, none longer than the peer takes."""
    room = (max_pdu - 6) if max_pdu else len(payload) or 1  # PDV header: length(4) ctx(1) mch(1)
    room = max(room, 1)
    pdus = []
    for start in range(0, max(len(payload), 1), room):
        fragment = payload[start : start + room]
        last = start + room >= len(payload)
        control = (1 if command else 0) | (2 if last else 0)
        item = _PDV.pack(len(fragment) + 2, context_id, control) + fragment
        pdus.append(_HEADER.pack(P_DATA_TF, len(item)) + item)
    return pdus


@dataclass(frozen=True)
class Terms:
    """What this node offers every association."""

    ae_title: str
    max_pdu: int
    contexts: list[PresentationContext]
    allowed_aets: frozenset[str] = frozenset()
    check_called_aet: bool = True  # refuse a called AE title other than ae_title


def read_request(link: Link, acse_timeout: float) -> tuple[A_ASSOCIATE, int]:
    """Wait for the A-ASSOCIATE-RQ; its decoded primitive and its protocol version."""
    link.sock.settimeout(acse_timeout)
    kind, header, body = link.read_pdu(MAX_ASSOCIATE_RQ)
    if kind != A_ASSOCIATE_RQ_TYPE:
        raise ProtocolError(f"PDU of type {kind:#04x} before A-ASSOCIATE-RQ", Abort.UNEXPECTED_PDU)
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(bytes(header + body))
        request = pdu.to_primitive()
    except Exception as exc:  # pynetdicom raises many types for a malformed request
        raise ProtocolError(f"A-ASSOCIATE-RQ cannot be decoded ({type(exc).__name__})") from None
    return request, int(pdu.protocol_version)


def check_request(
    request: A_ASSOCIATE, protocol_version: int, terms: Terms, admitted: bool
) -> Rejection | None:
    """The reason to refuse ``request``, or None to accept it; checked before negotiation,
    so that nothing the peer proposed can make negotiation itself fail."""
    if not protocol_version & 1:
        return PROTOCOL_VERSION
    if str(request.application_context_name) != APPLICATION_CONTEXT:
        return APPLICATION_CONTEXT_UNSUPPORTED
    if terms.check_called_aet and request.called_ae_title.strip() != terms.ae_title.strip():
        return CALLED_AET_UNKNOWN
    for context in request.presentation_context_definition_list:
        if not context.abstract_syntax or not context.transfer_syntax:
            return MALFORMED_CONTEXT
    if terms.allowed_aets and request.calling_ae_title.strip() not in terms.allowed_aets:
        return CALLING_AET_UNKNOWN
    if not admitted:
        return TOO_MANY
    return None


def reject(link: Link, request: A_ASSOCIATE, rejection: Rejection) -> None:
    primitive = A_ASSOCIATE()
    primitive.result = rejection.result
    primitive.result_source = rejection.source
    primitive.diagnostic = rejection.diagnostic
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    link.send(pdu.encode())


def accept(link: Link, request: A_ASSOCIATE, terms: Terms) -> Accepted:
    """Negotiate the contexts and roles, send the A-ASSOCIATE-AC, and say what was agreed."""
    peer_max, rq_roles = 0, {}
    for item in request.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max = int(item.maximum_length_received or 0)
        elif isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid:
            rq_roles[item.sop_class_uid] = (item.scu_role, item.scp_role)
    results, roles = negotiate_as_acceptor(
        request.presentation_context_definition_list, terms.contexts, rq_roles or None
    )
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = terms.max_pdu
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    primitive.user_information = [max_length, class_uid, version, *roles]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    link.send(pdu.encode())
    return Accepted(
        calling_aet=request.calling_ae_title.strip(),
        called_aet=request.called_ae_title.strip(),
        contexts={int(cx.context_id): cx for cx in results if cx.result == 0x00},  # type: ignore[arg-type]
        peer_max_pdu=peer_max,
    )


def serve_messages(
    link: Link, accepted: Accepted, terms: Terms, service: Service, request_timeout: float
) -> str:
    """Take requests until the peer releases ("released") or aborts ("aborted").

    Each message, command and data set, must arrive whole within ``request_timeout`` seconds of
    its first byte (``Link.window``). Memory per message is bounded: a command set by
    ``MAX_COMMAND``, the data set by one PDU (its fragments go to the sink as they come), and
    empty fragments are skipped, not kept. Raises ``ProtocolError`` (the caller aborts) or
    ``PeerClosed`` (nothing left to tell). A message left unfinished has its sink discarded.
    """
    limit = terms.max_pdu or UNLIMITED_PDU_CAP
    command_bytes = bytearray()
    pending: Request | None = None
    link.deadline, link.window = None, request_timeout
    try:
        while True:
            kind, _, body = link.read_pdu(limit)
            if kind == A_RELEASE_RQ:
                if pending is not None or command_bytes:
                    raise ProtocolError("A-RELEASE-RQ inside a message", Abort.UNEXPECTED_PDU)
                link.send(RELEASE_RP)
                return "released"
            if kind == A_ABORT:
                return "aborted"
            if kind != P_DATA_TF:
                raise ProtocolError(f"PDU of type {kind:#04x} during the association", Abort.UNEXPECTED_PDU)
            pending = _take_pdvs(link, memoryview(body), accepted, service, command_bytes, pending)
    finally:
        if pending is not None and pending.sink is not None:
            pending.sink.discard()


def _take_pdvs(
    link: Link,
    body: memoryview,
    accepted: Accepted,
    service: Service,
    command_bytes: bytearray,
    pending: Request | None,
) -> Request | None:
    """Take one P-DATA-TF's PDVs, answering each request it completes; the request still open.

    A data set's fragments in this PDU are written to its sink in one piece, so a PDU of many
    tiny PDVs costs one write, not one per PDV.
    """
    offset, end = 0, len(body)
    data: list[memoryview] = []  # this PDU's fragments of the pending data set, not yet written
    while offset < end:
        if offset + 6 > end:
            raise ProtocolError("P-DATA-TF ends inside a PDV header")
        length, context_id, control = _PDV.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise ProtocolError("PDV length does not fit its P-DATA-TF")
        fragment = body[offset + 6 : offset + 4 + length]
        offset += 4 + length
        context = accepted.contexts.get(context_id)
        if context is None:
            raise ProtocolError(f"PDV on presentation context {context_id}, which was not accepted")
        last = bool(control & 2)
        if control & 1:  # a command fragment
            if pending is not None:
                raise ProtocolError("a command began before the last data set ended", Abort.UNEXPECTED_PDU)
            if len(command_bytes) + len(fragment) > MAX_COMMAND:
                raise ProtocolError(f"command set is over {MAX_COMMAND} bytes")
            command_bytes += fragment
            if not last:
                continue
            try:
                command = decode_command(command_bytes)
            except MalformedCommand as exc:
                raise ProtocolError(str(exc)) from None
            del command_bytes[:]
            if command.field not in (C_STORE_RQ, C_ECHO_RQ):
                raise ProtocolError(
                    f"DIMSE command {command.field:#06x} is not served here", Abort.UNEXPECTED_PDU
                )
            pending = Request(command, context)
            if command.has_data_set:
                service.begin(accepted, pending)
                continue
        else:  # a data set fragment
            if pending is None or command_bytes or pending.context.context_id != context_id:
                raise ProtocolError("data set fragment without its command", Abort.UNEXPECTED_PDU)
            if fragment:
                pending.size += len(fragment)
                data.append(fragment)
            if not last:
                continue
            _write(pending, data)
        status, comment = service.answer(accepted, pending)
        request, pending = pending, None  # after the answer: a failing one still has its sink discarded
        link.deadline = None  # the next message's time starts with its first byte
        for pdu in p_data(
            context_id,
            encode_response(request.command, status, comment),
            command=True,
            max_pdu=accepted.peer_max_pdu,
        ):
            link.send(pdu)
    if pending is not None:
        _write(pending, data)
    return pending


def _write(request: Request, data: list[memoryview]) -> None:
    """Hand ``data`` to the request's sink as one piece, and forget it."""
    if data and request.sink is not None:
        request.sink.write(data[0] if len(data) == 1 else memoryview(b"".join(data)))
    data.clear()
