"""Softcopy presentation states: the grounding boxes of findings drawn over their images.

PACS viewers that ignore a TID 1500 SR's regions still display a presentation state, so the boxes
the vision stage found go back as one: a Grayscale Softcopy Presentation State (PS3.3 A.33.1) over
MONOCHROME1/2 images, a Color Softcopy Presentation State (A.33.2) over colour images (three
samples: RGB, YBR_*). PALETTE COLOR images get neither (a colour one requires three samples, a
grayscale one would replace the palette). ``read_grounding_presentation_state`` reads back what
``grounding_presentation_state`` drew.

What is drawn (PS3.3 C.10.5 Graphic Annotation, C.10.7 Graphic Layer):

- one graphic layer "AI FINDINGS", recommended yellow (CIELab) and white (grayscale);
- per finding with a box one Graphic Annotation that references its exact instance and, on a
  multi-frame instance, its Referenced Frame Number, holding a closed five-point POLYLINE (the
  box outline, (column, row) in PIXEL units) and a TEXT object with the label (and the
  confidence in percent) anchored at the box's top-left corner; both carry the finding's
  Tracking UID and label as Tracking UID and Tracking ID;
- only the annotated instances are referenced, and they must share one size (highdicom writes
  one Displayed Area) and one Photometric Interpretation: the presentation state replaces the
  image's own, so MONOCHROME1 images get Presentation LUT Shape INVERSE (as dcmtk does);
- a colour presentation state has no grayscale pipeline: it carries the images' ICC profile (the
  same for all, top level or of the one optical path), else an sRGB profile;
- (grayscale) the Modality LUT (rescale) and the VOI LUT (window, or VOI LUT Sequence; top level or
  functional groups) are copied from the images, so that each displays as the radiologist
  expects. A presentation state holds one Modality LUT, so the annotated images must share one
  rescale (absent means slope 1, intercept 0); VOI items reference the images (and frames) they
  apply to when the images differ.
"""

from __future__ import annotations

import importlib.metadata
import pkgutil
from collections.abc import Sequence
from typing import NamedTuple

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ColorSoftcopyPresentationStateStorage, GrayscaleSoftcopyPresentationStateStorage

from apolo_node.findings import Algorithm, Box, Finding
from apolo_node.sr.measurement_report import (
    MANUFACTURER,
    _evidence_by_uid,
    _frames,
    _graphic_value,
    _header_view,
)

LAYER = "AI FINDINGS"
LAYER_COLOR = hd.color.CIELabColor.from_string("yellow")
LAYER_GRAYSCALE = 0xFFFF  # white on a monochrome display
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT")
PRESENTATION_STATES = {
    GrayscaleSoftcopyPresentationStateStorage: "Grayscale Softcopy Presentation State",
    ColorSoftcopyPresentationStateStorage: "Color Softcopy Presentation State",
}
_RESCALE_TYPES = {v.value for v in hd.RescaleTypeValues}
# the sRGB colour space conversion ("spac") profile highdicom ships for its own presentation states;
# littleCMS's sRGB is a monitor profile, which C.11.15 does not allow
SRGB_PROFILE = pkgutil.get_data("highdicom", "_icc_profiles/sRGB_v4_ICC_preference.icc") or b""


class GroundingBox(NamedTuple):
    """One box of a presentation state: its text, the instance and frame it is drawn on, the box."""

    label: str
    sop_instance_uid: str
    frame: int
    box: Box


def is_colour(ds: Dataset) -> bool:
    """Whether an image takes a Color (not a Grayscale) Softcopy Presentation State."""
    return int(ds.get("SamplesPerPixel", 1) or 1) == 3 and ds.get("PhotometricInterpretation") in COLOUR


def presentable(ds: Dataset) -> bool:
    """Whether ``grounding_presentation_state`` can draw on this image (grayscale or three-sample colour)."""
    grayscale = ds.get("PhotometricInterpretation") in GRAYSCALE and int(ds.get("SamplesPerPixel", 1) or 1) == 1
    return grayscale or is_colour(ds)


