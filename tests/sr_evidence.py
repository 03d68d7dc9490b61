"""De-identified image headers as the de-identifier leaves them, for the SR and GSPS tests."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def uid() -> str:
    """A pseudonymous-looking UID under 2.25, like the de-identifier makes."""
    return generate_uid(prefix=None)


def deidentified(sop_class: str, modality: str, study: str, *, rows: int, columns: int, bits: int) -> Dataset:
    """A de-identified grayscale image header: pseudonymous UIDs, Type 2 attributes empty."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = uid()
    ds.Modality = modality
    ds.PatientName = "ANON^7F3A9C"
    ds.PatientID = "PSN-7F3A9C21"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"  # as the de-identifier leaves it, with its method (PS3.15)
    ds.DeidentificationMethod = "apolo-node Basic Application Confidentiality Profile"
    method = Dataset()
    method.CodeValue, method.CodingSchemeDesignator = "113100", "DCM"
    method.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [method]
    ds.StudyDate, ds.StudyTime = "20240102", "101500"
    ds.AccessionNumber = ds.StudyID = ds.ReferringPhysicianName = ""
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds
