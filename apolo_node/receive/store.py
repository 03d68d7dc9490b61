"""Storing one instance: check it, pseudonymise its UIDs, spool it durably, catalogue it.

Shared by the C-STORE handler and ``apolo-node ingest``, so both paths obey the same rule:
success only once the file is fsynced in the spool and its row committed; anything else is a
failure status with a comment that names the rule broken and never a value from the dataset.
"""

from __future__ import annotations

import enum
import logging
import mmap
import re
import struct
import tempfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import RE_VALID_UID, UID, DeflatedExplicitVRLittleEndian
from sqlalchemy import Engine

from apolo_node.catalog.records import InstanceRecord, instance_exists, record_instance
from apolo_node.config import ReceiveSettings
from apolo_node.logs import event, get_logger
from apolo_node.metrics import count_store
from apolo_node.pseudonym import UIDMapper
from apolo_node.spool import Spool, StagingFile, spool_failed
from apolo_node.receive.walk import Malformed, Walked, is_explicit_vr, walk

log = get_logger("receive")
PREAMBLE_AND_PREFIX = 132
TRANSFER_SYNTAX = 0x00020010
NUMBER_OF_FRAMES = 0x00280008
PHOTOMETRIC_INTERPRETATION = 0x00280004
INFLATE_SLICE = 1 << 20  # most inflated bytes held in memory at once
TOO_LARGE = "data set is larger than max_instance_size"
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
Raw = bytes | mmap.mmap  # a received instance is its staged file, mapped: never read whole into memory


class StoreStatus(enum.IntEnum):
    """The C-STORE statuses this node returns (PS3.4 GG.4-1)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class StoreResult:
    """What happened to one instance; ``comment`` never holds a dataset value."""

    status: StoreStatus
    comment: str = ""
    study_uid: str | None = None
    sop_instance_uid: str | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status == StoreStatus.SUCCESS


class UnreadableDataset(ValueError):
    """The bytes are not a complete, usable DICOM dataset; the message says which rule failed."""


class TooLarge(UnreadableDataset):
    """The data set is over ``[receive] max_instance_size``: 0xA700, not 0xC000."""


@dataclass(frozen=True)
class Limits:
    """What one instance may ask of the receiver: ``[receive] max_depth`` and ``max_instance_size``."""

    max_depth: int
    max_size: int

    @classmethod
    def from_settings(cls, settings: ReceiveSettings) -> Limits:
        return cls(max_depth=settings.max_depth, max_size=settings.max_instance_size)


DEFAULT_LIMITS = Limits.from_settings(ReceiveSettings())


@dataclass(frozen=True)
class Identifiers:
    """The original UIDs and modality of a dataset (PHI side: never log these)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None


_WANTED = {
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00080018: "SOPInstanceUID",
    0x00080016: "SOPClassUID",
    0x00080060: "Modality",
}
_PIXEL_MODULE = {
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280002: "SamplesPerPixel",
    0x00280100: "BitsAllocated",
    NUMBER_OF_FRAMES: "NumberOfFrames",
    PHOTOMETRIC_INTERPRETATION: "PhotometricInterpretation",
}
_COPIED = frozenset(_WANTED) | frozenset(_PIXEL_MODULE)


def read_identifiers(raw: Raw, limits: Limits = DEFAULT_LIMITS) -> Identifiers:
    """Walk a Part 10 byte stream once, to its last byte, and say what it is.

    Raises ``UnreadableDataset`` (0xC000) unless the file meta and the data set parse whole, nest
    no deeper than ``limits.max_depth``, and a native image's Pixel Data holds all its pixels;
    ``TooLarge`` (0xA700) for a data set over ``limits.max_size`` bytes (inflated, if deflated).
    No value is decoded but the few identifiers, so this keeps pace with a PACS.
    """
    if len(raw) < PREAMBLE_AND_PREFIX or raw[128:PREAMBLE_AND_PREFIX] != b"DICM":
        raise UnreadableDataset("not a DICOM Part 10 stream (no DICM prefix)")
    try:
        meta = walk(
            raw, PREAMBLE_AND_PREFIX, implicit=False, little_endian=True,
            max_depth=limits.max_depth, wanted=(TRANSFER_SYNTAX,), stop_at_group=0x0002,
        )
    except Malformed as exc:
        raise UnreadableDataset(f"file meta: {exc}") from None
    text = _text(meta.values.get(TRANSFER_SYNTAX))
    if not text:
        raise UnreadableDataset("file meta has no TransferSyntaxUID")
    if not _valid_uid(text):
        raise UnreadableDataset("file meta TransferSyntaxUID is not a valid UID")
    syntax = UID(text)
    if len(raw) - meta.end > limits.max_size:
        raise TooLarge(TOO_LARGE)
    if syntax == DeflatedExplicitVRLittleEndian:
        with _Inflated(raw, meta.end, limits.max_size) as inflated:
            return _identifiers(inflated, 0, syntax, limits)
    return _identifiers(raw, meta.end, syntax, limits)