def grounding_presentation_state(
    findings: Sequence[Finding],
    images: Sequence[Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 992,
    instance_number: int = 1,
    content_label: str = "AI_FINDINGS",
    algorithm: Algorithm | None = None,
) -> hd.pr.GrayscaleSoftcopyPresentationState | hd.pr.ColorSoftcopyPresentationState:
    """A presentation state drawing the box and label of each finding over the instance and frame
    it was seen on: grayscale (GSPS) over MONOCHROME images, colour (CSPS) over colour images.

    Findings without a box are skipped: a presentation state can only draw a place. ``images``
    must be grayscale (MONOCHROME1/2) or three-sample colour instances of one study; those with a
    box drawn on them must share size and be all colour or all grayscale, grayscale ones also
    Photometric Interpretation and rescale. Raises ValueError when no finding has a
    box, when a finding's instance is not in ``images`` (naming the UID), when its frame is not
    in the instance, or when its box lies outside the frame (naming box, frame size, instance).
    ``algorithm`` names the software in the equipment module. Never touches the disk and never
    changes its arguments.
    """
    by_uid = _images_by_uid(images)
    boxed = [f for f in findings if f.box is not None]
    if not boxed:
        raise ValueError(
            f"none of the {len(findings)} finding(s) has a box: a presentation state draws boxes, "
            "so build one only when a finding has a location"
        )
    for f in boxed:
        _check_box(f, by_uid)
    # highdicom reads Type 2 Patient/Study attributes from the first: a de-identified image may lack them
    referenced = [_header_view(by_uid[uid]) for uid in dict.fromkeys(f.sop_instance_uid for f in boxed)]
    _check_alike(referenced)
    layer = hd.pr.GraphicLayer(
        layer_name=LAYER, order=1, description="Findings located by AI", display_color=LAYER_COLOR
    )
    layer.GraphicLayerRecommendedDisplayGrayscaleValue = LAYER_GRAYSCALE
    identity = {
        "referenced_images": referenced,
        "series_instance_uid": series_instance_uid,
        "series_number": series_number,
        "sop_instance_uid": sop_instance_uid,
        "instance_number": instance_number,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": algorithm.name if algorithm else MANUFACTURER,
        "software_versions": algorithm.version if algorithm else importlib.metadata.version("apolo-node"),
        "device_serial_number": None,  # Type 3 here; highdicom omits None
        "content_label": content_label,
        "content_description": "Boxes of findings located by AI",
        "graphic_layers": [layer],
        "graphic_annotations": [_annotation(f, by_uid[f.sop_instance_uid], layer) for f in boxed],
    }
    pr: Dataset
    if is_colour(referenced[0]):
        pr = hd.pr.ColorSoftcopyPresentationState(**identity, icc_profile=_icc_profile(referenced))
    else:
        pr = _grayscale(identity, referenced)
    pr.SeriesDescription = "apolo-node AI findings"
    _copy_body_part_and_laterality(pr, referenced)
    return pr


def _grayscale(identity: dict, referenced: list[Dataset]) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A GSPS with the images' own Modality LUT, VOI LUT and polarity."""
    voi = _voi_transformations(referenced)
    shape = "INVERSE" if referenced[0].PhotometricInterpretation == "MONOCHROME1" else "IDENTITY"
    pr = hd.pr.GrayscaleSoftcopyPresentationState(
        **identity,
        modality_lut_transformation=_modality_transformation(referenced),
        # highdicom copies VOI itself when given none, but cannot for classic multi-frame images:
        # a placeholder keeps it from trying, and goes when the images have no VOI of their own
        voi_lut_transformations=voi or [hd.pr.SoftcopyVOILUTTransformation(window_center=0, window_width=1)],
        presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=shape),
    )
    if not voi:
        del pr.SoftcopyVOILUTSequence
    return pr


