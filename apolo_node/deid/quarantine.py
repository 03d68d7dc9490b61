"""Quarantined originals, encrypted at rest: they hold the PHI that could not be cleaned.

An instance that cannot be de-identified is kept for an operator's review, never passed on and
never left readable: ``<spool>/quarantine/<pseudonymous study>/<pseudonymous sop>.dcm.enc``.
The key is ``[deid] vault_key`` when one is set, else one derived (HKDF-SHA256) from the
de-identification key, so a node without sending back still keeps no original in the clear.

The file is a sequence of Fernet tokens (AES-128-CBC + HMAC-SHA256, from ``cryptography``), one
per chunk of at most ``CHUNK`` bytes, each length-prefixed, so an instance of gigabytes is never
held whole in memory. Each token's plaintext starts with the file's random id, the chunk's index
and a last-chunk flag: chunks cannot be reordered, dropped, cut off or spliced from another file
without :class:`QuarantineError` on reading.
"""

from __future__ import annotations

import base64
import os
import secrets
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from apolo_node.config import Config
from apolo_node.durable import fsync_dir, temp_beside
from apolo_node.pseudonym import load_key, usable_as_name
from apolo_node.spool import QUARANTINE

SUFFIX = ".dcm.enc"
CHUNK = 1 << 20
MAGIC = b"APQ1"
_HEADER = struct.Struct(">16sQ?")  # file id, chunk index, last chunk
_LENGTH = struct.Struct(">I")


class QuarantineError(RuntimeError):
    """A quarantined original cannot be written or read back; the message holds no PHI."""


def quarantine_key(cfg: Config) -> bytes:
    """The Fernet key: ``[deid] vault_key`` if set, else derived from the de-identification key."""
    if cfg.deid.vault_key.strip():
        from apolo_node.deid.vault import vault_key

        return vault_key(cfg)
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"apolo-node quarantine v1"
    ).derive(load_key(cfg))
    return base64.urlsafe_b64encode(derived)


class Quarantine:
    """Encrypted originals under ``<root>/quarantine``; writes are fsynced and atomic."""

    def __init__(self, root: Path, key: bytes) -> None:
        self.root = Path(root)
        self._fernet = Fernet(key)

    @classmethod
    def from_config(cls, cfg: Config) -> Quarantine:
        return cls(cfg.spool_root, quarantine_key(cfg))

    def __repr__(self) -> str:
        return f"Quarantine({self.root / QUARANTINE}, <key hidden>)"

    def relative_path(self, pseudo_study: str, pseudo_sop: str) -> str:
        """``quarantine/<study>/<sop>.dcm.enc``: pseudonymous UIDs are the only names."""
        for uid in (pseudo_study, pseudo_sop):
            if not usable_as_name(uid):
                raise QuarantineError("quarantined files are named by pseudonymous UIDs only")
        return f"{QUARANTINE}/{pseudo_study}/{pseudo_sop}{SUFFIX}"

    def keep(self, pseudo_study: str, pseudo_sop: str, original: Path) -> str:
        """Encrypt the file ``original`` into the quarantine, durably; its spool-relative path.

        The caller deletes ``original`` once the catalog records the quarantine.
        """
        relative = self.relative_path(pseudo_study, pseudo_sop)
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(target)
        try:
            with original.open("rb") as src, tmp.open("wb") as out:
                out.write(MAGIC)
                for token in self._seal(_chunks(src)):
                    out.write(_LENGTH.pack(len(token)))
                    out.write(token)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise QuarantineError(f"cannot write {relative}: {exc.strerror or type(exc).__name__}") from None
        return relative

    def chunks(self, relative: str) -> Iterator[bytes]:
        """The original's bytes, chunk by chunk, each authenticated before it is given out."""
        path = self._inside(relative)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise QuarantineError(f"{relative} is not in the quarantine") from None
        with fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise QuarantineError(f"{relative} is not a quarantined file")
            file_id = None
            for index in range(2**63):
                head = fh.read(_LENGTH.size)
                if len(head) < _LENGTH.size:
                    raise QuarantineError(f"{relative} is cut short (chunk {index} missing)")
                token = fh.read(_LENGTH.unpack(head)[0])
                try:
                    plain = self._fernet.decrypt(token)
                except InvalidToken:
                    raise QuarantineError(
                        f"{relative} does not open with this key (or chunk {index} was altered)"
                    ) from None
                fid, n, last = _HEADER.unpack_from(plain)
                file_id = fid if file_id is None else file_id
                if fid != file_id or n != index:
                    raise QuarantineError(f"{relative}: chunk {index} is out of place")
                yield plain[_HEADER.size:]
                if last:
                    if fh.read(1):
                        raise QuarantineError(f"{relative} has bytes after its last chunk")
                    return

    def read(self, relative: str) -> bytes:
        """The whole original (for release, which writes it back to ``incoming/``)."""
        return b"".join(self.chunks(relative))

    def remove(self, relative: str) -> None:
        path = self._inside(relative)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def _inside(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if (self.root / QUARANTINE).resolve() not in path.parents or not path.name.endswith(SUFFIX):
            raise QuarantineError(f"{relative} is not a path inside the quarantine")
        return path

    def _seal(self, chunks: Iterable[tuple[bytes, bool]]) -> Iterator[bytes]:
        file_id = secrets.token_bytes(16)
        for index, (data, last) in enumerate(chunks):
            yield self._fernet.encrypt(_HEADER.pack(file_id, index, last) + data)


def _chunks(src: object) -> Iterator[tuple[bytes, bool]]:
    """(chunk, is_last) of a binary file; an empty file is one empty last chunk."""
    read = src.read  # type: ignore[attr-defined]
    current = read(CHUNK)
    while True:
        following = read(CHUNK)
        yield current, not following
        if not following:
            return
        current = following
