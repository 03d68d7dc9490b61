"""Which instances need their pixels scanned for burned-in text (PS3.15 Clean Pixel Data).

This module is the policy only, and it goes by risk, not by declaration: Burned In Annotation
is often absent or wrong. Projection and photographic images (radiographs, mammograms,
fluoroscopy, ultrasound, endoscopy, photographs, screen captures) carry their annotations in the
pixels by habit, so they are scanned whatever the attribute says. Cross-sectional images (CT,
MR, PET, NM) annotate in the header or in overlays; a slice is scanned only when it declares
Burned In Annotation YES or is a screen capture (a Secondary Capture class, or Image Type
SECONDARY). Keeping OCR off those slices keeps it off the hot path: a 500-slice CT study passes
without one OCR call.

``command.clean_instance`` then blacks the text out with ``burnedin.redact_burned_in_text`` when
``[deid] options`` hold ``clean_pixel_data``; without that option, without the OCR engine, or
when the pixels cannot be decoded, scanned or cleaned, the instance is quarantined: fail closed.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

# Projection and photographic modalities (PS3.3 C.7.3.1.1.1): scanned whatever they declare.
SCANNED_MODALITIES = frozenset({
    "CR", "DX", "MG", "XA", "RF", "IO", "PX",  # radiography, mammography, angiography, dental
    "US", "IVUS",  # ultrasound
    "SC", "OT", "DOC",  # screen captures, other, scanned documents
    "XC", "ES", "GM", "SM", "OP",  # photographs, endoscopy, microscopy, ophthalmic photography
})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC, and multi-frame SC .7.1 to .7.4
ULTRASOUND_CLASSES = ("1.2.840.10008.5.1.4.1.1.6.", "1.2.840.10008.5.1.4.1.1.3.")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _image_type(ds: Dataset) -> list[str]:
    value = ds.get("ImageType", None)
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in values]


def pixel_scan_reason(ds: Dataset) -> str | None:
    """Why this instance's pixels must be scanned for text, or None if policy lets it pass.

    The reason names the attribute that decided, never a value that could identify anyone.
    """
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in SCANNED_MODALITIES:
        return f"modality {modality} is a projection or photographic image, always scanned"
    if not modality:
        return "it has no Modality, so its risk is unknown"
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return "it declares BurnedInAnnotation YES"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture classes are screen captures, always scanned"
    if sop_class.startswith(ULTRASOUND_CLASSES):
        return "ultrasound classes are always scanned"
    image_type = _image_type(ds)
    if len(image_type) > 1 and image_type[1] == "SECONDARY":
        return "ImageType SECONDARY marks a screen capture"
    return None
