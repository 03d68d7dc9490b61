"""The vault: originals kept encrypted for sending results back, readable only with its key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydicom import dcmread

from apolo_node.catalog.records import list_studies
from apolo_node.config import ConfigError
from apolo_node.deid.vault import Vault, VaultError, vault_key
from apolo_node.pipeline.node import Node
from apolo_node.pseudonym import UIDMapper
from tests.conftest import make_config
from tests.nodes import running_node, upgraded_engine
from tests.peers import storescu, wait_until
from tests.synthetic import write_study


def test_an_entry_round_trips_and_is_unreadable_without_its_key(tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=1)
    [marker] = study.markers
    original = dcmread(study.files[0])
    key = Fernet.generate_key()
    vault = Vault(tmp_path / "spool", key)
    vault.put("2.25.1", "2.25.2", original)
    [stored] = list((tmp_path / "spool" / "vault").rglob("*.bin"))
    assert marker.encode() not in stored.read_bytes()
    assert original.SOPInstanceUID.encode() not in stored.read_bytes()
    entry = vault.get("2.25.1", "2.25.2")
    assert entry.sop_instance_uid == original.SOPInstanceUID
    assert entry.study_uid == study.study_uid
    module = entry.patient_study_dataset()
    assert module.PatientName == original.PatientName
    assert module.AccessionNumber == original.AccessionNumber
    assert "PixelData" not in module
    assert vault.instances("2.25.1") == ["2.25.2"]
    with pytest.raises(VaultError, match="does not open with this key") as info:
        Vault(tmp_path / "spool", Fernet.generate_key()).get("2.25.1", "2.25.2")
    assert marker not in str(info.value)
    with pytest.raises(VaultError, match="no vault entry"):
        vault.get("2.25.1", "2.25.3")


def test_sending_back_needs_a_vault_key(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, send={"enabled": True})
    upgraded_engine(cfg).dispose()
    with pytest.raises(ConfigError, match="APOLO_DEID__VAULT_KEY"):
        Node(cfg)
    bad = make_config(tmp_path, send={"enabled": True}, deid={"vault_key": "not-a-key"})
    with pytest.raises(ConfigError, match="not a Fernet key"):
        vault_key(bad)


@pytest.mark.usefixtures("need_dcmtk")
def test_with_sending_back_the_node_fills_the_vault_and_keeps_no_readable_original(
    tmp_path: Path,
) -> None:
    key = Fernet.generate_key().decode()
    cfg = make_config(tmp_path, send={"enabled": True})
    cfg = make_config(tmp_path, send={"enabled": True}, deid={"key": cfg.deid.key, "vault_key": key})
    study = write_study(tmp_path / "in", series=1, per_series=3)
    [marker] = study.markers
    mapper = UIDMapper(cfg.deid.key.encode())
    with running_node(cfg) as node:
        storescu(study.files, cfg.receive.port)
        wait_until(
            lambda: [s.status for s in list_studies(node.engine)] == ["reported"],
            what="the study to be de-identified and reported", timeout=60, interval=0.2,
        )
    vault = Vault.from_config(cfg)
    pseudo_study = mapper(study.study_uid)
    assert vault.instances(pseudo_study) == sorted(mapper(s) for s in study.sop_uids)
    for sop in study.sop_uids:
        assert vault.get(pseudo_study, mapper(sop)).sop_instance_uid == sop
    assert list((cfg.spool_root / "incoming").rglob("*.dcm")) == []
    for path in cfg.spool_root.rglob("*"):
        if path.is_file() and path.parent.name != "secrets":
            assert marker.encode() not in path.read_bytes(), f"readable PHI left in {path.name}"