def _icc_profile(referenced: list[Dataset]) -> bytes:
    """The one ICC profile of the annotated images (top level, or of a single optical path), else
    sRGB: PS3.3 C.11.15 says colour without a profile is to be taken as sRGB."""
    profiles = set()
    for ds in referenced:
        paths = ds.get("OpticalPathSequence") or []
        profile = ds.get("ICCProfile") or (paths[0].get("ICCProfile") if len(paths) == 1 else None)
        profiles.add(bytes(profile) if profile else None)
    if len(profiles) > 1:
        raise ValueError(
            f"the {len(referenced)} annotated colour instances carry different ICC profiles: a presentation "
            "state has one; make one per profile"
        )
    (profile,) = profiles
    return profile if profile is not None else SRGB_PROFILE


def read_grounding_presentation_state(ds: Dataset) -> list[GroundingBox]:
    """The (label, instance, frame, box) of every POLYLINE that ``grounding_presentation_state`` drew."""
    if ds.get("SOPClassUID") not in PRESENTATION_STATES:
        raise ValueError(
            f"dataset {ds.get('SOPInstanceUID', '(no SOP Instance UID)')} is not a Grayscale or Color "
            f"Softcopy Presentation State: its SOP Class UID is {ds.get('SOPClassUID')}"
        )
    boxes = []
    for annotation in ds.get("GraphicAnnotationSequence", []):
        reference = annotation.ReferencedImageSequence[0]
        frame = reference.get("ReferencedFrameNumber")
        texts = [str(t.UnformattedTextValue) for t in annotation.get("TextObjectSequence", [])]
        for graphic in annotation.get("GraphicObjectSequence", []):
            if graphic.GraphicType != "POLYLINE":
                continue
            values = [_graphic_value(v) for v in graphic.GraphicData]
            boxes.append(
                GroundingBox(
                    label=texts[0] if texts else "",
                    sop_instance_uid=str(reference.ReferencedSOPInstanceUID),
                    frame=int(frame) if frame is not None else 1,
                    box=Box.from_polyline(list(zip(values[0::2], values[1::2], strict=True))),
                )
            )
    return boxes


# --- checks -----------------------------------------------------------------------------------


def _images_by_uid(images: Sequence[Dataset]) -> dict[str, Dataset]:
    by_uid = _evidence_by_uid(images, "images", "a presentation state")
    for uid, ds in by_uid.items():
        if not presentable(ds):
            raise ValueError(
                f"images instance {uid} is {ds.get('PhotometricInterpretation')} with "
                f"{ds.get('SamplesPerPixel', 1)} sample(s) per pixel: a Grayscale Softcopy Presentation State "
                f"applies only to {' or '.join(GRAYSCALE)} images, a Color one only to three-sample "
                f"{', '.join(COLOUR)} images"
            )
    return by_uid


def _check_box(f: Finding, by_uid: dict[str, Dataset]) -> None:
    ds = by_uid.get(f.sop_instance_uid)
    if ds is None:
        raise ValueError(
            f"finding {f.tracking_uid} refers to sop_instance_uid {f.sop_instance_uid}, which is not "
            "among images: pass every instance a finding with a box was seen on"
        )
    frames = _frames(ds) or 1
    if f.frame > frames:
        raise ValueError(
            f"finding {f.tracking_uid} is on frame {f.frame}, but instance {f.sop_instance_uid} "
            f"has {frames} frame(s)"
        )
    assert f.box is not None
    if not f.box.within(int(ds.Columns), int(ds.Rows)):
        raise ValueError(
            f"finding {f.tracking_uid} box {tuple(f.box.as_list())} lies outside the "
            f"{ds.Columns}x{ds.Rows} (columns x rows) frame {f.frame} of instance {f.sop_instance_uid}"
        )


def _check_alike(referenced: list[Dataset]) -> None:
    """One Displayed Area and one Presentation LUT serve every annotated instance."""
    first = referenced[0]
    for ds in referenced[1:]:
        if (ds.Columns, ds.Rows) != (first.Columns, first.Rows):
            raise ValueError(
                f"instances {first.SOPInstanceUID} ({first.Columns}x{first.Rows}) and {ds.SOPInstanceUID} "
                f"({ds.Columns}x{ds.Rows}) both carry boxes but differ in size: a presentation state "
                "has one displayed area; make one per image size"
            )
        if is_colour(ds) != is_colour(first):
            raise ValueError(
                f"instances {first.SOPInstanceUID} ({first.PhotometricInterpretation}) and "
                f"{ds.SOPInstanceUID} ({ds.PhotometricInterpretation}) both carry boxes but one is colour "
                "and one grayscale: a presentation state is one or the other; make one per kind"
            )
        if not is_colour(ds) and ds.PhotometricInterpretation != first.PhotometricInterpretation:
            raise ValueError(
                f"instances {first.SOPInstanceUID} ({first.PhotometricInterpretation}) and "
                f"{ds.SOPInstanceUID} ({ds.PhotometricInterpretation}) both carry boxes but differ in "
                "polarity: a presentation state has one Presentation LUT; make one per polarity"
            )


