"""multipart/related (RFC 2387) for DICOMweb: a bounded incremental reader and a streaming writer.

The reader is fed the request body a chunk at a time and hands each part's bytes to a sink as
they arrive, so a STOW-RS body is never held in memory: memory is bounded by one chunk plus the
part-header limit. Errors name the rule broken (never bytes from the body).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

MAX_HEADER_BYTES = 16 * 1024  # all header lines of one part together
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# values unquoted may hold "/" (type=application/dicom), as clients such as OHIF send them
_PARAM = re.compile(rf';\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s"]+)')


class MultipartError(ValueError):
    """The body is not well-formed multipart (answered 400)."""


class TooManyParts(MultipartError):
    """More parts than allowed (answered 413)."""


def parse_media_type(header: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and its parameters (names lower case, values unquoted)."""
    main, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(";" + rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name.lower()] = value
    return main.strip().lower(), params


class PartSink(Protocol):
    """Where one part's body goes."""

    def write(self, data: bytes | memoryview) -> None: ...


class MultipartReader:
    """Incremental multipart parser: ``feed`` chunks, then ``close``.

    ``begin(headers)`` is called at each part's start with its header fields (names lower case)
    and returns the sink for its body; ``end()`` is called once the part is complete.
    """

    def __init__(
        self,
        boundary: str,
        begin: Callable[[dict[str, str]], PartSink],
        end: Callable[[], None],
        max_parts: int,
    ) -> None:
        if not boundary or len(boundary) > 70:
            raise MultipartError("multipart boundary must be 1 to 70 characters")
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._begin, self._end = begin, end
        self._max_parts = max_parts
        self._buf = bytearray(b"\r\n")  # so that a body opening with its delimiter is found
        self._state = "preamble"
        self._sink: PartSink | None = None
        self.parts = 0

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        while self._step():
            pass

    def close(self) -> None:
        """The body ended: it must have ended with the close delimiter."""
        if self._state != "epilogue":
            raise MultipartError("multipart body ends before its closing boundary")

    def _step(self) -> bool:
        """Advance through the buffer once; False when more input is needed."""
        buf = self._buf
        if self._state in ("preamble", "body"):
            at = buf.find(self._delimiter)
            if at < 0:
                keep = len(self._delimiter) - 1
                if len(buf) > keep:
                    if self._sink is not None:
                        self._sink.write(bytes(buf[: len(buf) - keep]))
                    del buf[: len(buf) - keep]
                return False
            if self._sink is not None:
                self._sink.write(bytes(buf[:at]))
            del buf[: at + len(self._delimiter)]
            if self._state == "body":
                self._sink = None
                self._end()
            self._state = "after_delimiter"
            return True
        if self._state == "after_delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "epilogue"
                return False
            end = buf.find(b"\r\n")  # transport padding (RFC 2046 5.1.1) may precede the CRLF
            if end < 0:
                if len(buf) > 1024:
                    raise MultipartError("multipart boundary line is not followed by CRLF")
                return False
            if buf[:end].strip(b" \t"):
                raise MultipartError("multipart boundary line is not followed by CRLF")
            del buf[: end + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = buf.find(b"\r\n\r\n") if not buf.startswith(b"\r\n") else -2
            if end == -1:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError(f"multipart part headers longer than {MAX_HEADER_BYTES} bytes")
                return False
            if end > MAX_HEADER_BYTES:
                raise MultipartError(f"multipart part headers longer than {MAX_HEADER_BYTES} bytes")
            headers = _headers(bytes(buf[:end]) if end >= 0 else b"")
            del buf[: end + 4 if end >= 0 else 2]
            self.parts += 1
            if self.parts > self._max_parts:
                raise TooManyParts(f"more than {self._max_parts} parts in one request")
            self._sink = self._begin(headers)
            self._state = "body"
            return True
        # epilogue: ignored, and not kept
        buf.clear()
        return False


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n") if block else ():
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise MultipartError("multipart part header line without a field name")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def new_boundary() -> str:
    return f"apolo-{secrets.token_hex(16)}"


def related_parts(
    boundary: str, parts: Iterable[tuple[str, Iterable[bytes]]]
) -> Iterator[bytes]:
    """A multipart/related body, streamed: each part is (its Content-Type, its chunks)."""
    opener = f"--{boundary}\r\n".encode("latin-1")
    for content_type, chunks in parts:
        yield opener + f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")
