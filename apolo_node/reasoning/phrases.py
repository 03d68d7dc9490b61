"""The extractive answer's fixed phrases, in the question's language (English and Chinese).

The language is told from the question's script: Han characters make it Chinese, letters of
Latin script alone English, any other script ``other`` (answered in English phrases, ranked by
the multilingual embedding model). Only the fixed phrases change; what the findings say
(labels, descriptions, code meanings) is the catalog's text and is given as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from apolo_node.reasoning.backend import DISCLAIMER

EN, ZH, OTHER = "en", "zh", "other"
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN_END = 0x24F  # the end of Latin Extended-B


def language(question: str) -> str:
    """``zh`` for a question with Han characters, ``en`` for Latin letters alone, else ``other``."""
    if HAN.search(question):
        return ZH
    return EN if all(ord(c) <= LATIN_END for c in question if c.isalpha()) else OTHER


@dataclass(frozen=True)
class Phrases:
    """Every fixed phrase of an extractive answer, as format strings."""

    matched: str  # {findings} {studies}
    unmatched: str
    finding: tuple[str, str]  # one, many: {n}
    study: tuple[str, str]
    study_line: str  # {uid} {context}
    where: str  # {instance} {frame}
    box: str  # {box}
    confidence: str  # {value}
    not_given: str
    most_confident: str  # {what} {ref} {value}
    follow_up: str  # {answer_id} {cited}
    follow_up_none: str  # {answer_id}
    disclaimer: str
    stop: str  # ends a sentence
    colon: str
    separator: str

    def count(self, n: int, noun: tuple[str, str]) -> str:
        return (noun[0] if n == 1 else noun[1]).format(n=n)


PHRASES = {
    EN: Phrases(
        matched="{findings} in {studies} relate to the question, most relevant first.",
        unmatched=(
            "No finding's text matches the words of the question; the most recent {findings} "
            "within the filters, in {studies}, are listed instead."
        ),
        finding=("{n} finding", "{n} findings"),
        study=("{n} study", "{n} studies"),
        study_line="Study {uid}{context}:",
        where="instance ...{instance}, frame {frame}",
        box=", box ({box}) px",
        confidence="confidence {value}",
        not_given="not given",
        most_confident="Most confident: {what} [{ref}] at {value}.",
        follow_up='This follows up answer {answer_id}: "it" is taken to mean the findings that answer cited: {cited}.',
        follow_up_none="This follows up answer {answer_id}, whose cited findings are no longer in the catalog.",
        disclaimer=DISCLAIMER,
        stop=".",
        colon=": ",
        separator="; ",
    ),
    ZH: Phrases(
        matched="与问题相关的发现共 {findings}，来自 {studies}，按相关性从高到低列出。",
        unmatched="没有发现的文字与问题中的词语相符；以下列出筛选范围内最近的 {findings}（来自 {studies}）。",
        finding=("{n} 项", "{n} 项"),
        study=("{n} 个检查", "{n} 个检查"),
        study_line="检查 {uid}{context}：",
        where="实例 ...{instance}，第 {frame} 帧",
        box="，框 ({box}) 像素",
        confidence="置信度 {value}",
        not_given="未给出",
        most_confident="置信度最高：{what} [{ref}]，{value}。",
        follow_up="本问题接续回答 {answer_id}：“它”指该回答引用的发现：{cited}。",
        follow_up_none="本问题接续回答 {answer_id}，但该回答引用的发现已不在目录中。",
        disclaimer="以上发现由 AI 模型生成，未经放射科医生审核。",
        stop="。",
        colon="：",
        separator="；",
    ),
}


def phrases_for(question: str) -> Phrases:
    """The phrases of the question's language."""
    return PHRASES.get(language(question), PHRASES[EN])
