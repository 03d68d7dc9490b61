"""Structured content (PS3.15 E.3.3): Content Sequence with and without the Clean Structured
Content option, at any depth, in SR documents and in images; and D on a sequence."""

from __future__ import annotations

from io import BytesIO
from typing import Iterator

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from apolo_node.deid import Deidentifier, clean_instance
from apolo_node.deid.command import clean_file
from apolo_node.deid.dates import shift_da, shift_days, shift_dt
from apolo_node.deid.depth import dataset_sequence_depth, file_sequence_depth
from apolo_node.deid.patient import patient_key
from apolo_node.deid.verify import verify_deidentified
from tests.dose_sr import (
    EVENT_DATE,
    EVENT_DATETIME,
    EVENT_UID,
    PATIENT,
    PATIENT_ID,
    PLANTED_TEXT,
    STANDARD_UID,
    code,
    content_item,
    dose_sr,
    num,
)

KEY = b"test-key-0123456789abcdef"
DEFAULTS = ["clean_pixel_data", "clean_descriptors", "retain_long_modified_dates"]
WITH_OPTION = DEFAULTS + ["clean_structured_content"]


def tree(ds: Dataset, path: str = "") -> Iterator[tuple[str, Dataset]]:
    """(path of value types, item) for every content item, depth first."""
    for i, item in enumerate(ds.get("ContentSequence", [])):
        here = f"{path}/{i}:{item.get('ValueType', '?')}"
        yield here, item
        yield from tree(item, here)


