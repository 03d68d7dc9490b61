"""``apolo-node deid IN OUT``: the command people run, and its fail-closed refusals."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian

from apolo_node.config import Config
from tests.conftest import make_config
from tests.nodes import apolo
from tests.synthetic import write_study


def test_deid_writes_clean_files_and_quarantines_pixels_it_cannot_scan(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=2, per_series=2)
    [marker] = study.markers
    us = dcmread(study.files[0])
    us.Modality = "US"
    us.PixelData = us.PixelData[:100]  # scanned for burned-in text, but undecodable
    us.save_as(study.files[0])
    burned = dcmread(study.files[1])
    burned.BurnedInAnnotation = "YES"
    burned.PixelData = burned.PixelData[:100]
    burned.save_as(study.files[1])
    done = apolo(cfg, "deid", str(tmp_path / "in"), str(tmp_path / "out"), "--json",
                 "--quarantine", str(tmp_path / "q"))
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert (result["written"], result["quarantined"]) == (2, 2)
    reasons = " ".join(r["reason"] for r in result["refused"])
    assert reasons.count("burned-in text scan failed: pixel data could not be decoded") == 2
    outputs = [Path(p) for p in result["outputs"]]
    assert len(outputs) == 2
    for path in outputs:
        assert marker.encode() not in path.read_bytes()
        assert marker not in str(path)
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
    assert marker not in done.stdout.replace(str(tmp_path), "")
    assert marker not in done.stderr


def test_deid_refuses_bad_options_and_out_inside_in(tmp_path: Path) -> None:
    write_study(tmp_path / "in", series=1, per_series=1)
    cfg = make_config(tmp_path)
    nested = apolo(cfg, "deid", str(tmp_path / "in"), str(tmp_path / "in" / "out"))
    assert nested.returncode == 2 and "must not be inside IN" in nested.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[deid]\noptions = ["clean_pixels"]\n')
    done = apolo(cfg, "deid", str(tmp_path / "in"), str(tmp_path / "out"), "--config", str(bad))
    assert done.returncode == 2
    assert "unknown option 'clean_pixels'" in done.stderr


def test_deid_reports_inputs_sharing_a_sop_instance_uid_as_duplicates(cfg: Config, tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=2)
    copy = dcmread(study.files[1])
    copy.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    copy.save_as(tmp_path / "in" / "zz_copy.dcm", enforce_file_format=True)
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    done = apolo(cfg, "deid", str(tmp_path / "in"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "written 2, quarantined 0, duplicates 1, not DICOM 1"
    assert f"skipped {tmp_path / 'in' / 'zz_copy.dcm'}: duplicate SOP Instance UID" in done.stderr
    listed = apolo(cfg, "deid", str(tmp_path / "in"), str(tmp_path / "out2"), "--json")
    result = json.loads(listed.stdout)
    assert (result["written"], result["skipped"]) == (2, 2)
    assert [d["path"] for d in result["duplicates"]] == [str(tmp_path / "in" / "zz_copy.dcm")]
    assert len(list((tmp_path / "out2").rglob("*.dcm"))) == 2
