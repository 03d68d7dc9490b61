"""``apolo-node deid IN OUT``: de-identify files and folders with the configured profile.

Each DICOM file is read (any transfer syntax), cleaned, checked by :func:`verify_deidentified`
and only then written, atomically, as ``OUT/<study>/<series>/<instance>.dcm`` with pseudonymous
UIDs as the only names. A file that
cannot be read, cleaned or verified is never written to OUT: it is reported, with a reason that
holds no PHI, and copied to the quarantine folder when the caller gives one. Pixel Data passes
through untouched, except in instances whose pixels policy says to scan
(:func:`pixel_scan_reason`): their burned-in text is blacked out first
(:func:`redact_burned_in_text`), or the instance is refused.

Hostile input is normal input: a file whose sequences nest deeper than ``[deid] max_depth`` is
quarantined from its bytes, before pydicom (which recurses) reads it. Inputs that share a SOP
Instance UID (one image in several encodings) would be written to one path, each over the
last: the first written is kept and each later one is skipped with the reason
:data:`DUPLICATE_REASON`, as a PACS keeps the instance it already holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from pydicom import dcmread
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from apolo_node.config import Config
from apolo_node.durable import sync_filesystem, temp_beside, write_file
from apolo_node.deid.actions import Deidentifier
from apolo_node.deid.depth import TooDeep, check_depth, check_file_depth
from apolo_node.deid.burnedin import BurnedInTextError, redact_burned_in_text
from apolo_node.deid.overlays import EmbeddedOverlayError, clear_embedded_overlays
from apolo_node.deid.pixels import pixel_scan_reason
from apolo_node.deid.profile import Option
from apolo_node.deid.verify import Original, PHILeakError, encode, snapshot, verify_deidentified

MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"
DUPLICATE_REASON = "duplicate SOP Instance UID of an input already written"


class DeidError(Exception):
    """An instance could not be de-identified; the message holds no PHI."""


@dataclass(frozen=True)
class CleanInstance:
    """One de-identified instance, verified, with the bytes to write and where they go.

    ``dataset`` is None once it has crossed from a worker process: the bytes are the instance,
    and the catalog's few values (``study_date``, ``body_part``) travel beside them.
    """

    dataset: Dataset | None
    encoded: bytes
    relative_path: Path  # <study>/<series>/<sop>.dcm, pseudonymous UIDs only
    study_date: dt.date | None = None  # the cleaned (shifted) Study Date, when valid
    body_part: str | None = None


def study_date(ds: Dataset) -> dt.date | None:
    """The cleaned instance's (shifted) Study Date, if it has a valid one."""
    value = str(ds.get("StudyDate", "") or "")
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def body_part(ds: Dataset) -> str | None:
    value = str(ds.get("BodyPartExamined", "") or "").strip()
    return value or None


@dataclass(frozen=True)
class FileOutcome:
    """What became of one input file. ``source`` is the caller's own path, shown only to them."""

    source: Path
    status: Literal["written", "quarantined", "skipped"]
    reason: str = ""  # never holds a value from the file
    output: Path | None = None


@dataclass
class DeidSummary:
    """Counts and per-file outcomes of one ``deid`` run."""

    written: int = 0
    quarantined: int = 0
    skipped: int = 0
    outcomes: list[FileOutcome] = field(default_factory=list)

    def add(self, outcome: FileOutcome) -> None:
        self.outcomes.append(outcome)
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)

    @property
    def reasons(self) -> dict[Path, str]:
        """Source path -> reason, for the files not written."""
        return {o.source: o.reason for o in self.outcomes if o.status != "written"}