def shape(ds: Dataset) -> list[tuple[str, str, tuple]]:
    """What must survive cleaning: paths, relationships and concept names of every item."""
    return [
        (path, item.RelationshipType, tuple((c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
                                            for c in item.ConceptNameCodeSequence))
        for path, item in tree(ds)
    ]


def leaves(ds: Dataset) -> dict[str, Dataset]:
    """Content items by concept code value."""
    return {item.ConceptNameCodeSequence[0].CodeValue: item for _, item in tree(ds)}


def test_a_dose_sr_keeps_tree_codes_and_measurements_and_loses_names_ids_text_and_dates() -> None:
    original = dose_sr()
    deidentifier = Deidentifier(KEY, WITH_OPTION)
    clean = clean_instance(original, deidentifier)  # the verifier passes inside
    out = dcmread(BytesIO(clean.encoded))
    assert max(path.count("/") for path, _ in tree(out)) == 4, "values at depth 4"
    assert shape(out) == shape(original)
    before, after = leaves(original), leaves(out)
    for concept in ("113830", "113838"):  # NUM: value and unit kept
        kept, was = after[concept].MeasuredValueSequence[0], before[concept].MeasuredValueSequence[0]
        assert kept.NumericValue == was.NumericValue
        assert kept.MeasurementUnitsCodeSequence[0].CodeValue == was.MeasurementUnitsCodeSequence[0].CodeValue
    assert after["113820"].ConceptCodeSequence[0].CodeValue == "113804"
    assert after["121106"].TextValue == "ANONYMIZED"
    assert after["113851"].PersonName == "ANONYMIZED" and after["121008"].PersonName == "ANONYMIZED"
    days = shift_days(KEY, patient_key(original))
    assert after["111526"].DateTime == shift_dt(EVENT_DATETIME, days)
    assert after["111536"].Date == shift_da(EVENT_DATE, days)
    assert after["113769"].UID == deidentifier.uids(EVENT_UID)
    assert after["112002"].UID == STANDARD_UID
    for planted in (PATIENT, PATIENT_ID, "Okonkwo", "Adaeze", "Lindqvist", "Henrik", EVENT_UID,
                    EVENT_DATE, EVENT_DATETIME):
        assert planted.encode() not in clean.encoded, planted


def test_without_the_option_content_sequence_is_one_item_of_dummies() -> None:
    original = dose_sr()
    clean = clean_instance(original, Deidentifier(KEY, DEFAULTS))
    out = dcmread(BytesIO(clean.encoded))
    [item] = out.ContentSequence
    assert item.ValueType == "ANONYMIZED" and item.PersonName == "ANONYMIZED"
    assert item.ConceptNameCodeSequence[0].CodeValue == "ANONYMIZED"
    assert len(original.ContentSequence) == 2, "the input is not changed"
    for planted in (PATIENT_ID, "Okonkwo", "Lindqvist", EVENT_UID, EVENT_DATETIME, "113830", "412.7"):
        assert planted.encode() not in clean.encoded, planted


def test_an_image_carrying_a_content_sequence_is_cleaned_the_same_way() -> None:
    image = dcmread(get_testdata_file("CT_small.dcm"))
    image.ContentSequence = [
        content_item("CONTAINS", "TEXT", code("121106", "DCM", "Comment"), TextValue=PLANTED_TEXT),
        num(code("113830", "DCM", "Mean CTDIvol"), "12.5", code("mGy", "UCUM", "mGy")),
    ]
    clean = clean_instance(image, Deidentifier(KEY, WITH_OPTION))
    text, measured = clean.dataset.ContentSequence
    assert text.TextValue == "ANONYMIZED"
    assert measured.MeasuredValueSequence[0].NumericValue == 12.5
    assert b"Okonkwo" not in clean.encoded
    [dummy] = clean_instance(image, Deidentifier(KEY, DEFAULTS)).dataset.ContentSequence
    assert dummy.TextValue == "ANONYMIZED"


def nested_chain(depth: int) -> Dataset:
    """An SR whose CONTAINER items nest ``depth`` deep, each holding a TEXT, a DATE and a NUM."""
    ds = dose_sr()
    ds.ContentSequence = []
    parent = ds
    for level in range(1, depth + 1):
        container = content_item("CONTAINS", "CONTAINER", code(f"L{level}", "99TEST", f"Level {level}"),
                                 ContinuityOfContent="SEPARATE")
        container.ContentSequence = [
            content_item("CONTAINS", "TEXT", code("121106", "DCM", "Comment"),
                         TextValue=f"{PLANTED_TEXT} level {level}"),
            content_item("CONTAINS", "DATE", code("111536", "DCM", "Date"), Date=EVENT_DATE),
            num(code("113830", "DCM", "Mean CTDIvol"), f"{level}.5", code("mGy", "UCUM", "mGy")),
        ]
        parent.ContentSequence.append(container)
        parent = container
    return ds


def test_content_items_ten_deep_are_cleaned_at_every_depth() -> None:
    original = nested_chain(10)
    clean = clean_instance(original, Deidentifier(KEY, WITH_OPTION))
    out = dcmread(BytesIO(clean.encoded))
    assert shape(out) == shape(original)
    items = [item for _, item in tree(out)]
    texts = [i.TextValue for i in items if i.ValueType == "TEXT"]
    dates = [i.Date for i in items if i.ValueType == "DATE"]
    values = [i.MeasuredValueSequence[0].NumericValue for i in items if i.ValueType == "NUM"]
    assert texts == ["ANONYMIZED"] * 10
    assert dates == [shift_da(EVENT_DATE, shift_days(KEY, patient_key(original)))] * 10
    assert values == [level + 0.5 for level in range(1, 11)]
    assert b"Okonkwo" not in clean.encoded


def test_the_verifier_catches_free_text_left_in_a_content_item() -> None:
    """What the option must clean is what the verifier looks for: a TEXT item left as it was fails."""
    original = dose_sr()
    deidentifier = Deidentifier(KEY, WITH_OPTION)
    out = deidentifier(original)
    leaves(out)["121106"].TextValue = PLANTED_TEXT
    with pytest.raises(ValueError, match=r"TextValue|ContentSequence"):
        verify_deidentified(original, out, deidentifier.profile)


@pytest.mark.parametrize("options", [DEFAULTS, WITH_OPTION])
def test_d_on_a_code_sequence_leaves_no_identifier(options: list[str]) -> None:
    """Person Identification Code Sequence (D): its code value is a person's ID."""
    image = dcmread(get_testdata_file("CT_small.dcm"))
    physician = Dataset()
    physician.PersonIdentificationCodeSequence = [code("EMP449120", "99HOSP", "Dr Henrik Lindqvist")]
    image.PhysiciansOfRecordIdentificationSequence = [physician]
    image.VerifyingObserverSequence = []
    clean = clean_instance(image, Deidentifier(KEY, options))
    assert b"EMP449120" not in clean.encoded and b"Lindqvist" not in clean.encoded
    assert clean.dataset.get("VerifyingObserverSequence", []) == [], "an empty sequence stays empty"


def test_an_sr_written_with_undefined_lengths_is_cleaned_like_any_other(tmp_path) -> None:
    """Sequences and items of undefined length, as pynetdicom and dcm4che senders write them."""
    original = dose_sr()
    for elem in original.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
    path = tmp_path / "undefined.dcm"
    original.save_as(path, enforce_file_format=True)
    assert b"\xfe\xff\xdd\xe0" in path.read_bytes(), "sequence delimiters written"
    # Four content levels, then Measured Value and Measurement Units Code Sequences.
    assert file_sequence_depth(path, 32) == dataset_sequence_depth(dcmread(path), 32) == 6
    clean = clean_file(path, Deidentifier(KEY, WITH_OPTION))
    after = leaves(dcmread(BytesIO(clean.encoded)))
    assert after["121106"].TextValue == "ANONYMIZED"
    assert after["113838"].MeasuredValueSequence[0].NumericValue == 412.7
    assert b"Okonkwo" not in clean.encoded
