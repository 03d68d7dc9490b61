"""What a clinician allowed to open the vault may see of the original study: its accession number
and its real Study Date.

Only for users who hold the vault key (``[deid] vault_key``); every reveal is audited by the
caller (who, when, which studies; never the value shown).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset

from apolo_node.deid.vault import Vault, VaultError


def originals(vault: Vault, study_uids: Iterable[str]) -> Iterator[tuple[str, Dataset | None]]:
    """Each pseudonymous study with its original Patient/Study module (None when the vault has none)."""
    for study_uid in dict.fromkeys(study_uids):
        instances = vault.instances(study_uid)
        if not instances:
            yield study_uid, None
            continue
        try:
            yield study_uid, vault.get(study_uid, instances[0]).patient_study_dataset()
        except VaultError:
            yield study_uid, None


def accession_numbers(vault: Vault, study_uids: Iterable[str]) -> dict[str, str | None]:
    """The original Accession Number of each pseudonymous study (None when the vault has none)."""
    out: dict[str, str | None] = {}
    for study_uid, original in originals(vault, study_uids):
        value = str(original.get("AccessionNumber", "") or "").strip() if original is not None else ""
        out[study_uid] = value or None
    return out


def study_dates(vault: Vault, study_uids: Iterable[str]) -> dict[str, dt.date | None]:
    """The original Study Date of each pseudonymous study (None when the vault has none or it is no date)."""
    out: dict[str, dt.date | None] = {}
    for study_uid, original in originals(vault, study_uids):
        value = str(original.get("StudyDate", "") or "").strip() if original is not None else ""
        try:
            out[study_uid] = dt.datetime.strptime(value, "%Y%m%d").date() if value else None
        except ValueError:
            out[study_uid] = None
    return out
