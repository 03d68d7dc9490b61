"""Synthetic DICOM studies for tests and benchmarks, with patient identifiers we can search for.

Every identifying value carries a ``marker`` string, unique per call, so a test can grep every
output (catalog, logs, file names, errors) for it and prove nothing leaked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid


def new_marker(prefix: str = "PHI") -> str:
    """A unique token that no real output contains by chance."""
    return f"{prefix}{secrets.token_hex(6).upper()}"


@dataclass
class Study:
    """What a generated study holds: where its files are and what to look for."""

    files: list[Path]
    study_uid: str
    series_uids: list[str]
    sop_uids: list[str]
    markers: list[str] = field(default_factory=list)


def ct_slice(
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    number: int,
    marker: str,
    rows: int = 64,
    columns: int = 64,
    modality: str = "CT",
) -> Dataset:
    """One CT Image Storage instance, 16-bit signed, with PHI carrying ``marker``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = f"{marker}^NAME"
    ds.PatientID = f"{marker}ID"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = f"{marker}AC"[:16]
    ds.StudyID = "1"
    ds.StudyDate = "20260102"
    ds.StudyTime = "101010"
    ds.ReferringPhysicianName = f"{marker}^REF"
    ds.InstitutionName = f"{marker} HOSPITAL"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.ImagePositionPatient = [0.0, 0.0, float(number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    yy, xx = np.mgrid[0:rows, 0:columns]
    body = ((yy - rows / 2) ** 2 + (xx - columns / 2) ** 2) < (min(rows, columns) / 2.5) ** 2
    pixels = np.where(body, 1064 + (number % 50), 24).astype(np.int16)
    ds.PixelData = pixels.tobytes()
    return ds


def write_study(
    folder: Path,
    *,
    series: int = 2,
    per_series: int = 3,
    rows: int = 64,
    columns: int = 64,
    marker: str | None = None,
) -> Study:
    """Write a multi-series CT study as Part 10 files under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = marker or new_marker()
    study_uid = generate_uid()
    out = Study(files=[], study_uid=study_uid, series_uids=[], sop_uids=[], markers=[marker])
    for s in range(series):
        series_uid = generate_uid()
        out.series_uids.append(series_uid)
        for i in range(per_series):
            sop_uid = generate_uid()
            ds = ct_slice(
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=sop_uid,
                number=i + 1,
                marker=marker,
                rows=rows,
                columns=columns,
            )
            ds.SeriesNumber = s + 1
            path = folder / f"s{s:02d}_i{i:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out.files.append(path)
            out.sop_uids.append(sop_uid)
    return out


# Where the CT phantom's tissues are, as (centre row, centre column, radius) discs, on a 256^2 grid.
PHANTOM = {
    "body": (128, 128, 110),  # soft tissue, 40 HU, inside a fat ring
    "fat_inner": 100,  # the fat ring lies between radius 100 and 110 of the body
    "lung": (100, 80, 25),  # air inside the body, -950 HU
    "bone": (180, 128, 15),  # 700 HU
    "metal": (90, 180, 4),  # 3000 HU
}


def disc(rows: int, columns: int, centre_row: int, centre_col: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:columns]
    return (yy - centre_row) ** 2 + (xx - centre_col) ** 2 < radius**2


def phantom_hu(rows: int = 256, columns: int = 256) -> np.ndarray:
    """A CT slice in HU: air around a body of soft tissue in a fat ring, a lung, a bone, a metal clip."""
    hu = np.full((rows, columns), -1000, dtype=np.int16)
    hu[disc(rows, columns, *PHANTOM["body"])] = -100
    hu[disc(rows, columns, 128, 128, PHANTOM["fat_inner"])] = 40
    hu[disc(rows, columns, *PHANTOM["lung"])] = -950
    hu[disc(rows, columns, *PHANTOM["bone"])] = 700
    hu[disc(rows, columns, *PHANTOM["metal"])] = 3000
    return hu


def phantom_ct(*, study_uid: str, series_uid: str, number: int = 1, marker: str | None = None) -> Dataset:
    """A 256x256 CT slice of the phantom (0.7 mm pixels), rescale intercept -1024."""
    ds = ct_slice(study_uid=study_uid, series_uid=series_uid, sop_uid=generate_uid(), number=number,
                  marker=marker or new_marker(), rows=256, columns=256)
    ds.PixelData = (phantom_hu() + 1024).astype(np.int16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.BodyPartExamined = "CHEST"
    return ds


def enhanced_ct_phantom(
    *, study_uid: str, series_uid: str, frames: int = 3, metal_frame: int = 2, marker: str | None = None
) -> Dataset:
    """A multi-frame Enhanced CT of the phantom: rescale and spacing only in the shared functional
    groups, a window per frame; the metal clip is on ``metal_frame`` (1-based) only."""
    from pydicom.uid import EnhancedCTImageStorage

    ds = phantom_ct(study_uid=study_uid, series_uid=series_uid, marker=marker)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth", "PixelSpacing"):
        del ds[keyword]
    ds.NumberOfFrames = frames
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 1.0
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transform]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    stack = []
    for n in range(1, frames + 1):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 40 + n, 400
        item = Dataset()
        item.FrameVOILUTSequence = [voi]
        per_frame.append(item)
        hu = phantom_hu()
        if n != metal_frame:
            hu[disc(256, 256, *PHANTOM["metal"])] = 40
        stack.append(hu + 1024)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(stack).astype(np.int16).tobytes()
    return ds


def undecodable_capture(ds: Dataset) -> Dataset:
    """``ds`` as an ultrasound image that declares burned-in text, with JPEG Baseline Pixel Data
    that no decoder can read: the receiver takes it (it does not decode pixels), de-identification
    must scan it and cannot, so it is quarantined."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, UltrasoundImageStorage

    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.Modality = "US"
    ds.BurnedInAnnotation = "YES"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    return ds
