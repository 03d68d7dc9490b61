"""The spool: its folders, named here only, and incoming files written whole or not at all.

Every stage asks this module where its files go: ``incoming/`` (originals, PHI), ``tmp/``
(instances still arriving), ``clean/`` (de-identified instances), ``quarantine/`` (encrypted
originals that could not be cleaned), ``reports/`` (the vision stage's SRs) and ``results/``
(answers and presentation states on their way back to the PACS).

A file is written under ``tmp/``, fsynced, renamed into ``incoming/<study>/<sop>.dcm`` and the
folder fsynced, so after a crash a file in ``incoming/`` is complete, and ``tmp/`` holds only
scraps of instances that were never acknowledged. Names are pseudonymous UIDs only.
"""

from __future__ import annotations

import mmap
import os
import secrets
import threading
import time
from pathlib import Path

from apolo_node.durable import fsync_dir, start_writeback
from apolo_node.pseudonym import usable_as_name

INCOMING = "incoming"  # originals, as received: the PHI side
TMP = "tmp"
CLEAN = "clean"  # de-identified instances
QUARANTINE = "quarantine"  # encrypted originals that could not be cleaned
REPORTS = "reports"  # the vision stage's TID 1500 SRs
RESULTS = "results"  # answer SRs and presentation states going back to the PACS


TOO_LARGE = "data set is larger than max_instance_size"


class OverLimit(OSError):
    """More was written to a staging file than its limit; the file is already gone."""


def spool_failed(exc: OSError) -> str:
    """The comment answering a write to the spool that failed: the error's kind, never a path."""
    if isinstance(exc, OverLimit):
        return TOO_LARGE
    return f"spool write failed ({exc.__class__.__name__} errno {exc.errno})"


class StagingFile:
    """A file in ``tmp/`` written piece by piece as a data set arrives, its writeback started as
    it goes, so that the fsync after the last piece waits for little more than the journal.

    A write that fails (disk full) is remembered and the pieces after it are dropped; ``finish``
    raises it. Past ``limit`` bytes the file is removed at once and ``OverLimit`` remembered,
    so a peer sending more than we take costs neither disk nor memory. ``discard`` may be
    called at any time, also after ``finish``, and more than once.
    """

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path = path
        self.limit = limit
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._offset = 0
        self._error: OSError | None = None
        self._lock = threading.Lock()  # finish (on the stager thread) and discard never interleave

    def write(self, data: bytes | memoryview) -> None:
        if self._fd is None or self._error is not None:
            return
        view = memoryview(data)
        start = self._offset
        if self.limit is not None and start + len(view) > self.limit:
            self._error = OverLimit(f"staging file over {self.limit} bytes")
            self.discard()
            return
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._offset += written
            start_writeback(self._fd, start, self._offset - start)
        except OSError as exc:
            self._error = exc

    def finish(self) -> Path:
        """Fsync and close; the file is whole on disk, or this raises and nothing is left."""
        with self._lock:
            try:
                if self._error is not None:
                    raise self._error
                if self._fd is None:
                    raise FileNotFoundError(f"staging file {self.path.name} was discarded")
                os.fsync(self._fd)
                self._close()
            except BaseException:
                self._close()
                self.path.unlink(missing_ok=True)
                raise
        return self.path

    def mapped(self) -> mmap.mmap:
        """What was written so far, mapped read-only, so that it can be parsed without being
        read into memory; raises the failed write's error instead. The caller closes the map."""
        if self._error is not None:
            raise self._error
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def discard(self) -> None:
        with self._lock:
            self._close()
            self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Spool:
    """The spool folders under one root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING
        self.tmp = self.root / TMP
        for folder in (self.root, self.incoming, self.tmp):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def relative_path(self, study_uid: str, sop_instance_uid: str) -> str:
        """Where an instance lives, relative to the root (pseudonymous UIDs only)."""
        for uid in (study_uid, sop_instance_uid):
            if not usable_as_name(uid):
                raise ValueError(f"not a pseudonymous UID usable as a file name: {uid!r}")
        return f"{INCOMING}/{study_uid}/{sop_instance_uid}.dcm"

    def write(self, relative: str, data: bytes) -> Path:
        """Write ``data`` durably at ``relative``; on any error nothing is left behind."""
        staged = self.stage(data)
        try:
            return self.place(staged, relative)
        except BaseException:
            self.discard(staged)
            raise

    def stage(self, data: bytes) -> Path:
        """Write ``data`` to a new file in ``tmp/`` and fsync it; the caller places or discards it."""
        staging = self.open_staging()
        staging.write(data)
        return staging.finish()

    def open_staging(self, limit: int | None = None) -> StagingFile:
        """A new file in ``tmp/`` to write a data set into as it arrives (see ``StagingFile``)."""
        return StagingFile(self.tmp / f"{secrets.token_hex(8)}.part", limit)

    def place(self, staged: Path, relative: str) -> Path:
        """Rename a staged file to ``relative`` and fsync its folder: from here it survives a crash."""
        target = self.root / relative
        parent = target.parent
        if not parent.exists():
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fsync_dir(parent.parent)
        os.replace(staged, target)
        fsync_dir(parent)
        return target

    def discard(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def move(self, relative: str, to: str) -> Path:
        """Rename a spooled file within the spool, durably (both folders fsynced)."""
        source = self.root / relative
        target = self.root / to
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(source, target)
        fsync_dir(target.parent)
        fsync_dir(source.parent)
        return target

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def clear_tmp(self, older_than: float = 0.0) -> int:
        """Delete scraps left in ``tmp/`` by a crash (they were never acknowledged), those not
        written to for ``older_than`` seconds: on a spool that several processes or machines
        share, a younger one may be another's file still being written."""
        count = 0
        cutoff = time.time() - older_than
        for scrap in self.tmp.glob("*.part"):
            try:
                if older_than and scrap.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:  # placed or discarded by its writer meanwhile
                continue
            scrap.unlink(missing_ok=True)
            count += 1
        return count

    def incoming_files(self) -> list[str]:
        """Every file in ``incoming/``, relative to the root."""
        return sorted(p.relative_to(self.root).as_posix() for p in self.incoming.glob("*/*.dcm"))

