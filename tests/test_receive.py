"""The SCP over real associations on 127.0.0.1, with dcmtk and pynetdicom as the callers."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import ssl
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select, text

from apolo_node.catalog.models import Instance
from apolo_node.catalog.records import list_studies
from apolo_node.config import Config
from apolo_node.pseudonym import UIDMapper
from tests.conftest import make_config
from tests.nodes import running_node
from tests.peers import echoscu, storescu
from tests.synthetic import write_study

pytestmark = pytest.mark.usefixtures("need_dcmtk")


def catalogued(node) -> int:  # type: ignore[no-untyped-def]
    with node.engine.connect() as conn:
        return int(conn.execute(select(func.count(Instance.id))).scalar_one())


def dataset_bytes_equal(a: bytes, b: bytes) -> bool:
    """The data sets (not the file meta) of two Part 10 streams are element for element equal."""
    return dcmread(BytesIO(a)) == dcmread(BytesIO(b))


def test_a_multi_series_study_from_storescu_is_spooled_and_catalogued_once(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=3, per_series=4)
    mapper = UIDMapper(cfg.deid.key.encode())
    with running_node(cfg) as node:
        storescu(study.files, cfg.receive.port)
        assert catalogued(node) == 12
        for path, sop in zip(study.files, study.sop_uids):
            spooled = cfg.spool_root / "incoming" / mapper(study.study_uid) / f"{mapper(sop)}.dcm"
            assert dataset_bytes_equal(spooled.read_bytes(), path.read_bytes())
        [row] = list_studies(node.engine)
        assert (row.study_uid, row.instances, row.series) == (mapper(study.study_uid), 12, 3)

        storescu(study.files, cfg.receive.port)  # the PACS sends it all again
        assert catalogued(node) == 12
        assert len(node.spool.incoming_files()) == 12
        [row] = list_studies(node.engine)
        assert row.instances == 12


def test_c_echo_answers(cfg: Config) -> None:
    with running_node(cfg):
        assert echoscu(cfg.receive.port).returncode == 0


def test_a_calling_ae_title_not_allowed_is_rejected_and_nothing_stored(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={"allowed_aets": ["PACS"]})
    study = write_study(tmp_path / "in", series=1, per_series=2)
    with running_node(cfg) as node:
        refused = storescu(study.files, cfg.receive.port, calling_aet="INTRUDER", check=False)
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout or "rejected" in refused.stdout.lower()
        assert catalogued(node) == 0
        storescu(study.files, cfg.receive.port, calling_aet="PACS")
        assert catalogued(node) == 2


def test_a_source_address_not_allowed_is_cut_off_before_any_dicom(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={"allowed_addresses": ["10.0.0.0/8"]})
    with running_node(cfg):
        assert echoscu(cfg.receive.port).returncode != 0
    cfg = make_config(tmp_path / "b", receive={"allowed_addresses": ["127.0.0.0/8"]})
    with running_node(cfg):
        assert echoscu(cfg.receive.port).returncode == 0


@pytest.fixture
def raw_sender() -> Iterator[None]:
    """pynetdicom sends files as their bytes, undecoded (so broken files stay broken)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = before


