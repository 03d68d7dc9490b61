"""The evaluation harness's phantom set: images whose answers are known because we planted them,
plus images of pydicom's own test set that nobody here made, with answers anyone can see.

``write_phantom_set(folder)`` writes the DICOM files and ``cases.jsonl`` (the format that
``pipeline.evaluation`` reads). The phantoms are deterministic (fixed pixels, UIDs derived from
their names), so a run is repeatable:

- ``ct_metal_left``: a CT slice (HU) with a body, a fat ring, an air-filled lung, a bone disc and
  a 12 x 12 pixel metal square on the image's right, the patient's left (Image Orientation
  (Patient) 1\\0\\0\\0\\1\\0).
- ``ct_metal_right``: the same without the lung (no air) and the metal on the patient's right.
- ``ct_no_metal``: the first without metal.
- ``dx_metal``: a 1024 x 1024 radiograph (MONOCHROME2, 12 bits) with a 24 x 24 metal square on
  the patient's left (Patient Orientation L\\F).
- ``pydicom:CT_small.dcm``: a real CT slice through a thoracic vertebra: bone, no metal.

Boxes are ``[x1, y1, x2, y2]`` in source pixels, x2 and y2 exclusive.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

CASES = "cases.jsonl"
CT_SIZE = 256
DX_SIZE = 1024
CT_METAL_LEFT = (170, 80, 182, 92)  # x1, y1, x2, y2: image right = patient left
CT_METAL_RIGHT = (74, 80, 86, 92)
CT_BONE = (113, 165, 143, 195)  # a disc of radius 15 at row 180, column 128
DX_METAL = (700, 400, 724, 424)


def uid(name: str) -> str:
    """A UID under 2.25 derived from ``name``: the same phantom always has the same UIDs."""
    return f"2.25.{int.from_bytes(hashlib.sha256(name.encode()).digest()[:16], 'big')}"


def _disc(rows: int, columns: int, row: int, column: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:columns]
    return (yy - row) ** 2 + (xx - column) ** 2 < radius**2


def _square(values: np.ndarray, box: tuple[int, int, int, int], value: float) -> None:
    x1, y1, x2, y2 = box
    values[y1:y2, x1:x2] = value


def _base(name: str, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid(f"{name} instance")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(f"{name} study")
    ds.SeriesInstanceUID = uid(f"{name} series")
    ds.Modality = modality
    ds.PatientName = "Phantom^Evaluation"
    ds.PatientID = f"EVAL-{name}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    return ds


def ct_phantom(name: str, *, metal: tuple[int, int, int, int] | None, lung: bool) -> Dataset:
    """A 256 x 256 CT slice (0.7 mm pixels) of the phantom, stored as HU + 1024."""
    hu = np.full((CT_SIZE, CT_SIZE), -1000.0)
    hu[_disc(CT_SIZE, CT_SIZE, 128, 128, 110)] = -100  # the fat ring's outside
    hu[_disc(CT_SIZE, CT_SIZE, 128, 128, 100)] = 40  # soft tissue
    if lung:
        hu[_disc(CT_SIZE, CT_SIZE, 100, 80, 25)] = -950
    hu[_disc(CT_SIZE, CT_SIZE, 180, 128, 15)] = 700  # bone
    if metal is not None:
        _square(hu, metal, 3000)
    ds = _base(name, CTImageStorage, "CT")
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = CT_SIZE
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.ImagePositionPatient = [-89.6, -89.6, 0.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.BitsStored, ds.HighBit = 12, 11
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = (hu + 1024).clip(0, 4095).astype(np.uint16).tobytes()
    return ds


def dx_phantom(name: str, metal: tuple[int, int, int, int]) -> Dataset:
    """A 1024 x 1024 PA radiograph: a body, two darker lungs, a spine, a metal square."""
    values = np.full((DX_SIZE, DX_SIZE), 300.0)
    yy, xx = np.mgrid[0:DX_SIZE, 0:DX_SIZE]
    values[((yy - 512) / 460) ** 2 + ((xx - 512) / 420) ** 2 < 1] = 1500  # the body
    for column in (330, 694):
        values[((yy - 480) / 300) ** 2 + ((xx - column) / 140) ** 2 < 1] = 900  # the lungs
    values[:, 492:532] = np.maximum(values[:, 492:532], 1900)  # the spine
    _square(values, metal, 4000)
    ds = _base(name, DigitalXRayImageStorageForPresentation, "DX")
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.Rows = ds.Columns = DX_SIZE
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.BitsStored, ds.HighBit = 12, 11
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = values.astype(np.uint16).tobytes()
    return ds


def _metal(box: tuple[int, ...]) -> dict[str, Any]:
    return {"label": "Metal", "box": list(box), "accept": ["Dense object"]}


PHANTOMS: dict[str, Callable[[], Dataset]] = {
    "ct_metal_left.dcm": lambda: ct_phantom("ct_metal_left", metal=CT_METAL_LEFT, lung=True),
    "ct_metal_right.dcm": lambda: ct_phantom("ct_metal_right", metal=CT_METAL_RIGHT, lung=False),
    "ct_no_metal.dcm": lambda: ct_phantom("ct_no_metal", metal=None, lung=True),
    "dx_metal.dcm": lambda: dx_phantom("dx_metal", DX_METAL),
}

ALL_TISSUES = "Air, fat, soft tissue, bone and metal."
CASE_LIST: list[dict[str, Any]] = [
    {"image": "ct_metal_left.dcm", "task": "detect",
     "boxes": [_metal(CT_METAL_LEFT), {"label": "Bone", "box": list(CT_BONE)}]},
    {"image": "ct_metal_left.dcm", "task": "closed", "question": "Is there metal?", "answer": "yes"},
    {"image": "ct_metal_left.dcm", "task": "closed", "question": "Is there air?", "answer": "yes"},
    {"image": "ct_metal_left.dcm", "task": "closed", "question": "Which side is the metal on?", "answer": "left"},
    {"image": "ct_metal_left.dcm", "task": "ground", "question": "Where is the metal?", "boxes": [_metal(CT_METAL_LEFT)]},
    {"image": "ct_metal_left.dcm", "task": "open", "question": "Which tissues does this slice show?", "answer": ALL_TISSUES},
    {"image": "ct_metal_right.dcm", "task": "detect", "boxes": [_metal(CT_METAL_RIGHT)]},
    {"image": "ct_metal_right.dcm", "task": "closed", "question": "Is there air?", "answer": "no"},
    {"image": "ct_metal_right.dcm", "task": "closed", "question": "Which side is the metal on?", "answer": "right"},
    {"image": "ct_no_metal.dcm", "task": "closed", "question": "Is there metal?", "answer": "no"},
    {"image": "dx_metal.dcm", "task": "detect", "boxes": [_metal(DX_METAL)]},
    {"image": "dx_metal.dcm", "task": "ground", "question": "Where is the metal?", "boxes": [_metal(DX_METAL)]},
    {"image": "pydicom:CT_small.dcm", "task": "closed", "question": "Is there bone?", "answer": "yes"},
    {"image": "pydicom:CT_small.dcm", "task": "closed", "question": "Is there metal?", "answer": "no"},
]


def write_phantom_set(folder: Path) -> Path:
    """Write the phantoms and ``cases.jsonl`` under ``folder``; return the cases file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, build in PHANTOMS.items():
        build().save_as(folder / name, enforce_file_format=True)
    path = folder / CASES
    path.write_text("".join(json.dumps(case) + "\n" for case in CASE_LIST))
    return path
