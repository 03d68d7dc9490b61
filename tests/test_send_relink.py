"""Re-linking: a result made in the de-identified study goes back to the original study and patient.

The results are the real ones: a synthetic study goes through the pipeline (``ingest``) with
sending back on, which cleans it, fills the vault and writes the TID 1500 SR; the GSPS is built
with highdicom on the cleaned images, as the answer stage will.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from cryptography.fernet import Fernet
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from apolo_node.catalog.outbox import outbox_rows
from apolo_node.config import Config
from apolo_node.deid.vault import Vault
from apolo_node.pipeline.ingest import ingest
from apolo_node.pseudonym import UIDMapper
from apolo_node.send.relink import RelinkError, relink
from apolo_node.sr import read_measurement_report
from tests.conftest import make_config
from tests.nodes import upgraded_engine
from tests.peer_fixtures import dciodvfy_errors
from tests.synthetic import Study, write_study

ORIGINAL_STUDY_DATE = "20260102"  # tests/synthetic.py; the cleaned study's date is shifted


@dataclass
class Reported:
    cfg: Config
    study: Study
    marker: str
    vault: Vault
    mapper: UIDMapper
    sr_path: Path

    def pseudonyms(self) -> set[str]:
        """The pseudonym of every UID of a received instance (SOP, series, study)."""
        originals = [*self.study.sop_uids, *self.study.series_uids, self.study.study_uid]
        return {self.mapper(uid) for uid in originals}

    def clean_images(self) -> list[Dataset]:
        return [dcmread(p) for p in sorted((self.cfg.spool_root / "clean").rglob("*.dcm"))]


def with_accented_name(study: Study, marker: str) -> None:
    """Give the patient a Latin-1 name, as many PACS still send it."""
    for path in study.files:
        ds = dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = f"MÜLLER^{marker}"
        ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def reported(tmp_path: Path) -> Iterator[Reported]:
    """A 2-series study through the pipeline with sending back on: clean, vault, SR queued."""
    cfg = make_config(tmp_path, send={"enabled": True}, deid={"vault_key": Fernet.generate_key().decode()})
    study = write_study(tmp_path / "in", series=2, per_series=2)
    [marker] = study.markers
    with_accented_name(study, marker)
    engine = upgraded_engine(cfg)
    try:
        ingest(cfg, [tmp_path / "in"])
        [row] = outbox_rows(engine)
    finally:
        engine.dispose()
    yield Reported(
        cfg, study, marker, Vault.from_config(cfg), UIDMapper(cfg.deid.key.encode()),
        cfg.spool_root / row.path,
    )


def all_values(ds: Dataset, keyword: str) -> list[str]:
    """Every value of ``keyword`` at any depth."""
    found: list[str] = []
    for elem in ds.iterall():
        if elem.keyword == keyword:
            found.append(str(elem.value))
    return found


def all_uids(ds: Dataset) -> set[str]:
    uids = [e for e in ds.iterall() if e.VR == "UI" and e.value]
    return {str(v) for e in uids for v in (e.value if e.VM > 1 else [e.value])}


def write_read(ds: Dataset) -> tuple[bytes, Dataset]:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    return raw, dcmread(io.BytesIO(raw))


def assert_relinked(out: Dataset, source: Dataset, r: Reported) -> None:
    """Original study and patient, own UIDs kept, nothing pseudonymous of received instances."""
    assert out.StudyInstanceUID == r.study.study_uid
    assert (out.SOPInstanceUID, out.SeriesInstanceUID) == (source.SOPInstanceUID, source.SeriesInstanceUID)
    assert out.SeriesInstanceUID not in r.study.series_uids
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == out.SOPClassUID
    assert str(out.PatientName) == f"MÜLLER^{r.marker}"  # the planted marker is back, on purpose
    assert out.PatientID == f"{r.marker}ID"
    assert out.AccessionNumber == f"{r.marker}AC"[:16]
    assert str(out.ReferringPhysicianName) == f"{r.marker}^REF"
    assert out.StudyDate == ORIGINAL_STUDY_DATE and out.PatientBirthDate == "19700101"
    for mark in ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        assert mark not in out
    referenced = all_values(out, "ReferencedSOPInstanceUID")
    assert referenced and set(referenced) <= set(r.study.sop_uids)
    nested_series = [v for v in all_values(out, "SeriesInstanceUID") if v != out.SeriesInstanceUID]
    assert nested_series and set(nested_series) <= set(r.study.series_uids)
    assert set(all_values(out, "StudyInstanceUID")) == {r.study.study_uid}
    assert not all_uids(out) & r.pseudonyms()
    raw, back = write_read(out)
    for pseudonym in r.pseudonyms():
        assert pseudonym.encode() not in raw
    assert str(back.PatientName) == f"MÜLLER^{r.marker}"  # encodable in the result's character set


def test_the_report_sr_is_relinked_to_the_original_study_and_patient(reported: Reported) -> None:
    source = dcmread(reported.sr_path)
    assert str(source.PatientName) != f"MÜLLER^{reported.marker}"
    out = relink(source, reported.vault, reported.mapper)
    assert_relinked(out, source, reported)
    # a pure function: the de-identified result is unchanged
    assert source.StudyInstanceUID == reported.mapper(reported.study.study_uid)
    assert reported.marker not in str(source.PatientName) and "PatientIdentityRemoved" in source
    # still a TID 1500 report with the same findings, on the original images
    before, after = read_measurement_report(source), read_measurement_report(out)
    assert len(after.findings) == len(before.findings) > 0
    assert {f.tracking_uid for f in after.findings} == {f.tracking_uid for f in before.findings}
    assert {f.sop_instance_uid for f in after.findings} <= set(reported.study.sop_uids)
    # the Image Library's Frame of Reference UIDs (pseudonyms the vault cannot resolve) are gone
    assert "112227" in all_values(source, "CodeValue") and "112227" not in all_values(out, "CodeValue")


def test_a_result_in_the_default_character_set_gets_one_that_holds_the_original_name(
    reported: Reported,
) -> None:
    source = dcmread(reported.sr_path)
    list(source.iterall())  # decode every value under its own character set first
    del source.SpecificCharacterSet  # ASCII: cannot hold MÜLLER
    out = relink(source, reported.vault, reported.mapper)
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert str(write_read(out)[1].PatientName) == f"MÜLLER^{reported.marker}"


def test_the_relinked_sr_is_still_a_valid_comprehensive_sr(reported: Reported, tmp_path: Path) -> None:
    out = relink(dcmread(reported.sr_path), reported.vault, reported.mapper)
    path = tmp_path / "relinked.dcm"
    out.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def gsps_on(images: list[Dataset]) -> Dataset:
    """A GSPS with a box on the first image, in a new series of the de-identified study."""
    layer = hd.pr.GraphicLayer(layer_name="FINDINGS", order=1)
    box = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0], [10.0, 10.0]])
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[images[0]], graphic_layer=layer,
        graphic_objects=[hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=box, units="PIXEL")],
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=images, series_instance_uid=generate_uid(prefix=None), series_number=991,
        sop_instance_uid=generate_uid(prefix=None), instance_number=1, manufacturer="apolo-node",
        manufacturer_model_name="apolo-node", software_versions="0", device_serial_number="0",
        content_label="FINDINGS", graphic_annotations=[annotation], graphic_layers=[layer],
    )
    return write_read(gsps)[1]  # as the spool would hold it


def test_a_gsps_on_the_cleaned_images_is_relinked(reported: Reported) -> None:
    images = reported.clean_images()
    first_series = [ds for ds in images if ds.SeriesInstanceUID == images[0].SeriesInstanceUID]
    source = gsps_on(first_series)
    out = relink(source, reported.vault, reported.mapper)
    assert_relinked(out, source, reported)
    [series] = out.ReferencedSeriesSequence
    entry = reported.vault.get(source.StudyInstanceUID, first_series[0].SOPInstanceUID)
    assert series.SeriesInstanceUID in reported.study.series_uids
    images_referenced = {i.ReferencedSOPInstanceUID for i in series.ReferencedImageSequence}
    assert images_referenced <= set(reported.study.sop_uids)
    [annotated] = out.GraphicAnnotationSequence[0].ReferencedImageSequence
    assert annotated.ReferencedSOPInstanceUID == entry.sop_instance_uid


def test_a_reference_the_vault_cannot_resolve_is_an_error_naming_only_the_pseudonym(
    reported: Reported,
) -> None:
    source = dcmread(reported.sr_path)
    stray = generate_uid(prefix=None)  # looks like a received instance's pseudonym, but is none
    series = source.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = stray
    with pytest.raises(RelinkError, match=f"ReferencedSOPInstanceUID {stray} names no instance") as info:
        relink(source, reported.vault, reported.mapper)
    message = str(info.value)
    assert reported.marker not in message
    study = reported.study
    assert not any(uid in message for uid in [*study.sop_uids, *study.series_uids, study.study_uid])
    # a UID of another object of ours, named in keep, is referred to as it is
    out = relink(source, reported.vault, reported.mapper, keep={stray})
    assert stray in all_values(out, "ReferencedSOPInstanceUID")


def test_a_study_the_vault_does_not_hold_or_another_key_is_refused(reported: Reported) -> None:
    source = dcmread(reported.sr_path)
    with pytest.raises(RelinkError, match="under this de-identification key"):
        relink(source, reported.vault, UIDMapper(b"another key of 32 bytes, not ours"))
    source.StudyInstanceUID = generate_uid(prefix=None)
    with pytest.raises(RelinkError, match=f"holds no instance of study {source.StudyInstanceUID}"):
        relink(source, reported.vault, reported.mapper)
