"""``deidentify_paths``: the back end of ``apolo-node deid IN OUT``, on real files."""

from __future__ import annotations

import io
import re
import time
import tracemalloc
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian, RLELossless, generate_uid

from apolo_node import config
from apolo_node.deid import DeidError, Deidentifier, clean_instance, deidentify_paths
from apolo_node.deid.command import DUPLICATE_REASON, examine_file
from apolo_node.deid.depth import TooDeep, dataset_sequence_depth, file_sequence_depth
from tests.deep_nesting import deep_content_file, nested_dataset
from tests.peer_fixtures import dciodvfy_errors
from tests.synthetic import ct_slice, new_marker, write_study

KEY = "test-key-0123456789abcdef"
UID_NAME = re.compile(r"2\.25\.\d+")


def cfg(*options: str) -> config.Config:
    deid = {"key": KEY}
    if options:
        deid["options"] = list(options)
    return config.replace(config.Config(), deid=deid)


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_a_study_is_written_under_pseudonymous_names_with_no_marker(tmp_path):
    study = write_study(tmp_path / "in", series=2, per_series=2)
    marker = study.markers[0]
    (tmp_path / "in" / "notes.txt").write_text(f"{marker} is not DICOM")
    out, quarantine = tmp_path / "out", tmp_path / "quarantine"
    summary = deidentify_paths([tmp_path / "in"], out, cfg(), quarantine)
    assert (summary.written, summary.quarantined, summary.skipped) == (4, 0, 1)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) == 4
    for path in files:
        rel = path.relative_to(out).parts
        assert len(rel) == 3 and all(UID_NAME.fullmatch(p.removesuffix(".dcm")) for p in rel)
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.SOPInstanceUID) == rel[2].removesuffix(".dcm")
    assert marker.encode() not in all_bytes(out).upper()
    assert marker not in "".join(str(p) for p in out.rglob("*"))
    assert len({dcmread(p).StudyInstanceUID for p in files}) == 1
    assert not quarantine.exists()
    assert summary.reasons == {tmp_path / "in" / "notes.txt": "not a DICOM Part 10 file"}


class LeakyDeidentifier(Deidentifier):
    """A broken de-identifier (importable by the worker processes) that leaks a name."""

    def __call__(self, ds, *, in_place=False):
        name = ds.ReferringPhysicianName  # read first: the cleaning may change ds itself
        out = super().__call__(ds, in_place=in_place)
        out.ImageComments = f"for {name}"
        return out


def test_unreadable_and_unverifiable_files_are_quarantined_not_written(tmp_path):
    study = write_study(tmp_path / "in", series=1, per_series=2)
    marker = study.markers[0]
    broken = tmp_path / "in" / f"{marker}.dcm"
    broken.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + marker.encode())
    out, quarantine = tmp_path / "out", tmp_path / "quarantine"
    leaky = LeakyDeidentifier(KEY.encode(), config.Config().deid.options)
    summary = deidentify_paths([tmp_path / "in"], out, cfg(), quarantine, deidentifier=leaky)
    assert (summary.written, summary.quarantined, summary.skipped) == (0, 3, 0)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    reasons = sorted(p.read_text() for p in quarantine.glob("*.reason.txt"))
    assert len(reasons) == 3 and len(list(quarantine.glob("*.dcm"))) == 3
    assert any("ReferringPhysicianName" in r and "ImageComments" in r for r in reasons)
    assert any(r.startswith(("unreadable", "StudyInstanceUID is missing")) for r in reasons), reasons
    assert not any(marker in r for r in reasons + list(summary.reasons.values()))
    assert not any(marker in p.name for p in quarantine.iterdir())


