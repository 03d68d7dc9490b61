"""Senders nobody here wrote: dcmtk storescu in every uncompressed transfer syntax and several
PDU sizes, and pynetdicom writing undefined-length sequences and mixing operations on one
association. What each stores must read back whole, equal to what it sent. (Orthanc as a sender
is in test_orthanc.py. gdcm's gdcmscu 3.0.21 from Debian aborts right after connecting, even to
dcmtk's storescp: "ProtocolStream as nullptr is invalid", so it is not among them.)"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from apolo_node.catalog.models import Instance
from apolo_node.config import Config
from apolo_node.pseudonym import UIDMapper
from tests.conftest import make_config
from tests.nodes import running_node
from tests.peers import echoscu, storescu
from tests.synthetic import write_study

pytestmark = pytest.mark.usefixtures("need_dcmtk")


def stored(cfg: Config, study_uid: str, sop_uid: str) -> Dataset:
    mapper = UIDMapper(cfg.deid.key.encode())
    path = cfg.spool_root / "incoming" / mapper(study_uid) / f"{mapper(sop_uid)}.dcm"
    return dcmread(BytesIO(path.read_bytes()))


def syntaxes_stored(node) -> list[str]:  # type: ignore[no-untyped-def]
    with node.engine.connect() as conn:
        return sorted(conn.execute(select(Instance.transfer_syntax_uid)).scalars())


@pytest.mark.parametrize(
    ("flag", "syntax"),
    [
        ("-xi", ImplicitVRLittleEndian),
        ("-xe", ExplicitVRLittleEndian),
        ("-xb", ExplicitVRBigEndian),
        ("-xd", DeflatedExplicitVRLittleEndian),
    ],
    ids=["implicit", "explicit-little", "explicit-big", "deflated"],
)
def test_storescu_in_each_uncompressed_transfer_syntax(
    cfg: Config, tmp_path: Path, flag: str, syntax: str
) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    with running_node(cfg) as node:
        storescu(study.files, cfg.receive.port, extra_args=[flag])
        assert syntaxes_stored(node) == [syntax] * 3, f"storescu {flag} negotiated {syntax}"
        for path, sop in zip(study.files, study.sop_uids):
            sent = dcmread(path)
            got = stored(cfg, study.study_uid, sop)
            assert (got.pixel_array == sent.pixel_array).all()  # big endian swaps PixelData's bytes
            assert got.PatientName == sent.PatientName
            assert got.file_meta.TransferSyntaxUID == syntax
        assert echoscu(cfg.receive.port).returncode == 0


@pytest.mark.parametrize("max_pdu", [4096, 16384, 131072, 0], ids=lambda n: f"pdu-{n or 'unlimited'}")
def test_storescu_under_each_maximum_pdu_we_offer(tmp_path: Path, max_pdu: int) -> None:
    cfg = make_config(tmp_path, receive={"max_pdu": max_pdu})
    study = write_study(tmp_path / "in", series=1, per_series=2, rows=128, columns=128)  # 32 KB each
    with running_node(cfg) as node:
        storescu(study.files, cfg.receive.port)
        assert len(syntaxes_stored(node)) == 2
        for path, sop in zip(study.files, study.sop_uids):
            assert stored(cfg, study.study_uid, sop) == dcmread(path)


def _undefined_lengths(ds: Dataset) -> Dataset:
    """Nested sequences and items of undefined length, as pynetdicom and dcm4che write them."""
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
    middle = Dataset()
    middle.AnatomicRegionSequence = Sequence([inner])
    middle.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = Sequence([middle, Dataset()])
    for owner, keyword in ((ds, "ReferencedImageSequence"), (middle, "AnatomicRegionSequence")):
        owner[keyword].is_undefined_length = True
        for item in owner[keyword].value:
            item.is_undefined_length_sequence_item = True
    return ds


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian], ids=["implicit", "explicit"])
def test_pynetdicom_undefined_lengths_and_several_operations_on_one_association(
    cfg: Config, tmp_path: Path, syntax: str
) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    datasets = [_undefined_lengths(dcmread(p)) for p in study.files]
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(CTImageStorage, syntax)
    ae.add_requested_context(Verification)
    with running_node(cfg) as node:
        assoc = ae.associate("127.0.0.1", cfg.receive.port, ae_title="APOLO")
        assert assoc.is_established
        try:
            statuses = [int(assoc.send_c_echo().Status)]
            for ds in datasets:
                statuses.append(int(assoc.send_c_store(ds).Status))
                statuses.append(int(assoc.send_c_echo().Status))
        finally:
            assoc.release()
        assert statuses == [0] * 7
        assert syntaxes_stored(node) == [syntax] * 3
        for ds, sop in zip(datasets, study.sop_uids):
            got = stored(cfg, study.study_uid, sop)
            assert got.ReferencedImageSequence[0].AnatomicRegionSequence[0].CodeMeaning == "Chest"
            assert len(got.ReferencedImageSequence) == 2 and got.PixelData == ds.PixelData
