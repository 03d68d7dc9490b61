"""A radiation dose SR (TID 10011 shape) with every kind of identifying content item value,
and SRs big enough to be slow, for the structured content and time cap tests."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR Storage
PATIENT = "Okonkwo^Adaeze"
PATIENT_ID = "MRN77120493"
OPERATOR = "Lindqvist^Henrik"
PLANTED_TEXT = "Scan of Adaeze Okonkwo MRN77120493 by Henrik Lindqvist, room 4 west"
EVENT_DATETIME = "20240315101522"
EVENT_DATE = "20240315"
EVENT_UID = "1.2.826.0.1.3680043.8.498.77120493.1"
STANDARD_UID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage: a standard UID, kept


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def content_item(relationship: str, value_type: str, name: Dataset, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [name]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def num(name: Dataset, value: str, unit: Dataset) -> Dataset:
    measured = Dataset()
    measured.NumericValue = value
    measured.MeasurementUnitsCodeSequence = [unit]
    return content_item("CONTAINS", "NUM", name, MeasuredValueSequence=[measured])


def dose_leaves() -> list[Dataset]:
    """The values of one CT Dose container: measurements, and every kind of identifying value."""
    mgy = code("mGy", "UCUM", "mGy")
    return [
        num(code("113830", "DCM", "Mean CTDIvol"), "12.5", mgy),
        num(code("113838", "DCM", "DLP"), "412.7", code("mGy.cm", "UCUM", "mGy.cm")),
        content_item("CONTAINS", "TEXT", code("121106", "DCM", "Comment"), TextValue=PLANTED_TEXT),
        content_item("CONTAINS", "PNAME", code("113851", "DCM", "Irradiation Administering"),
                     PersonName=OPERATOR),
        content_item("CONTAINS", "DATETIME", code("111526", "DCM", "DateTime Started"),
                     DateTime=EVENT_DATETIME),
        content_item("CONTAINS", "DATE", code("111536", "DCM", "Date of Exposure"), Date=EVENT_DATE),
        content_item("CONTAINS", "UIDREF", code("113769", "DCM", "Irradiation Event UID"),
                     UID=EVENT_UID),
        content_item("CONTAINS", "UIDREF", code("112002", "DCM", "Series Instance UID"),
                     UID=STANDARD_UID),
        content_item("CONTAINS", "CODE", code("113820", "DCM", "CT Acquisition Type"),
                     ConceptCodeSequence=[code("113804", "DCM", "Sequenced Acquisition")]),
    ]


def dose_sr() -> Dataset:
    """A radiation dose SR (TID 10011 shape): report > acquisition > parameters > dose > values.

    The values sit at depth 4 of Content Sequence.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DOSE_SR
    ds.SOPClassUID = DOSE_SR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT, PATIENT_ID, "SR"
    ds.StudyDate = ds.ContentDate = EVENT_DATE
    ds.ContentTime = "101522"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [code("113701", "DCM", "X-Ray Radiation Dose Report")]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "10011"
    ds.ContentTemplateSequence = [template]
    dose = content_item("CONTAINS", "CONTAINER", code("113829", "DCM", "CT Dose"),
                        ContinuityOfContent="SEPARATE", ContentSequence=dose_leaves())
    params = content_item("CONTAINS", "CONTAINER", code("113822", "DCM", "CT Acquisition Parameters"),
                          ContinuityOfContent="SEPARATE", ContentSequence=[dose])
    acquisition = content_item("CONTAINS", "CONTAINER", code("113819", "DCM", "CT Acquisition"),
                               ContinuityOfContent="SEPARATE", ContentSequence=[params])
    observer = content_item("HAS OBS CONTEXT", "PNAME", code("121008", "DCM", "Person Observer Name"),
                            PersonName=OPERATOR)
    ds.ContentSequence = [observer, acquisition]
    return ds


def slow_sr(path: Path, items: int = 3000, study_uid: str | None = None) -> Path:
    """A valid SR whose thousands of TEXT items take seconds to read, clean and verify."""
    ds = dose_sr()
    if study_uid:
        ds.StudyInstanceUID = study_uid
    ds.ContentSequence = [
        content_item("CONTAINS", "TEXT", code("121106", "DCM", "Comment"), TextValue=f"note {i}")
        for i in range(items)
    ]
    ds.save_as(path, enforce_file_format=True)
    return path