def clean_instance(ds: Dataset, deidentifier: Deidentifier, *, consume: bool = False) -> CleanInstance:
    """De-identify, encode and verify one instance; raise DeidError (no PHI) on any failure.

    ``consume`` lets the cleaning change ``ds`` itself rather than a copy (the caller read it
    and will not use it again); the verifier then works from a snapshot of its values.
    """
    try:
        check_depth(ds, deidentifier.max_depth)  # before anything that recurses
    except TooDeep as exc:
        raise DeidError(str(exc)) from None
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise DeidError(f"{keyword} is missing or empty; the instance cannot be named")
    days = deidentifier.date_shift(ds)
    try:
        original: Dataset | Original = snapshot(ds, deidentifier.profile) if consume else ds
    except Exception as exc:  # pydicom messages may quote values: keep only the kind
        raise DeidError(f"could not read the values to verify: {type(exc).__name__}") from None
    try:
        ds = clear_embedded_overlays(ds)  # before the profile removes the 60xx groups
    except EmbeddedOverlayError as exc:
        raise DeidError(str(exc)) from None
    reason = pixel_scan_reason(ds)
    if reason is not None:
        if Option.CLEAN_PIXEL_DATA not in deidentifier.profile.options:
            raise DeidError(
                f"pixels need a burned-in text scan ({reason}) but [deid] options lack "
                "clean_pixel_data"
            )
        try:
            ds, _boxes = redact_burned_in_text(ds)
        except BurnedInTextError as exc:
            raise DeidError(f"burned-in text scan failed: {exc}") from None
    try:
        out = deidentifier(ds, in_place=consume)
        encoded = encode(out)
    except Exception as exc:  # pydicom messages may quote values: keep only the kind
        raise DeidError(f"could not de-identify: {type(exc).__name__}") from None
    try:
        verify_deidentified(
            original, out, deidentifier.profile, encoded, days=days
        )
    except PHILeakError as exc:  # its message names tags and paths only
        raise DeidError(str(exc)) from None
    except Exception as exc:
        raise DeidError(f"could not verify: {type(exc).__name__}") from None
    path = Path(str(out.StudyInstanceUID), str(out.SeriesInstanceUID), f"{out.SOPInstanceUID}.dcm")
    return CleanInstance(out, encoded, path, study_date(out), body_part(out))


def read_instance(path: Path, max_depth: int) -> Dataset:
    """``dcmread`` of a Part 10 file, once its bytes show sequences no deeper than ``max_depth``.

    Raises :class:`TooDeep` before pydicom (whose reader recurses) sees a deeper file.
    """
    check_file_depth(path, max_depth)
    return dcmread(path)


def clean_file(path: Path, deidentifier: Deidentifier) -> CleanInstance:
    """Read (depth checked first), de-identify, encode and verify a spooled instance.

    Any failure, a file that is no instance included, is a DeidError naming the rule.
    """
    result = examine_file(path, deidentifier)
    if isinstance(result, Skip):
        raise DeidError(result.reason)
    return result


@dataclass(frozen=True)
class Skip:
    """A file that is not an instance to de-identify, and why (no PHI)."""

    reason: str


def examine_file(source: Path, deidentifier: Deidentifier) -> CleanInstance | Skip:
    """One input of ``deid IN OUT``, in a worker: skip what is not an instance, else clean it.

    DeidError (quarantine) for an instance that cannot be read, cleaned or verified.
    """
    with disable_value_validation():  # pydicom's warnings quote the invalid (identifying) value
        try:
            ds = read_instance(source, deidentifier.max_depth)
        except TooDeep as exc:
            raise DeidError(str(exc)) from None
        except InvalidDicomError:
            return Skip("not a DICOM Part 10 file")
        except Exception as exc:
            raise DeidError(f"unreadable: {type(exc).__name__}") from None
        if str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY_STORAGE:
            return Skip("DICOMDIR (media directory), not an instance")
        return clean_instance(ds, deidentifier, consume=True)


@dataclass(frozen=True)
class Staged:
    """A verified instance a worker wrote next to its place in OUT, for the parent to rename."""

    relative_path: Path  # <study>/<series>/<sop>.dcm under OUT
    staged: Path  # a hidden temporary file in the same folder


@dataclass(frozen=True)
class StageInto:
    """The worker's task for ``deid IN OUT``: examine a file and write the clean bytes under
    ``out_dir`` itself, so only a path crosses back to the parent (not half a megabyte)."""

    out_dir: Path

    def __call__(self, source: Path, deidentifier: Deidentifier) -> Staged | Skip:
        result = examine_file(source, deidentifier)
        if isinstance(result, Skip):
            return result
        target = self.out_dir / result.relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = temp_beside(target)
        write_file(staged, result.encoded, mode=0o644, fsync=False)  # one flush for the run
        return Staged(result.relative_path, staged)


def deidentify_paths(
    inputs: list[Path], out_dir: Path, cfg: Config, quarantine_dir: Path | None = None,
    deidentifier: Deidentifier | None = None,
) -> DeidSummary:
    """De-identify every file under ``inputs`` into ``out_dir``; see the module docstring.

    Non-DICOM files (and DICOMDIRs) are skipped; unreadable or unverifiable ones quarantined.
    Files are cleaned by ``[deid] processes`` worker processes under ``instance_timeout``, with
    ``deidentifier`` (by default the configured one) and reported in input order.
    """
    from apolo_node.deid.isolate import IsolatedCleaner, process_count  # it imports this module

    deidentifier = deidentifier or Deidentifier.from_config(cfg)
    summary = DeidSummary()
    out_dir = Path(out_dir)
    avoid = [p.resolve() for p in (out_dir, quarantine_dir) if p is not None]
    written: set[Path] = set()  # outputs of this run: a second input for one is not written
    # Forked workers start at once with everything imported; only safe with no other thread.
    start = "fork" if threading.active_count() == 1 and hasattr(os, "fork") else "spawn"
    with IsolatedCleaner(
        deidentifier, cfg.deid.instance_timeout, process_count(cfg), task=StageInto(out_dir),
        start_method=start,
    ) as cleaner:
        try:
            for source, result in cleaner.clean_all((p, p) for p in _files(inputs, avoid)):
                outcome = _settle(source, result, out_dir, quarantine_dir, written)
                if outcome.status == "written" and outcome.output is not None:
                    written.add(outcome.output)
                summary.add(outcome)
        finally:
            if written:  # the files and their renames, flushed once for the whole run
                sync_filesystem(out_dir)
    return summary


def _files(inputs: list[Path], avoid: list[Path]) -> Iterator[Path]:
    for top in inputs:
        top = Path(top)
        if top.is_file():
            yield top
            continue
        if not top.is_dir():
            raise FileNotFoundError(f"input {top} is neither a file nor a folder")
        for folder, dirs, names in os.walk(top):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in avoid)
            for name in sorted(names):
                yield here / name


def _settle(
    source: Path, result: Staged | Skip | DeidError, out_dir: Path,
    quarantine: Path | None, written: set[Path],
) -> FileOutcome:
    """Put in place, skip or quarantine one input after its worker's answer."""
    if isinstance(result, DeidError):
        return _quarantine(source, str(result), quarantine)
    if isinstance(result, Skip):
        return FileOutcome(source, "skipped", result.reason)
    target = out_dir / result.relative_path
    if target in written:
        result.staged.unlink(missing_ok=True)
        return FileOutcome(source, "skipped", DUPLICATE_REASON, output=target)
    os.replace(result.staged, target)
    return FileOutcome(source, "written", output=target)


def _quarantine(source: Path, reason: str, quarantine: Path | None) -> FileOutcome:
    """Report a file not written; copy it and a reason file into ``quarantine`` if given.

    The copy is named by a hash of its bytes, never by its (possibly identifying) name.
    """
    if quarantine is None:
        return FileOutcome(source, "quarantined", reason)
    quarantine.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:32]
    target = quarantine / f"{digest}.dcm"
    shutil.copyfile(source, target)
    (quarantine / f"{digest}.reason.txt").write_text(f"{reason}\n", encoding="utf-8")
    return FileOutcome(source, "quarantined", reason, output=target)
