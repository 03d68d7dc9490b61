"""How deep an instance's sequences nest, counted without recursion, before anything recurses.

pydicom reads, copies and writes sequences by recursion (several frames per level), and its
writer formats the traceback again at every level when one fails: a small data set nested a few
hundred levels deep costs gigabytes. So de-identification counts the depth first, with an
explicit stack, and refuses an instance deeper than ``[deid] max_depth`` before it is parsed
(:func:`file_sequence_depth`, on the Part 10 bytes) or walked (:func:`dataset_sequence_depth`).

Depth 1 is a sequence at the top level of the data set; an item's sequence is one deeper.
Counting stops as soon as the limit is passed, so the cost is bounded by the limit and the size.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
ITEM_TAG_LE = b"\xfe\xff\x00\xe0"
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
CHUNK = 1 << 20


class TooDeep(ValueError):
    """Sequences nest deeper than the limit; the message names the rule and the limit only."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"sequences nest deeper than [deid] max_depth ({limit})")
        self.limit = limit


class _Malformed(Exception):
    """The bytes do not parse here; where the walker cannot recover, counting stops."""


class _Stream:
    """Forward reading of the data set's bytes, from a file or inflated on the fly (deflate)."""

    def __init__(self, fp: BinaryIO, size: int, deflated: bool) -> None:
        self.fp = fp
        self.pos = 0
        self._start = fp.tell()
        self._size = size - self._start
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
        self._buffer = b""

    def at_end(self) -> bool:
        if self._inflate is None:
            return self.pos >= self._size
        self._fill(1)
        return not self._buffer

    def read(self, n: int) -> bytes:
        if self._inflate is None:
            data = self.fp.read(n)
        else:
            self._fill(n)
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        if len(data) != n:
            raise _Malformed("truncated")
        self.pos += n
        return data

    def peek(self, n: int) -> bytes:
        if self._inflate is None:
            data = self.fp.read(n)
            self.fp.seek(-len(data), 1)
            return data
        self._fill(n)
        return self._buffer[:n]

    def skip(self, n: int) -> None:
        if self._inflate is None:
            if self.pos + n > self._size:
                raise _Malformed("truncated")
            self.fp.seek(n, 1)
            self.pos += n
            return
        while n > 0:  # inflated data cannot be sought: read it in bounded chunks
            step = min(n, CHUNK)
            self.read(step)
            n -= step

    def _fill(self, n: int) -> None:
        assert self._inflate is not None
        while len(self._buffer) < n:
            raw = self.fp.read(CHUNK)
            if not raw:
                self._buffer += self._inflate.flush()
                return
            self._buffer += self._inflate.decompress(raw, max(n, CHUNK))
            while self._inflate.unconsumed_tail and len(self._buffer) < n:
                self._buffer += self._inflate.decompress(self._inflate.unconsumed_tail, CHUNK)


@dataclass
class _Frame:
    """A data set (top level or item) or a sequence being walked."""

    end: int | None  # None: undefined length, ended by a delimiter (or the file's end at the top)
    sequence: bool  # items of a sequence (or fragments) rather than data elements
    implicit: bool = False
    little: bool = True
    fragments: bool = False  # encapsulated pixel data: items are skipped, not entered
    guess: bool = False  # a private value that looked like a sequence: undone if it does not parse
    checked: bool = False  # whether its first element was looked at for the VR encoding


def file_sequence_depth(path: Path, limit: int) -> int:
    """The deepest sequence nesting of a Part 10 file, or the first depth past ``limit``.

    Reads the bytes with an explicit stack (undefined lengths, encapsulated pixel data, VR UN
    and implicit VR included), so no input makes it recurse; a file that is not Part 10 or
    stops parsing somewhere gives the depth seen so far, for the reader to refuse.
    """
    with open(path, "rb") as fp:
        size = fp.seek(0, 2)
        fp.seek(0)
        if fp.read(132)[128:] != b"DICM":
            return 0
        syntax = _file_meta_syntax(fp) or ""  # none: guessed from the first element, as pydicom does
        stream = _Stream(fp, size, deflated=syntax == DeflatedExplicitVRLittleEndian)
        top = _Frame(
            end=None,
            sequence=False,
            implicit=syntax == ImplicitVRLittleEndian,
            little=syntax != ExplicitVRBigEndian,
        )
        return _walk(stream, top, limit)


def _file_meta_syntax(fp: BinaryIO) -> str | None:
    """Read the explicit-VR little endian group 0002 and return the Transfer Syntax UID."""
    syntax = None
    while True:
        start = fp.tell()
        head = fp.read(8)
        if len(head) < 8:
            return syntax
        group, element = struct.unpack("<HH", head[:4])
        if group != 0x0002:
            fp.seek(start)
            return syntax
        vr = head[4:6]
        if vr in LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                return None
            length = struct.unpack("<I", extra)[0]
        else:
            length = struct.unpack("<H", head[6:8])[0]
        if length == UNDEFINED:
            return None
        value = fp.read(length)
        if element == 0x0010:
            syntax = value.decode("ascii", "replace").strip(" \x00")