def _copy_body_part_and_laterality(pr: Dataset, referenced: list[Dataset]) -> None:
    """General Series Body Part Examined and Laterality (Type 2C) as the annotated images have them.

    Laterality is required for a paired body part; when the images name neither, it is sent
    empty, which the standard allows for "unknown" (dciodvfy warns, but does not fail).
    """
    parts = {str(ds.get("BodyPartExamined") or "") for ds in referenced}
    sides = {str(ds.get("Laterality") or ds.get("ImageLaterality") or "") for ds in referenced}
    body_part = parts.pop() if len(parts) == 1 else ""
    laterality = sides.pop() if len(sides) == 1 else ""
    if body_part:
        pr.BodyPartExamined = body_part
    if laterality in ("R", "L"):
        pr.Laterality = laterality
    elif not body_part:
        pr.Laterality = None


# --- drawing ----------------------------------------------------------------------------------


def _annotation(f: Finding, image: Dataset, layer: hd.pr.GraphicLayer) -> hd.pr.GraphicAnnotation:
    assert f.box is not None
    text = f.label if f.confidence is None else f"{f.label} ({f.confidence:.0%})"
    tracking = {"tracking_id": f.label, "tracking_uid": f.tracking_uid}
    return hd.pr.GraphicAnnotation(
        referenced_images=[image],
        graphic_layer=layer,
        referenced_frame_number=f.frame if _frames(image) is not None else None,
        graphic_objects=[
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array(f.box.polyline(), dtype=float),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                **tracking,
            )
        ],
        text_objects=[
            hd.pr.TextObject(
                text_value=text,
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                anchor_point=(f.box.x1, f.box.y1),
                anchor_point_visible=False,
                **tracking,
            )
        ],
    )


# --- grayscale pipeline: Modality LUT and VOI LUT copied from the images ----------------------


