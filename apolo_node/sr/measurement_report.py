"""TID 1500 Measurement Report: findings to a Comprehensive SR (highdicom), and the SR back to findings.

The SR is what the catalog is rebuilt from, so ``read_measurement_report`` gives back exactly the
``Finding``s, the ``Algorithm`` and the disclaimer that ``measurement_report`` wrote.

Where each part of a finding goes (PS3.16):

- one Measurement Group per finding: TID 1410 Planar ROI with an Image Region (SCOORD POLYLINE,
  the box's closed five-point outline in (column, row) pixels, SELECTED FROM the exact instance and,
  on a multi-frame instance, its Referenced Frame Number) when the finding has a box, else TID 1501
  with the image as Source of Measurement (and its frame);
- Tracking Identifier = the label, Tracking Unique Identifier = ``tracking_uid`` (TID 4108);
  Finding (DCM 121071) = the finding's code; TID 4019 Algorithm Identification in every group;
- measurements as TID 300 NUM items with their UCUM units;
- confidence as the standard CAD concept (DCM 111012 "Certainty of Finding") in percent (UCUM "%"),
  0-100, as the CAD SR templates record it (TID 4006 row 6, TID 4104 row 12); read back divided by 100;
- laterality as a coded qualitative evaluation (TID 1501/1410 "CONTAINS CODE"): SCT 272741003
  "Laterality" with a value of CID 244 (left 7771000, right 24028007, bilateral 51440002,
  unilateral 66459002);
- location and description as text qualitative evaluations ("CONTAINS TEXT", TID 1501 row 12,
  after the coded ones; TID 1410 groups carry the same items, appended after the Image Region,
  and dciodvfy and dcmtk accept them): SCT 363698007 "Finding Site" and DCM 121106 "Comment";
- the disclaimer as TEXT DCM 121106 "Comment" in the report-level "Qualitative Evaluations"
  container (UMLS C0034375, TID 1500 rows 12-14), where viewers of the document tree (dsrdump,
  PACS SR text views) show it; OHIF's measurement panel lists only the groups;
- the study's narrative (``sr.narrative``) in the same container, before the disclaimer, as TEXT
  items named with TID 2000's concepts: DCM 121071 "Finding" (the findings text) and DCM 121073
  "Impression"; the model's reasoning trace as TEXT 99APOLO "reasoning-trace" after the
  disclaimer (no standard concept names it; the local scheme is then declared). TID 1500 row 14
  admits TEXT of any concept there, where TID 2000's section containers are not admitted;
- the observer is a device (TID 1004): the algorithm, with a UID derived from its name and version,
  its name as Device Observer Name and its version as Device Observer Model Name (TID 1004 has no
  version row), so that a report without findings still names its algorithm.

OHIF (extensions/cornerstone-dicom-sr) shows only what it can parse, and needs:

- a Comprehensive SR whose root concept is 126000 "Imaging Measurement Report" (others are refused),
- an Image Library (111028) holding Image Library Group (126200) items (it lists referenced images
  from there) and an Imaging Measurements container (126010), even when it holds no group,
- in each Measurement Group the Tracking Unique Identifier as the group's first UIDREF (groups are
  merged by it, so tracking UIDs must be unique) and a Tracking Identifier TEXT (its label),
- for drawing: a SCOORD at the group's top level (TID 1410) of graphic type POINT, MULTIPOINT,
  POLYLINE, CIRCLE or ELLIPSE whose content item holds the ReferencedSOPSequence, with
  ReferencedFrameNumber when the image is multi-frame (it matches frames by that number);
  NUM items are shown as "meaning: value unit" labels;
- a TID 1501 group (no box) is shown as text on its Source image only when it has no NUM item
  (confidence or measurements make it a list entry without a drawing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from apolo_node.findings import LOCAL_SCHEME, Algorithm, Box, Code, Finding, Measurement
from apolo_node.sr.narrative import Narrative

MANUFACTURER = "apolo-node"
CHARACTER_SET = "ISO_IR 192"  # UTF-8: model text is not ASCII

PROCEDURE_REPORTED = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")  # CID 100
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
CERTAINTY_OF_FINDING = hd.sr.CodedConcept("111012", "DCM", "Certainty of Finding")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "Percent")
LATERALITY = hd.sr.CodedConcept("272741003", "SCT", "Laterality")
FINDING_SITE = hd.sr.CodedConcept("363698007", "SCT", "Finding Site")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
FINDING = hd.sr.CodedConcept("121071", "DCM", "Finding")  # CID 7002, TID 2000's findings text
IMPRESSION = hd.sr.CodedConcept("121073", "DCM", "Impression")  # CID 7002
REASONING_TRACE = hd.sr.CodedConcept("reasoning-trace", LOCAL_SCHEME, "Reasoning trace")

# CID 244 Laterality
LATERALITY_CODES: dict[str, hd.sr.CodedConcept] = {
    "left": hd.sr.CodedConcept("7771000", "SCT", "Left"),
    "right": hd.sr.CodedConcept("24028007", "SCT", "Right"),
    "bilateral": hd.sr.CodedConcept("51440002", "SCT", "Bilateral"),
    "unilateral": hd.sr.CodedConcept("66459002", "SCT", "Unilateral"),
}
_LATERALITY_BY_VALUE = {(c.scheme_designator, c.value): name for name, c in LATERALITY_CODES.items()}

# Patient and Study attributes highdicom copies from the first evidence instance; Type 2 in the
# image IODs, so a de-identified image may hold them empty, but they must be there to be copied.
_TYPE2_COPIED = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)
# What TID 1604 (cross-sectional) and TID 1603 (projection) library descriptors read from an
# image, with the number of values each needs.
_CROSS_SECTIONAL = {
    "PixelSpacing": 2, "ImageOrientationPatient": 6, "ImagePositionPatient": 3, "SliceThickness": 1,
}
_PROJECTION = {"PatientOrientation": 2, "ImagerPixelSpacing": 2}
# What every Image Library entry (TID 1602) reads, and the optional Spacing Between Slices.
_LIBRARY_ATTRIBUTES = (
    "SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "FrameOfReferenceUID", "SpacingBetweenSlices",
)
_DESCRIPTORS: dict[str, dict[str, int]] = {
    **dict.fromkeys(("CT", "MR", "PT"), _CROSS_SECTIONAL),
    **dict.fromkeys(("CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA"), _PROJECTION),
}

_Group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations


@dataclass(frozen=True)
class MeasurementReportContent:
    """What one of our TID 1500 SRs says: who reported, the findings in order, the disclaimer,
    and the narrative (None in an SR written without one)."""

    algorithm: Algorithm
    findings: tuple[Finding, ...]
    disclaimer: str | None = None
    narrative: Narrative | None = None


def measurement_report(
    findings: Sequence[Finding],
    evidence: Sequence[Dataset],
    algorithm: Algorithm,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 990,
    instance_number: int = 1,
    disclaimer: str | None = None,
    narrative: Narrative | None = None,
) -> hd.sr.ComprehensiveSR:
    """TID 1500 Measurement Report of ``findings`` on the ``evidence`` images, as a Comprehensive SR.

    The SR joins the evidence's study (Patient and Study modules copied from it) in a new series;
    every evidence instance is listed in the Image Library. Raises ValueError when a finding does
    not refer to an evidence instance, to a frame it has, or lies outside that frame.
    Never touches the disk and never changes its arguments.
    """
    if disclaimer is not None and not disclaimer.strip():
        raise ValueError("disclaimer must be None or non-empty text, got an empty string")
    images = _evidence_by_uid(evidence)
    _check_findings(findings, images)
    context = _observer(algorithm)
    groups = [_measurement_group(f, images[f.sop_instance_uid], algorithm) for f in findings]
    library = [_library_view(ds) for ds in images.values()]
    root = _report_root(context, groups, library)
    texts = [
        *_narrative_items(narrative, before_disclaimer=True),
        *([] if disclaimer is None else [_text(COMMENT, disclaimer)]),
        *_narrative_items(narrative, before_disclaimer=False),
    ]
    if texts:
        evaluations = hd.sr.ContainerContentItem(  # SEPARATE: each text is shown under its concept
            name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            is_content_continuous=False,
        )
        evaluations.ContentSequence = hd.sr.ContentSequence(texts)
        root[0].ContentSequence.append(evaluations)
    traced = narrative is not None and bool(narrative.trace)
    return _comprehensive_sr(
        root[0], images.values(), series_instance_uid=series_instance_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=instance_number,
        series_description="apolo-node findings", local_scheme=_local_scheme(findings, traced),
    )


def read_measurement_report(ds: Dataset) -> MeasurementReportContent:
    """The algorithm, findings and disclaimer of a TID 1500 SR that ``measurement_report`` wrote."""
    template = ds.get("ContentTemplateSequence")
    if ds.get("ValueType") != "CONTAINER" or not template or template[0].get("TemplateIdentifier") != "1500":
        raise ValueError(
            f"dataset {ds.get('SOPInstanceUID', '(no SOP Instance UID)')} is not a TID 1500 "
            "Measurement Report: its root content item must be a CONTAINER with template 1500"
        )
    report = hd.sr.ComprehensiveSR.from_dataset(ds).content
    root = report[0]
    algorithm = _read_algorithm(report)
    measurements = _items(root, codes.DCM.ImagingMeasurements, "CONTAINER")
    groups = _items(measurements[0], codes.DCM.MeasurementGroup, "CONTAINER") if measurements else []
    findings = tuple(_read_group(g) for g in groups)
    disclaimer = None
    texts: dict[str, str] = {}
    for container in _items(root, QUALITATIVE_EVALUATIONS, "CONTAINER"):
        for item in _items(container, COMMENT, "TEXT"):
            disclaimer = item.value
        for key, concept in (("findings", FINDING), ("impression", IMPRESSION), ("trace", REASONING_TRACE)):
            for item in _items(container, concept, "TEXT"):
                texts[key] = str(item.value)
    narrative = None
    if "findings" in texts or "impression" in texts:
        narrative = Narrative(texts.get("findings", ""), texts.get("impression", ""), texts.get("trace", ""))
    return MeasurementReportContent(
        algorithm=algorithm, findings=findings, disclaimer=disclaimer, narrative=narrative
    )


# --- building ---------------------------------------------------------------------------------


def _evidence_by_uid(
    evidence: Sequence[Dataset], name: str = "evidence", document: str = "a measurement report"
) -> dict[str, Dataset]:
    """The instances a new object refers to, by SOP Instance UID: at least one, all of one study
    (the object joins that study), none twice."""
    if not evidence:
        raise ValueError(f"{name} must hold at least one image: {document} takes its study from it")
    images: dict[str, Dataset] = {}
    study = evidence[0].StudyInstanceUID
    for ds in evidence:
        uid = str(ds.SOPInstanceUID)
        if ds.StudyInstanceUID != study:
            raise ValueError(
                f"{name} instance {uid} is in study {ds.StudyInstanceUID}, not {study}: "
                f"{document} covers one study"
            )
        if uid in images:
            raise ValueError(f"{name} instance {uid} is given twice: each instance is referenced once")
        images[uid] = ds
    return images


def _frames(ds: Dataset) -> int | None:
    """The number of frames of a multi-frame instance, None for a single-frame one."""
    value = ds.get("NumberOfFrames")
    return int(value) if value not in (None, "") else None


def _check_findings(findings: Sequence[Finding], images: dict[str, Dataset]) -> None:
    seen: set[str] = set()
    for f in findings:
        if f.tracking_uid in seen:
            raise ValueError(
                f"finding tracking UID {f.tracking_uid} is used twice: each measurement group needs "
                "its own Tracking Unique Identifier (viewers merge groups that share one)"
            )
        seen.add(f.tracking_uid)
        ds = images.get(f.sop_instance_uid)
        if ds is None:
            raise ValueError(
                f"finding {f.tracking_uid} refers to sop_instance_uid {f.sop_instance_uid}, which is "
                "not in the evidence: every finding's SOP Instance UID must be one of the evidence "
                "instances (the report references only images in its Image Library)"
            )
        if f.sop_class_uid != ds.SOPClassUID:
            raise ValueError(
                f"finding {f.tracking_uid} gives sop_class_uid {f.sop_class_uid}, but instance "
                f"{f.sop_instance_uid} is {ds.SOPClassUID}"
            )
        frames = _frames(ds) or 1
        if f.frame > frames:
            raise ValueError(
                f"finding {f.tracking_uid} is on frame {f.frame}, but instance {f.sop_instance_uid} "
                f"has {frames} frame(s)"
            )
        if f.box is not None and not f.box.within(int(ds.Columns), int(ds.Rows)):
            raise ValueError(
                f"finding {f.tracking_uid} box {tuple(f.box.as_list())} lies outside the "
                f"{ds.Columns}x{ds.Rows} (columns x rows) frame {f.frame} of instance {f.sop_instance_uid}"
            )


def _local_scheme(findings: Sequence[Finding], used: bool = False) -> str | None:
    """How our local coding scheme is named when a code of ``findings`` uses it (or ``used``
    says another item does), else None."""
    codes_used = [c for f in findings for c in (f.code, *(x for m in f.measurements for x in (m.name, m.unit)))]
    if not used and not any(c.scheme == LOCAL_SCHEME for c in codes_used):
        return None
    return "apolo-node local codes (the meaning is the finding label)"


def _comprehensive_sr(
    content: hd.sr.ContainerContentItem, evidence: Iterable[Dataset], *, series_instance_uid: str,
    series_number: int, sop_instance_uid: str, instance_number: int, series_description: str,
    local_scheme: str | None,
) -> hd.sr.ComprehensiveSR:
    """What all our SRs share: a new series of the evidence's study, UTF-8, complete, made by
    apolo-node; the local coding scheme declared (Coding Scheme Identification) when named."""
    return hd.sr.ComprehensiveSR(
        evidence=[_header_view(ds) for ds in evidence],
        content=content,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        series_description=series_description,
        is_complete=True,
        specific_character_set=CHARACTER_SET,
        coding_schemes=None if local_scheme is None else [
            CodingSchemeIdentificationItem(
                designator=LOCAL_SCHEME, name=local_scheme, responsible_organization=MANUFACTURER
            )
        ],
    )


def _narrative_items(narrative: Narrative | None, *, before_disclaimer: bool) -> list[hd.sr.TextContentItem]:
    """The narrative's non-empty TEXT items: findings text and impression go before the
    disclaimer, the reasoning trace after it."""
    if narrative is None:
        return []
    if before_disclaimer:
        pairs = ((FINDING, narrative.findings), (IMPRESSION, narrative.impression))
    else:
        pairs = ((REASONING_TRACE, narrative.trace),)
    return [_text(concept, value) for concept, value in pairs if value.strip()]


def _observer(algorithm: Algorithm) -> hd.sr.ObservationContext:
    """The algorithm as the device observer (TID 1004)."""
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_device_uid(algorithm),
            name=algorithm.name,
            manufacturer_name=MANUFACTURER,
            model_name=algorithm.version,
        ),
    )
    return hd.sr.ObservationContext(observer_device_context=device)


def _device_uid(algorithm: Algorithm) -> str:
    """The same 2.25 UID for the same algorithm name and version, on every node."""
    return generate_uid(prefix=None, entropy_srcs=["apolo-node algorithm", algorithm.name, algorithm.version])


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _measurement_group(f: Finding, image: Dataset, algorithm: Algorithm) -> _Group:
    """One TID 1410 (with a box) or TID 1501 (without) Measurement Group for one finding."""
    frames = [f.frame] if _frames(image) is not None else None
    measurements = [
        hd.sr.Measurement(name=_coded(m.name), value=float(m.value), unit=_coded(m.unit)) for m in f.measurements
    ]
    if f.confidence is not None:
        measurements.append(
            hd.sr.Measurement(name=CERTAINTY_OF_FINDING, value=float(f.confidence) * 100.0, unit=PERCENT)
        )
    evaluations = []
    if f.laterality is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(name=LATERALITY, value=LATERALITY_CODES[f.laterality]))
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=f.tracking_uid, identifier=f.label),
        "finding_type": _coded(f.code),
        "algorithm_id": hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version),
        "measurements": measurements or None,
        "qualitative_evaluations": evaluations or None,
    }
    group: _Group
    if f.box is not None:
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array(f.box.polyline(), dtype=float),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID,
                referenced_frame_numbers=frames,
            ),
        )
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
    else:
        source = hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=image.SOPClassUID,
            referenced_sop_instance_uid=image.SOPInstanceUID,
            referenced_frame_numbers=frames,
        )
        group = hd.sr.MeasurementsAndQualitativeEvaluations(source_images=[source], **common)
    # qualitative evaluations as TEXT (TID 1501 row 12), after the coded ones
    if f.location:
        group[0].ContentSequence.append(_text(FINDING_SITE, f.location))
    if f.description:
        group[0].ContentSequence.append(_text(COMMENT, f.description))
    return group


def _report_root(
    context: hd.sr.ObservationContext,
    groups: list[_Group],
    library: list[Dataset],
) -> hd.sr.ContentSequence:
    """highdicom's MeasurementReport; with no groups, the same tree with an empty Imaging Measurements.

    highdicom refuses a report without groups, but a study with nothing to report still gets its
    SR (with the Imaging Measurements container that viewers look for), so that one is built here
    from the same templates, in highdicom's order.
    """
    if groups:
        return hd.sr.MeasurementReport(
            observation_context=context,
            procedure_reported=PROCEDURE_REPORTED,
            imaging_measurements=groups,
            referenced_images=library,
        )
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = hd.sr.ContentSequence()
    root.ContentSequence.extend(hd.sr.LanguageOfContentItemAndDescendants(hd.sr.templates.DEFAULT_LANGUAGE))
    root.ContentSequence.extend(context)
    root.ContentSequence.append(
        hd.sr.CodeContentItem(
            name=codes.DCM.ProcedureReported,
            value=PROCEDURE_REPORTED,
            relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
    )
    root.ContentSequence.extend(hd.sr.ImageLibrary(library))
    root.ContentSequence.append(
        hd.sr.ContainerContentItem(
            name=codes.DCM.ImagingMeasurements, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
    )
    return hd.sr.ContentSequence([root], is_root=True)


def _library_view(ds: Dataset) -> Dataset:
    """The attributes of ``ds`` that a TID 1601 Image Library entry reads, without its pixels.

    The modality-specific descriptors (TID 1603/1604) are written only when the image has every
    attribute they need: a de-identified image may lack some, and an entry without them is valid.
    """
    view = Dataset()
    for keyword in _LIBRARY_ATTRIBUTES:
        if ds.get(keyword) not in (None, ""):
            setattr(view, keyword, ds[keyword].value)
    modality = str(ds.get("Modality") or "OT")
    needed = _DESCRIPTORS.get(modality, {})
    if all(len(_values(ds, k)) >= n for k, n in needed.items()):
        for keyword in needed:
            setattr(view, keyword, ds[keyword].value)
        view.Modality = modality
    else:
        # Modality only selects the descriptors highdicom writes; the coded one comes from the SOP class
        view.Modality = "OT"
    return view


def _values(ds: Dataset, keyword: str) -> list[object]:
    """The non-empty values of an attribute (none when absent or empty), whatever its multiplicity."""
    value = ds.get(keyword)
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    return [v for v in values if v not in (None, "")]


def _header_view(ds: Dataset) -> Dataset:
    """``ds`` without Pixel Data, with empty Type 2 Patient/Study attributes where it lacks them."""
    view = Dataset()
    for elem in ds:
        if elem.tag.group != 0x7FE0:
            view.add(elem)
    for keyword in _TYPE2_COPIED:
        if keyword not in view:
            setattr(view, keyword, None)
    return view


# --- reading ----------------------------------------------------------------------------------


def _items(item: Dataset, name: hd.sr.CodedConcept, value_type: str) -> list:
    """The children of ``item`` with concept ``name`` and ``value_type`` (none for an empty container)."""
    if "ContentSequence" not in item:
        return []
    return hd.sr.utils.find_content_items(item, name=name, value_type=value_type)


def _code(concept: hd.sr.CodedConcept) -> Code:
    return Code(value=str(concept.value), scheme=str(concept.scheme_designator), meaning=str(concept.meaning))


def _read_algorithm(report: hd.sr.MeasurementReport) -> Algorithm:
    for observer in report.get_observer_contexts(observer_type=codes.DCM.Device):
        device = observer.observer_identifying_attributes
        if device.name and device.model_name:
            return Algorithm(name=device.name, version=device.model_name)
    raise ValueError(
        "measurement report has no device observer with a name and model name: "
        "apolo-node writes the algorithm there (TID 1004)"
    )


def _graphic_value(v: float) -> float:
    """A GraphicData (FL, 32-bit) value as the shortest decimal it stands for: 10.3 reads back as 10.3."""
    return float(str(np.float32(v)))


def _read_group(item: Dataset) -> Finding:
    """One Measurement Group (TID 1410 or 1501) back into the Finding it was written from."""
    if _items(item, codes.DCM.ImageRegion, "SCOORD"):
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations.from_sequence([item])
        region = group.roi
        reference = region.ContentSequence[0].ReferencedSOPSequence[0]
        box = Box.from_polyline([(_graphic_value(x), _graphic_value(y)) for x, y in region.value])
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations.from_sequence([item])
        sources = group.source_images
        if not sources:
            raise ValueError(
                f"measurement group {group.tracking_uid} has neither an image region nor a source image"
            )
        reference = sources[0].ReferencedSOPSequence[0]
        box = None
    if group.tracking_uid is None or group.tracking_identifier is None or group.finding_type is None:
        raise ValueError(
            "measurement group lacks a Tracking Identifier, Tracking Unique Identifier or Finding: "
            "apolo-node writes all three in every group"
        )
    confidence = None
    measurements = []
    for m in group.get_measurements():
        if m.name == CERTAINTY_OF_FINDING:
            confidence = round(float(m.value) / 100.0, 12)  # percent back to [0, 1], less float noise
        else:
            measurements.append(Measurement(name=_code(m.name), value=float(m.value), unit=_code(m.unit)))
    laterality = None
    for evaluation in group.get_qualitative_evaluations(name=LATERALITY):
        value = evaluation.value
        laterality = _LATERALITY_BY_VALUE.get((value.scheme_designator, value.value))
    root = group[0]
    location = next((i.value for i in _items(root, FINDING_SITE, "TEXT")), None)
    description = next((i.value for i in _items(root, COMMENT, "TEXT")), "")
    frames = _values(reference, "ReferencedFrameNumber")
    return Finding(
        tracking_uid=str(group.tracking_uid),
        label=str(group.tracking_identifier),
        code=_code(group.finding_type),
        sop_instance_uid=str(reference.ReferencedSOPInstanceUID),
        sop_class_uid=str(reference.ReferencedSOPClassUID),
        frame=int(frames[0]) if frames else 1,  # type: ignore[call-overload]
        description=str(description),
        box=box,
        confidence=confidence,
        laterality=laterality,
        location=None if location is None else str(location),
        measurements=tuple(measurements),
    )
