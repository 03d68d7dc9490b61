"""What a clinician allowed to open the vault may see of the original study: its accession number.

Only for users who hold the vault key (``[deid] vault_key``); every reveal is audited by the
caller (who, when, which studies; never the value shown).
"""

from __future__ import annotations

from collections.abc import Iterable

from apolo_node.deid.vault import Vault, VaultError


def accession_numbers(vault: Vault, study_uids: Iterable[str]) -> dict[str, str | None]:
    """The original Accession Number of each pseudonymous study (None when the vault has none)."""
    out: dict[str, str | None] = {}
    for study_uid in dict.fromkeys(study_uids):
        instances = vault.instances(study_uid)
        if not instances:
            out[study_uid] = None
            continue
        try:
            original = vault.get(study_uid, instances[0]).patient_study_dataset()
        except VaultError:
            out[study_uid] = None
            continue
        value = str(original.get("AccessionNumber", "") or "").strip()
        out[study_uid] = value or None
    return out
