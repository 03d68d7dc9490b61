"""A synthetic instance with an identifying value in every attribute of PS3.15 Table E.1-1.

Text values carry the marker (so one search over the output proves none survived); DA, DT, TM,
UI and number values are distinctive constants that must be gone or changed. The whole set is
planted at depth 0 and again at depths 1, 2 and 3 of nested sequences, and in a sequence the
profile empties; private tags, 60xx overlays, 50xx curves and an unlisted PN carry the marker too.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from apolo_node.deid.profile import load_rows
from tests.synthetic import ct_slice

DATE = "19371122"
DATETIME = "19371122083015.123456"
TIME = "083015.123456"
UID_ROOT = "1.3.6.1.4.1.99999.31337."  # no real UID starts so
DECIMAL = "98765.4321"
INTEGER = "987654"
AGE = "087Y"
BINARY_NUMBER = 54321
# Sequences of the corpus, outermost first, that hold the whole set again (depths 1 to 3).
NESTING = ("SharedFunctionalGroupsSequence", "ReferencedSeriesSequence", "RequestAttributesSequence")
UNLISTED_PN = 0x00140104  # Secondary Reviewer Name: PN, not in Table E.1-1


@lru_cache(maxsize=1)
def planted_tags() -> tuple[tuple[int, str], ...]:
    """(tag, VR) of every concrete table row we can put in a dataset body."""
    out = []
    for row in load_rows():
        if row.tag == "private" or "x" in row.tag:
            continue
        tag = int(row.tag, 16)
        if tag >> 16 in (0x0000, 0x0002):  # command and file meta groups live elsewhere
            continue
        out.append((tag, dictionary_VR(tag).split(" or ")[0]))
    return tuple(out)


def value_for(vr: str, marker: str, i: int) -> object:
    """A value for ``vr`` that we can recognise: the marker in text, a distinctive constant else."""
    text = f"{marker}{i:03d}"
    if vr in ("AE", "CS", "SH"):
        return text[:16]
    if vr in ("LO", "LT", "ST", "UT", "UC"):
        return f"{text} free text"
    if vr == "PN":
        return f"{text}^GIVEN"
    if vr == "UR":
        return f"http://example.org/{text}"
    if vr == "DA":
        return DATE
    if vr == "DT":
        return DATETIME
    if vr == "TM":
        return TIME
    if vr == "UI":
        return f"{UID_ROOT}{i}"
    if vr == "DS":
        return DECIMAL
    if vr == "IS":
        return INTEGER
    if vr == "AS":
        return AGE
    if vr in ("US", "SS", "UL", "SL"):
        return BINARY_NUMBER
    if vr in ("FL", "FD"):
        return 98765.4321
    if vr in ("OB", "OW", "UN"):
        return f"{text}bytes!".encode("ascii")[: len(text) + 6 // 2 * 2]
    if vr == "SQ":
        item = Dataset()
        item.add_new(0x0040A123, "PN", f"{marker}S{i:03d}^ITEM")  # Person Name
        return [item]
    raise ValueError(f"no corpus value for VR {vr}")


def planted(marker: str) -> Dataset:
    """Every planted table attribute with its recognisable value."""
    ds = Dataset()
    for i, (tag, vr) in enumerate(planted_tags()):
        value = value_for(vr, marker, i)
        if isinstance(value, bytes) and len(value) % 2:
            value += b"\x00"
        ds.add_new(tag, vr, value)
    ds.add_new(UNLISTED_PN, "PN", f"{marker}UNL^PN")
    return ds


def private_block(marker: str) -> Dataset:
    """A private creator and several private values, one a sequence."""
    ds = Dataset()
    ds.add_new(0x00110010, "LO", f"ACME {marker}")
    ds.add_new(0x00111001, "LO", f"{marker} private text")
    ds.add_new(0x00111002, "OB", f"{marker}OB!".encode("ascii"))
    ds.add_new(0x00111004, "UN", f"{marker}UN!".encode("ascii"))
    inner = Dataset()
    inner.PatientName = f"{marker}^PRIVATE"
    inner.add_new(0x00131010, "LO", "PRIVATE CREATOR")
    inner.add_new(0x00131001, "LO", f"{marker} deep private")
    ds.add_new(0x00111003, "SQ", [inner])
    return ds


def overlays_and_curves(marker: str) -> Dataset:
    """60xx overlay and 50xx curve groups carrying the marker."""
    ds = Dataset()
    for group in (0x6000, 0x6002):
        ds.add_new((group, 0x0010), "US", 8)
        ds.add_new((group, 0x0011), "US", 8)
        ds.add_new((group, 0x0022), "LO", f"{marker} overlay description")
        ds.add_new((group, 0x0040), "CS", "G")
        ds.add_new((group, 0x0050), "SS", [1, 1])
        ds.add_new((group, 0x0100), "US", 1)
        ds.add_new((group, 0x0102), "US", 0)
        ds.add_new((group, 0x1500), "LO", f"{marker} overlay label")
        ds.add_new((group, 0x3000), "OW", f"{marker}ovl".encode("ascii")[:8])
        ds.add_new((group, 0x4000), "LT", f"{marker} overlay comments")
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50002500, "LO", f"{marker} curve label")
    ds.add_new(0x50003000, "OB", f"{marker}curve!".encode("ascii"))
    return ds


def corpus_instance(
    marker: str,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_uid: str,
    study_date: str = "20240105",
    referenced_sop_uid: str | None = None,
) -> Dataset:
    """A CT instance holding the whole corpus at depths 0 to 3, plus real identifying UIDs."""
    ds = ct_slice(
        study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, number=1, marker=marker, rows=8, columns=8
    )
    for elem in planted(marker):
        if elem.tag not in ds:
            ds.add(elem)
    ds.update(private_block(marker))
    ds.update(overlays_and_curves(marker))
    holder = ds
    for keyword in NESTING:
        item = planted(marker)
        setattr(holder, keyword, [item])
        holder = item
    ds.ReferencedStudySequence = [planted(marker)]  # X/Z: emptied by the Basic Profile
    ds.FrameOfReferenceUID = frame_uid
    ds.PatientID = patient_id
    ds.StudyDate = study_date
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = referenced_sop_uid or sop_uid
    ds.ReferencedImageSequence = [ref]
    return ds
