"""PS3.15 Annex E Table E.1-1 as data, and the one place where its codes become actions.

The table ships as ``apolo_node/data/deid_profile.json`` (made by ``scripts/gen_deid_profile.py``).
A :class:`Profile` is the Basic Application Confidentiality Profile plus a set of options, with
every code resolved once, at construction, into one concrete :class:`Action`.

How codes resolve (the rule we document and test):

* An option column that applies wins over the Basic Profile code; when two selected options give
  different codes for one attribute, ``K`` (retain) wins over ``C`` (clean): the user asked to
  keep it (e.g. Calibration Date under retain_device_identity and retain_long_modified_dates).
* ``C`` (clean) becomes: a date shift for DA and DT, keep for TM (the shift is whole days, so
  times stay consistent with their dates), keep-and-clean-the-items for a sequence (clean
  structured content), the safe-private check for private attributes. For any other value
  (free text, AE titles, labels) we cannot clean safely, so ``C`` falls back to the Basic
  Profile's own resolved action: removed where the attribute may be absent, emptied where it
  must be present, a dummy where it must have a value. The option is still recorded.
* Combined codes choose the strictest action that keeps a standard IOD valid. Without per-IOD
  module tables we assume: ``X/Z/U*`` -> ``U`` (keep the reference sequence and remap the UIDs in
  its items, so cross references survive); a code with ``D`` -> ``D`` only for the attributes in
  :data:`REQUIRED_TYPE_1` (Type 1 in some standard IOD); otherwise a code with ``Z`` -> ``Z``
  (zero length is valid for Type 2 and Type 3); otherwise ``X``.
* ``D`` on a sequence (Content Sequence, Graphic Annotation Sequence, Verifying Observer
  Sequence, Person Identification Code Sequence, ...) means *one item of dummies*: the sequence
  keeps a single item, built from the first, in which every value is replaced by the dummy for
  its VR (UIDs remapped), nested sequences likewise reduced to one such item, private elements
  dropped. A Type 1 sequence stays present and non-empty, as ``D`` requires, and nothing of the
  original values remains; an empty sequence stays empty.
* Structured content (PS3.15 E.3.3): Content Sequence is ``D`` without the Clean Structured
  Content option; with it, ``C`` keeps the tree (relationships, value types, codes, measurements,
  references) and cleans each item's values through their own rows: Person Name ``D``; DateTime
  and Date shifted with the patient's other dates (Time kept beside them), or dummies without a
  date option; UID remapped, standard UIDs kept. The free text the table
  does not list (:data:`UNLISTED_FREE_TEXT`: Text Value, a graphic's Unformatted Text Value) is
  replaced by a dummy wherever it appears, as we cannot clean free text.
* Attributes the table does not list: private ones follow the table's private row; every element
  of the 50xx (curves) and 60xx (overlays) groups, group lengths and trailing padding are
  removed; PN values are removed; UI values are remapped (standard UIDs, and the UIDs of
  those :func:`names_a_kind` finds, such as SOP Class UID, are kept); DA, DT and TM
  values are treated like ``X/Z`` dates (so shifted or kept by the date options); the rest is kept.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from importlib import resources
from typing import Iterable

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.tag import BaseTag, Tag

from apolo_node.config import ConfigError

DATE_VRS = frozenset({"DA", "DT"})
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})

# Attributes with a D in a combined code that are Type 1 (or 1C) in at least one standard
# composite IOD, so removing or emptying them would make such objects invalid.
REQUIRED_TYPE_1 = frozenset(
    {
        0x0008002A,  # Acquisition DateTime (Enhanced images, 1C)
        0x00080023,  # Content Date (SR documents, enhanced images)
        0x00080033,  # Content Time
        0x00181000,  # Device Serial Number (Enhanced General Equipment)
        0x0040A032,  # Observation DateTime (SR content items, 1C)
        0x00100020,  # Patient ID: replaced by the patient pseudonym
    }
)

# Unlisted UI attributes that name a kind of thing (SOP class, transfer syntax, coding scheme,
# software), not an instance: kept even when the UID is private, or the object loses its meaning.
# Matched on pydicom's keyword: "...ClassUID...", "...TransferSyntax...", and these.
KIND_UID_KEYWORDS = frozenset(
    {"CodingSchemeUID", "ContextUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID", "CreatorVersionUID"}
)


def names_a_kind(tag: int) -> bool:
    """Whether an unlisted UI attribute holds a class/syntax/scheme UID rather than an instance's."""
    keyword = keyword_for_tag(tag)
    return "ClassUID" in keyword or "TransferSyntax" in keyword or keyword in KIND_UID_KEYWORDS


