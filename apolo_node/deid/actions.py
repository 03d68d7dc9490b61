"""PS3.15 Annex E header actions, applied at every depth of every sequence.

:class:`Deidentifier` takes a dataset and returns a new, de-identified one; it never touches the
disk and never changes its input. UIDs go through :class:`apolo_node.pseudonym.UIDMapper`, so
every reference between instances (Study, Series, SOP Instance, Frame of Reference, Referenced
SOP Instance UIDs in nested sequences) maps to the same pseudonym under the same key.

Before any of that, the depth of the data set's sequences is counted without recursion
(:mod:`apolo_node.deid.depth`): an instance nested deeper than ``max_depth`` is refused with
:class:`TooDeep`, since copying and writing it would recurse without bound. ``D`` on a sequence
gives one item of dummies, and Content Sequence is cleaned item by item under the Clean
Structured Content option (see :mod:`apolo_node.deid.profile` for both rules).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

from pydicom import __version__ as pydicom_version
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from apolo_node.config import Config, DeidSettings
from apolo_node.deid.dates import shift_da, shift_days, shift_dt
from apolo_node.deid.depth import check_depth
from apolo_node.deid.patient import PatientPseudonym, patient_key
from apolo_node.deid.profile import BASIC_PROFILE_CODE, Action, Option, Profile, is_repeating_group
from apolo_node.pseudonym import UIDMapper, load_key

STANDARD_UID_ROOT = "1.2.840.10008."
DUMMY_TEXT = "ANONYMIZED"
# D (dummy) values by VR: valid for the VR, carrying nothing of the original.
DUMMY_BY_VR: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": DUMMY_TEXT,
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "UR": "urn:anonymized",
    **{vr: DUMMY_TEXT for vr in ("LO", "LT", "PN", "SH", "ST", "UC", "UT")},
    **{vr: 0 for vr in ("SL", "SS", "SV", "UL", "US", "UV")},
    **{vr: 0.0 for vr in ("FL", "FD")},
    **{vr: b"\x00\x00" for vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN")},
}


def is_standard_uid(value: str) -> bool:
    """Whether a UID is one the standard defines (SOP classes, transfer syntaxes, coding schemes).

    Those carry nothing about the patient and must keep their meaning, so they are never remapped.
    """
    value = value.strip().rstrip("\x00")
    return value in UID_dictionary or (value.startswith(STANDARD_UID_ROOT) and UID(value).is_valid)


def element_vr(ds: Dataset, tag: BaseTag) -> str:
    """The VR of an element without decoding its value (dictionary VR for implicit files)."""
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if not vr or vr == "UN":
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = vr or "UN"
    return vr.split(" or ")[0]


def writes_as_is(stored: object) -> bool:
    """Whether an element may stay raw (undecoded) and be written back as its own bytes.

    Only an explicit VR little endian element with a definite VR: pydicom writes a raw element
    without looking at it, and one read from an implicit VR file (or one whose encoding differs
    from what its file meta declares) would be written with no VR.
    """
    return (
        isinstance(stored, RawDataElement)
        and stored.is_implicit_VR is False
        and stored.is_little_endian is True
        and isinstance(stored.VR, str)
        and len(stored.VR) == 2
    )


def private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    """(group, block) -> private creator string, for the private elements of one dataset."""
    out = {}
    for tag in ds.keys():
        if tag.is_private_creator:
            value = ds[tag].value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            out[(tag.group, tag.element)] = str(value).strip().rstrip("\x00")
    return out


def creator_of(creators: dict[tuple[int, int], str], tag: BaseTag) -> str | None:
    """The private creator of a private data element, None if the block has none."""
    return creators.get((tag.group, tag.element >> 8))


@dataclass(frozen=True)
class _Patient:
    """What one call needs about the patient: pseudonym and date shift."""

    pseudonym: PatientPseudonym
    days: int


class Deidentifier:
    """PS3.15 Annex E Basic Application Confidentiality Profile with options, under one key."""

    def __init__(
        self,
        key: bytes,
        options: Iterable[str | Option] | Profile = (),
        max_depth: int = DeidSettings.max_depth,
    ) -> None:
        self.uids = UIDMapper(key)  # checks the key's length
        self._key = bytes(key)
        self.profile = options if isinstance(options, Profile) else Profile(options)
        if max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {max_depth}")
        self.max_depth = max_depth

    @classmethod
    def from_config(cls, cfg: Config) -> Deidentifier:
        """The de-identifier for ``[deid] key`` (or key file), ``options`` and ``max_depth``."""
        return cls(load_key(cfg), cfg.deid.options, cfg.deid.max_depth)

    def __repr__(self) -> str:  # never show the key
        return f"Deidentifier(<key hidden>, {self.profile!r})"

    def __reduce__(self) -> tuple[type, tuple[bytes, list[str], int]]:
        """Pickled as its arguments (for a worker process): the profile is rebuilt there."""
        return (type(self), (self._key, sorted(o.value for o in self.profile.options), self.max_depth))

    def __call__(self, ds: Dataset, *, in_place: bool = False) -> Dataset:
        """A de-identified copy of ``ds`` (file meta rebuilt, Patient pseudonyms, method recorded).

        ``in_place`` cleans ``ds`` itself and returns it: for a caller that read the file and
        will not look at the original again (a copy of a CT slice costs as much as its cleaning).
        Raises :class:`~apolo_node.deid.depth.TooDeep` first when its sequences nest too deep.
        """
        check_depth(ds, self.max_depth)
        pkey = patient_key(ds)
        patient = _Patient(
            pseudonym=PatientPseudonym.derive(self._key, pkey), days=self._shift(pkey)
        )
        old_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        instance = old_meta.get("MediaStorageSOPInstanceUID") or ds.get("SOPInstanceUID")
        out = ds if in_place else Dataset(copy.deepcopy(ds))
        self._clean(out, patient)
        out.PatientName = patient.pseudonym.patient_name
        out.PatientID = patient.pseudonym.patient_id
        self._record(out)
        out.file_meta = self._file_meta(old_meta, instance, out)
        return out

    def date_shift(self, ds: Dataset) -> int:
        """The days this patient's dates move by (0 when the profile keeps dates): the verifier
        checks a shifted date against exactly this, never a shift it guesses from the file."""
        return self._shift(patient_key(ds))

    def _shift(self, pkey: str) -> int:
        return shift_days(self._key, pkey) if self.profile.shifts_dates else 0

    # -- the walk ---------------------------------------------------------------------------

    def _clean(self, ds: Dataset, patient: _Patient) -> None:
        creators = private_creators(ds)
        kept_blocks: set[tuple[int, int]] = set()
        safe_creators: list[BaseTag] = []
        for tag in list(ds.keys()):
            vr = element_vr(ds, tag)
            action = self.profile.action_for(tag, vr, creator_of(creators, tag))
            if action is Action.REMOVE:
                del ds[tag]
            elif action is Action.SAFE_PRIVATE:
                safe_creators.append(tag)
            else:
                if tag.is_private:
                    kept_blocks.add((tag.group, tag.element >> 8))
                if action is Action.KEEP and vr != "SQ" and writes_as_is(ds.get_item(tag)):
                    continue  # not even read: an untouched raw element is written as its bytes
                self._apply(ds, ds[tag], action, patient)
        for tag in safe_creators:
            if (tag.group, tag.element) not in kept_blocks:
                del ds[tag]

    def _apply(self, ds: Dataset, elem: DataElement, action: Action, patient: _Patient) -> None:
        if elem.VR == "SQ":
            if action is Action.EMPTY:
                elem.value = Sequence()
            elif action is Action.DUMMY:
                elem.value = Sequence([self._dummy_item(elem.value[0])] if len(elem.value) else [])
            else:  # K, U (X/Z/U*), C (clean structured content): keep, clean the items
                for item in elem.value:
                    self._clean(item, patient)
            return
        if action is Action.KEEP:
            return
        if action is Action.EMPTY:
            elem.value = None
        elif action is Action.REMAP_UID or (action is Action.DUMMY and elem.VR == "UI"):
            if elem.VR == "UI":
                elem.value = _each(elem.value, self._remap)
            else:  # a UID row stored under another VR: cannot remap reliably
                del ds[elem.tag]
        elif action is Action.SHIFT_DATE:
            shift = shift_da if elem.VR == "DA" else shift_dt
            shifted = _each(elem.value, lambda v: shift(v, patient.days) if v else v)
            elem.value = None if shifted is None or _has_none(shifted) else shifted
        elif action is Action.DUMMY:
            if elem.tag == 0x00100020:
                elem.value = patient.pseudonym.patient_id
            elif elem.VR in DUMMY_BY_VR:
                elem.value = DUMMY_BY_VR[elem.VR]
            else:
                elem.value = None

    def _dummy_item(self, item: Dataset) -> Dataset:
        """D on a sequence: ``item``'s standard elements, each value the dummy for its VR.

        UIDs are remapped (standard ones kept) so that the item stays valid; a nested sequence
        is reduced to one such item; private elements, group lengths and overlays are dropped.
        """
        out = Dataset()
        for tag in item.keys():
            if tag.is_private or tag.element == 0 or is_repeating_group(tag):
                continue
            vr = element_vr(item, tag)
            value = item[tag].value
            if vr == "SQ":
                out.add_new(tag, vr, [self._dummy_item(value[0])] if value else [])
            elif vr == "UI":
                out.add_new(tag, vr, _each(value, self._remap))
            else:
                out.add_new(tag, vr, DUMMY_BY_VR.get(vr))
        return out

    def _remap(self, value: str) -> str:
        value = str(value).strip().rstrip("\x00")
        if not value or is_standard_uid(value):
            return value
        return self.uids(value)

    # -- what we record ---------------------------------------------------------------------

    def _record(self, out: Dataset) -> None:
        """Patient Identity Removed, De-identification Method (+ Code Sequence), temporal flag."""
        options = sorted(self.profile.options, key=lambda o: o.code.value)
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = [f"apolo-node {BASIC_PROFILE_CODE.meaning}"[:64]] + [
            o.code.meaning[:64] for o in options
        ]
        items = []
        for code in [BASIC_PROFILE_CODE] + [o.code for o in options]:
            item = Dataset()
            item.CodeValue = code.value
            item.CodingSchemeDesignator = code.scheme_designator
            item.CodeMeaning = code.meaning
            items.append(item)
        out.DeidentificationMethodCodeSequence = items
        if Option.RETAIN_LONG_FULL_DATES in self.profile.options:
            out.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self.profile.shifts_dates:
            out.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            out.LongitudinalTemporalInformationModified = "REMOVED"

    def _file_meta(self, old: FileMetaDataset, instance: Any, out: Dataset) -> FileMetaDataset:
        """New file meta: only what Part 10 needs, the instance UID remapped like the dataset's."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = old.get("MediaStorageSOPClassUID") or out.get("SOPClassUID")
        if Option.RETAIN_UIDS not in self.profile.options and instance:
            instance = self._remap(instance)
        meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID") or instance
        meta.TransferSyntaxUID = old.get("TransferSyntaxUID") or ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"PYDICOM {pydicom_version}"[:16]
        return meta


def _each(value: Any, fn: Any) -> Any:
    """Apply ``fn`` to each value of a possibly multi-valued element."""
    if isinstance(value, (list, MultiValue)):
        return [fn(v) for v in value]
    return None if value is None else fn(value)


def _has_none(value: Any) -> bool:
    return isinstance(value, list) and any(v is None for v in value)


def deidentify(ds: Dataset, key: bytes, options: Iterable[str | Option] = ()) -> Dataset:
    """One-shot helper: ``Deidentifier(key, options)(ds)``."""
    return Deidentifier(key, options)(ds)
