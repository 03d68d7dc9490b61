"""The fail-closed verifier: it finds leaks at any depth and in raw bytes, and never shows them."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from apolo_node.deid import Deidentifier, PHILeakError, verify_deidentified
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