def test_missing_instance_uid_is_reported_without_a_quarantine_folder(tmp_path):
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(), number=1, marker=new_marker())
    del ds.SOPInstanceUID
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    summary = deidentify_paths([tmp_path / "a.dcm"], tmp_path / "out", cfg(), None)
    assert summary.quarantined == 1
    assert summary.reasons[tmp_path / "a.dcm"].startswith("SOPInstanceUID is missing")


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, RLELossless])
def test_any_transfer_syntax_passes_pixel_data_through(tmp_path, syntax):
    marker = new_marker()
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(), number=1, marker=marker)
    ds.add_new(0x00291010, "LO", "ACME")
    ds.add_new(0x00291001, "LO", f"{marker} private")
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(tmp_path / "in.dcm", enforce_file_format=True)
    source = dcmread(tmp_path / "in.dcm")
    summary = deidentify_paths([tmp_path / "in.dcm"], tmp_path / "out", cfg(), None)
    assert summary.written == 1, summary.reasons
    written = summary.outcomes[0].output
    out = dcmread(written)
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.PixelData == source.PixelData
    assert marker.encode() not in written.read_bytes().upper()


def rich_ct(marker: str):
    """The synthetic CT plus attributes whose combined codes (X/Z/D, Z/D, X/D) matter for validity."""
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(), number=1, marker=marker)
    ds.ContentDate, ds.ContentTime = "20260102", "101500"
    ds.AcquisitionDate, ds.AcquisitionTime = "20260102", "101400"
    ds.SeriesDate, ds.SeriesTime = "20260102", "101300"
    ds.InstanceCreationDate, ds.InstanceCreationTime = "20260102", "101600"
    ds.OperatorsName = f"{marker}^OP"
    ds.StationName = f"{marker}ST"[:16]
    ds.DeviceSerialNumber = f"{marker}SN"
    ds.ProtocolName = f"{marker} protocol"
    ds.StudyDescription = f"{marker} study"
    ds.SeriesDescription = f"{marker} series"
    ds.PatientAge = "056Y"
    ds.Manufacturer = "ACME"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    return ds


@pytest.mark.parametrize("options", [(), ("clean_pixel_data", "clean_descriptors", "retain_long_modified_dates")])
def test_cleaned_ct_has_no_more_dciodvfy_errors_than_its_original(tmp_path, options):
    marker = new_marker()
    for name, ds in (("plain", ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(), number=1, marker=marker)), ("rich", rich_ct(marker))):
        source = tmp_path / f"{name}.dcm"
        ds.save_as(source, enforce_file_format=True)
        summary = deidentify_paths([source], tmp_path / f"out-{name}", cfg(*options), None)
        assert summary.written == 1, summary.reasons
        before, after = dciodvfy_errors(source), dciodvfy_errors(summary.outcomes[0].output)
        assert len(after) <= len(before), "\n".join(sorted(set(after) - set(before)))


def test_the_default_config_needs_a_key(tmp_path):
    cfg_ = config.replace(config.Config(), spool={"root": str(tmp_path / "spool")})
    deid = Deidentifier.from_config(cfg_)  # makes the key file on first use
    assert (tmp_path / "spool" / "secrets" / "deid.key").exists()
    assert "key" not in repr(deid).replace("<key hidden>", "")


def test_inputs_sharing_a_sop_instance_uid_keep_the_first_and_skip_the_rest(tmp_path):
    """One image in two encodings: a PACS keeps the instance it holds; nothing is overwritten."""
    study = write_study(tmp_path / "in", series=1, per_series=2)
    first = dcmread(study.files[0])
    first.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    first.save_as(tmp_path / "in" / "zz_same_instance_implicit.dcm", enforce_file_format=True)
    summary = deidentify_paths([tmp_path / "in"], tmp_path / "out", cfg())
    assert (summary.written, summary.quarantined, summary.skipped) == (2, 0, 1)
    [duplicate] = [o for o in summary.outcomes if o.status == "skipped"]
    assert duplicate.source.name == "zz_same_instance_implicit.dcm"
    assert duplicate.reason == DUPLICATE_REASON
    [kept] = [o for o in summary.outcomes if o.status == "written" and o.output == duplicate.output]
    assert kept.source == study.files[0]
    assert dcmread(kept.output).file_meta.TransferSyntaxUID != ImplicitVRLittleEndian, "the first kept"
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2
    again = deidentify_paths([tmp_path / "in"], tmp_path / "out", cfg())
    assert (again.written, again.skipped) == (2, 1), "a second run rewrites its own outputs only"


