"""The fail-closed verifier: it finds leaks at any depth and in raw bytes, and never shows them."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from apolo_node.deid import Deidentifier, Option, PHILeakError, verify_deidentified
from apolo_node.deid.verify import encode
from tests.synthetic import ct_slice, new_marker

KEY = b"test-key-0123456789abcdef"
DEFAULTS = ["clean_pixel_data", "clean_descriptors", "retain_long_modified_dates"]


def original(marker: str) -> Dataset:
    ds = ct_slice(
        study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(), number=1, marker=marker
    )
    item = Dataset()
    item.ReferencedSOPInstanceUID = generate_uid()
    item.add_new(0x00091010, "LO", "ACME")  # private creator in an item
    item.add_new(0x00091001, "LO", "key is under the vault")
    ds.ReferencedImageSequence = [item]
    return ds


def test_a_clean_output_passes():
    ds = original(new_marker())
    deid = Deidentifier(KEY, DEFAULTS)
    verify_deidentified(ds, deid(ds), deid.profile)


def test_a_leak_in_a_nested_element_is_named_without_its_value():
    marker = new_marker()
    ds = original(marker)
    deid = Deidentifier(KEY, DEFAULTS)
    ds.InstitutionName = "SAINT ELSEWHERE CLINIC"
    out = deid(ds)
    out.ReferencedImageSequence[0].Manufacturer = "made by saint elsewhere clinic"
    match = r"InstitutionName\(0008,0080\).*ReferencedImageSequence\(0008,1140\)\[0\]\.Manufacturer"
    with pytest.raises(PHILeakError, match=match) as err:
        verify_deidentified(ds, out, deid.profile)
    assert "ELSEWHERE" not in str(err.value).upper()


def test_a_private_value_and_an_original_uid_are_leaks_too():
    marker = new_marker()
    ds = original(marker)
    deid = Deidentifier(KEY, DEFAULTS)
    out = deid(ds)
    out.ImageComments = ds.ReferencedImageSequence[0][0x00091001].value
    with pytest.raises(PHILeakError, match=r"ReferencedImageSequence\(0008,1140\)\[0\]\.private\(0009,1001\)") as err:
        verify_deidentified(ds, out, deid.profile)
    assert "THE VAULT" not in str(err.value).upper()
    out = deid(ds)
    out.ReferencedFrameOfReferenceUID = ds.FrameOfReferenceUID
    with pytest.raises(PHILeakError, match="FrameOfReferenceUID"):
        verify_deidentified(ds, out, deid.profile)


def test_a_leak_outside_any_element_is_found_in_the_encoded_bytes():
    marker = new_marker()
    ds = original(marker)
    deid = Deidentifier(KEY, DEFAULTS)
    out = deid(ds)
    encoded = bytearray(encode(out))
    name = str(ds.PatientName).encode("ascii")
    encoded[10 : 10 + len(name)] = name  # inside the preamble
    with pytest.raises(PHILeakError, match="encoded output at byte 10") as err:
        verify_deidentified(ds, out, deid.profile, bytes(encoded))
    assert marker not in str(err.value)


def test_short_numbers_and_values_equal_to_kept_codes_are_not_leaks():
    ds = original(new_marker())
    ds.PatientWeight = "70.5"  # X, but a short number
    ds.PatientBirthDate = ds.StudyDate  # a newborn: same string as a kept date
    deid = Deidentifier(KEY, ["retain_long_full_dates"])
    out = deid(ds)
    out.SliceThickness = "70.5"
    verify_deidentified(ds, out, deid.profile)
    assert out.StudyDate == ds.StudyDate and not out.PatientBirthDate


def test_pixel_data_is_not_searched():
    marker = new_marker()
    ds = original(marker)
    name = str(ds.PatientName).encode("ascii")
    pixels = bytearray(ds.PixelData)
    pixels[: len(name)] = name  # burned-in text is the pixel stage's job
    ds.PixelData = bytes(pixels)
    deid = Deidentifier(KEY, DEFAULTS)
    verify_deidentified(ds, deid(ds), deid.profile)


# -- every rule with a planted leak it must catch and a coincidence it must let through -------

from apolo_node.deid.dates import shift_da, shift_days  # noqa: E402
from apolo_node.deid.patient import patient_key  # noqa: E402

LEAK = PHILeakError


def patient(name: str, **values: object) -> tuple[Dataset, Deidentifier, Dataset]:
    """An original CT slice for ``name`` with ``values`` set, our de-identifier and its output."""
    ds = original(new_marker())
    ds.PatientName = name
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    deid = Deidentifier(KEY, DEFAULTS)
    return ds, deid, deid(ds)


def test_mary_inside_primary_passes_a_value_mary_is_caught():
    ds, deid, out = patient("Smith^Mary")
    assert "PRIMARY" in out.ImageType
    verify_deidentified(ds, out, deid.profile)
    out.ImageType = ["ORIGINAL", "PRIMARY", "MARY"]
    with pytest.raises(LEAK, match=r"PatientName\(0010,0010\).*at ImageType\(0008,0008\)") as err:
        verify_deidentified(ds, out, deid.profile)
    assert "MARY" not in str(err.value).upper()


def test_ray_ali_inside_our_method_text_passes_in_a_mark_we_never_write_is_caught():
    ds, deid, out = patient("Ray^Ali")
    assert "Confidentiality" in out.DeidentificationMethod[0]
    verify_deidentified(ds, out, deid.profile)
    out.DeidentificationMethod = list(out.DeidentificationMethod) + ["reviewed by Ali"]
    with pytest.raises(LEAK, match=r"at DeidentificationMethod\(0012,0063\)"):
        verify_deidentified(ds, out, deid.profile)


def test_bench_in_a_kept_manufacturer_passes_written_there_by_us_is_caught():
    ds, deid, out = patient("Bench^Synthetic", Manufacturer="apolo-bench")
    verify_deidentified(ds, out, deid.profile)
    ds, deid, out = patient("Bench^Synthetic", Manufacturer="ACME")
    out.Manufacturer = "apolo-bench"  # a kept place, but not the original's value
    with pytest.raises(LEAK, match=r"PatientName\(0010,0010\).*at Manufacturer\(0008,0070\)"):
        verify_deidentified(ds, out, deid.profile)


def test_institution_inside_the_kept_manufacturer_passes_a_changed_manufacturer_is_caught():
    ds, deid, out = patient("Doe^Jane", InstitutionName="Toshiba", Manufacturer="TOSHIBA_MEC")
    verify_deidentified(ds, out, deid.profile)
    ds, deid, out = patient("Doe^Jane", InstitutionName="Toshiba", Manufacturer="GE MEDICAL SYSTEMS")
    out.Manufacturer = "TOSHIBA_MEC"
    with pytest.raises(LEAK, match=r"InstitutionName\(0008,0080\).*at Manufacturer\(0008,0070\)"):
        verify_deidentified(ds, out, deid.profile)


@pytest.mark.parametrize("options", [DEFAULTS, ["retain_long_modified_dates"]])
@pytest.mark.parametrize("keyword", ["ImageComments", "StudyDescription"])
def test_a_name_in_free_text_is_caught_as_tokens_a_word_containing_it_is_not(options, keyword):
    ds = original(new_marker())
    ds.PatientName = "Smith^John^Lee"
    deid = Deidentifier(KEY, options)
    out = deid(ds)
    setattr(out, keyword, "summary of johnson, smithfield and leeds")  # contains, never as a token
    verify_deidentified(ds, out, deid.profile)
    for text in ("seen by SMITH, JOHN", "dr lee", "SMITH01", "john."):
        setattr(out, keyword, text)
        with pytest.raises(LEAK, match=rf"PatientName\(0010,0010\).*at {keyword}"):
            verify_deidentified(ds, out, deid.profile)


def test_a_private_value_equal_to_a_kept_value_passes_copied_elsewhere_it_is_caught():
    ds, deid, out = patient(
        "Doe^Jane", ManufacturerModelName="LightSpeed Plus", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"
    )
    ds.add_new(0x00090010, "LO", "GEMS_IDEN_01")
    ds.add_new(0x00091004, "SH", "LightSpeed Plus")  # private: removed, but also the kept model
    ds.add_new(0x00091101, "UI", "1.2.840.10008.5.1.4.1.1.2")  # a standard UID
    out = deid(ds)
    verify_deidentified(ds, out, deid.profile)
    out.ImageComments = "LightSpeed Plus"
    with pytest.raises(LEAK, match=r"private\(0009,1004\).*at ImageComments"):
        verify_deidentified(ds, out, deid.profile)
    out = deid(ds)
    out.add_new(0x00110010, "LO", "ACME")
    out.add_new(0x00111001, "LO", "for Jane Doe")  # a private element we would never write
    with pytest.raises(LEAK, match=r"at private\(0011,1001\)"):
        verify_deidentified(ds, out, deid.profile)


def test_short_names_are_caught_in_text_and_pass_next_to_explicit_vr_codes():
    ds, deid, out = patient("Lo^Li")
    encoded = encode(out)
    assert b"LO" in encoded  # the explicit VR of every LO element
    verify_deidentified(ds, out, deid.profile, encoded)
    out.ImageComments = "li"
    with pytest.raises(LEAK, match=r"PatientName\(0010,0010\).*at ImageComments"):
        verify_deidentified(ds, out, deid.profile)


def test_a_name_in_the_preamble_or_file_meta_is_caught_a_word_containing_it_is_not():
    ds, deid, out = patient("Smith^Mary")
    encoded = bytearray(encode(out))
    encoded[10:17] = b"PRIMARY"
    verify_deidentified(ds, out, deid.profile, bytes(encoded))
    encoded[10:17] = b"MARY  S"
    with pytest.raises(LEAK, match="encoded output at byte 10"):
        verify_deidentified(ds, out, deid.profile, bytes(encoded))
    encoded[10:17] = b"SMITH\xfe\xff"  # binary next to it: still a word boundary (read as UTF-8)
    with pytest.raises(LEAK, match="encoded output at byte 10"):
        verify_deidentified(ds, out, deid.profile, bytes(encoded))
    encoded[10:17] = bytes(7)
    encoded[123:128] = b"SMITH"  # right before "DICM"
    with pytest.raises(LEAK, match="encoded output at byte 123"):
        verify_deidentified(ds, out, deid.profile, bytes(encoded))
    out.file_meta.ImplementationVersionName = "SMITH"
    with pytest.raises(LEAK, match=r"at file meta\.ImplementationVersionName\(0002,0013\)"):
        verify_deidentified(ds, out, deid.profile)
    out = deid(ds)
    utf8 = bytearray(encode(out))
    utf8[20:27] = "Müller".encode("utf-8")  # not an element: only the byte search sees it
    ds.PatientName = "Müller^Mary"
    with pytest.raises(LEAK, match="encoded output at byte 20"):
        verify_deidentified(ds, out, deid.profile, bytes(utf8))


@pytest.mark.parametrize("given", [True, False])
def test_a_shifted_date_equal_to_another_original_date_passes_an_unshifted_one_is_caught(given):
    ds = original(new_marker())
    days = shift_days(KEY, patient_key(ds))
    ds.AcquisitionDate = shift_da(ds.StudyDate, days)  # our StudyDate will equal this original date
    deid = Deidentifier(KEY, DEFAULTS)
    out = deid(ds)
    assert out.StudyDate == ds.AcquisitionDate
    verify_deidentified(ds, out, deid.profile, days=days if given else None)
    out.StudyDate = ds.StudyDate  # left unshifted
    with pytest.raises(LEAK, match=r"StudyDate\(0008,0020\).*at StudyDate\(0008,0020\)"):
        verify_deidentified(ds, out, deid.profile, days=days if given else None)
    out = deid(ds)
    out.AcquisitionDate = ds.AcquisitionDate  # a copy of the original, not our shift of it
    with pytest.raises(LEAK, match=r"AcquisitionDate\(0008,0022\) in the original"):
        verify_deidentified(ds, out, deid.profile, days=days if given else None)


def test_an_id_inside_a_uid_is_caught_the_same_digits_inside_a_pseudonymous_uid_are_not():
    ds, deid, out = patient("Doe^Jane", PatientID="12345678")
    out.SeriesInstanceUID = "1.2.826.0.1.12345678.3"
    with pytest.raises(LEAK, match=r"PatientID\(0010,0020\).*at SeriesInstanceUID"):
        verify_deidentified(ds, out, deid.profile)
    digits = deid(ds).StudyInstanceUID.split(".")[-1][5:17]
    ds.PatientID = digits  # twelve digits that our pseudonymous Study Instance UID holds
    out = deid(ds)
    assert digits in out.StudyInstanceUID
    verify_deidentified(ds, out, deid.profile)


def nested(meaning: str) -> Dataset:
    """A three-deep chain of kept code sequences ending in ``meaning``."""
    deepest = Dataset()
    deepest.CodeValue, deepest.CodingSchemeDesignator, deepest.CodeMeaning = "T-1", "SRT", meaning
    middle = Dataset()
    middle.AnatomicRegionModifierSequence = [deepest]
    top = Dataset()
    top.PrimaryAnatomicStructureSequence = [middle]
    return top


def test_a_name_three_deep_is_caught_a_kept_original_value_there_passes():
    ds, deid, out = patient("Bench^Synthetic", AnatomicRegionSequence=[nested("Bench press region")])
    verify_deidentified(ds, out, deid.profile)
    ds, deid, out = patient("Bench^Synthetic", AnatomicRegionSequence=[nested("Head")])
    out.AnatomicRegionSequence[0].PrimaryAnatomicStructureSequence[0].AnatomicRegionModifierSequence[
        0
    ].CodeMeaning = "Synthetic"
    where = (
        r"at AnatomicRegionSequence\(0008,2218\)\[0\]\.PrimaryAnatomicStructureSequence\(0008,2228\)"
        r"\[0\]\.AnatomicRegionModifierSequence\(0008,2220\)\[0\]\.CodeMeaning\(0008,0104\)"
    )
    with pytest.raises(LEAK, match=where):
        verify_deidentified(ds, out, deid.profile)


def test_the_whole_name_or_id_inside_a_kept_original_value_is_caught_one_name_word_is_not():
    ds, deid, out = patient("Synthetic^Bench", PositionReferenceIndicator="BENCH")
    verify_deidentified(ds, out, deid.profile)  # one word of the name: the source's coincidence
    ds, deid, out = patient("Synthetic^Bench", PositionReferenceIndicator="Synthetic, Bench")
    with pytest.raises(LEAK, match=r"PatientName\(0010,0010\).*at PositionReferenceIndicator"):
        verify_deidentified(ds, out, deid.profile)
    ds, deid, out = patient("Doe^Jane", PatientID="MRN998877", PositionReferenceIndicator="MRN998877")
    with pytest.raises(LEAK, match=r"PatientID\(0010,0020\).*at PositionReferenceIndicator"):
        verify_deidentified(ds, out, deid.profile)


@pytest.mark.parametrize("dates", ["retain_long_full_dates", "retain_long_modified_dates"])
def test_words_of_every_mark_we_write_pass_as_ours(dates):
    """Every de-identification mark our actions write is recognised as ours, whatever the options."""
    options = [o.value for o in Option if not o.value.startswith("retain_long")] + [dates]
    ds = original(new_marker())
    ds.PatientName = "Application^Confidentiality^Profile"  # strong: a whole name of three words
    ds.ReferringPhysicianName = "Longitudinal^Temporal^Information"
    ds.OperatorsName = "Descriptors^Option"
    deid = Deidentifier(KEY, options)
    out = deid(ds)
    verify_deidentified(ds, out, deid.profile)
    out.ImageComments = "Application Confidentiality Profile"  # the same words where we never write
    with pytest.raises(LEAK, match=r"PatientName\(0010,0010\).*at ImageComments"):
        verify_deidentified(ds, out, deid.profile)


def test_an_inferred_shift_outside_our_range_excuses_nothing():
    ds = original(new_marker())
    ds.PatientBirthDate = "19800101"  # 46 years before the only shifted date: no shift of ours
    deid = Deidentifier(KEY, DEFAULTS)
    out = deid(ds)
    verify_deidentified(ds, out, deid.profile)
    out.StudyDate = ds.PatientBirthDate  # a bug copies the birth date where the shifted date goes
    with pytest.raises(LEAK, match=r"PatientBirthDate\(0010,0030\).*at StudyDate\(0008,0020\)"):
        verify_deidentified(ds, out, deid.profile)


def test_the_deid_path_checks_dates_against_the_de_identifiers_own_shift():
    """With the shift given (as clean_instance gives it), another original date one to ten years
    away, written where the only shifted date goes, is caught: an inferred shift would excuse it."""
    from apolo_node.deid.command import clean_instance

    ds = original(new_marker())
    for keyword in ("AcquisitionDate", "ContentDate", "SeriesDate", "InstanceCreationDate"):
        if keyword in ds:
            delattr(ds, keyword)
    deid = Deidentifier(KEY, DEFAULTS)
    assert deid.date_shift(ds) == shift_days(KEY, patient_key(ds))
    clean_instance(ds, deid)  # the real output passes
    ds.PatientBirthDate = shift_da(ds.StudyDate, -400)  # as far before StudyDate as a shift goes
    out = deid(ds)
    out.StudyDate = ds.PatientBirthDate  # a bug writes the birth date where the shifted date goes
    verify_deidentified(ds, out, deid.profile)  # the hole an inferred shift leaves ...
    with pytest.raises(LEAK, match=r"PatientBirthDate\(0010,0030\).*at StudyDate\(0008,0020\)"):
        verify_deidentified(ds, out, deid.profile, days=deid.date_shift(ds))  # ... closed


def _read_back(ds: Dataset) -> Dataset:
    """``ds`` as a file reads: every element raw until it is looked at."""
    from io import BytesIO

    from pydicom import dcmread

    return dcmread(BytesIO(encode(ds)))


def test_an_in_place_clean_is_verified_from_its_snapshot_and_a_raw_element_left_alone_stays_raw():
    from pydicom.dataelem import RawDataElement

    from apolo_node.deid.verify import snapshot

    marker = new_marker()
    ds = _read_back(original(marker))
    deid = Deidentifier(KEY, DEFAULTS)
    before = snapshot(ds, deid.profile)
    assert isinstance(ds.get_item(0x00280010), RawDataElement), "the snapshot keeps Rows raw"
    out = deid(ds, in_place=True)
    assert out is ds and marker not in str(out.PatientName)
    verify_deidentified(before, out, deid.profile, encode(out))  # passes
    assert isinstance(out.get_item(0x00280010), RawDataElement), "written back as its own bytes"


def test_a_value_looked_at_before_the_snapshot_is_read_again_after_an_in_place_clean():
    # Converted before the snapshot, an element is the same object after the clean: its
    # cleaned value must be read again (not the snapshot's: a false alarm), and a value a
    # broken action left must still be caught.
    from apolo_node.deid.verify import snapshot

    deid = Deidentifier(KEY, DEFAULTS)
    for broken in (False, True):
        ds = _read_back(original(new_marker()))
        uid = ds["SOPInstanceUID"]  # converted now, as clean_instance's checks do
        name = ds["ReferringPhysicianName"]
        before = snapshot(ds, deid.profile)
        kept = name.value
        out = deid(ds, in_place=True)
        assert out["SOPInstanceUID"] is uid and out["ReferringPhysicianName"] is name
        if not broken:
            verify_deidentified(before, out, deid.profile, encode(out))  # remapped UID passes
            continue
        name.value = kept  # a broken action that leaves the value
        with pytest.raises(PHILeakError, match=r"ReferringPhysicianName\(0008,0090\)"):
            verify_deidentified(before, out, deid.profile, encode(out))


def _vendor_files() -> list[str]:
    """pydicom's test files, and pydicom-data's when that wheel (test extra) is installed."""
    from pydicom.data import get_testdata_files

    return get_testdata_files("*.dcm")


def test_the_fast_text_decoding_equals_pydicoms_on_every_text_element_of_real_files():
    # The verifier reads raw text elements itself (fast_value) instead of through pydicom:
    # on every text element of pydicom's vendor files the two must give the same value.
    from pydicom import dcmread
    from pydicom.config import disable_value_validation
    from pydicom.dataelem import RawDataElement

    from apolo_node.deid.verify import _NOT_FAST, _value, fast_value

    compared = vrs = 0
    seen_vrs: set[str] = set()
    for path in _vendor_files():
        with disable_value_validation():
            try:
                ds = dcmread(path, force=True)
            except Exception:
                continue
            stack = [ds]
            while stack:
                item = stack.pop()
                for tag in list(item.keys()):
                    raw = item.get_item(tag)
                    if not isinstance(raw, RawDataElement):
                        if getattr(raw, "VR", None) == "SQ":
                            stack.extend(raw.value or [])
                        continue
                    try:
                        fast = fast_value(item, raw)
                    except Exception:
                        continue
                    if fast is _NOT_FAST:
                        continue
                    try:
                        theirs = _value(item[tag].value)
                    except Exception:
                        continue
                    assert fast == theirs, (path, tag, raw.VR, fast, theirs)
                    compared += 1
                    seen_vrs.add(raw.VR)
    vrs = len(seen_vrs)
    assert compared > 2000 and vrs >= 10, (compared, seen_vrs)
