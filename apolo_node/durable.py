"""Files that are whole or absent after a crash: write to a temporary name, fsync, rename,
fsync the folder. Shared by the spool, the vault and ``apolo-node deid``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (it must not exist) holding ``data``, fsynced; removed again on error."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_atomic(target: Path, data: bytes, mode: int = 0o600) -> Path:
    """Replace ``target`` with ``data`` durably: readers see the old file or the new, never half."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{secrets.token_hex(8)}.tmp")
    write_file(tmp, data, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target