def _functional_group(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The first item of ``keyword`` for ``frame`` of an enhanced multi-frame image (per-frame, then shared)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) >= frame and keyword in per_frame[frame - 1]:
        return per_frame[frame - 1][keyword][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and keyword in shared[0]:
        return shared[0][keyword][0]
    return None


def _listed(value: object) -> list:
    """The values of a possibly multi-valued attribute, as a list."""
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _modality_transformation(referenced: list[Dataset]) -> hd.ModalityLUTTransformation:
    """The one rescale of the annotated images (identity when they have none)."""
    seen: dict[tuple[float, float], tuple[str, str]] = {}
    for ds in referenced:
        if "ModalityLUTSequence" in ds:
            raise ValueError(
                f"instance {ds.SOPInstanceUID} has a Modality LUT Sequence; apolo-node copies only "
                "Rescale Slope and Intercept into a presentation state"
            )
        for frame in range(1, (_frames(ds) or 1) + 1):
            source = _functional_group(ds, frame, "PixelValueTransformationSequence") or ds
            slope, intercept = source.get("RescaleSlope"), source.get("RescaleIntercept")
            key = (
                float(slope) if slope not in (None, "") else 1.0,
                float(intercept) if intercept not in (None, "") else 0.0,
            )
            rescale_type = source.get("RescaleType") or ("HU" if ds.get("Modality") == "CT" else "US")
            seen.setdefault(key, (str(ds.SOPInstanceUID), str(rescale_type)))
            if len(seen) > 1:
                (a, (uid_a, _)), (b, (uid_b, _)) = list(seen.items())[:2]
                raise ValueError(
                    f"instances {uid_a} (rescale slope {a[0]:g}, intercept {a[1]:g}) and {uid_b} (slope "
                    f"{b[0]:g}, intercept {b[1]:g}) both carry boxes but differ in rescale: a presentation "
                    "state has one Modality LUT; make one per rescale"
                )
    ((slope, intercept), (_, rescale_type)), = seen.items()
    # highdicom knows only the defined terms; "US" (unspecified) is what any other type tells us
    return hd.ModalityLUTTransformation(
        rescale_intercept=intercept,
        rescale_slope=slope,
        rescale_type=rescale_type if rescale_type in _RESCALE_TYPES else "US",
    )


def _voi_key(ds: Dataset, frame: int) -> tuple | None:
    """The VOI of one frame as a hashable value: a window, a VOI LUT Sequence, or None."""
    source = _functional_group(ds, frame, "FrameVOILUTSequence") or ds
    if source.get("WindowCenter") not in (None, "") and source.get("WindowWidth") not in (None, ""):
        explanation = source.get("WindowCenterWidthExplanation")
        return (
            "window",
            tuple(float(v) for v in _listed(source.WindowCenter)),
            tuple(float(v) for v in _listed(source.WindowWidth)),
            tuple(str(e) for e in _listed(explanation)) if explanation not in (None, "") else None,
            source.get("VOILUTFunction") or None,
        )
    if ds.get("VOILUTSequence"):
        return ("lut", tuple(_lut_key(item) for item in ds.VOILUTSequence))
    return None


def _lut_key(item: Dataset) -> tuple:
    _, first, bits = (int(v) for v in item.LUTDescriptor)
    data = item.LUTData
    if isinstance(data, bytes):  # OW as read from a file, little endian
        data = np.frombuffer(data, dtype=np.uint8 if bits == 8 else "<u2")
    return (first, bits, item.get("LUTExplanation"), tuple(int(v) for v in _listed(data)))


def _voi_transformation(
    key: tuple, references: hd.ReferencedImageSequence | None
) -> hd.pr.SoftcopyVOILUTTransformation:
    if key[0] == "window":
        _, centers, widths, explanations, function = key
        return hd.pr.SoftcopyVOILUTTransformation(
            window_center=list(centers),
            window_width=list(widths),
            window_explanation=list(explanations) if explanations else None,
            voi_lut_function=function,
            referenced_images=references,
        )
    luts = [
        hd.VOILUT(
            first_mapped_value=first,
            lut_data=np.array(values, dtype=np.uint8 if bits == 8 else np.uint16),
            lut_explanation=explanation,
        )
        for first, bits, explanation, values in key[1]
    ]
    return hd.pr.SoftcopyVOILUTTransformation(voi_luts=luts, referenced_images=references)


def _voi_transformations(referenced: list[Dataset]) -> list[hd.pr.SoftcopyVOILUTTransformation]:
    """The images' own VOI: one item for all when they agree, else one per group of images/frames."""
    groups: dict[tuple, dict[str, list[int]]] = {}
    frames_of: dict[str, int] = {}
    by_uid = {str(ds.SOPInstanceUID): ds for ds in referenced}
    for uid, ds in by_uid.items():
        frames_of[uid] = _frames(ds) or 1
        for frame in range(1, frames_of[uid] + 1):
            key = _voi_key(ds, frame)
            if key is not None:
                groups.setdefault(key, {}).setdefault(uid, []).append(frame)
    if len(groups) == 1:
        ((key, members),) = groups.items()
        if all(len(members.get(uid, [])) == n for uid, n in frames_of.items()):
            return [_voi_transformation(key, None)]
    items = []
    for key, members in groups.items():
        whole = [by_uid[uid] for uid, frames in members.items() if len(frames) == frames_of[uid]]
        if whole:
            items.append(_voi_transformation(key, hd.ReferencedImageSequence(whole)))
        for uid, frames in members.items():
            if len(frames) != frames_of[uid]:
                some = hd.ReferencedImageSequence([by_uid[uid]], referenced_frame_number=frames)
                items.append(_voi_transformation(key, some))
    return items
