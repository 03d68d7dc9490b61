"""Storing one instance: check it, pseudonymise its UIDs, spool it durably, catalogue it.

Shared by the C-STORE handler and ``apolo-node ingest``, so both paths obey the same rule:
success only once the file is fsynced in the spool and its row committed; anything else is a
failure status with a comment that names the rule broken and never a value from the dataset.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from sqlalchemy import Engine

from apolo_node.catalog.records import InstanceRecord, instance_exists, record_instance
from apolo_node.logs import event, get_logger
from apolo_node.pseudonym import UIDMapper
from apolo_node.receive.spool import Spool, StagingFile

log = get_logger("receive")
UNDEFINED_LENGTH = 0xFFFFFFFF
PREAMBLE_AND_PREFIX = 132
GROUP_LENGTH_ELEMENT = 12  # (0002,0000) UL, explicit VR: tag, VR, length, value
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


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


def read_identifiers(raw: bytes) -> Identifiers:
    """Parse a Part 10 byte stream far enough to know it is whole and what it is.

    A stream with a well-formed file meta group is walked once, element by element, which is
    what lets the receiver keep pace with a PACS; anything unusual (deflated, a private transfer
    syntax, a file meta group without its length) is read by ``dcmread`` instead.
    """
    fp = BytesIO(raw)
    try:
        read_preamble(fp, False)
        meta = {
            int(elem.tag): elem.value
            for elem in data_element_generator(fp, False, True, stop_when=_past_file_meta)
        }
    except Exception as exc:  # pydicom raises many types for bad input
        raise UnreadableDataset(f"not a decodable DICOM Part 10 stream ({type(exc).__name__})") from None
    syntax = UID(_text(meta.get(0x00020010)))
    group_length = meta.get(0x00020000)
    if (
        syntax == DeflatedExplicitVRLittleEndian
        or not syntax.is_transfer_syntax
        or not isinstance(group_length, bytes)
        or len(group_length) != 4
        or fp.tell() != PREAMBLE_AND_PREFIX + GROUP_LENGTH_ELEMENT + int.from_bytes(group_length, "little")
    ):
        return _read_identifiers_with_dcmread(raw)
    values: dict[str, str] = {}
    for elem in _top_level_elements(fp, syntax, len(raw)):
        keyword = _WANTED.get(int(elem.tag))
        if keyword is not None:
            values[keyword] = _text(elem.value)
    for keyword in REQUIRED_UIDS:
        _require_uid(keyword, values.get(keyword, ""))
    return Identifiers(
        values["StudyInstanceUID"],
        values["SeriesInstanceUID"],
        values["SOPInstanceUID"],
        values["SOPClassUID"],
        str(syntax),
        values.get("Modality", "")[:16] or None,
    )


def _top_level_elements(fp: BytesIO, syntax: UID, size: int) -> Iterator[RawDataElement | DataElement]:
    """The data set's top-level elements from ``fp`` on, each checked to lie inside the stream."""
    try:
        for elem in data_element_generator(
            fp, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=256
        ):
            if elem.length != UNDEFINED_LENGTH and elem.value_tell + elem.length > size:
                raise UnreadableDataset(f"data set is truncated inside element {elem.tag}")
            yield elem
    except UnreadableDataset:
        raise
    except Exception as exc:
        raise UnreadableDataset(f"data set is malformed or truncated ({type(exc).__name__})") from None


def _require_uid(keyword: str, value: str) -> None:
    if not value:
        raise UnreadableDataset(f"{keyword} is missing or empty")
    if not UID(value).is_valid:
        raise UnreadableDataset(f"{keyword} is not a valid UID")


def _past_file_meta(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002


def _text(value: object) -> str:
    """A string element's raw bytes as text, without its padding (None if deferred: too long)."""
    if not isinstance(value, bytes):
        return ""
    return value.decode("ascii", "replace").strip(" \x00")


def _read_identifiers_with_dcmread(raw: bytes) -> Identifiers:
    try:
        ds = dcmread(BytesIO(raw), defer_size=256)
    except Exception as exc:  # pydicom raises many types for bad input
        raise UnreadableDataset(f"not a decodable DICOM Part 10 stream ({type(exc).__name__})") from None
    _check_complete(ds, raw)
    values: dict[str, str] = {}
    for keyword in REQUIRED_UIDS:
        try:
            value = str(ds.get(keyword, "") or "").strip().rstrip("\x00")
        except Exception:
            raise UnreadableDataset(f"{keyword} cannot be decoded") from None
        _require_uid(keyword, value)
        values[keyword] = value
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not syntax:
        raise UnreadableDataset("file meta has no TransferSyntaxUID")
    try:
        modality = str(ds.get("Modality", "") or "").strip()[:16] or None
    except Exception:
        modality = None
    return Identifiers(
        values["StudyInstanceUID"],
        values["SeriesInstanceUID"],
        values["SOPInstanceUID"],
        values["SOPClassUID"],
        syntax,
        modality,
    )


def _check_complete(ds: Dataset, raw: bytes) -> None:
    """Refuse a stream cut short: walk every top-level element and check it lies inside it."""
    meta = ds.file_meta
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    group_length = meta.get("FileMetaInformationGroupLength")
    if syntax == DeflatedExplicitVRLittleEndian or group_length is None or not syntax.is_transfer_syntax:
        return
    fp = BytesIO(raw)
    fp.seek(PREAMBLE_AND_PREFIX + GROUP_LENGTH_ELEMENT + int(group_length))
    for _ in _top_level_elements(fp, syntax, len(raw)):
        pass


def _spool_failed(exc: OSError) -> str:
    return f"spool write failed ({exc.__class__.__name__} errno {exc.errno})"


class InstanceStore:
    """Turns received bytes into a durable spool file and a catalog row, or a failure status."""

    def __init__(self, spool: Spool, engine: Engine, mapper: UIDMapper) -> None:
        self.spool = spool
        self.engine = engine
        self.mapper = mapper
        self._stager = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-stage")

    def store(
        self,
        raw: bytes,
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
        return result

    def _store(
        self,
        raw: bytes,
        calling_aet: str | None,
        affected_sop_class: str | None,
        affected_sop_instance: str | None,
        staged: StagingFile | None,
    ) -> StoreResult:
        try:
            ids = read_identifiers(raw)
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
            return StoreResult(StoreStatus.OUT_OF_RESOURCES, _spool_failed(exc), study, sop)
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