def test_a_file_deeper_than_max_depth_is_quarantined_from_its_bytes(tmp_path):
    """250 and 20,000 deep, defined and undefined lengths: quick, flat memory, no RecursionError."""
    folder = tmp_path / "in"
    folder.mkdir()
    for depth in (33, 250, 20_000):
        for undefined in (False, True):
            deep_content_file(folder / f"deep_{depth}_{undefined}.dcm", depth, undefined=undefined)
    deep_content_file(folder / "at_the_limit.dcm", 32)
    deidentifier = Deidentifier(KEY.encode())
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for path in sorted(folder.glob("deep_*.dcm")):  # what each worker process does
            with pytest.raises(DeidError, match=r"max_depth \(32\)"):
                examine_file(path, deidentifier)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5
    assert peak < 20 * 2**20
    summary = deidentify_paths([folder], tmp_path / "out", cfg(), tmp_path / "quarantine")
    assert (summary.written, summary.quarantined) == (1, 6)
    reasons = {o.source.name: o.reason for o in summary.outcomes if o.status == "quarantined"}
    assert set(reasons.values()) == {r"sequences nest deeper than [deid] max_depth (32)"}
    assert len(list((tmp_path / "quarantine").glob("*.reason.txt"))) == 6


@pytest.mark.parametrize("depth", [33, 20_000])
def test_a_dataset_deeper_than_max_depth_is_refused_before_any_recursion(depth):
    with pytest.raises(DeidError, match=r"deeper than \[deid\] max_depth \(32\)"):
        clean_instance(nested_dataset(depth), Deidentifier(KEY.encode()))
    with pytest.raises(TooDeep, match=r"max_depth \(32\)"):
        Deidentifier(KEY.encode())(nested_dataset(depth))


def test_max_depth_is_a_setting_and_the_limit_itself_is_cleaned(tmp_path):
    clean = clean_instance(nested_dataset(32), Deidentifier(KEY.encode()))
    assert b"deep text" not in clean.encoded
    shallow = Deidentifier.from_config(config.replace(cfg(), deid={"key": KEY, "max_depth": 4}))
    with pytest.raises(DeidError, match=r"max_depth \(4\)"):
        clean_instance(nested_dataset(5), shallow)
    clean_instance(nested_dataset(4), shallow)


def test_sequence_depth_counts_match_pydicom_on_its_own_test_files():
    """The byte walker and the data set walker agree on every readable bundled file."""
    checked = 0
    for name in ("CT_small.dcm", "MR_small.dcm", "image_dfl.dcm", "SC_rgb_jpeg.dcm",
                 "emri_small_big_endian.dcm", "rtplan.dcm", "rtdose.dcm", "reportsi.dcm", "JPEG2000.dcm"):
        path = Path(get_testdata_file(name))
        expected = dataset_sequence_depth(dcmread(path), 1000)
        assert file_sequence_depth(path, 1000) == expected, name
        checked += expected > 0
    assert checked >= 3, "some of them have sequences"


def test_elements_written_back_as_their_bytes_and_those_that_cannot_be(tmp_path):
    # Untouched elements of an explicit VR file are written back raw (not decoded and encoded
    # again); a file that declares explicit VR but holds implicit VR elements (as some vendor
    # files do) has them decoded and written with their VR, not written raw without one.
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    marker = new_marker()
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=marker)
    explicit = tmp_path / "explicit.dcm"
    ds.save_as(explicit, enforce_file_format=True)
    mislabelled = tmp_path / "mislabelled.dcm"
    fp = DicomBytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta)  # says Explicit VR Little Endian
    fp.is_implicit_VR, fp.is_little_endian = True, True
    write_dataset(fp, ds)  # but the data set is implicit VR
    mislabelled.write_bytes(fp.getvalue())
    deid = Deidentifier(KEY.encode(), config.Config().deid.options)
    for path in (explicit, mislabelled):
        clean = examine_file(path, deid)
        out = dcmread(io.BytesIO(clean.encoded))
        assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert list(out.ImageType) == list(ds.ImageType) and out.Rows == ds.Rows
        assert out["ImageType"].VR == "CS" and out["Rows"].VR == "US"
        assert out.PatientIdentityRemoved == "YES"
        assert marker.encode() not in clean.encoded.upper()
