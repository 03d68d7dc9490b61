"""Per-patient pseudonyms: the same original Patient ID always gives the same values.

Everything here is an HMAC-SHA256 of the original Patient ID under the ``[deid] key``, each use
under its own label, so a pseudonym never contains or reveals any original value and nodes that
share the key agree on it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pydicom.dataset import Dataset

# Consonants only: a pseudonym holds no digits (unlike most real IDs) and spells no words.
_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
PSEUDONYM_PREFIX = "ANON"


def keyed_digest(key: bytes, label: str, value: str) -> bytes:
    """HMAC-SHA256 of ``value`` under ``key``, separated from other uses by ``label``."""
    return hmac.new(key, label.encode("ascii") + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()


def _letters(digest: bytes, count: int) -> str:
    number = int.from_bytes(digest, "big")
    out = []
    for _ in range(count):
        number, rest = divmod(number, len(_ALPHABET))
        out.append(_ALPHABET[rest])
    return "".join(out)


def patient_key(ds: Dataset) -> str:
    """What identifies the patient for pseudonyms and the date shift.

    The original Patient ID; where it is empty, the Study Instance UID (each such study then
    stands for its own patient), and failing both the empty string.
    """
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return "id:" + pid
    return "study:" + str(ds.get("StudyInstanceUID", "") or "").strip()


@dataclass(frozen=True)
class PatientPseudonym:
    """The Patient's Name and Patient ID written in place of the originals."""

    patient_id: str
    patient_name: str

    @classmethod
    def derive(cls, key: bytes, patient_key: str) -> PatientPseudonym:
        """Keyed pseudonym for a patient key from :func:`patient_key`."""
        letters = _letters(keyed_digest(key, "patient", patient_key), 16)
        return cls(patient_id=f"{PSEUDONYM_PREFIX}{letters}", patient_name=f"{PSEUDONYM_PREFIX}^{letters[:10]}")
