"""Keyed pseudonyms for DICOM UIDs, shared by the receiver and the de-identifier.

The same original UID always maps to the same ``2.25.<decimal>`` UID under the same key: across
studies, restarts and nodes that share the key (PS3.15 Annex E "U" action, PS3.5 B.2 UUID root).
The catalog, file names and logs only ever hold these pseudonyms, never an original UID.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from apolo_node.config import Config, ConfigError

UUID_ROOT = "2.25."
MIN_KEY_BYTES = 16


class UIDMapper:
    """HMAC-SHA256 of the original UID, 128 bits of it written as a 2.25 UID."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"[deid] key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}"
            )
        self._key = bytes(key)

    def __call__(self, uid: str) -> str:
        """The pseudonymous UID for ``uid`` (whitespace and trailing NUL padding ignored)."""
        clean = str(uid).strip().rstrip("\x00")
        if not clean:
            raise ValueError("cannot pseudonymise an empty UID")
        digest = hmac.new(self._key, b"uid\x00" + clean.encode("ascii", "replace"), hashlib.sha256)
        return UUID_ROOT + str(int.from_bytes(digest.digest()[:16], "big"))

    def __repr__(self) -> str:  # never show the key
        return "UIDMapper(<key hidden>)"


def usable_as_name(uid: str) -> bool:
    """Whether a (pseudonymous) UID may name a file or folder: nothing that walks out of its
    folder or hides in it (the spool, the vault and the quarantine name files by UIDs only)."""
    return bool(uid) and "/" not in uid and "\\" not in uid and not uid.startswith(".")


def load_key(cfg: Config) -> bytes:
    """The de-identification key: ``[deid] key``, else the key file, made (0600) on first use."""
    if cfg.deid.key:
        return cfg.deid.key.encode("utf-8")
    path = Path(cfg.deid.key_file).expanduser() if cfg.deid.key_file else (
        cfg.spool_root / "secrets" / "deid.key"
    )
    if not path.exists():
        if cfg.deid.key_file:
            raise ConfigError(f"[deid] key_file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_hex(32).encode("ascii"))
            fh.flush()
            os.fsync(fh.fileno())
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"[deid] key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} needed")
    return key


def mapper(cfg: Config) -> UIDMapper:
    """The UID mapper for this configuration's key."""
    return UIDMapper(load_key(cfg))