def _walk(stream: _Stream, top: _Frame, limit: int) -> int:
    stack = [top]
    depth = deepest = 0
    while True:
        frame = stack[-1]
        try:
            if frame.end is not None and stream.pos >= frame.end:
                if stream.pos > frame.end:
                    raise _Malformed("an element runs past its parent's end")
                stack.pop()
                depth -= frame.sequence and not frame.fragments
                continue
            if len(stack) == 1 and stream.at_end():
                return deepest
            child = _step(stream, frame)
        except _Malformed:
            undo = next((i for i, f in enumerate(stack) if f.guess), None)
            if undo is None:
                return deepest
            end = stack[undo].end
            assert end is not None
            depth -= sum(1 for f in stack[undo:] if f.sequence and not f.fragments)
            del stack[undo:]
            try:
                stream.skip(end - stream.pos)
            except _Malformed:
                return deepest
            continue
        if child is True:  # a delimiter ended the current frame
            stack.pop()
            depth -= frame.sequence and not frame.fragments
        elif child is not None:
            stack.append(child)
            if child.sequence and not child.fragments:
                depth += 1
                deepest = max(deepest, depth)
                if deepest > limit:
                    return deepest


def _step(stream: _Stream, frame: _Frame) -> _Frame | bool | None:
    """Read one element (or item) of ``frame``: a frame to enter, True at its delimiter, or None."""
    order = "<" if frame.little else ">"
    group, element = struct.unpack(order + "HH", stream.read(4))
    tag = group << 16 | element
    if frame.sequence:
        length = struct.unpack(order + "I", stream.read(4))[0]
        if tag == SEQUENCE_DELIMITER and frame.end is None:
            return True
        if tag != ITEM:
            raise _Malformed("not an item in a sequence")
        if frame.fragments:
            if length == UNDEFINED:
                raise _Malformed("a fragment of undefined length")
            stream.skip(length)
            return None
        end = None if length == UNDEFINED else stream.pos + length
        return _Frame(end, sequence=False, implicit=frame.implicit, little=frame.little)
    if not frame.checked:  # some writers switch to implicit VR where they declare explicit
        frame.checked = True
        if not frame.implicit and tag >> 16 != 0xFFFE and not _looks_like_vr(stream.peek(2)):
            frame.implicit = True
    if tag == ITEM_DELIMITER:
        stream.read(4)
        if frame.end is None:
            return True
        raise _Malformed("an item delimiter in an item of defined length")
    if frame.implicit:
        vr = None
        length = struct.unpack(order + "I", stream.read(4))[0]
    else:
        head = stream.read(4)
        vr = head[:2]
        if vr in LONG_VRS:
            length = struct.unpack(order + "I", stream.read(4))[0]
        else:
            length = struct.unpack(order + "H", head[2:])[0]
    end = None if length == UNDEFINED else stream.pos + length
    if frame.end is not None and end is not None and end > frame.end:
        raise _Malformed("an element runs past its parent's end")
    if vr == b"SQ" or (vr == b"UN" and (length == UNDEFINED or _dictionary_sq(tag))) or (
        vr is None and (_dictionary_sq(tag) or (length == UNDEFINED and _dictionary_vr(tag) is None))
    ):
        implicit = frame.implicit if vr == b"SQ" else True  # VR UN holds implicit VR LE
        little = frame.little if vr == b"SQ" else True
        return _Frame(end, sequence=True, implicit=implicit, little=little)
    if length == UNDEFINED:  # encapsulated pixel data (or another undefined-length OB/OW)
        return _Frame(None, sequence=True, little=frame.little, fragments=True)
    if vr in (None, b"UN") and group & 1 and length >= 8 and frame.little:
        # A private value pydicom may still read as a sequence: enter it if it looks like one.
        if stream.peek(4) == ITEM_TAG_LE:
            return _Frame(end, sequence=True, implicit=True, guess=True)
    stream.skip(length)
    return None


def _looks_like_vr(data: bytes) -> bool:
    return len(data) == 2 and all(0x41 <= c <= 0x5A for c in data)


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _dictionary_sq(tag: int) -> bool:
    return _dictionary_vr(tag) == "SQ"


def dataset_sequence_depth(ds: Dataset, limit: int) -> int:
    """The deepest sequence nesting of a data set in memory, or the first depth past ``limit``.

    Walks with an explicit stack; sequences still held as raw bytes are read one level at a time.
    A sequence whose raw bytes cannot be read without recursing too deep counts as past the limit.
    """
    stack: list[tuple[Dataset, int]] = [(ds, 0)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        for tag in list(item.keys()):
            raw = item.get_item(tag)
            if isinstance(raw, DataElement):
                if raw.VR != "SQ":
                    continue
                items = raw.value
            else:
                if raw.VR != "SQ" and not (raw.VR in (None, "UN") and _dictionary_sq(tag)):
                    continue
                try:
                    elem = item[tag]
                except RecursionError:
                    return limit + 1
                except Exception:
                    continue  # unreadable: the reader or the writer refuses it later
                if elem.VR != "SQ":
                    continue
                items = elem.value
            if depth + 1 > deepest:
                deepest = depth + 1
                if deepest > limit:
                    return deepest
            stack.extend((child, depth + 1) for child in items if isinstance(child, Dataset))
    return deepest


def check_depth(ds: Dataset, limit: int) -> None:
    """Raise :class:`TooDeep` when ``ds``'s sequences nest deeper than ``limit``."""
    if dataset_sequence_depth(ds, limit) > limit:
        raise TooDeep(limit)


def check_file_depth(path: Path, limit: int) -> None:
    """Raise :class:`TooDeep` when the file's sequences nest deeper than ``limit``."""
    if file_sequence_depth(path, limit) > limit:
        raise TooDeep(limit)
