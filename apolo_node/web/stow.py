"""STOW-RS (PS3.18 10.5): each part of a multipart/related body through the C-STORE store path.

A part is written to a staging file in the spool's ``tmp/`` as it arrives (never held in memory),
then handed to ``InstanceStore.store``: the same bounds (size, nesting depth), the same catalog
row, the same fsync before success, the same refusals as an instance sent by C-STORE. A SOP class
or transfer syntax the SCP would not negotiate is refused here too (0x0122, 0xC122).
The answer is the Store Instances Response Module (PS3.18 Annex I) as application/dicom+json.
"""

from __future__ import annotations

import enum
import mmap
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from apolo_node.logs import event, get_logger
from apolo_node.receive.scp import supported_contexts
from apolo_node.spool import StagingFile, spool_failed
from apolo_node.receive.store import (
    PREAMBLE_AND_PREFIX,
    InstanceStore,
    StoreStatus,
    TooLarge,
    UnreadableDataset,
    read_identifiers,
)
from apolo_node.receive.walk import LONG_VRS, SHORT_VRS
from apolo_node.web.multipart import PartSink, parse_media_type

log = get_logger("dicomweb")
DICOM = "application/dicom"
META_SLACK = 64 * 1024  # preamble and file meta, beyond the data set's max_instance_size
IN_FLIGHT = 4  # parts of one request being stored at once (their fsyncs and commits overlap)
_STORERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="stow-store")
_CONTEXTS = supported_contexts()
STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in _CONTEXTS)
TRANSFER_SYNTAXES = frozenset(str(ts) for cx in _CONTEXTS for ts in cx.transfer_syntax)


class Failure(enum.IntEnum):
    """Failure Reason (0008,1197) values beyond the C-STORE statuses (PS3.18 Table I.2-2)."""

    SOP_CLASS_NOT_SUPPORTED = 0x0122
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
    #: the instance's Study Instance UID is not the one in the request's URL
    STUDY_MISMATCH = 0xA900