# Free text the table does not list, found in content items and graphic text objects: a dummy,
# since free text may name anyone (Type 1 in a TEXT content item, so not removed).
UNLISTED_FREE_TEXT = frozenset(
    {
        0x0040A160,  # Text Value (TEXT content items, acquisition context, specimens)
        0x00700006,  # Unformatted Text Value (graphic annotation text objects)
    }
)

# PS3.15 E.3.10 safe private attributes we keep under retain_safe_private: (group, private
# creator, element byte). A short list of numeric diffusion parameters from Table E.3.10-1.
SAFE_PRIVATE = frozenset(
    {
        (0x0019, "SIEMENS MR HEADER", 0x0C),  # B_value
        (0x0019, "SIEMENS MR HEADER", 0x0D),  # DiffusionDirectionality
        (0x0019, "SIEMENS MR HEADER", 0x0E),  # DiffusionGradientDirection
        (0x0019, "SIEMENS MR HEADER", 0x27),  # B_matrix
        (0x0019, "GEMS_ACQU_01", 0xBB),  # diffusion direction x
        (0x0019, "GEMS_ACQU_01", 0xBC),  # diffusion direction y
        (0x0019, "GEMS_ACQU_01", 0xBD),  # diffusion direction z
        (0x0043, "GEMS_PARM_01", 0x39),  # slop_int_6..9 (b-value)
        (0x2001, "Philips Imaging DD 001", 0x03),  # Diffusion B-Factor
    }
)