def _identifiers(buf: Raw, start: int, syntax: UID, limits: Limits) -> Identifiers:
    """Walk the data set at ``buf[start:]``, encoded in ``syntax``, and check what it holds."""
    if syntax.is_transfer_syntax:
        implicit, little_endian = bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
    else:  # a private syntax (only ingest meets one: it is never negotiated): guess as pydicom does
        implicit, little_endian = not is_explicit_vr(buf, start), True
    try:
        walked = walk(
            buf, start, implicit=implicit, little_endian=little_endian,
            max_depth=limits.max_depth, wanted=_COPIED,
        )
    except Malformed as exc:
        raise UnreadableDataset(str(exc)) from None
    if syntax.is_transfer_syntax and not syntax.is_encapsulated:
        _check_native_pixel_data(walked, little_endian)
    values = {keyword: _text(walked.values.get(tag)) for tag, keyword in _WANTED.items()}
    for keyword in REQUIRED_UIDS:
        _require_uid(keyword, values[keyword])
    return Identifiers(
        values["StudyInstanceUID"],
        values["SeriesInstanceUID"],
        values["SOPInstanceUID"],
        values["SOPClassUID"],
        str(syntax),
        values["Modality"][:16] or None,
    )


class _Inflated:
    """A deflated data set (PS3.5 A.5) inflated into an unnamed temporary file and mapped, a
    slice at a time, never past ``max_size`` bytes: a deflate bomb costs neither memory nor disk."""

    def __init__(self, raw: Raw, start: int, max_size: int) -> None:
        self._file = tempfile.TemporaryFile()
        self._map: mmap.mmap | None = None
        try:  # the views are released on the way out, so that a mapped ``raw`` can be closed
            with memoryview(raw) as whole, whole[start:] as deflated:
                self._inflate(deflated, max_size)
        except BaseException:
            self._file.close()
            raise

    def _inflate(self, deflated: memoryview, max_size: int) -> None:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        tail: bytes | memoryview = deflated
        try:
            while tail and not inflater.eof:
                piece = inflater.decompress(tail, INFLATE_SLICE)
                total += len(piece)
                if total > max_size:
                    raise TooLarge(f"{TOO_LARGE} once inflated")
                self._file.write(piece)
                tail = inflater.unconsumed_tail
        except zlib.error:
            raise UnreadableDataset("deflated data set cannot be inflated") from None
        if not inflater.eof:
            raise UnreadableDataset("deflated data set is truncated")
        self._file.flush()
        if total:
            self._map = mmap.mmap(self._file.fileno(), total, access=mmap.ACCESS_READ)

    def __enter__(self) -> Raw:
        return self._map if self._map is not None else b""

    def __exit__(self, *exc: object) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()


def _check_native_pixel_data(walked: Walked, little_endian: bool) -> None:
    """Refuse native Pixel Data shorter than its image (PS3.5 8.1.1), or encapsulated in a
    native syntax; longer (padded) is let through, and so is no Pixel Data (SR, PR, KO)."""
    if walked.pixel_encapsulated:
        raise UnreadableDataset("Pixel Data is encapsulated in a native transfer syntax")
    if walked.pixel_length is None:
        return
    us = struct.Struct("<H" if little_endian else ">H")
    module: dict[str, int] = {}
    for tag, keyword in _PIXEL_MODULE.items():
        value = walked.values.get(tag)
        if value is None or tag == PHOTOMETRIC_INTERPRETATION:
            continue
        if tag == NUMBER_OF_FRAMES:
            try:
                module[keyword] = max(int(_text(value) or "1"), 0)
            except ValueError:
                raise UnreadableDataset("NumberOfFrames is not an integer string") from None
        elif len(value) >= 2:
            module[keyword] = us.unpack_from(value)[0]
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if keyword not in module:
            raise UnreadableDataset(f"Pixel Data without {keyword}")
    bits = module["Rows"] * module["Columns"] * module.get("SamplesPerPixel", 1)
    bits *= module.get("NumberOfFrames", 1) * module["BitsAllocated"]
    if _text(walked.values.get(PHOTOMETRIC_INTERPRETATION)) == "YBR_FULL_422":
        bits = bits // 3 * 2  # each pair of pixels shares its two chroma samples
    if walked.pixel_length < (bits + 7) // 8:
        raise UnreadableDataset(
            "Pixel Data is shorter than Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated"
        )


def _require_uid(keyword: str, value: str) -> None:
    if not value:
        raise UnreadableDataset(f"{keyword} is missing or empty")
    if not _valid_uid(value):
        raise UnreadableDataset(f"{keyword} is not a valid UID")


def _valid_uid(value: str) -> bool:
    """PS3.5 9.1, checked here because pydicom's UID() logs an invalid value, and values are PHI."""
    return len(value) <= 64 and re.fullmatch(RE_VALID_UID, value) is not None


def _text(value: bytes | None) -> str:
    """A string element's raw bytes as text, without its padding."""
    if value is None:
        return ""
    return value.decode("ascii", "replace").strip(" \x00")


