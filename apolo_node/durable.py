"""Files that are whole or absent after a crash: write to a temporary name, fsync, rename,
fsync the folder. Shared by the spool, the vault and ``apolo-node deid``."""

from __future__ import annotations

import ctypes
import os
import secrets
from pathlib import Path

SYNC_FILE_RANGE_WRITE = 2


def _libc(name: str, *argtypes: type) -> object | None:
    """A Linux system call from the C library, or None where there is none (not Linux)."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


# not Linux: fsync alone does the work, and os.sync that of syncfs
_SYNC_FILE_RANGE = _libc("sync_file_range", ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
_SYNCFS = _libc("syncfs", ctypes.c_int)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting (Linux's
    ``sync_file_range``), so that the fsync which must follow has less left to wait for.
    Only a hint: durability still comes from the fsync."""
    if _SYNC_FILE_RANGE is not None and length > 0:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)  # type: ignore[operator]


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush every file and folder entry of the filesystem holding ``path`` to disk at once.

    For a batch of files written with ``fsync=False``: one flush instead of two per file.
    Linux's ``syncfs``; elsewhere ``os.sync`` (every filesystem).
    """
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:  # type: ignore[operator]
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int = 0o600, fsync: bool = True) -> None:
    """Create ``path`` (it must not exist) holding ``data``, fsynced; removed again on error.

    ``fsync=False`` leaves the flush to one :func:`sync_filesystem` after a whole batch, and
    only starts the writing back (so that flush has little left to wait for).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
            else:  # the disk starts on it now, while the caller works on the next file
                start_writeback(fd, 0, len(data))
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def temp_beside(target: Path) -> Path:
    """A fresh hidden name in ``target``'s folder, to write to and then rename over ``target``
    (same filesystem, so the rename is atomic)."""
    return target.with_name(f".{secrets.token_hex(8)}.tmp")


def write_atomic(target: Path, data: bytes, mode: int = 0o600) -> Path:
    """Replace ``target`` with ``data`` durably: readers see the old file or the new, never half."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = temp_beside(target)
    write_file(tmp, data, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target
