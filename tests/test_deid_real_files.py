"""Real vendor files through ``apolo-node deid``: every test file pydicom ships, and those of the
``pydicom-data`` wheel when it is installed (the ``test`` extra installs it), go through
``deidentify_paths`` (the code the command runs: worker processes, OCR, the verifier) under the
default configuration, and each must end as its row in :data:`EXPECTED` says, for the reason the
row gives. Every file readable with its UIDs is written, or refused for a reason a person would
accept: it has no Study Instance UID, its pixels cannot be decoded, it is not DICOM.

Rows whose OCR takes minutes (long cine loops, and large radiographs whose twin in another
encoding runs) need ``APOLO_TEST_SLOW=1``; the rest take a few minutes on two cores. A new
file in a new pydicom release fails :func:`test_every_file_has_a_row` until it is given one.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from apolo_node.deid import FileOutcome, deidentify_paths
from apolo_node.deid.pixels import pixel_scan_reason
from tests.conftest import make_config

DATA_STORE = "pydicom-data/"  # the key prefix of the pydicom-data wheel's files
SLOW = os.environ.get("APOLO_TEST_SLOW") == "1"


class Expect(NamedTuple):
    """One file's expected outcome under the default configuration, and why."""

    status: str  # written, quarantined or skipped
    why: str  # in words a person would accept
    reason: str = ""  # a pattern the reported reason must contain (re.search)
    scanned: bool = False  # policy sends its pixels through the burned-in text scan
    slow: bool = False  # OCR of many frames or tiles: minutes, run with APOLO_TEST_SLOW=1
    time_cap_ok: bool = False  # may instead be refused at [deid] instance_timeout on a slow machine


def written(why: str, scanned: bool = False, slow: bool = False) -> Expect:
    return Expect("written", why, scanned=scanned, slow=slow)


def long_cine(why: str) -> Expect:
    """Written where OCR of every frame fits in ``[deid] instance_timeout``, else refused there."""
    return Expect("written", why, scanned=True, slow=True, time_cap_ok=True)


def refused(reason: str, why: str, scanned: bool = False) -> Expect:
    return Expect("quarantined", why, reason, scanned=scanned)


def skipped(reason: str, why: str) -> Expect:
    return Expect("skipped", why, reason)


NO_STUDY = "StudyInstanceUID is missing or empty"
NOT_DICOM = "not a DICOM Part 10 file"
DICOMDIR = "DICOMDIR"
UNDECODABLE = "pixel data could not be decoded by the installed decoders"
TIME_CAP = r"took longer than \[deid\] instance_timeout"

