"""Which instances need their pixels scanned for burned-in text (PS3.15 Clean Pixel Data).

This module is the policy only. Ultrasound, secondary capture and endoscopy-like captures, and
anything that declares Burned In Annotation YES, must be scanned; other images (CT, MR, ... that
declare no burned-in text) pass without a scan. ``command.clean_instance`` then blacks the text
out with ``burnedin.redact_burned_in_text`` when ``[deid] options`` hold ``clean_pixel_data``;
without that option, without the OCR engine, or when the pixels cannot be decoded, scanned or
re-encoded, the instance is quarantined, never passed on: fail closed.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

ALWAYS_SCANNED_MODALITIES = frozenset({"US", "IVUS", "SC", "OT", "XC", "ES", "GM", "SM", "DOC"})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC, and multi-frame SC .7.1 to .7.4
ULTRASOUND_CLASSES = ("1.2.840.10008.5.1.4.1.1.6.", "1.2.840.10008.5.1.4.1.1.3.")


def pixel_scan_reason(ds: Dataset) -> str | None:
    """Why this instance's pixels must be scanned for text, or None if policy lets it pass."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return "it declares BurnedInAnnotation YES"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in ALWAYS_SCANNED_MODALITIES:
        return f"modality {modality} is always scanned"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX) or sop_class.startswith(ULTRASOUND_CLASSES):
        return "secondary capture and ultrasound classes are always scanned"
    return None
