"""The profile as data: coverage of PS3.15 Table E.1-1, option names, how codes resolve."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from apolo_node.config import ConfigError
from apolo_node.deid.profile import Action, Option, Profile, load_rows

# A copy of ../shared/reference/ps3.15-table-e1-1.json, kept in the repository so the test runs
# in a clean clone.
REFERENCE = Path(__file__).resolve().parent / "data/ps3.15-table-e1-1.json"
DEFAULTS = ["clean_pixel_data", "clean_descriptors", "retain_long_modified_dates"]
GENERATOR = Path(__file__).resolve().parents[1] / "scripts/gen_deid_profile.py"


def generator_columns() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("gen_deid_profile", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.COLUMNS


def test_packaged_table_covers_every_row_of_the_reference():
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    columns = generator_columns()
    assert {Option(name) for name in columns.values()}  # every column names one of our options
    ours = {row.tag: row for row in load_rows()}
    assert len(reference) == len(ours) == 621
    for ref in reference:
        tag = "private" if "ODD" in ref["tag"] else ref["tag"].strip("()").replace(",", "").lower()
        assert tag in ours, ref["tag"]
        row = ours[tag]
        assert row.basic == ref["basicProfile"], ref["tag"]
        assert row.options == {columns[k]: ref[k] for k in columns if k in ref}, ref["tag"]


def test_the_config_defaults_are_known_options():
    from apolo_node.config import DeidSettings

    assert Profile(DeidSettings().options).options == {Option(o) for o in DEFAULTS}


def test_an_unknown_option_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown option 'retain_everything'; known: clean_pixel_data"):
        Profile(["clean_descriptors", "retain_everything"])


def test_full_and_modified_dates_exclude_each_other():
    with pytest.raises(ConfigError, match="retain_long_full_dates and retain_long_modified_dates"):
        Profile(["retain_long_full_dates", "retain_long_modified_dates"])


def test_each_option_records_its_cid_7050_code():
    assert {o.value: o.code.value for o in Option} == {
        "clean_pixel_data": "113101",
        "clean_graphics": "113103",
        "clean_structured_content": "113104",
        "clean_descriptors": "113105",
        "retain_long_full_dates": "113106",
        "retain_long_modified_dates": "113107",
        "retain_patient_chars": "113108",
        "retain_device_identity": "113109",
        "retain_uids": "113110",
        "retain_safe_private": "113111",
        "retain_institution_identity": "113112",
    }
    assert all(o.code.scheme_designator == "DCM" for o in Option)


# (options, tag, VR, expected action): the resolution rule of apolo_node.deid.profile.
RESOLUTION = [
    ([], 0x00100010, "PN", Action.EMPTY),  # Patient's Name: Z
    ([], 0x00080080, "LO", Action.EMPTY),  # Institution Name X/Z/D, not Type 1: Z
    ([], 0x00181000, "LO", Action.DUMMY),  # Device Serial Number X/Z/D, Type 1 somewhere: D
    ([], 0x00181030, "LO", Action.REMOVE),  # Protocol Name X/D: X
    ([], 0x00080023, "DA", Action.DUMMY),  # Content Date Z/D, Type 1 in SR: D
    ([], 0x00081110, "SQ", Action.EMPTY),  # Referenced Study Sequence X/Z: Z
    ([], 0x00081140, "SQ", Action.REMAP_UID),  # Referenced Image Sequence X/Z/U*: keep, remap
    ([], 0x0020000D, "UI", Action.REMAP_UID),
    ([], 0x00080020, "DA", Action.EMPTY),  # Study Date: Z
    ([], 0x00081030, "LO", Action.REMOVE),  # Study Description: X
    (["clean_descriptors"], 0x00081030, "LO", Action.REMOVE),  # C on free text: Basic's action
    (["clean_descriptors"], 0x00400275, "SQ", Action.KEEP),  # C on a sequence: clean the items
    (["retain_long_modified_dates"], 0x00080020, "DA", Action.SHIFT_DATE),
    (["retain_long_modified_dates"], 0x00080030, "TM", Action.KEEP),
    (["retain_long_modified_dates"], 0x0040A120, "DT", Action.SHIFT_DATE),
    (["retain_long_full_dates"], 0x00080020, "DA", Action.KEEP),
    ([], 0x00100030, "DA", Action.EMPTY),  # Patient's Birth Date: Z under every option
    (["retain_long_modified_dates"], 0x00100030, "DA", Action.EMPTY),
    (["retain_device_identity"], 0x00181000, "LO", Action.KEEP),
    # Calibration Date: retain_device_identity (K) wins over modified dates (C)
    (["retain_device_identity", "retain_long_modified_dates"], 0x00181200, "DA", Action.KEEP),
    (["retain_device_identity"], 0x00081010, "SH", Action.KEEP),  # Station Name
    (["retain_institution_identity"], 0x00080080, "LO", Action.KEEP),
    (["retain_patient_chars"], 0x00101010, "AS", Action.KEEP),  # Patient's Age
    (["retain_uids"], 0x0020000D, "UI", Action.KEEP),
    (["clean_structured_content"], 0x00400555, "SQ", Action.KEEP),  # Acquisition Context Seq
    (["clean_graphics"], 0x60003000, "OW", Action.REMOVE),  # overlays go whatever the option
    ([], 0x60000010, "US", Action.REMOVE),  # unlisted overlay element
    ([], 0x50000005, "US", Action.REMOVE),  # curve
    ([], 0x00111001, "LO", Action.REMOVE),  # private
    ([], 0x00110010, "LO", Action.REMOVE),  # private creator
    ([], 0x00140104, "PN", Action.REMOVE),  # unlisted PN
    ([], 0x0018991E, "UI", Action.REMAP_UID),  # unlisted Target Frame of Reference UID
    ([], 0x00081150, "UI", Action.KEEP),  # unlisted Referenced SOP Class UID: names a kind
    ([], 0x00080016, "UI", Action.KEEP),  # SOP Class UID
    ([], 0x00140102, "DA", Action.EMPTY),  # unlisted DA: like X/Z
    (["retain_long_modified_dates"], 0x00140102, "DA", Action.SHIFT_DATE),
    ([], 0x00280010, "US", Action.KEEP),  # Rows
    ([], 0x00280000, "UL", Action.REMOVE),  # group length
]


@pytest.mark.parametrize(("options", "tag", "vr", "expected"), RESOLUTION)
def test_codes_resolve_to_one_action(options, tag, vr, expected):
    assert Profile(options).action_for(tag, vr) is expected


def test_safe_private_keeps_only_listed_elements_of_their_creator():
    profile = Profile(["retain_safe_private"])
    assert profile.action_for(0x0019100C, "IS", "SIEMENS MR HEADER") is Action.KEEP
    assert profile.action_for(0x0019100C, "IS", "ACME") is Action.REMOVE
    assert profile.action_for(0x00191008, "CS", "SIEMENS MR HEADER") is Action.REMOVE
    assert profile.action_for(0x00190010, "LO") is Action.SAFE_PRIVATE
    assert Profile([]).action_for(0x0019100C, "IS", "SIEMENS MR HEADER") is Action.REMOVE


def test_our_method_codes_are_pydicoms_cid_7050_codes():
    from pydicom.sr.codedict import codes

    from apolo_node.deid.profile import _CODES, BASIC_PROFILE_CODE

    names = {
        Option.CLEAN_PIXEL_DATA: "CleanPixelDataOption",
        Option.CLEAN_GRAPHICS: "CleanGraphicsOption",
        Option.CLEAN_STRUCTURED_CONTENT: "CleanStructuredContentOption",
        Option.CLEAN_DESCRIPTORS: "CleanDescriptorsOption",
        Option.RETAIN_LONG_FULL_DATES: "RetainLongitudinalTemporalInformationFullDatesOption",
        Option.RETAIN_LONG_MODIFIED_DATES: "RetainLongitudinalTemporalInformationModifiedDatesOption",
        Option.RETAIN_PATIENT_CHARS: "RetainPatientCharacteristicsOption",
        Option.RETAIN_DEVICE_IDENTITY: "RetainDeviceIdentityOption",
        Option.RETAIN_UIDS: "RetainUidsOption",
        Option.RETAIN_SAFE_PRIVATE: "RetainSafePrivateOption",
        Option.RETAIN_INSTITUTION_IDENTITY: "RetainInstitutionIdentityOption",
    }
    assert set(_CODES) == set(Option) == set(names)
    pairs = [(o.code, getattr(codes.DCM, names[o])) for o in Option]
    pairs.append((BASIC_PROFILE_CODE, codes.DCM.BasicApplicationConfidentialityProfile))
    for ours, theirs in pairs:
        assert (ours.value, ours.scheme_designator, ours.meaning) == (
            theirs.value, theirs.scheme_designator, theirs.meaning
        )