class Option(str, enum.Enum):
    """PS3.15 Annex E options we accept in ``[deid] options``, each with its CID 7050 code."""

    CLEAN_PIXEL_DATA = "clean_pixel_data"
    CLEAN_GRAPHICS = "clean_graphics"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    RETAIN_LONG_FULL_DATES = "retain_long_full_dates"
    RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
    RETAIN_PATIENT_CHARS = "retain_patient_chars"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_UIDS = "retain_uids"
    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"

    @property
    def code(self) -> Code:
        """The DCM code (CID 7050) recorded in De-identification Method Code Sequence."""
        return _CODES[self]

    @classmethod
    def parse(cls, value: str | Option) -> Option:
        """One option by name; an unknown name raises ConfigError listing the known ones."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(o.value for o in cls)
            raise ConfigError(f"[deid] options: unknown option {value!r}; known: {known}") from None


@dataclass(frozen=True)
class Code:
    """A DCM code of CID 7050 (De-identification Method), as pydicom's ``codes.DCM`` has it.

    Written out here rather than taken from ``pydicom.sr.codedict``, whose concept tables take
    longer to import than ``apolo-node deid`` spends on a hundred files
    (tests/test_deid_profile.py checks each against pydicom's).
    """

    value: str
    scheme_designator: str
    meaning: str


_CODES = {
    Option.CLEAN_PIXEL_DATA: Code("113101", "DCM", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS: Code("113103", "DCM", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: Code("113104", "DCM", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: Code("113105", "DCM", "Clean Descriptors Option"),
    Option.RETAIN_LONG_FULL_DATES: Code(
        "113106", "DCM", "Retain Longitudinal Temporal Information Full Dates Option"
    ),
    Option.RETAIN_LONG_MODIFIED_DATES: Code(
        "113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    Option.RETAIN_PATIENT_CHARS: Code("113108", "DCM", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: Code("113109", "DCM", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: Code("113110", "DCM", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: Code("113111", "DCM", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: Code("113112", "DCM", "Retain Institution Identity Option"),
}
BASIC_PROFILE_CODE = Code("113100", "DCM", "Basic Application Confidentiality Profile")


class Action(enum.Enum):
    """What happens to one element, after every code and option is resolved."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"  # for a sequence: one item of dummies
    KEEP = "K"  # for a sequence: keep it and clean its items
    REMAP_UID = "U"  # for a sequence (X/Z/U*): keep it and clean its items
    SHIFT_DATE = "C"  # DA and DT under retain_long_modified_dates
    SAFE_PRIVATE = "P"  # private: kept only when listed in SAFE_PRIVATE


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1 in our format."""

    tag: str  # eight hex digits, ``x`` wildcards, or "private"
    name: str
    basic: str
    options: dict[str, str]

    def matches(self, tag: int) -> bool:
        """Whether ``tag`` is this row's tag (wildcards match any hex digit)."""
        if self.tag == "private":
            return bool((tag >> 16) & 1)
        text = f"{tag:08x}"
        return all(p in ("x", t) for p, t in zip(self.tag, text))


def load_rows() -> list[Row]:
    """The rows of the packaged table."""
    raw = json.loads(
        resources.files("apolo_node").joinpath("data/deid_profile.json").read_text(encoding="utf-8")
    )
    return [Row(r["tag"], r["name"], r["basic"], dict(r["options"])) for r in raw["rows"]]


def _resolve_combined(code: str, tag: int) -> str:
    if "/" not in code:
        return code
    parts = code.split("/")
    if "U*" in parts:
        return "U"
    if "D" in parts and tag in REQUIRED_TYPE_1:
        return "D"
    return "Z" if "Z" in parts else "X"


def is_repeating_group(tag: int) -> bool:
    """Whether ``tag`` is in the 50xx (curves) or 60xx (overlays) repeating groups."""
    group = tag >> 16
    return 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF


class Profile:
    """Basic Application Confidentiality Profile plus options, resolved to one action a tag."""

    def __init__(self, options: Iterable[str | Option] = ()) -> None:
        chosen = [Option.parse(o) for o in options]
        self.options: frozenset[Option] = frozenset(chosen)
        if {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES} <= self.options:
            raise ConfigError(
                "[deid] options: retain_long_full_dates and retain_long_modified_dates "
                "exclude each other; choose one"
            )
        self.rows = load_rows()
        self._exact: dict[int, Action] = {}
        self._names: dict[int, str] = {}
        for row in self.rows:
            if row.tag == "private" or "x" in row.tag:
                continue  # handled by rule in action_for
            tag = int(row.tag, 16)
            self._exact[tag] = self._resolve(row.basic, row.options, tag, dictionary_VR(tag))
            self._names[tag] = row.name
        self._private = self._resolve_private()

    @property
    def shifts_dates(self) -> bool:
        return Option.RETAIN_LONG_MODIFIED_DATES in self.options

    def _selected_code(self, basic: str, options: dict[str, str]) -> str:
        given = {code for name, code in options.items() if Option(name) in self.options}
        if "K" in given:
            return "K"
        return given.pop() if given else basic

    def _resolve(self, basic: str, options: dict[str, str], tag: int, vr: str) -> Action:
        code = self._selected_code(basic, options)
        if code == "C":
            if vr in DATE_VRS:
                return Action.SHIFT_DATE
            if vr in ("TM", "SQ"):
                return Action.KEEP
            code = basic  # free text we cannot clean: the Basic Profile's own action
        return Action(_resolve_combined(code, tag))

    def _resolve_private(self) -> Action:
        row = next(r for r in self.rows if r.tag == "private")
        return Action.SAFE_PRIVATE if self._selected_code(row.basic, row.options) == "C" else Action.REMOVE

    def action_for(self, tag: int | BaseTag, vr: str, creator: str | None = None) -> Action:
        """The action for one element: its table row, else the rules for unlisted attributes.

        ``creator`` is the private creator of a private element (None when it has none).
        """
        tag = Tag(tag)
        if tag.is_private:
            if self._private is Action.REMOVE:
                return Action.REMOVE
            if tag.is_private_creator:
                return Action.SAFE_PRIVATE  # kept only while one of its block's elements is
            return Action.KEEP if is_safe_private(tag, creator) else Action.REMOVE
        action = self._exact.get(int(tag))
        if action is not None:
            return action
        if is_repeating_group(tag) or tag.element == 0 or tag == 0xFFFCFFFC:
            return Action.REMOVE
        if int(tag) in UNLISTED_FREE_TEXT:
            return Action.DUMMY
        if vr == "PN":
            return Action.REMOVE
        if vr == "UI":
            return Action.KEEP if names_a_kind(int(tag)) else Action.REMAP_UID
        if vr in TEMPORAL_VRS:
            return self._resolve(
                "X/Z",
                {"retain_long_full_dates": "K", "retain_long_modified_dates": "C"},
                int(tag),
                vr,
            )
        return Action.KEEP

    def name_of(self, tag: int | BaseTag) -> str:
        """The table's name for a listed tag, else pydicom's keyword, else the tag."""
        tag = Tag(tag)
        return keyword_for_tag(tag) or self._names.get(int(tag)) or str(tag)

    def __repr__(self) -> str:
        return f"Profile(options={sorted(o.value for o in self.options)})"


def is_safe_private(tag: BaseTag, creator: str | None) -> bool:
    """Whether a private data element is in our safe list for its creator."""
    if creator is None:
        return False
    return (tag.group, creator.strip(), tag.element & 0xFF) in SAFE_PRIVATE
