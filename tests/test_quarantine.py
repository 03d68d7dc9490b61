"""The quarantine: originals encrypted at rest, and the operator's list, show, release, purge."""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydicom import dcmread
from sqlalchemy import select, update

from apolo_node import config as config_mod
from apolo_node.catalog.models import Audit, Instance
from apolo_node.catalog.records import list_studies
from apolo_node.config import Config
from apolo_node.deid import quarantine as quarantine_mod
from apolo_node.deid.quarantine import MAGIC, Quarantine, QuarantineError, quarantine_key
from apolo_node.deid import Deidentifier
from apolo_node.pipeline.deidentify import run_once
from apolo_node.spool import Spool
from tests.nodes import apolo, upgraded_engine
from tests.synthetic import new_marker, undecodable_capture, write_study


def _tokens(blob: bytes) -> list[bytes]:
    assert blob.startswith(MAGIC)
    out, at = [], len(MAGIC)
    while at < len(blob):
        (n,) = struct.unpack_from(">I", blob, at)
        out.append(blob[at + 4 : at + 4 + n])
        at += 4 + n
    return out


def _join(tokens: list[bytes]) -> bytes:
    return MAGIC + b"".join(struct.pack(">I", len(t)) + t for t in tokens)


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Quarantine:
    monkeypatch.setattr(quarantine_mod, "CHUNK", 1000)  # several chunks from a small file
    return Quarantine(tmp_path / "spool", Fernet.generate_key())


def _kept(box: Quarantine, tmp_path: Path, data: bytes) -> str:
    original = tmp_path / "original.dcm"
    original.write_bytes(data)
    return box.keep("2.25.1", "2.25.2", original)


def test_an_original_is_kept_encrypted_in_chunks_and_read_back_whole(box: Quarantine, tmp_path: Path) -> None:
    marker = new_marker()
    data = (marker.encode() + bytes(range(256))) * 40  # ~10 KB: 11 chunks of 1000 bytes
    relative = _kept(box, tmp_path, data)
    assert relative == "quarantine/2.25.1/2.25.2.dcm.enc"
    blob = (box.root / relative).read_bytes()
    assert marker.encode() not in blob and len(_tokens(blob)) == 11
    assert box.read(relative) == data
    assert [len(c) for c in box.chunks(relative)][:2] == [1000, 1000]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert box.read(box.keep("2.25.1", "2.25.3", empty)) == b""


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda t, other: [t[1], t[0], *t[2:]], r"chunk 0 is out of place"),
        (lambda t, other: t[:-1], r"cut short \(chunk 10 missing\)"),
        (lambda t, other: t[:3], r"cut short \(chunk 3 missing\)"),
        (lambda t, other: [*t[:2], other[2], *t[3:]], r"chunk 2 is out of place"),
        (lambda t, other: [*t[:4], t[4][:-1] + b"A", *t[5:]], r"chunk 4 was altered"),
    ],
    ids=["reordered", "last-chunk-dropped", "cut-after-3", "spliced-from-another-file", "altered"],
)
def test_a_tampered_file_is_refused_on_reading(box: Quarantine, tmp_path: Path, tamper, match: str) -> None:
    data = bytes(range(256)) * 40
    relative = _kept(box, tmp_path, data)
    other = box.keep("2.25.1", "2.25.9", tmp_path / "original.dcm")  # same bytes, another file id
    path = box.root / relative
    path.write_bytes(_join(tamper(_tokens(path.read_bytes()), _tokens((box.root / other).read_bytes()))))
    with pytest.raises(QuarantineError, match=match):
        box.read(relative)


def test_a_file_is_refused_with_another_key_or_with_bytes_after_it(box: Quarantine, tmp_path: Path) -> None:
    relative = _kept(box, tmp_path, b"x" * 2500)
    stranger = Quarantine(box.root, Fernet.generate_key())
    with pytest.raises(QuarantineError, match=r"does not open with this key"):
        stranger.read(relative)
    path = box.root / relative
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(QuarantineError, match=r"bytes after its last chunk"):
        box.read(relative)
    with pytest.raises(QuarantineError, match=r"not a path inside the quarantine"):
        box.read("incoming/2.25.1/2.25.2.dcm")
    with pytest.raises(QuarantineError, match=r"pseudonymous UIDs only"):
        box.keep("../x", "2.25.2", tmp_path / "original.dcm")


def test_the_key_is_the_vault_key_when_set_else_derived_from_the_deid_key(tmp_path: Path) -> None:
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    derived = quarantine_key(cfg)
    assert derived == quarantine_key(cfg), "the same key across restarts"
    assert derived != quarantine_key(make_config(tmp_path / "other"))
    vault = Fernet.generate_key().decode()
    with_vault = config_mod.replace(cfg, deid={"vault_key": vault})
    assert quarantine_key(with_vault) == vault.encode()


def _study_with_a_poison_instance(tmp_path: Path) -> tuple[list[Path], str]:
    """Three CT slices and one US whose pixels cannot be decoded for the burned-in text scan."""
    study = write_study(tmp_path / "in", series=1, per_series=3)
    [marker] = study.markers
    undecodable_capture(dcmread(study.files[0])).save_as(study.files[0])
    return study.files, marker