class InstanceStore:
    """Turns received bytes into a durable spool file and a catalog row, or a failure status."""

    def __init__(
        self, spool: Spool, engine: Engine, mapper: UIDMapper, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.spool = spool
        self.engine = engine
        self.mapper = mapper
        self.limits = limits
        self._stager = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-stage")

    def store(
        self,
        raw: Raw,
        *,
        calling_aet: str | None = None,
        affected_sop_class: str | None = None,
        affected_sop_instance: str | None = None,
        staged: StagingFile | None = None,
    ) -> StoreResult:
        """Store one Part 10 byte stream; never raises.

        ``staged``, if given, already holds ``raw`` (written as it arrived, not yet fsynced): it
        is finished and put in place instead of writing the bytes again. It is consumed either way.
        """
        try:
            result = self._store(raw, calling_aet, affected_sop_class, affected_sop_instance, staged)
        except Exception as exc:  # the network loop must never see an exception
            log.error(
                "instance.failed",
                exc_info=True,
                extra={"fields": {"status": hex(StoreStatus.OUT_OF_RESOURCES)}},
            )
            result = StoreResult(
                StoreStatus.OUT_OF_RESOURCES, f"internal error ({type(exc).__name__})"
            )
        finally:
            if staged is not None:
                staged.discard()  # a no-op once it is in place
        level = logging.INFO if result.ok else logging.WARNING
        event(
            log,
            "instance.duplicate" if result.duplicate else (
                "instance.stored" if result.ok else "instance.refused"
            ),
            level,
            status=f"0x{result.status:04X}",
            comment=result.comment or None,
            study_uid=result.study_uid,
            sop_instance_uid=result.sop_instance_uid,
            calling_aet=calling_aet,
            size=len(raw),
        )
        count_store(result.status, result.duplicate)
        return result

    def _store(
        self,
        raw: Raw,
        calling_aet: str | None,
        affected_sop_class: str | None,
        affected_sop_instance: str | None,
        staged: StagingFile | None,
    ) -> StoreResult:
        try:
            ids = read_identifiers(raw, self.limits)
        except TooLarge as exc:
            return StoreResult(StoreStatus.OUT_OF_RESOURCES, str(exc))
        except UnreadableDataset as exc:
            return StoreResult(StoreStatus.CANNOT_UNDERSTAND, str(exc))
        if affected_sop_class and affected_sop_class != ids.sop_class_uid:
            return StoreResult(
                StoreStatus.DATASET_MISMATCH,
                "SOPClassUID differs from the command's Affected SOP Class UID",
            )
        if affected_sop_instance and affected_sop_instance != ids.sop_instance_uid:
            return StoreResult(
                StoreStatus.CANNOT_UNDERSTAND,
                "SOPInstanceUID differs from the command's Affected SOP Instance UID",
            )
        study, sop = self.mapper(ids.study_uid), self.mapper(ids.sop_instance_uid)
        relative = self.spool.relative_path(study, sop)
        # The file is written and fsynced on another thread while this one runs the catalog's
        # statements; the transaction waits for it, puts it in place, and only then commits.
        staging = (
            self._stager.submit(staged.finish)
            if staged is not None
            else self._stager.submit(self.spool.stage, raw)
        )
        record = InstanceRecord(
            study_uid=study,
            series_uid=self.mapper(ids.series_uid),
            sop_instance_uid=sop,
            sop_class_uid=ids.sop_class_uid,
            transfer_syntax_uid=ids.transfer_syntax_uid,
            modality=ids.modality,
            path=relative,
            size=len(raw),
            calling_aet=calling_aet,
        )
        placed = False

        def place() -> None:
            nonlocal placed
            if not placed:  # a retried transaction must not move it twice
                self.spool.place(staging.result(), relative)
                placed = True

        try:
            new = record_instance(self.engine, record, before_commit=place)
        except OSError as exc:  # staging or placing the file failed: the transaction wrote nothing
            self._discard(staging)
            return StoreResult(StoreStatus.OUT_OF_RESOURCES, spool_failed(exc), study, sop)
        except Exception as exc:
            self._discard(staging)
            if placed:
                self._forget(relative, sop)
            return StoreResult(
                StoreStatus.OUT_OF_RESOURCES,
                f"catalog unavailable ({type(exc).__name__})",
                study,
                sop,
            )
        if not placed:
            self._discard(staging)  # already held: kept once, counted once
        return StoreResult(StoreStatus.SUCCESS, "", study, sop, duplicate=not new)

    def _discard(self, staging: Future[Path]) -> None:
        """Remove a staged file once its writing is over (a failed write removed its own)."""
        try:
            staged = staging.result()
        except OSError:
            return
        self.spool.discard(staged)

    def _forget(self, relative: str, sop: str) -> None:
        """Remove a spooled file whose row could not be written, unless another writer's row owns it."""
        try:
            if instance_exists(self.engine, sop):
                return
        except Exception:
            pass  # catalog down: the file is not acknowledged, so it must go
        self.spool.remove(relative)