EXPECTED: dict[str, Expect] = {
    "693_J2KI.dcm": written("CT, JPEG 2000: header cleaned, pixels untouched"),
    "CT_small.dcm": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "ExplVR_BigEnd.dcm": written(
        "US, Ultrasound, big endian: pixels scanned for burned-in text", scanned=True),
    "ExplVR_BigEndNoMeta.dcm": skipped(
        NOT_DICOM, "a bare big endian data set: no preamble, DICM prefix or file meta (not Part 10)"),
    "ExplVR_LitEndNoMeta.dcm": skipped(
        NOT_DICOM, "a bare little endian data set: no preamble, DICM prefix or file meta (not Part 10)"),
    "GDCMJ2K_TextGBR.dcm": written(
        "no modality, Secondary Capture, JPEG 2000 lossless: pixels scanned for text", scanned=True),
    "J2K_pixelrep_mismatch.dcm": written("CT, JPEG 2000 lossless: header cleaned, pixels untouched"),
    "JPEG-lossy.dcm": refused(
        UNDECODABLE + r" \(JPEG Extended",
        "its 12-bit JPEG has a misplaced marker segment that libjpeg rejects (only GDCM reads it)",
        scanned=True),
    "JPEG2000-embedded-sequence-delimiter.dcm": refused(
        UNDECODABLE + r" \(JPEG 2000",
        "a sequence delimiter sits inside its JPEG 2000 codestream: no decoder reads its header",
        scanned=True),
    "JPEG2000.dcm": written(
        "NM, Secondary Capture, JPEG 2000: pixels scanned for burned-in text", scanned=True),
    "JPEGLSNearLossless_08.dcm": refused(
        NO_STUDY, "a bare JPEG-LS image: SOP class and instance UIDs, no study or series", scanned=True),
    "JPEGLSNearLossless_16.dcm": refused(
        NO_STUDY, "a bare JPEG-LS image: SOP class and instance UIDs, no study or series", scanned=True),
    "JPGExtended.dcm": written(
        "NM, Secondary Capture, JPEG extended 12-bit: pixels scanned for burned-in text", scanned=True),
    "MR_small.dcm": written("MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "MR_small_RLE.dcm": written("MR, RLE: pixels scanned for burned-in text", scanned=True),
    "MR_small_bigendian.dcm": written("MR, big endian: pixels scanned for burned-in text", scanned=True),
    "MR_small_expb.dcm": written("MR, big endian: pixels scanned for burned-in text", scanned=True),
    "MR_small_implicit.dcm": written("MR, implicit VR LE: pixels scanned for burned-in text", scanned=True),
    "MR_small_jp2klossless.dcm": written(
        "MR, JPEG 2000 lossless: pixels scanned for burned-in text", scanned=True),
    "MR_small_jpeg_ls_lossless.dcm": written(
        "MR, JPEG-LS lossless: pixels scanned for burned-in text", scanned=True),
    "MR_small_padded.dcm": written("MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "MR_truncated.dcm": refused(
        UNDECODABLE, "the file ends inside Pixel Data: fewer bytes than Rows x Columns", scanned=True),
    "README.txt": skipped(NOT_DICOM, "a text file"),
    "SC_jpeg_no_color_transform.dcm": written(
        "no modality, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_jpeg_no_color_transform_2.dcm": written(
        "no modality, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_dcmtk_+eb+cr.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_dcmtk_+eb+cy+np.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_gdcm_KY.dcm": written(
        "OT, Secondary Capture, JPEG 2000: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_jls_lossy_line.dcm": refused(
        NO_STUDY, "a bare JPEG-LS image: SOP class and instance UIDs, no study or series", scanned=True),
    "SC_rgb_jls_lossy_sample.dcm": refused(
        NO_STUDY, "a bare JPEG-LS image: SOP class and instance UIDs, no study or series", scanned=True),
    "SC_rgb_jpeg.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_jpeg_app14_dcmd.dcm": written(
        "no modality, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_jpeg_dcmd.dcm": written(
        "OT, Secondary Capture, implicit VR LE: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_jpeg_dcmtk.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_jpeg_gdcm.dcm": written(
        "OT, Secondary Capture, JPEG lossless SV1: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_jpeg_lossy_gdcm.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_rle.dcm": written(
        "OT, Secondary Capture, RLE: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_rle_16bit.dcm": written(
        "OT, Secondary Capture, RLE: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_rle_16bit_2frame.dcm": written(
        "OT, Secondary Capture, RLE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_rle_2frame.dcm": written(
        "OT, Secondary Capture, RLE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_rle_32bit.dcm": written(
        "OT, Secondary Capture, RLE: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_rle_32bit_2frame.dcm": written(
        "OT, Secondary Capture, RLE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_small_odd.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_small_odd_big_endian.dcm": written(
        "OT, Secondary Capture, big endian: pixels scanned for burned-in text", scanned=True),
    "SC_rgb_small_odd_jpeg.dcm": written(
        "OT, Secondary Capture, JPEG baseline: pixels scanned for burned-in text", scanned=True),
    "SC_ybr_full_422_uncompressed.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "UN_sequence.dcm": refused(NO_STUDY, "one private UN sequence, nothing else"),
    "badVR.dcm": written("RTDOSE, RT Dose, explicit VR LE, 1A frames: header cleaned, pixels untouched"),
    "crayons.icc": skipped(NOT_DICOM, "an ICC colour profile"),
    "dicomdirtests/77654033/CR1/6154": written(
        "CR, Computed Radiography, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/77654033/CR2/6247": written(
        "CR, Computed Radiography, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/77654033/CR3/6278": written(
        "CR, Computed Radiography, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/77654033/CT2/17106": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/77654033/CT2/17136": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/77654033/CT2/17166": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/77654033/CT2/17196": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892001/CT2N/6293": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892001/CT2N/6924": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892001/CT5N/2062": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892001/CT5N/2392": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892001/CT5N/2693": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892001/CT5N/3023": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892001/CT5N/3353": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR1/15820": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR1/4919": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR1/5641": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR2/15970": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR2/4950": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR2/4981": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR2/5011": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR2/6273": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR2/6605": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR2/6935": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/98892003/MR700/4467": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/98892003/MR700/4528": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/98892003/MR700/4558": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/98892003/MR700/4588": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/98892003/MR700/4618": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/98892003/MR700/4648": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/98892003/MR700/4678": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "dicomdirtests/DICOMDIR": skipped(DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/DICOMDIR-bigEnd": skipped(DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/DICOMDIR-empty.dcm": skipped(
        DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/DICOMDIR-implicit": skipped(DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/DICOMDIR-nooffset": skipped(DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/DICOMDIR-nopatient": skipped(
        DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/DICOMDIR-reordered": skipped(
        DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/README.txt": skipped(NOT_DICOM, "a text file"),
    "dicomdirtests/TINY_ALPHA/DICOMDIR": skipped(
        DICOMDIR, "a DICOMDIR indexes files; it is not an instance"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000001": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000002": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000003": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000004": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000005": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000006": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000007": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000008": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000009": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000A": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000B": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000C": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000D": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000E": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000F": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000G": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000H": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000I": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000J": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000K": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000L": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000M": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000N": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000O": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000P": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Q": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000R": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000S": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000T": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000U": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000V": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000W": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000X": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Y": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Z": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000010": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000011": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000012": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000013": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000014": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000015": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000016": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000017": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000018": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000019": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001A": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001B": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001C": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001D": written(
        "CT, explicit VR LE: header cleaned, pixels untouched"),
    "dicomdirtests/TINY_ALPHA/README": skipped(NOT_DICOM, "a text file"),
    "empty_charset_LEI.dcm": refused(NO_STUDY, "Specific Character Set and Image Type only"),
    "examples_jpeg2k.dcm": written(
        "US, Ultrasound, JPEG 2000 lossless: pixels scanned for burned-in text", scanned=True),
    "examples_overlay.dcm": written("MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "examples_palette.dcm": written(
        "US, Ultrasound, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "examples_ybr_color.dcm": long_cine(
        "US cine, JPEG baseline YBR, 30 frames of 240 x 320 with annotations; 121 s here, past the cap"),
    "examples_rgb_color.dcm": written(
        "US, Ultrasound, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "image_dfl.dcm": written(
        "OT, Secondary Capture, deflated: pixels scanned for burned-in text", scanned=True),
    "liver_1frame.dcm": written("SEG, Segmentation, explicit VR LE: header cleaned, pixels untouched"),
    "liver_expb_1frame.dcm": written("SEG, Segmentation, big endian: header cleaned, pixels untouched"),
    "meta_missing_tsyntax.dcm": refused(NO_STUDY, "a private element and Pixel Data only", scanned=True),
    "nested_priv_SQ.dcm": refused(NO_STUDY, "a private sequence and Pixel Data only", scanned=True),
    "no_meta.dcm": skipped(NOT_DICOM, "a bare data set of one element, no Part 10 header"),
    "no_meta_group_length.dcm": refused(NO_STUDY, "Image Type and creation date and time only"),
    "priv_SQ.dcm": refused(NO_STUDY, "a private sequence only"),
    "pydicom-data/693_J2KR.dcm": written("CT, JPEG 2000 lossless: header cleaned, pixels untouched"),
    "pydicom-data/693_UNCI.dcm": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "pydicom-data/693_UNCR.dcm": written("CT, explicit VR LE: header cleaned, pixels untouched"),
    "pydicom-data/JPEG-LL.dcm": written(
        "NM, Secondary Capture, JPEG lossless SV1: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/JPEG2000_UNC.dcm": written(
        "NM, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/JPGLosslessP14SV1_1s_1f_8b.dcm": written(
        "US, Ultrasound, JPEG lossless SV1: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/MR-SIEMENS-DICOM-WithOverlays.dcm": written(
        "MR, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/MR2_J2KI.dcm": written("MR, JPEG 2000: header cleaned, pixels untouched"),
    "pydicom-data/MR2_J2KR.dcm": written("MR, JPEG 2000 lossless: header cleaned, pixels untouched"),
    "pydicom-data/MR2_UNCI.dcm": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "pydicom-data/MR2_UNCR.dcm": written("MR, explicit VR LE: header cleaned, pixels untouched"),
    "pydicom-data/OBXXXX1A.dcm": written(
        "US, Ultrasound, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/OBXXXX1A_2frame.dcm": written(
        "US, Ultrasound, explicit VR LE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/OBXXXX1A_expb.dcm": written(
        "US, Ultrasound, big endian: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/OBXXXX1A_expb_2frame.dcm": written(
        "US, Ultrasound, big endian, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/OBXXXX1A_rle.dcm": written(
        "US, Ultrasound, RLE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/OBXXXX1A_rle_2frame.dcm": written(
        "US, Ultrasound Multi-frame, RLE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/OT-PAL-8-face.dcm": skipped(
        NOT_DICOM, "an OT palette image with no Part 10 header (ACR-NEMA style); deid takes Part 10 files"),
    "pydicom-data/RG1_J2KI.dcm": written(
        "CR, Computed Radiography, JPEG 2000: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/RG1_J2KR.dcm": written(
        "CR, Computed Radiography, JPEG 2000 lossless: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/RG1_UNCI.dcm": written(
        "CR, Computed Radiography, explicit VR LE: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/RG1_UNCR.dcm": written(
        "CR, Computed Radiography, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/RG3_J2KI.dcm": written(
        "CR, Computed Radiography, JPEG 2000: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/RG3_J2KR.dcm": written(
        "CR, Computed Radiography, JPEG 2000 lossless: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/RG3_UNCI.dcm": written(
        "CR, Computed Radiography, explicit VR LE: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/RG3_UNCR.dcm": written(
        "CR, Computed Radiography, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_16bit.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_16bit_2frame.dcm": written(
        "OT, Secondary Capture, explicit VR LE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_2frame.dcm": written(
        "OT, Secondary Capture, explicit VR LE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_32bit.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_32bit_2frame.dcm": written(
        "OT, Secondary Capture, explicit VR LE, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_dcmtk_ebcr_dcmd.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_dcmtk_ebcyn1_dcmd.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_dcmtk_ebcyn2_dcmd.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_dcmtk_ebcynp_dcmd.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_dcmtk_ebcys2_dcmd.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_dcmtk_ebcys4_dcmd.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_expb.dcm": written(
        "OT, Secondary Capture, big endian: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_expb_16bit.dcm": written(
        "OT, Secondary Capture, big endian: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_expb_16bit_2frame.dcm": written(
        "OT, Secondary Capture, big endian, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_expb_2frame.dcm": written(
        "OT, Secondary Capture, big endian, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_expb_32bit.dcm": written(
        "OT, Secondary Capture, big endian: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_expb_32bit_2frame.dcm": written(
        "OT, Secondary Capture, big endian, 2 frames: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_rgb_gdcm2k_uncompressed.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/SC_ybr_full_uncompressed.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/US1_J2KI.dcm": written(
        "US, Ultrasound, JPEG 2000: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/US1_J2KR.dcm": written(
        "US, Ultrasound, JPEG 2000 lossless: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/US1_UNCI.dcm": written(
        "US, Ultrasound, explicit VR LE: pixels scanned for burned-in text", scanned=True,
        slow=True),  # the same image as its _UNCR twin, in another encoding
    "pydicom-data/US1_UNCR.dcm": written(
        "US, Ultrasound, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/bad_sequence.dcm": written("CT, JPEG lossless SV1: header cleaned, pixels untouched"),
    "pydicom-data/color3d_jpeg_baseline.dcm": long_cine(
        "US cine, JPEG baseline, 120 frames of 480 x 640: minutes of OCR, past the cap here"),
    "pydicom-data/color-pl.dcm": written(
        "US, Ultrasound, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/color-px.dcm": written(
        "US, Ultrasound, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/eCT_Supplemental.dcm": written(
        "CT, Enhanced CT, explicit VR LE, 2 frames: header cleaned, pixels untouched"),
    "pydicom-data/emri_small.dcm": written(
        "MR, Enhanced MR, explicit VR LE, 10 frames: header cleaned, pixels untouched"),
    "pydicom-data/emri_small_RLE.dcm": written(
        "MR, Enhanced MR, RLE, 10 frames: header cleaned, pixels untouched"),
    "pydicom-data/emri_small_big_endian.dcm": written(
        "MR, Enhanced MR, big endian, 10 frames: header cleaned, pixels untouched"),
    "pydicom-data/emri_small_jpeg_2k_lossless.dcm": written(
        "MR, Enhanced MR, JPEG 2000 lossless, 10 frames: header cleaned, pixels untouched"),
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": refused(
        NO_STUDY, "truncated: pydicom reads no element of its data set"),
    "pydicom-data/emri_small_jpeg_ls_lossless.dcm": written(
        "MR, Enhanced MR, JPEG-LS lossless, 10 frames: header cleaned, pixels untouched"),
    "pydicom-data/explicit_VR-UN.dcm": written("CT, JPEG 2000 lossless: header cleaned, pixels untouched"),
    "pydicom-data/gdcm-US-ALOKA-16.dcm": written(
        "US, 16-bit palette (segmented LUT, implicit VR): text OCR'd and blacked out", scanned=True),
    "pydicom-data/gdcm-US-ALOKA-16_big.dcm": written(
        "US, Ultrasound, big endian: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/liver.dcm": written(
        "SEG, Segmentation, explicit VR LE, 3 frames: header cleaned, pixels untouched"),
    "pydicom-data/liver_expb.dcm": written(
        "SEG, Segmentation, big endian, 3 frames: header cleaned, pixels untouched"),
    "pydicom-data/mlut_18.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "pydicom-data/vlut_04.dcm": written(
        "OT, Secondary Capture, explicit VR LE: pixels scanned for burned-in text", scanned=True),
    "reportsi.dcm": written("SR, Basic Text SR, explicit VR LE: header cleaned, pixels untouched"),
    "reportsi_with_empty_number_tags.dcm": written(
        "SR, Basic Text SR, explicit VR LE: header cleaned, pixels untouched"),
    "rtdose.dcm": written("RTDOSE, RT Dose, implicit VR LE, 15 frames: header cleaned, pixels untouched"),
    "rtdose_1frame.dcm": written("RTDOSE, RT Dose, implicit VR LE: header cleaned, pixels untouched"),
    "rtdose_expb.dcm": written("RTDOSE, RT Dose, big endian, 15 frames: header cleaned, pixels untouched"),
    "rtdose_expb_1frame.dcm": written("RTDOSE, RT Dose, big endian: header cleaned, pixels untouched"),
    "rtdose_rle.dcm": written("RTDOSE, RT Dose, RLE, 15 frames: header cleaned, pixels untouched"),
    "rtdose_rle_1frame.dcm": written("RTDOSE, RT Dose, RLE: header cleaned, pixels untouched"),
    "rtplan.dcm": written("RTPLAN, RT Plan, implicit VR LE: header cleaned, pixels untouched"),
    "rtplan.dump": skipped(NOT_DICOM, "a text dump of rtplan.dcm"),
    "rtplan_truncated.dcm": written("RTPLAN, RT Plan, implicit VR LE: header cleaned, pixels untouched"),
    "rtstruct.dcm": skipped(
        NOT_DICOM, "an RT Structure Set with no Part 10 header (ACR-NEMA style); deid takes Part 10 files"),
    "rtstruct.dump": skipped(NOT_DICOM, "a text dump of rtstruct.dcm"),
    "test-SR.dcm": written("SR, Comprehensive SR, explicit VR LE: header cleaned, pixels untouched"),
    "test1.json": skipped(NOT_DICOM, "DICOM JSON, not Part 10"),
    "test_PN.json": skipped(NOT_DICOM, "DICOM JSON, not Part 10"),
    "waveform_ecg.dcm": written(
        "ECG, 12-lead ECG Waveform, explicit VR LE: header cleaned, pixels untouched"),
    "zipMR.gz": skipped(NOT_DICOM, "a gzip archive"),
}


def real_files() -> dict[str, Path]:
    """Key -> path of every file pydicom offers: its own relative to test_files, the
    pydicom-data wheel's as ``pydicom-data/<name>``."""
    files: dict[str, Path] = {}
    for name in get_testdata_files():
        path = Path(name)
        if not path.is_file():
            continue
        parts = path.parts
        if "test_files" in parts:
            key = "/".join(parts[parts.index("test_files") + 1 :])
        else:
            key = DATA_STORE + path.name
        files[key] = path
    return files


FILES = real_files()


def batches(paths: dict[str, Path]) -> list[list[Path]]:
    """The files split so no batch holds two with one SOP Instance UID: ``deid`` keeps the first
    of such inputs and skips the rest, and every file's own outcome is wanted here."""
    seen: Counter[str] = Counter()
    groups: dict[int, list[Path]] = {}
    for path in paths.values():
        try:
            uid = str(dcmread(path, stop_before_pixels=True, force=True).get("SOPInstanceUID", ""))
        except Exception:
            uid = ""
        index = seen[uid] if uid else 0
        seen[uid] += 1
        groups.setdefault(index, []).append(path)
    return [groups[i] for i in sorted(groups)]


def run(paths: dict[str, Path], folder: Path) -> dict[str, FileOutcome]:
    """Each file's outcome through ``deidentify_paths`` with the default configuration."""
    cfg = make_config(folder)
    by_path = {path: key for key, path in paths.items()}
    outcomes: dict[str, FileOutcome] = {}
    for n, batch in enumerate(batches(paths)):
        summary = deidentify_paths(batch, folder / f"out{n}", cfg)
        for outcome in summary.outcomes:
            outcomes[by_path[outcome.source]] = outcome
    return outcomes


def _selected() -> dict[str, Path]:
    return {k: p for k, p in FILES.items() if k in EXPECTED and (SLOW or not EXPECTED[k].slow)}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FileOutcome]:
    return run(_selected(), tmp_path_factory.mktemp("real"))


def _params() -> list:
    params = []
    for key, expect in sorted(EXPECTED.items()):
        marks = []
        if expect.slow:
            marks.append(pytest.mark.skipif(not SLOW, reason="OCR takes minutes on few cores; APOLO_TEST_SLOW=1"))
        params.append(pytest.param(key, expect, marks=marks, id=key))
    return params


@pytest.mark.parametrize(("key", "expect"), _params())
def test_each_real_file_ends_as_its_row_says(
    key: str, expect: Expect, outcomes: dict[str, FileOutcome]
) -> None:
    if key not in FILES:
        pytest.skip("pydicom-data is not installed" if key.startswith(DATA_STORE) else "not in this pydicom")
    outcome = outcomes[key]
    if expect.time_cap_ok and re.search(TIME_CAP, outcome.reason):
        return
    assert outcome.status == expect.status, f"{expect.why}; reported: {outcome.reason}"
    assert re.search(expect.reason, outcome.reason), f"{expect.why}; reported: {outcome.reason}"
    if outcome.status == "written":
        assert outcome.output is not None
        out = dcmread(outcome.output)
        assert out.PatientIdentityRemoved == "YES"
        if expect.scanned:
            assert out.BurnedInAnnotation == "NO"


@pytest.mark.parametrize(("key", "expect"), [(k, e) for k, e in sorted(EXPECTED.items())],
                         ids=sorted(EXPECTED))
def test_the_pixel_policy_scans_each_real_file_as_its_row_says(key: str, expect: Expect) -> None:
    if key not in FILES:
        pytest.skip("not installed")
    try:
        ds = dcmread(FILES[key])
    except Exception:
        assert not expect.scanned, expect.why
        return
    assert (pixel_scan_reason(ds) is not None) == expect.scanned, expect.why


def test_every_file_has_a_row() -> None:
    missing = sorted(set(FILES) - set(EXPECTED))
    assert not missing, f"files with no expected outcome: {missing}"