def test_the_operator_lists_shows_releases_and_purges_without_seeing_a_value(cfg: Config, tmp_path: Path) -> None:
    files, marker = _study_with_a_poison_instance(tmp_path)
    apolo(cfg, "db", "upgrade").check_returncode()
    ingested = apolo(cfg, "ingest", str(tmp_path / "in"), "--json")
    assert ingested.returncode == 0, ingested.stderr

    listed = apolo(cfg, "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["state"] == "quarantined" and "burned-in text scan failed" in row["reason"]
    assert row["modality"] == "US" and row["quarantined_at"]
    sop = row["sop_instance_uid"]
    shown = apolo(cfg, "quarantine", "show", sop)
    assert shown.returncode == 0 and "burned-in text scan failed" in shown.stdout
    table = apolo(cfg, "quarantine", "list")
    assert sop in table.stdout, "the UID is shown whole, to copy into release or purge"
    [kept] = [p for p in (cfg.spool_root / "quarantine").rglob("*") if p.is_file()]
    assert marker.encode() not in kept.read_bytes()
    assert not list((cfg.spool_root / "incoming").rglob("*.dcm")), "no clear copy is left"

    # Released as it is, it fails the same check again and comes back, encrypted.
    released = apolo(cfg, "quarantine", "release", sop, "--json")
    assert released.returncode == 0, released.stderr
    assert json.loads(released.stdout) == {"released": [sop]}
    engine = upgraded_engine(cfg)
    try:
        def where() -> tuple[str, str]:
            with engine.connect() as conn:
                return tuple(conn.execute(
                    select(Instance.state, Instance.path).where(Instance.sop_instance_uid == sop)
                ).one())

        state, path = where()
        assert (state, path.startswith("incoming/")) == ("received", True), "waits for its job"
        assert [s.status for s in list_studies(engine)] == ["queued"]
        assert marker.encode() in (cfg.spool_root / path).read_bytes(), "the original, whole"
        spool = Spool(cfg.spool_root)
        assert run_once(cfg, engine, spool, Deidentifier.from_config(cfg), "test-worker")
        state, path = where()
        assert (state, path) == ("quarantined", kept.relative_to(cfg.spool_root).as_posix())
        assert [s.status for s in list_studies(engine)] == ["deidentified"]
        assert not list((cfg.spool_root / "incoming").rglob("*.dcm"))

        for out in (listed.stdout, shown.stdout, table.stdout, released.stdout):
            assert marker not in out
        purge_usage = apolo(cfg, "quarantine", "purge")
        assert purge_usage.returncode == 2 and "--expired" in purge_usage.stderr
        unknown = apolo(cfg, "quarantine", "release", "2.25.42")
        assert unknown.returncode == 2 and "not in the catalog" in unknown.stderr
        with engine.connect() as conn:
            audit = conn.execute(select(Audit.action, Audit.detail, Audit.studies)).all()
        assert [(a, d) for a, d, _ in audit] == [("release", f"instance {sop}")]
        assert all(marker not in s for _, _, s in audit)
    finally:
        engine.dispose()


def test_purge_by_name_and_by_retention_leaves_purged_rows_and_an_audit(cfg: Config, tmp_path: Path) -> None:
    files, marker = _study_with_a_poison_instance(tmp_path)
    undecodable_capture(dcmread(files[1])).save_as(files[1])
    apolo(cfg, "db", "upgrade").check_returncode()
    assert apolo(cfg, "ingest", str(tmp_path / "in")).returncode == 0
    rows = json.loads(apolo(cfg, "quarantine", "list", "--json").stdout)
    assert len(rows) == 2
    first, old = rows[0]["sop_instance_uid"], rows[1]["sop_instance_uid"]

    engine = upgraded_engine(cfg)
    try:
        with engine.begin() as conn:  # one of them waited longer than the retention period
            conn.execute(update(Instance).where(Instance.sop_instance_uid == old).values(
                quarantined_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31)
            ))
        expired = apolo(cfg, "quarantine", "purge", "--expired", "--json")
        assert json.loads(expired.stdout) == {"purged": [old]}, expired.stderr
        named = apolo(cfg, "quarantine", "purge", first, "--json")
        assert json.loads(named.stdout) == {"purged": [first]}, named.stderr
        assert not [p for p in (cfg.spool_root / "quarantine").rglob("*") if p.is_file()]
        assert json.loads(apolo(cfg, "quarantine", "list", "--json").stdout) == []
        with_purged = json.loads(apolo(cfg, "quarantine", "list", "--json", "--purged").stdout)
        assert sorted(r["state"] for r in with_purged) == ["purged", "purged"]
        twice = apolo(cfg, "quarantine", "purge", first)
        assert twice.returncode == 2 and "is purged, not quarantined" in twice.stderr
        with engine.connect() as conn:
            audit = conn.execute(select(Audit.action, Audit.detail).order_by(Audit.id)).all()
        assert audit == [("purge", "1 instances (retention period)"), ("purge", "1 instances (operator)")]
    finally:
        engine.dispose()


def test_a_clear_original_left_by_a_crash_beside_its_quarantined_copy_is_deleted_at_start(
    cfg: Config, tmp_path: Path
) -> None:
    from apolo_node.pipeline.node import Node, reconcile_spool

    files, marker = _study_with_a_poison_instance(tmp_path)
    apolo(cfg, "db", "upgrade").check_returncode()
    assert apolo(cfg, "ingest", str(tmp_path / "in")).returncode == 0
    [row] = json.loads(apolo(cfg, "quarantine", "list", "--json").stdout)
    spool = Spool(cfg.spool_root)
    left = spool.root / spool.relative_path(row["study_uid"], row["sop_instance_uid"])
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(files[0].read_bytes())  # as if the node died before removing it
    node = Node(cfg)
    try:
        reconcile_spool(node.spool, node.engine, node.store)
    finally:
        node.engine.dispose()
    assert not left.exists()
    assert json.loads(apolo(cfg, "quarantine", "list", "--json").stdout)[0]["state"] == "quarantined"