def send_files(port: int, paths: list[Path], **tls: object) -> list[int]:
    """Send each file over one association; the status of each C-STORE."""
    ae = AE(ae_title="RAWSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="APOLO", **tls)  # type: ignore[arg-type]
    assert assoc.is_established, "association was not established"
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        assoc.release()


def test_truncated_and_garbage_instances_fail_and_the_node_keeps_serving(
    cfg: Config, tmp_path: Path, raw_sender: None
) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    good, cut, junk = study.files
    cut.write_bytes(cut.read_bytes()[:-200])
    raw = junk.read_bytes()
    body_start = raw.index(b"\x08\x00\x08\x00")  # first data set element, (0008,0008)
    junk.write_bytes(raw[:body_start] + b"\xde\xad\xbe\xef" * 64)
    with running_node(cfg) as node:
        statuses = send_files(cfg.receive.port, [cut, junk, good])
        assert statuses[0] == 0xC000 and statuses[1] == 0xC000
        assert statuses[2] == 0x0000
        assert catalogued(node) == 1
        assert len(node.spool.incoming_files()) == 1
        assert list(node.spool.tmp.iterdir()) == []
        assert echoscu(cfg.receive.port).returncode == 0


def test_spool_and_catalog_failures_answer_out_of_resources_and_leave_nothing(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=2, per_series=1)
    mapper = UIDMapper(cfg.deid.key.encode())
    with running_node(cfg) as node:
        # The study's spool folder cannot be made: a file stands in its place.
        blocker = cfg.spool_root / "incoming" / mapper(study.study_uid)
        blocker.write_bytes(b"")
        assert send_files(cfg.receive.port, [study.files[0]]) == [0xA700]
        blocker.unlink()
        # The catalog refuses the row: the spooled file must go again.
        with node.engine.begin() as conn:
            conn.execute(text("ALTER TABLE series RENAME TO series_away"))
        assert send_files(cfg.receive.port, [study.files[1]]) == [0xA700]
        with node.engine.begin() as conn:
            conn.execute(text("ALTER TABLE series_away RENAME TO series"))
        assert node.spool.incoming_files() == []
        assert list(node.spool.tmp.iterdir()) == []
        assert catalogued(node) == 0
        # Both arrive once the node can take them: the PACS's retry succeeds.
        assert send_files(cfg.receive.port, study.files) == [0, 0]
        assert catalogued(node) == 2


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apolo-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls_associations_store_and_plain_ones_do_not(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path / "tls")
    cfg = make_config(tmp_path, receive={"tls_cert": str(cert), "tls_key": str(key)})
    study = write_study(tmp_path / "in", series=1, per_series=2)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    with running_node(cfg) as node:
        assert send_files(cfg.receive.port, study.files, tls_args=(client, "127.0.0.1")) == [0, 0]
        assert catalogued(node) == 2
        assert echoscu(cfg.receive.port).returncode != 0  # plain TCP is not served


def test_compressed_instances_are_stored_as_received(cfg: Config, tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    study = write_study(tmp_path / "in", series=1, per_series=2)
    for path in study.files:
        ds = dcmread(path)
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
    mapper = UIDMapper(cfg.deid.key.encode())
    with running_node(cfg) as node:
        storescu(study.files, cfg.receive.port, extra_args=["--propose-rle"])
        assert catalogued(node) == 2
        for path, sop in zip(study.files, study.sop_uids):
            spooled = cfg.spool_root / "incoming" / mapper(study.study_uid) / f"{mapper(sop)}.dcm"
            kept = dcmread(spooled)
            assert kept.file_meta.TransferSyntaxUID == RLELossless
            assert kept.PixelData == dcmread(path).PixelData, "compressed bytes kept as sent"


def test_associations_beyond_the_maximum_are_rejected(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={"max_associations": 1})
    with running_node(cfg):
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context("1.2.840.10008.1.1")
        held = ae.associate("127.0.0.1", cfg.receive.port, ae_title="APOLO")
        assert held.is_established
        try:
            assert echoscu(cfg.receive.port).returncode != 0
        finally:
            held.release()
        assert echoscu(cfg.receive.port).returncode == 0


def test_spooled_files_without_rows_are_catalogued_at_start_and_scraps_cleared(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    with running_node(cfg):
        storescu(study.files, cfg.receive.port)
    # A second node, same key, whose catalog lost the rows (power loss) but not the files.
    other = make_config(tmp_path / "b", deid={"key": cfg.deid.key})
    shutil.copytree(cfg.spool_root / "incoming", other.spool_root / "incoming")
    junk = other.spool_root / "incoming" / "2.25.1" / "2.25.2.dcm"
    junk.parent.mkdir()
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    scrap = other.spool_root / "tmp" / "0123456789abcdef.part"
    scrap.parent.mkdir(parents=True, exist_ok=True)
    scrap.write_bytes(b"half an instance")
    old = time.time() - other.worker.lease - 60
    os.utime(scrap, (old, old))  # left by a crash a while ago
    writing = other.spool_root / "tmp" / "fedcba9876543210.part"
    writing.write_bytes(b"another process's instance, still arriving")  # a shared spool
    with running_node(other) as node:
        assert catalogued(node) == 3
        assert len(node.spool.incoming_files()) == 3
        assert not junk.exists() and not scrap.exists()
        assert writing.exists(), "a scrap younger than a lease may be another writer's"
        [row] = list_studies(node.engine)
        assert row.instances == 3