@dataclass(frozen=True)
class PartOutcome:
    """What happened to one part. The UIDs are the sender's own, echoed back as PS3.18 asks;
    they are never logged. ``reason`` is None for success; ``comment`` names a rule, no value."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    reason: int | None
    comment: str = ""


@dataclass
class StowSession:
    """One STOW-RS request: a staging file per part, stored as each part ends."""

    store: InstanceStore
    study_uid: str | None = None  # the {study} of POST /studies/{study}
    outcomes: list[PartOutcome] = field(default_factory=list)
    _sink: StagingFile | None = None
    _refusal: str | None = None
    _framing: _Preamble | None = None
    _pending: deque[Future[PartOutcome]] = field(default_factory=deque)

    def begin(self, headers: dict[str, str]) -> PartSink:
        media, _ = parse_media_type(headers.get("content-type", DICOM))
        self._refusal = None if media == DICOM else "part is not application/dicom"
        self._framing = None
        if self._refusal is not None:
            self._sink = None
            return _Discard()
        limit = self.store.limits.max_size + META_SLACK
        try:
            self._sink = self.store.spool.open_staging(limit)
        except OSError as exc:
            self._sink = None
            self._refusal = spool_failed(exc)
            return _Discard()
        self._framing = _Preamble(self._sink)
        return self._framing

    def end(self) -> None:
        """The part is whole: store it on a storer thread while the next part arrives."""
        if self._framing is not None:
            self._framing.flush()
            self._framing = None
        sink, self._sink = self._sink, None
        if sink is None:
            bad_type = self._refusal == "part is not application/dicom"
            reason = StoreStatus.CANNOT_UNDERSTAND if bad_type else StoreStatus.OUT_OF_RESOURCES
            self._queue(_done(PartOutcome(None, None, int(reason), self._refusal or "")))
        else:
            self._queue(_STORERS.submit(self._store_part, sink))

    def finish(self) -> None:
        """Wait for every part in flight; ``outcomes`` is then complete, in the parts' order."""
        while self._pending:
            self._add(self._pending.popleft().result())

    def abort(self) -> None:
        """The request failed: drop the part being written; parts already whole are stored."""
        if self._sink is not None:
            self._sink.discard()
            self._sink = None
        self.finish()

    def _queue(self, outcome: Future[PartOutcome]) -> None:
        """Keep at most IN_FLIGHT parts storing at once (each holds a file and a mapping)."""
        self._pending.append(outcome)
        while len(self._pending) > IN_FLIGHT or (self._pending and self._pending[0].done()):
            self._add(self._pending.popleft().result())

    def _store_part(self, sink: StagingFile) -> PartOutcome:
        """Map the staged part and store it; never raises."""
        try:
            raw = sink.mapped()
        except ValueError:  # an empty part: mmap cannot map 0 bytes
            sink.discard()
            return PartOutcome(None, None, int(StoreStatus.CANNOT_UNDERSTAND), "empty part")
        except OSError as exc:
            sink.discard()
            return PartOutcome(None, None, int(StoreStatus.OUT_OF_RESOURCES), spool_failed(exc))
        try:
            return self._store(raw, sink)
        except Exception as exc:  # a bug: the part fails, the request goes on
            return PartOutcome(None, None, int(StoreStatus.OUT_OF_RESOURCES), f"internal error ({type(exc).__name__})")
        finally:
            sink.discard()  # a no-op once the store put it in place
            try:
                raw.close()
            except BufferError:
                pass

    def _store(self, raw: mmap.mmap, sink: StagingFile) -> PartOutcome:
        try:
            ids = read_identifiers(raw, self.store.limits)
        except TooLarge as exc:
            return PartOutcome(None, None, int(StoreStatus.OUT_OF_RESOURCES), str(exc))
        except UnreadableDataset as exc:
            return PartOutcome(None, None, int(StoreStatus.CANNOT_UNDERSTAND), str(exc))
        cls, sop = ids.sop_class_uid, ids.sop_instance_uid
        if cls not in STORAGE_SOP_CLASSES:
            return PartOutcome(cls, sop, Failure.SOP_CLASS_NOT_SUPPORTED, "SOPClassUID is not a storage SOP class")
        if ids.transfer_syntax_uid not in TRANSFER_SYNTAXES:
            return PartOutcome(
                cls, sop, Failure.TRANSFER_SYNTAX_NOT_SUPPORTED, "TransferSyntaxUID is not supported"
            )
        if self.study_uid is not None and ids.study_uid != self.study_uid:
            return PartOutcome(
                cls, sop, Failure.STUDY_MISMATCH, "StudyInstanceUID differs from the study in the URL"
            )
        result = self.store.store(raw, calling_aet=None, staged=sink)
        return PartOutcome(cls, sop, None if result.ok else int(result.status), result.comment)

    def _add(self, outcome: PartOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.reason is not None:
            event(
                log, "stow.part_refused", 30, part=len(self.outcomes),
                reason=f"0x{outcome.reason:04X}", comment=outcome.comment or None,
            )

    def stored(self) -> int:
        return sum(o.reason is None for o in self.outcomes)

    def http_status(self) -> int:
        """200 all stored, 202 some, 409 none (PS3.18 Table 10.5.3-1)."""
        ok = self.stored()
        if ok and ok == len(self.outcomes):
            return 200
        return 202 if ok else 409

    def response(self) -> dict[str, Any]:
        """The Store Instances Response Module as DICOM JSON."""
        ds = Dataset()
        ds.RetrieveURL = None  # Type 2: retrieval is of de-identified copies, under new UIDs
        failed, referenced = [], []
        for o in self.outcomes:
            item = Dataset()
            if o.sop_class_uid:
                item.ReferencedSOPClassUID = o.sop_class_uid
            if o.sop_instance_uid:
                item.ReferencedSOPInstanceUID = o.sop_instance_uid
            if o.reason is None:
                item.RetrieveURL = None
                referenced.append(item)
            else:
                item.FailureReason = o.reason
                failed.append(item)
        if failed:
            ds.FailedSOPSequence = failed
        if referenced:
            ds.ReferencedSOPSequence = referenced
        return ds.to_json_dict()


def _done(outcome: PartOutcome) -> Future[PartOutcome]:
    future: Future[PartOutcome] = Future()
    future.set_result(outcome)
    return future


class _Preamble:
    """Passes a part on, first giving it the 128-byte preamble and ``DICM`` prefix if it opens
    straight with its file meta group (pydicom writes datasets made in memory so, and so
    dicomweb-client sends them): the rest of the path reads only PS3.10 files."""

    def __init__(self, sink: StagingFile) -> None:
        self._sink = sink
        self._head: bytearray | None = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        if self._head is None:
            self._sink.write(data)
            return
        self._head += data
        if len(self._head) >= PREAMBLE_AND_PREFIX:
            self.flush()

    def flush(self) -> None:
        """Decide on what came so far (at the part's end, or once 132 bytes are in)."""
        if self._head is None:
            return
        head, self._head = bytes(self._head), None
        if head[128:PREAMBLE_AND_PREFIX] != b"DICM" and _opens_with_file_meta(head):
            self._sink.write(bytes(128) + b"DICM")
        self._sink.write(head)


def _opens_with_file_meta(head: bytes | bytearray) -> bool:
    """An explicit VR little endian element of group 0002 at the very start."""
    return len(head) >= 6 and head[:2] == b"\x02\x00" and bytes(head[4:6]) in LONG_VRS | SHORT_VRS


class _Discard:
    """The sink of a part that will not be stored: its bytes are dropped as they come."""

    def write(self, data: bytes | memoryview) -> None:
        return None
