"""A study's narrative: findings text and an impression, from the model's prose or, without prose,
a short templated summary of the structured findings (said to be non-diagnostic).

The vision stage keeps what a model writes outside its findings (``free_text``) and its
reasoning trace (``<think>`` text) apart; this module turns them into what a report reader
expects. Prose with an "Impression:" (or "Conclusion:") heading is split there: what follows
is the impression, what precedes it (less a "Findings:" heading) the findings text. Prose without
that heading is all findings text, and the impression is the templated summary. Only the
de-identified findings and the model's answer on de-identified pixels go in (the narrative is
made after the privacy wall). Each part is bounded: a runaway answer is cut, and says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from apolo_node.findings import Algorithm, Finding

TEXT_MAX = 16_000  # characters kept of the findings text and of the impression
TRACE_MAX = 64_000  # characters kept of the reasoning trace
CUT = " [... cut at {n} characters]"
TEMPLATE_NOTE = "Non-diagnostic automated summary, not reviewed by a radiologist"
LABELS_SHOWN = 12  # distinct labels named in a templated text; the rest are counted

# A heading at the start of a line or after a sentence: "No acute abnormality. Impression: normal".
_IMPRESSION = re.compile(
    r"(?im)(?:^|(?<=[.!?。])[ \t]+)[ \t#*_]*(?:impressions?|conclusions?)[ \t*_]*[:：][ \t*_]*"
)
_FINDINGS = re.compile(r"(?i)^[ \t#*_]*findings?[ \t*_]*[:：][ \t*_]*")


@dataclass(frozen=True)
class Narrative:
    """What a reader of the report reads: findings text, impression, and the model's trace."""

    findings: str
    impression: str
    trace: str = ""

    def as_json(self) -> dict[str, str]:
        return {"findings": self.findings, "impression": self.impression, "trace": self.trace}


# Control characters other than tab and newline: not allowed in DICOM UT text, and an escape
# sequence would reach the terminal that prints a report.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def bounded(text: str, limit: int) -> str:
    """``text`` stripped, without control characters (a CR LF becomes LF), cut to at most ``limit``
    characters with a note saying where."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(text) <= limit:
        return text
    note = CUT.format(n=limit)
    return text[: max(limit - len(note), 0)].rstrip() + note


def split_prose(prose: str) -> tuple[str, str]:
    """(findings text, impression) of prose; the impression is "" when no heading names one."""
    match = _IMPRESSION.search(prose)
    before, after = (prose, "") if match is None else (prose[: match.start()], prose[match.end():])
    return _FINDINGS.sub("", before.strip(), count=1).strip(), after.strip()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _by_label(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.label, []).append(f)
    return groups


def templated_findings(findings: Sequence[Finding], images: int) -> str:
    """One line per finding label: how many, on how many images, where, and the first one's description."""
    if not findings:
        return f"No finding on the {_plural(images, 'image')} looked at."
    groups = _by_label(findings)
    lines = []
    for label, members in list(groups.items())[:LABELS_SHOWN]:
        seen_on = len({(f.sop_instance_uid, f.frame) for f in members})
        where = sorted({x for f in members for x in (f.laterality, f.location) if x})
        line = f"{label}: {_plural(len(members), 'finding')} on {_plural(seen_on, 'image')}"
        if where:
            line += f" ({', '.join(where)})"
        description = next((f.description.strip() for f in members if f.description.strip()), "")
        if description and len(members) > 1:
            description = f"The first: {description}"  # its words ("this slice") are about one image
        lines.append(f"{line}. {description}" if description else f"{line}.")
    if len(groups) > LABELS_SHOWN:
        lines.append(f"And {_plural(len(groups) - LABELS_SHOWN, 'more label')}.")
    return "\n".join(lines)


def templated_impression(findings: Sequence[Finding], images: int, algorithm: Algorithm) -> str:
    """The non-diagnostic note, then one sentence naming what the algorithm found (in words a
    question would not search for: the catalog's search leaves the note out)."""
    who = f"{algorithm.name} {algorithm.version}"
    if not findings:
        return f"{TEMPLATE_NOTE}. {who} found no finding on {_plural(images, 'image')}."
    labels = list(_by_label(findings))
    named = ", ".join(labels[:LABELS_SHOWN]) + (
        f" and {_plural(len(labels) - LABELS_SHOWN, 'more label')}" if len(labels) > LABELS_SHOWN else ""
    )
    return (
        f"{TEMPLATE_NOTE}. {who} found {_plural(len(findings), 'finding')} on "
        f"{_plural(images, 'image')}: {named}."
    )


def compose_narrative(
    free_text: Sequence[str], trace: Sequence[str], findings: Sequence[Finding], images: int,
    algorithm: Algorithm,
) -> Narrative:
    """The study's narrative from the model's prose and trace, the template filling what is missing.

    Each piece of prose (the model answers per image) is split on its own; the findings parts and
    the impression parts are joined in order, a part said again (the same answer for each slice)
    once.
    """
    parts: tuple[dict[str, None], dict[str, None]] = ({}, {})  # ordered sets
    for piece in free_text:
        for kept, part in zip(parts, split_prose(piece or "")):
            if part:
                kept[part] = None
    text, impression = ("\n\n".join(kept) for kept in parts)
    return Narrative(
        findings=bounded(text or templated_findings(findings, images), TEXT_MAX),
        impression=bounded(impression or templated_impression(findings, images, algorithm), TEXT_MAX),
        trace=bounded("\n\n".join(t.strip() for t in trace if t and t.strip()), TRACE_MAX),
    )
