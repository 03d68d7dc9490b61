"""Chinese questions cut into search terms: character pairs, and the English words they name.

Chinese is written without spaces, so the full-text index's words do not exist in it. A
question is cut into overlapping two-character terms (the length of most Chinese medical
words: 金属 metal, 气胸 pneumothorax, 结节 nodule), less pairs holding a function character
(有, 吗, 的, ...), and searched as substrings. Findings are mostly written in English by the
vision model, so a small glossary also turns the question's medical words into the English
words the English index holds: without the multilingual embedding model, ``有金属吗？``
still finds the finding labelled Metal.
"""

from __future__ import annotations

import re

HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
TERMS_MAX = 24
# Characters that carry the question's grammar, not its subject.
FUNCTION = frozenset("有吗是否的了在么什呢请问没这那个它该此和与及或吧啊呀把被对从到于为也都就还看见找出哪些里中上下内外怎样如何多少大小")
# Chinese medical words and the English words findings are labelled and described with.
GLOSSARY: dict[str, tuple[str, ...]] = {
    "金属": ("metal", "metallic"), "异物": ("foreign",), "植入物": ("implant",), "支架": ("stent",),
    "骨折": ("fracture",), "骨": ("bone",), "气胸": ("pneumothorax",), "积液": ("effusion",),
    "胸腔积液": ("pleural", "effusion"), "结节": ("nodule",), "肿块": ("mass",), "占位": ("mass",),
    "病变": ("lesion",), "病灶": ("lesion",), "钙化": ("calcification",), "出血": ("hemorrhage", "haemorrhage"),
    "水肿": ("edema", "oedema"), "肿瘤": ("tumor", "tumour"), "囊肿": ("cyst",), "实变": ("consolidation",),
    "肺炎": ("pneumonia",), "肺": ("lung", "pulmonary"), "胸": ("chest", "thorax"), "头": ("head",),
    "脑": ("brain",), "肝": ("liver",), "肾": ("kidney", "renal"), "心": ("heart", "cardiac"),
    "脊柱": ("spine",), "椎": ("vertebra",), "空气": ("air",), "气体": ("air", "gas"), "密度": ("density",),
    "高密度": ("dense", "hyperdense"), "低密度": ("hypodense",), "阴影": ("opacity",), "磨玻璃": ("ground", "glass"),
    "淋巴结": ("lymph", "node"), "血管": ("vessel",), "主动脉": ("aorta",), "左": ("left",), "右": ("right",),
    "上叶": ("upper", "lobe"), "下叶": ("lower", "lobe"), "导管": ("catheter",), "导线": ("wire", "lead"),
    "起搏器": ("pacemaker",), "夹": ("clip",), "管": ("tube",),
}


def terms(question: str) -> list[str]:
    """The question's Chinese character pairs worth searching for, first seen first."""
    found: list[str] = []
    for run in HAN_RUN.findall(question):
        pairs = [run[k:k + 2] for k in range(len(run) - 1)] or [run]
        found += [p for p in pairs if not FUNCTION.intersection(p)]
    return list(dict.fromkeys(found))[:TERMS_MAX]


LONGEST = max(len(term) for term in GLOSSARY)


def english_terms(question: str) -> list[str]:
    """The English words of the glossary's medical words in the question, longest word first.

    Read left to right, each place taking the longest glossary word that starts there, so
    气胸 (pneumothorax) is not also read as 胸 (chest).
    """
    words: list[str] = []
    at = 0
    while at < len(question):
        for size in range(min(LONGEST, len(question) - at), 0, -1):
            english = GLOSSARY.get(question[at:at + size])
            if english:
                words += english
                at += size
                break
        else:
            at += 1
    return list(dict.fromkeys(words))[:TERMS_MAX]
