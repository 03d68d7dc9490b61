"""One pass over a data set's bytes: is it whole, how deep does it nest, what are its identifiers.

The receiver acknowledges only what parses to its last byte, so every element, sequence, item
and fragment is walked here, defined length or not (PS3.5 7.5), with an explicit stack instead
of recursion: a data set nested 100,000 deep costs a few microseconds to refuse and never a
RecursionError. Values are not decoded; only the few top-level elements the caller names are
copied out (a bounded prefix of each). Errors name the element's tag and the rule, never a value.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass, field

from pydicom.datadict import DicomDictionary

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
VALUE_COPY_LIMIT = 1024  # enough for any UID or code string; a longer value is invalid anyway
#: VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length (PS3.5 Table 7.1-1).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
     b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
#: Public elements that are sequences: how an implicit VR walk knows to descend into one.
SEQUENCE_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")

_DATASET, _SEQUENCE, _ITEM, _FRAGMENTS = range(4)


class Malformed(ValueError):
    """The bytes are not one whole data set; the message names the element and the rule."""


class TooDeep(Malformed):
    """Sequences nest deeper than the limit."""


def tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass
class _Frame:
    kind: int
    end: int | None  # where a defined-length container ends; None: at its delimiter
    bound: int  # nothing inside may pass this: the nearest defined end around it
    implicit: bool


@dataclass
class Walked:
    """What the walk learnt: where it stopped, the named top-level values, the Pixel Data."""

    end: int
    values: dict[int, bytes] = field(default_factory=dict)
    pixel_length: int | None = None  # a native Pixel Data's length in bytes
    pixel_encapsulated: bool = False


def walk(
    buf: bytes | bytearray | memoryview,
    start: int,
    *,
    implicit: bool,
    little_endian: bool,
    max_depth: int,
    wanted: Collection[int] = (),
    stop_at_group: int | None = None,
) -> Walked:
    """Walk the data set in ``buf[start:]`` to its end, or, with ``stop_at_group``, up to the
    first top-level element of a later group (what reads a file meta group). Raises ``Malformed``."""
    order = "<" if little_endian else ">"
    tag_length = struct.Struct(order + "HHI")  # tag, then a 4-byte length (implicit VR, items)
    explicit_short = struct.Struct(order + "HH2sH")
    long_length = struct.Struct(order + "I")
    size = len(buf)
    walked = Walked(end=size)
    stack = [_Frame(_DATASET, None, size, implicit)]
    depth, pos = 0, start
    while True:
        frame = stack[-1]
        if frame.end is not None and pos == frame.end:
            stack.pop()
            if frame.kind == _SEQUENCE:
                depth -= 1
            continue
        if pos == size and len(stack) == 1:
            return walked
        if pos + 8 > frame.bound:
            if pos == frame.bound:
                raise Malformed("the data set ends inside an undefined-length sequence or item")
            where = "the data set" if frame.bound == size else "a sequence item"
            raise Malformed(f"{where} ends inside an element header")
        group, element, length = tag_length.unpack_from(buf, pos)
        tag = group << 16 | element
        if frame.kind in (_SEQUENCE, _FRAGMENTS):
            pos += 8
            if tag == SEQUENCE_END and frame.end is None:
                stack.pop()
                if frame.kind == _SEQUENCE:
                    depth -= 1
            elif tag != ITEM:
                raise Malformed(f"{tag_name(tag)} stands where a sequence item must")
            elif length == UNDEFINED:
                if frame.kind == _FRAGMENTS:
                    raise Malformed("an encapsulated pixel data fragment has undefined length")
                stack.append(_Frame(_ITEM, None, frame.bound, frame.implicit))
            elif pos + length > frame.bound:
                raise Malformed("a sequence item runs past its sequence or the data set")
            elif frame.kind == _SEQUENCE:
                stack.append(_Frame(_ITEM, pos + length, pos + length, frame.implicit))
            else:
                pos += length  # a fragment: opaque bytes
            continue
        # in a data set: the top level or an item
        if tag == ITEM_END:
            if frame.kind != _ITEM or frame.end is not None:
                raise Malformed("an item delimiter outside an undefined-length item")
            stack.pop()
            pos += 8
            continue
        if group == 0xFFFE:
            raise Malformed(f"{tag_name(tag)} stands where a data element must")
        if stop_at_group is not None and len(stack) == 1 and group != stop_at_group:
            walked.end = pos
            return walked
        if frame.implicit:
            vr = b"SQ" if tag in SEQUENCE_TAGS else None
            pos += 8
        else:
            _, _, vr, length = explicit_short.unpack_from(buf, pos)
            if vr in LONG_VRS:
                if pos + 12 > frame.bound:
                    raise Malformed(f"the data set ends inside the header of {tag_name(tag)}")
                (length,) = long_length.unpack_from(buf, pos + 8)
                pos += 12
            elif vr in SHORT_VRS:
                pos += 8
            else:
                raise Malformed(f"element {tag_name(tag)} has no valid VR: not explicit VR data")
        if vr == b"SQ" or (length == UNDEFINED and vr in (None, b"UN") and tag != PIXEL_DATA):
            depth += 1
            if depth > max_depth:
                raise TooDeep(f"sequence nesting deeper than {max_depth}")
            # an undefined-length UN holds an implicit VR little endian sequence (PS3.5 6.2.2)
            inner = frame.implicit or vr == b"UN"
            if length == UNDEFINED:
                stack.append(_Frame(_SEQUENCE, None, frame.bound, inner))
            elif pos + length > frame.bound:
                raise Malformed(f"sequence {tag_name(tag)} runs past its item or the data set")
            else:
                stack.append(_Frame(_SEQUENCE, pos + length, pos + length, inner))
            continue
        top = len(stack) == 1
        if length == UNDEFINED:
            if vr not in (b"OB", b"OW") and not (tag == PIXEL_DATA and vr is None):
                raise Malformed(f"element {tag_name(tag)} has undefined length but is not a sequence")
            if top and tag == PIXEL_DATA:
                walked.pixel_encapsulated = True
            stack.append(_Frame(_FRAGMENTS, None, frame.bound, frame.implicit))
            continue
        if pos + length > frame.bound:
            raise Malformed(f"element {tag_name(tag)} runs past its item or the data set")
        if top:
            if tag in wanted:
                walked.values[tag] = bytes(buf[pos : pos + min(length, VALUE_COPY_LIMIT)])
            elif tag == PIXEL_DATA:
                walked.pixel_length = length
        pos += length


def is_explicit_vr(buf: bytes | bytearray | memoryview, start: int) -> bool:
    """Whether the first element at ``start`` carries an explicit VR (for a syntax we do not know)."""
    return bytes(buf[start + 4 : start + 6]) in LONG_VRS | SHORT_VRS
