"""Header actions on the marker corpus: nothing identifying survives, at any depth, in any byte."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from apolo_node.deid import Deidentifier, clean_instance
from apolo_node.deid.profile import Option
from tests import deid_corpus as corpus
from tests.synthetic import new_marker

KEY = b"test-key-0123456789abcdef"
OTHER_KEY = b"another-key-0123456789abcdef"
DEFAULTS = ["clean_pixel_data", "clean_descriptors", "retain_long_modified_dates"]


def instance(marker: str, **kw) -> Dataset:
    args = dict(
        patient_id=f"{marker}PID",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        sop_uid=generate_uid(),
        frame_uid=generate_uid(),
    )
    args.update(kw)
    return corpus.corpus_instance(marker, **args)


def texts(ds: Dataset) -> list[str]:
    """Every value at every depth, file meta included, as text."""
    out = []
    meta = getattr(ds, "file_meta", None)
    for top in ([meta] if meta is not None else []) + [ds]:
        for elem in top.iterall():
            if elem.VR == "SQ":
                continue
            value = elem.value
            out.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return out


@pytest.mark.parametrize("options", [DEFAULTS, [], ["clean_structured_content", "clean_graphics"]])
def test_no_marker_survives_in_any_element_or_byte(options):
    marker = new_marker("M")
    original = instance(marker)
    clean = clean_instance(original, Deidentifier(KEY, options))
    assert not [t for t in texts(clean.dataset) if marker.lower() in t.lower()]
    assert marker.encode() not in clean.encoded.upper()
    assert marker not in str(clean.relative_path)
    for distinct in (corpus.DATE, corpus.DATETIME, corpus.UID_ROOT, corpus.DECIMAL, corpus.INTEGER):
        assert distinct.encode() not in clean.encoded, distinct
    if Option.RETAIN_LONG_MODIFIED_DATES.value not in options:
        assert corpus.TIME.encode() not in clean.encoded


def test_every_planted_attribute_is_gone_changed_or_kept_by_rule():
    marker = new_marker("M")
    original = instance(marker)
    out = Deidentifier(KEY, DEFAULTS)(original)
    for tag, vr in corpus.planted_tags():
        if tag not in out:
            continue
        before, after = original[tag].value, out[tag].value
        if vr == "SQ":
            continue  # items checked by the marker search
        if vr == "TM":  # whole-day date shift keeps times
            assert after in (before, None, "", "000000")
        else:
            assert after != before, f"{tag:08X} {vr} unchanged"


def test_nested_sequences_are_cleaned_at_depths_one_to_three():
    marker = new_marker("M")
    out = Deidentifier(KEY, DEFAULTS)(instance(marker))
    depth1 = out.SharedFunctionalGroupsSequence[0]
    depth2 = depth1.ReferencedSeriesSequence[0]
    depth3 = depth2.RequestAttributesSequence[0]  # C (clean descriptors) on a sequence: kept
    for item in (depth1, depth2, depth3):
        assert "OtherPatientIDsSequence" not in item  # X
        assert "PatientAge" not in item  # X
        assert not item.get("AccessionNumber")  # Z
        assert item.StudyDate != corpus.DATE  # shifted
        assert item.StudyInstanceUID.startswith("2.25.")  # U
    assert len(out.ReferencedStudySequence) == 0  # X/Z: emptied
    assert not any(t.is_private for t in out.keys())
    assert not any(t.group >> 8 in (0x50, 0x60) for t in out.keys())
    assert 0x00140104 not in out  # an unlisted PN


def test_input_dataset_is_not_changed():
    marker = new_marker("M")
    original = instance(marker)
    before = original.to_json()
    Deidentifier(KEY, DEFAULTS)(original)
    assert original.to_json() == before


def test_uids_stay_consistent_across_instances_of_a_study_and_differ_by_key():
    marker = new_marker("M")
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    first_sop = generate_uid()
    first = instance(marker, study_uid=study, series_uid=series, frame_uid=frame, sop_uid=first_sop)
    second = instance(
        marker, study_uid=study, series_uid=series, frame_uid=frame, referenced_sop_uid=first_sop
    )
    deid = Deidentifier(KEY, DEFAULTS)
    a, b = deid(first), deid(second)
    assert a.StudyInstanceUID == b.StudyInstanceUID != study
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID != frame
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID != first_sop
    assert a.SOPClassUID == CTImageStorage  # standard UIDs keep their meaning
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert a.file_meta.TransferSyntaxUID == first.file_meta.TransferSyntaxUID
    other = Deidentifier(OTHER_KEY, DEFAULTS)(first)
    assert other.StudyInstanceUID != a.StudyInstanceUID


def _date(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y%m%d").date()


def test_date_shift_keeps_intervals_between_studies_of_one_patient():
    marker = new_marker("M")
    deid = Deidentifier(KEY, DEFAULTS)
    early = deid(instance(marker, patient_id="P1234567", study_date="20240105"))
    late = deid(instance(marker, patient_id="P1234567", study_date="20240412"))
    shifted = _date(late.StudyDate) - _date(early.StudyDate)
    assert shifted == _date("20240412") - _date("20240105")
    assert early.StudyDate != "20240105"
    assert early.LongitudinalTemporalInformationModified == "MODIFIED"
    assert early.PatientID == late.PatientID and early.PatientName == late.PatientName
    assert "1234567" not in early.PatientID + str(early.PatientName)
    other = Deidentifier(OTHER_KEY, DEFAULTS)(instance(marker, patient_id="P1234567"))
    assert other.PatientID != early.PatientID


def test_method_is_recorded():
    out = Deidentifier(KEY, DEFAULTS)(instance(new_marker("M")))
    assert out.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101", "113105", "113107"]
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)
    assert out.DeidentificationMethod
    basic = Deidentifier(KEY, [])(instance(new_marker("M")))
    assert [i.CodeValue for i in basic.DeidentificationMethodCodeSequence] == ["113100"]
    assert basic.LongitudinalTemporalInformationModified == "REMOVED"
    assert not basic.get("StudyDate")


# option -> (keyword or tag kept, check on the kept value)
def test_retain_options_change_behaviour():
    marker = new_marker("M")
    original = instance(marker)
    original.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    original.add_new(0x0019100C, "IS", "1000")
    original.add_new(0x00191008, "CS", "IMAGE NUM 4")

    def run(*options: str) -> Dataset:
        return Deidentifier(KEY, options)(original)

    basic = run()
    assert basic.get("DeviceSerialNumber") != original.DeviceSerialNumber
    assert run("retain_device_identity").DeviceSerialNumber == original.DeviceSerialNumber
    assert not basic.get("InstitutionName")
    assert run("retain_institution_identity").InstitutionName == original.InstitutionName
    assert "PatientAge" not in basic
    assert run("retain_patient_chars").PatientAge == original.PatientAge
    assert run("retain_uids").StudyInstanceUID == original.StudyInstanceUID
    assert run("retain_long_full_dates").StudyDate == original.StudyDate
    assert len(basic.AcquisitionContextSequence) == 0
    kept = run("clean_structured_content").AcquisitionContextSequence
    assert len(kept) == 1 and kept[0].PersonName != original.AcquisitionContextSequence[0].PersonName
    safe = run("retain_safe_private")
    assert safe[0x0019100C].value == "1000" and safe[0x00190010].value == "SIEMENS MR HEADER"
    assert 0x00191008 not in safe and 0x00111001 not in safe and 0x00110010 not in safe
    assert 0x0019100C not in basic


def test_retain_uids_keeps_instance_uid_in_file_meta():
    original = instance(new_marker("M"))
    out = Deidentifier(KEY, ["retain_uids"])(original)
    assert out.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID


def test_class_uids_are_kept_even_when_private_and_instance_uids_are_remapped():
    original = instance(new_marker("M"))
    private_class = "1.3.12.2.1107.5.9.1"  # a vendor SOP class: not in pydicom's dictionary
    original.SOPClassUID = private_class
    original.file_meta.MediaStorageSOPClassUID = private_class
    original.IrradiationEventUID = "1.3.12.2.1107.5.1.4.12345.1"  # listed, U
    out = Deidentifier(KEY, DEFAULTS)(original)
    assert out.SOPClassUID == out.file_meta.MediaStorageSOPClassUID == private_class
    assert out.IrradiationEventUID.startswith("2.25.")
