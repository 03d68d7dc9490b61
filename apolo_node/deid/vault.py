"""The vault: what it takes to send a result back to the right patient, encrypted at rest.

Kept only when sending back is enabled. For each cleaned instance one Fernet token (AES-128-CBC
+ HMAC-SHA256, from the ``cryptography`` package) holding the original Study, Series and SOP
Instance UIDs and the original Patient and General Study module attributes, in
``<spool>/vault/<pseudonymous study>/<pseudonymous sop>.bin``. The key comes from
``[deid] vault_key`` (``APOLO_DEID__VAULT_KEY``), never from a file of the repository. Only the
``send`` stage opens it (a test holds that import boundary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydicom.dataset import Dataset

from apolo_node.config import Config, ConfigError
from apolo_node.durable import write_atomic
from apolo_node.pseudonym import usable_as_name

VAULT = "vault"

# PS3.3 C.7.1.1 Patient and C.7.2.1 General Study: what a result sent back must carry.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)


class VaultError(RuntimeError):
    """The vault cannot be opened or an entry cannot be read; the message holds no PHI."""


@dataclass(frozen=True)
class VaultEntry:
    """One instance's originals: its UIDs and the Patient/Study module as DICOM JSON."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    patient_study: dict[str, object] = field(default_factory=dict)

    def patient_study_dataset(self) -> Dataset:
        return Dataset.from_json(self.patient_study)


def vault_key(cfg: Config) -> bytes:
    """The Fernet key from ``[deid] vault_key``; sending back needs one, so refuse without it."""
    key = cfg.deid.vault_key.strip()
    if not key:
        raise ConfigError(
            "[deid] vault_key is empty but [send] enabled is true: set APOLO_DEID__VAULT_KEY to a "
            "Fernet key (python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        )
    try:
        Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ConfigError("[deid] vault_key is not a Fernet key (32 url-safe base64 bytes)") from None
    return key.encode("ascii")


class Vault:
    """Encrypted originals under ``<root>/vault``; writes are fsynced and atomic."""

    def __init__(self, root: Path, key: bytes) -> None:
        self.folder = Path(root) / VAULT
        self._fernet = Fernet(key)

    @classmethod
    def from_config(cls, cfg: Config) -> Vault:
        return cls(cfg.spool_root, vault_key(cfg))

    def __repr__(self) -> str:
        return f"Vault({self.folder}, <key hidden>)"

    def _path(self, pseudo_study: str, pseudo_sop: str) -> Path:
        for uid in (pseudo_study, pseudo_sop):
            if not usable_as_name(uid):
                raise VaultError("vault entries are named by pseudonymous UIDs only")
        return self.folder / pseudo_study / f"{pseudo_sop}.bin"

    def put(self, pseudo_study: str, pseudo_sop: str, original: Dataset) -> None:
        """Keep ``original``'s UIDs and Patient/Study module for a cleaned instance."""
        module = Dataset()
        for keyword in PATIENT_STUDY_KEYWORDS:
            if keyword in original:
                module[keyword] = original[keyword]
        entry = {
            "study_uid": str(original.StudyInstanceUID),
            "series_uid": str(original.SeriesInstanceUID),
            "sop_instance_uid": str(original.SOPInstanceUID),
            "patient_study": module.to_json_dict(),
        }
        token = self._fernet.encrypt(json.dumps(entry).encode("utf-8"))
        write_atomic(self._path(pseudo_study, pseudo_sop), token)

    def get(self, pseudo_study: str, pseudo_sop: str) -> VaultEntry:
        """The originals of one instance; VaultError if absent or not readable with this key."""
        path = self._path(pseudo_study, pseudo_sop)
        try:
            raw = self._fernet.decrypt(path.read_bytes())
        except FileNotFoundError:
            raise VaultError(f"no vault entry for instance {pseudo_sop}") from None
        except InvalidToken:
            raise VaultError(
                f"vault entry for instance {pseudo_sop} does not open with this key"
            ) from None
        data = json.loads(raw)
        return VaultEntry(
            data["study_uid"], data["series_uid"], data["sop_instance_uid"], data["patient_study"]
        )

    def instances(self, pseudo_study: str) -> list[str]:
        """Pseudonymous SOP Instance UIDs the vault holds for a study."""
        folder = self.folder / pseudo_study
        return sorted(p.stem for p in folder.glob("*.bin")) if folder.is_dir() else []
