"""The few DIMSE messages a Storage SCP exchanges, encoded and decoded by hand.

A command set is a short list of group 0000 elements in implicit VR little endian (PS3.7 6.3.1);
the receiver reads C-STORE-RQ and C-ECHO-RQ and writes their responses. Doing this directly,
rather than through a general DIMSE layer, is what lets the receiver keep up with the sender
(see ``receive/association.py``). The file meta written before a received data set is built
here too: it takes its UIDs from the command and the presentation context, as PS3.10 7.1 asks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from pydicom.uid import generate_uid

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATA_SET = 0x0101
MAX_UID = 64  # characters in a UID (PS3.5 9.1); the file meta encodes it with a 2-byte length
_ELEMENT = struct.Struct("<HHI")  # group, element, length (implicit VR little endian)
_US = struct.Struct("<H")

#: Identifies this software in the A-ASSOCIATE-AC and in the file meta of what it receives.
IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["apolo-node implementation class"])
try:
    IMPLEMENTATION_VERSION_NAME = f"APOLO_{version('apolo-node')}"[:16]
except PackageNotFoundError:  # run from a checkout that was never installed
    IMPLEMENTATION_VERSION_NAME = "APOLO"


class MalformedCommand(ValueError):
    """A command set that cannot be read; the association carrying it is aborted."""


@dataclass(frozen=True)
class Command:
    """What the receiver needs of a request's command set."""

    field: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    has_data_set: bool


def _us(value: bytes, name: str) -> int:
    if len(value) != 2:
        raise MalformedCommand(f"{name} is not a 2-byte US")
    return int(_US.unpack(value)[0])


def _uid(value: bytes, name: str) -> str:
    uid = value.decode("ascii", "replace").rstrip("\x00 ")
    if len(uid) > MAX_UID:
        raise MalformedCommand(f"{name} is longer than {MAX_UID} characters")
    return uid


def decode_command(data: bytes | bytearray) -> Command:
    """Read a command set; raise ``MalformedCommand`` if it is not one, or if a UID in it is
    longer than a UID may be (such a command is refused by A-ABORT, as PS3.7 allows)."""
    elements: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if offset + 8 > end:
            raise MalformedCommand("command set ends inside an element header")
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += 8
        if group != 0x0000:
            raise MalformedCommand(f"command set holds an element of group {group:04X}")
        if offset + length > end:
            raise MalformedCommand(f"command element (0000,{element:04X}) runs past the command set")
        elements[element] = bytes(data[offset : offset + length])
        offset += length
    if 0x0100 not in elements:
        raise MalformedCommand("command set has no Command Field")
    return Command(
        field=_us(elements[0x0100], "Command Field"),
        message_id=_us(elements.get(0x0110, b"\0\0"), "Message ID"),
        sop_class_uid=_uid(elements.get(0x0002, b""), "Affected SOP Class UID"),
        sop_instance_uid=_uid(elements.get(0x1000, b""), "Affected SOP Instance UID"),
        has_data_set=_us(elements.get(0x0800, _US.pack(NO_DATA_SET)), "Command Data Set Type")
        != NO_DATA_SET,
    )


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def encode_response(
    request: Command, status: int, comment: str = ""
) -> bytes:
    """The C-STORE-RSP or C-ECHO-RSP command set answering ``request`` (PS3.7 9.3.1.2, 9.3.5.2)."""
    field = C_STORE_RSP if request.field == C_STORE_RQ else C_ECHO_RSP
    elements: list[tuple[int, bytes]] = [
        (0x0002, _even(request.sop_class_uid.encode("ascii", "replace"), b"\0")),
        (0x0100, _US.pack(field)),
        (0x0120, _US.pack(request.message_id)),
        (0x0800, _US.pack(NO_DATA_SET)),
        (0x0900, _US.pack(status)),
    ]
    if comment:
        text = comment[:64].encode("ascii", "replace").replace(b"\\", b"/")
        elements.append((0x0902, _even(text, b" ")))
    if field == C_STORE_RSP and request.sop_instance_uid:
        elements.append((0x1000, _even(request.sop_instance_uid.encode("ascii", "replace"), b"\0")))
    body = b"".join(_ELEMENT.pack(0, tag, len(value)) + value for tag, value in elements)
    return _ELEMENT.pack(0, 0x0000, 4) + struct.pack("<I", len(body)) + body


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def part10_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_aet: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the file meta group to put before a received data set."""
    def ui(value: str) -> bytes:
        return _even(value.encode("ascii", "replace"), b"\0")

    body = b"".join(
        [
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", ui(sop_class_uid)),
            _meta_element(0x0003, b"UI", ui(sop_instance_uid)),
            _meta_element(0x0010, b"UI", ui(transfer_syntax_uid)),
            _meta_element(0x0012, b"UI", ui(IMPLEMENTATION_CLASS_UID)),
            _meta_element(0x0013, b"SH", _even(IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" ")),
        ]
        + (
            [_meta_element(0x0016, b"AE", _even(source_aet.encode("ascii", "replace")[:16], b" "))]
            if source_aet
            else []
        )
    )
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\0" * 128 + b"DICM" + group_length + body
