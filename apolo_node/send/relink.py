"""Re-linking: a result made in the de-identified study goes back into the original one.

The vision and reasoning stages only ever see the de-identified study, so what they make (a
TID 1500 Comprehensive SR, an answer SR, a GSPS) names pseudonymous UIDs and a pseudonymous
patient. Before it goes to the PACS, :func:`relink` turns every pseudonymous Study, Series and
SOP Instance UID of a received instance back into the original (the vault holds the originals,
and the keyed mapper tells which pseudonym each original has), puts the original Patient and
General Study modules back, and drops the de-identification marks: the result now carries PHI on
purpose, for the PACS. The result's own Series and SOP Instance UIDs (new objects of ours) stay.

Two things the vault cannot resolve:

- a reference to a received instance that is not in the vault: :class:`RelinkError`, naming the
  pseudonymous UID only;
- Frame of Reference UIDs: the vault keeps no original, so the TID 1602 Image Library rows that
  carry one (DCM 112227, user optional) are dropped rather than sent with a pseudonym the PACS
  cannot match.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from apolo_node.deid.vault import PATIENT_STUDY_KEYWORDS, Vault
from apolo_node.pseudonym import UUID_ROOT, UIDMapper

# Elements whose UID names a received instance, its series or its study: one we cannot
# resolve is an error, not something to send with a pseudonym in it.
REFERENCE_KEYWORDS = frozenset({"ReferencedSOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"})
# What de-identification added (PS3.15 E.1.1, PS3.3 C.12.1): false once the PHI is back.
DEIDENTIFICATION_MARKS = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)
FRAME_OF_REFERENCE_UID = ("112227", "DCM")  # TID 1602 "Frame of Reference UID" (UIDREF)
UTF8 = "ISO_IR 192"


class RelinkError(ValueError):
    """A result cannot be re-linked; the message names pseudonymous UIDs only, never PHI."""


@dataclass(frozen=True)
class StudyLinks:
    """What the vault says of one de-identified study: pseudonym to original, and the modules."""

    pseudo_study: str
    originals: dict[str, str]  # pseudonymous Study/Series/SOP Instance UID -> original
    patient_study: Dataset  # the original Patient and General Study module attributes


def study_links(vault: Vault, mapper: UIDMapper, pseudo_study: str) -> StudyLinks:
    """Read every vault entry of ``pseudo_study``; each must map back to its own pseudonym.

    Raises RelinkError when the vault holds nothing for the study or an entry was made under
    another de-identification key, and VaultError when an entry cannot be read.
    """
    sops = vault.instances(pseudo_study)
    if not sops:
        raise RelinkError(f"the vault holds no instance of study {pseudo_study}: nothing to re-link to")
    originals: dict[str, str] = {}
    patient_study: Dataset | None = None
    for pseudo_sop in sops:
        entry = vault.get(pseudo_study, pseudo_sop)
        if mapper(entry.sop_instance_uid) != pseudo_sop or mapper(entry.study_uid) != pseudo_study:
            raise RelinkError(
                f"vault entry {pseudo_sop} of study {pseudo_study} does not map back to its "
                "pseudonyms under this de-identification key ([deid] key changed?)"
            )
        originals[pseudo_sop] = entry.sop_instance_uid
        originals[mapper(entry.series_uid)] = entry.series_uid
        originals[pseudo_study] = entry.study_uid
        if patient_study is None:
            patient_study = entry.patient_study_dataset()
    assert patient_study is not None
    return StudyLinks(pseudo_study, originals, patient_study)


def relink(
    ds: Dataset, vault: Vault, mapper: UIDMapper, *, keep: Collection[str] = ()
) -> Dataset:
    """A copy of the de-identified result ``ds`` re-linked to the original study and patient.

    ``keep``: UIDs of other objects of ours (say, the SR a GSPS refers to) that may be referred
    to as they are, like the result's own Series and SOP Instance UIDs. Never changes ``ds``;
    reads nothing but the vault entries of the result's study.
    """
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise RelinkError(f"ds has no {keyword}: not a DICOM result object we can re-link")
    links = study_links(vault, mapper, str(ds.StudyInstanceUID))
    out = copy.deepcopy(ds)
    own = {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), *keep}
    _relink_dataset(out, links, own)
    _restore_patient_study(out, links.patient_study)
    for keyword in DEIDENTIFICATION_MARKS:
        if keyword in out:
            del out[keyword]
    meta = FileMetaDataset(out.file_meta) if hasattr(out, "file_meta") else FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "ImplementationClassUID" not in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out.file_meta = meta
    return out


def _relink_dataset(ds: Dataset, links: StudyLinks, own: set[str]) -> None:
    for elem in list(ds):  # list(): iterating converts raw elements before we change any
        if elem.VR == "SQ":
            for item in elem.value:
                _relink_dataset(item, links, own)
            if elem.keyword == "ContentSequence":
                elem.value = [item for item in elem.value if not _is_frame_of_reference_row(item)]
        elif elem.VR == "UI" and elem.value:
            elem.value = _relinked_value(elem, links, own)


def _relinked_value(elem: DataElement, links: StudyLinks, own: set[str]) -> object:
    values = list(elem.value) if isinstance(elem.value, (list, MultiValue)) else [elem.value]
    out = []
    for value in values:
        uid = str(value).strip().rstrip("\x00")
        if uid in links.originals:
            out.append(links.originals[uid])
            continue
        if elem.keyword in REFERENCE_KEYWORDS and uid.startswith(UUID_ROOT) and uid not in own:
            raise RelinkError(
                f"{elem.keyword} {uid} names no instance, series or study the vault holds for "
                f"study {links.pseudo_study}"
            )
        out.append(uid)
    return out if len(out) > 1 else out[0]


def _is_frame_of_reference_row(item: Dataset) -> bool:
    if item.get("ValueType") != "UIDREF" or not item.get("ConceptNameCodeSequence"):
        return False
    concept = item.ConceptNameCodeSequence[0]
    return (concept.get("CodeValue"), concept.get("CodingSchemeDesignator")) == FRAME_OF_REFERENCE_UID


def _restore_patient_study(out: Dataset, module: Dataset) -> None:
    """The original Patient and General Study attributes; ones the original lacked left empty."""
    restored: list[DataElement] = []
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword == "StudyInstanceUID":  # re-linked above, with every other reference
            continue
        if keyword in module:
            out[keyword] = copy.deepcopy(module[keyword])
            restored.append(out[keyword])
        elif keyword in out:  # a pseudonymous value the original did not have: empty, not fake
            out[keyword].value = [] if out[keyword].VR == "SQ" else None
    if any(not _ascii(e) for e in restored) and out.get("SpecificCharacterSet") != UTF8:
        out.SpecificCharacterSet = UTF8  # every value is already decoded: UTF-8 encodes them all


def _ascii(elem: DataElement) -> bool:
    if elem.VR == "SQ":
        return all(_ascii(e) for item in elem.value for e in item)
    return all(str(v).isascii() for v in _values(elem.value))


def _values(value: object) -> Iterable[object]:
    if value is None:
        return []
    return value if isinstance(value, (list, MultiValue)) else [value]
