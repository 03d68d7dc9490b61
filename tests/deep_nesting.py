"""Part 10 files whose Content Sequence nests N deep, written byte by byte (pydicom's writer
recurses, so it cannot write what these tests need)."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

UNDEFINED = 0xFFFFFFFF
CONTENT_SEQUENCE = (0x0040, 0xA730)


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"SQ", b"UN", b"OB", b"UT"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _header(uids: tuple[str, str, str]) -> bytes:
    """Preamble, file meta and the top-level identifying elements of an SR-like instance."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.file_meta.MediaStorageSOPInstanceUID = uids[2]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.SOPInstanceUID = uids[2]
    ds.PatientName = "Deep^Nesting"
    ds.PatientID = "DEEP-1"
    ds.Modality = "SR"
    ds.StudyInstanceUID = uids[0]
    ds.SeriesInstanceUID = uids[1]
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def deep_content_file(
    path: Path, depth: int, *, undefined: bool = False, study_uid: str | None = None
) -> Path:
    """An instance whose Content Sequence holds an item holding a Content Sequence, ``depth`` deep.

    The innermost item holds a TEXT value. Sequences and items have defined lengths unless
    ``undefined``, when both end with delimiters (as pynetdicom and dcm4che write them).
    ``study_uid`` puts it in a given study.
    """
    leaf = _element(0x0040, 0xA040, b"CS", b"TEXT") + _element(0x0040, 0xA160, b"UT", b"deep text ")
    group, element = CONTENT_SEQUENCE
    with open(path, "wb") as fp:
        fp.write(_header((study_uid or generate_uid(), generate_uid(), generate_uid())))
        if undefined:
            opener = struct.pack("<HH2sHI", group, element, b"SQ", 0, UNDEFINED)
            opener += struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
            closer = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
            for _ in range(depth):
                fp.write(opener)
            fp.write(leaf)
            for _ in range(depth):
                fp.write(closer)
            return path
        item_lengths = []
        inner = len(leaf)
        for _ in range(depth):  # from the innermost item out
            item_lengths.append(inner)
            inner = 12 + 8 + inner  # SQ header + item header + item
        for item_length in reversed(item_lengths):
            fp.write(struct.pack("<HH2sHI", group, element, b"SQ", 0, item_length + 8))
            fp.write(struct.pack("<HHI", 0xFFFE, 0xE000, item_length))
        fp.write(leaf)
    return path


def nested_dataset(depth: int) -> Dataset:
    """An in-memory data set whose Content Sequence nests ``depth`` deep (built without recursion)."""
    top = dcmread(BytesIO(_header((generate_uid(), generate_uid(), generate_uid()))))
    parent = top
    for _ in range(depth):
        item = Dataset()
        parent.ContentSequence = [item]
        parent = item
    parent.ValueType = "TEXT"
    parent.TextValue = "deep text"
    return top
