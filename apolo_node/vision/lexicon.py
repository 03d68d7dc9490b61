"""Our small lexicon: labels a model writes to SNOMED CT codes, else the local scheme.

Only codes checked against published value sets are here (DICOM CID 6122 Chest Content
Descriptor for the tissue classes, common chest findings); anything else keeps the model's
label as the meaning in the local scheme ``99APOLO``, so nothing is coded wrongly.
"""

from __future__ import annotations

import hashlib
import re

from apolo_node.findings import DCM, LOCAL_SCHEME, SCT, Code

_LEXICON: dict[str, Code] = {
    "nodule": Code("27925004", SCT, "Nodule"),
    "mass": Code("4147007", SCT, "Mass"),
    "lesion": Code("52988006", SCT, "Lesion"),
    "pleural effusion": Code("60046008", SCT, "Pleural effusion"),
    "effusion": Code("60046008", SCT, "Pleural effusion"),
    "pneumothorax": Code("36118008", SCT, "Pneumothorax"),
    "consolidation": Code("95436008", SCT, "Lung consolidation"),
    "atelectasis": Code("46621007", SCT, "Atelectasis"),
    "cardiomegaly": Code("8186001", SCT, "Cardiomegaly"),
    "pneumonia": Code("233604007", SCT, "Pneumonia"),
    "fracture": Code("125605004", SCT, "Fracture of bone"),
    # CID 6122 Chest Content Descriptor, and bone/metal, for the baseline's tissue classes
    "air": Code("112143", DCM, "Air"),
    "fat": Code("256674009", SCT, "Fat"),
    "soft tissue": Code("87784001", SCT, "Soft tissue"),
    "calcium": Code("112145", DCM, "Calcium"),
    "bone": Code("272673000", SCT, "Bone"),
    "metal": Code("425620007", SCT, "Metal"),
}

_PLURALS = re.compile(r"(?<=[a-z])s$")


def code_for(label: str) -> Code:
    """The lexicon's code for a label (case, spacing and a plural 's' ignored), else a local code."""
    key = " ".join(label.lower().replace("_", " ").split())
    for candidate in (key, _PLURALS.sub("", key)):
        if candidate in _LEXICON:
            return _LEXICON[candidate]
    meaning = " ".join(label.split())[:64] or "finding"
    slug = re.sub(r"[^a-z0-9]+", "-", meaning.lower()).strip("-")[:10].strip("-") or "finding"
    digest = hashlib.sha256(meaning.lower().encode()).hexdigest()[:5]
    return Code(f"{slug}-{digest}".upper(), LOCAL_SCHEME, meaning)  # Code Value is SH: 16 at most
