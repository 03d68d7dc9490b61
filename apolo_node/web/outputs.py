"""The node's de-identified outputs as QIDO-RS / WADO-RS see them: files, headers, DICOM JSON.

Only files under the spool's ``clean/``, ``reports/`` and ``results/`` folders are ever opened
(``output_path`` checks each one): the incoming spool, the vault, the quarantine and ``tmp/``
hold PHI and are never served, whatever the catalog says.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from apolo_node.catalog.dicomweb import OutputFile
from apolo_node.spool import CLEAN, REPORTS, RESULTS

SERVED_FOLDERS = (CLEAN, REPORTS, RESULTS)
CHUNK = 256 * 1024
INLINE_BINARY_LIMIT = 64 * 1024  # larger binary values in /metadata are left out (bulk data)
STUDY_KEYWORDS = (
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDescription",
)
SERIES_KEYWORDS = ("Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime")
INSTANCE_KEYWORDS = (
    "SOPClassUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    "ContentDate", "ContentTime",
)


class NotServed(LookupError):
    """No such output (or a path outside the served folders): answered 404, no detail."""


def output_path(root: Path, relative: str) -> Path:
    """The file of an output, or ``NotServed`` unless it lies in a served folder of the spool."""
    parts = Path(relative).parts
    if len(parts) < 2 or parts[0] not in SERVED_FOLDERS or ".." in parts or Path(relative).is_absolute():
        raise NotServed("not an output")
    path = root / relative
    real, folder = os.path.realpath(path), os.path.realpath(root / parts[0])
    if os.path.commonpath([real, folder]) != folder:
        raise NotServed("not an output")
    return path


@dataclass(frozen=True)
class Output:
    """An output file with its header (no Pixel Data) read."""

    file: OutputFile
    path: Path
    header: Dataset

    @property
    def series_uid(self) -> str:
        return self.file.series_uid or str(self.header.get("SeriesInstanceUID", ""))


def load(root: Path, file: OutputFile) -> Output:
    path = output_path(root, file.path)
    try:
        stat = path.stat()
    except OSError:
        raise NotServed("output file missing") from None
    return Output(file, path, _header(str(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=4096)
def _header(path: str, mtime_ns: int, size: int) -> Dataset:
    """A file's header up to its Pixel Data, cached while the file is unchanged."""
    with disable_value_validation():  # pydicom's warnings would quote values
        return dcmread(path, stop_before_pixels=True)


def _pick(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, Any]:
    picked = Dataset()
    for keyword in keywords:
        if keyword in ds:
            picked[keyword] = ds[keyword]
    return picked.to_json_dict()


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def study_json(first: Output, uid: str, modalities: list[str], series: int, instances: int, url: str) -> dict[str, Any]:
    """A QIDO-RS study result: study attributes from one de-identified file, counts from the catalog."""
    out = _pick(first.header, STUDY_KEYWORDS)
    out["0020000D"] = _attr("UI", uid)
    out["00080061"] = _attr("CS", *modalities)
    out["00201206"] = _attr("IS", series)
    out["00201208"] = _attr("IS", instances)
    out["00080056"] = _attr("CS", "ONLINE")
    out["00081190"] = _attr("UR", url)
    return out


def series_json(first: Output, count: int, url: str) -> dict[str, Any]:
    out = _pick(first.header, SERIES_KEYWORDS)
    if "00080060" not in out and first.file.modality:
        out["00080060"] = _attr("CS", first.file.modality)
    out["0020000D"] = _attr("UI", first.file.study_uid)
    out["0020000E"] = _attr("UI", first.series_uid)
    out["00201209"] = _attr("IS", count)
    out["00081190"] = _attr("UR", url)
    return out


def instance_json(o: Output, url: str) -> dict[str, Any]:
    out = _pick(o.header, INSTANCE_KEYWORDS)
    out["0020000D"] = _attr("UI", o.file.study_uid)
    out["0020000E"] = _attr("UI", o.series_uid)
    out["00080018"] = _attr("UI", o.file.sop_instance_uid)
    out["00080056"] = _attr("CS", "ONLINE")
    out["00081190"] = _attr("UR", url)
    return out


def metadata_json(o: Output, frames_url: str) -> dict[str, Any]:
    """The whole header as DICOM JSON: Pixel Data as a BulkDataURI (the instance's frames), any
    other top-level binary value over 64 KiB left out (bulk data this node does not serve)."""
    with disable_value_validation():
        out = o.header.to_json_dict(bulk_data_threshold=1 << 62)
    for tag in [t for t, attr in out.items() if len(attr.get("InlineBinary", "")) > INLINE_BINARY_LIMIT * 4 // 3]:
        del out[tag]
    if "Rows" in o.header:  # an image: stop_before_pixels left its Pixel Data out of the header
        out["7FE00010"] = {"vr": "OW", "BulkDataURI": frames_url}
    return out


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def frames(o: Output, numbers: list[int]) -> list[tuple[str, bytes]]:
    """The frames asked for (1-based), each as (media type, bytes); ``NotServed`` if one is not there."""
    with disable_value_validation():
        ds = dcmread(o.path)
    if "PixelData" not in ds:
        raise NotServed("no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if any(n < 1 or n > count for n in numbers):
        raise NotServed("no such frame")
    syntax = ds.file_meta.TransferSyntaxUID
    data = ds.PixelData
    if syntax.is_encapsulated:
        media = f"application/octet-stream; transfer-syntax={syntax}"
        return [(media, get_frame(data, n - 1, number_of_frames=count)) for n in numbers]
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
    return [("application/octet-stream", bytes(data[(n - 1) * size : n * size])) for n in numbers]
