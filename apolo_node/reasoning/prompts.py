"""What a language model is told: the rules, the question, and the evidence as [F1]..[Fn] lines.

The evidence is de-identified catalog content only: pseudonymous UIDs, shifted dates, labels,
boxes in source pixels. Each line says what, where (instance, frame, box), how sure and how
much (measurements), so a model can answer "which studies, which findings, where" and cite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from apolo_node.reasoning.backend import Turn
from apolo_node.reasoning.evidence import Evidence, ref

REFERENCES = re.compile(r"\s?\[F\s?\d{1,4}(?:\s*,\s*F\s?\d{1,4})*\]", re.IGNORECASE)

SYSTEM_PROMPT = (
    "You answer a clinician's question about imaging studies using only the evidence given: "
    "findings that an AI vision model wrote into DICOM Structured Reports. The evidence is "
    "de-identified; studies are named by pseudonymous UIDs. Cite every finding you rely on by "
    "its reference in square brackets, for example [F1] or [F2, F5]; never cite a reference that "
    "is not listed. Say which studies, which findings, where they are (instance, frame, box) and "
    "how confident the model was. If the evidence does not answer the question, say so plainly; "
    "never invent findings. The findings were not reviewed by a radiologist."
)


def where(e: Evidence) -> str:
    """Instance (its UID's end), frame and box: enough to find the finding on the image."""
    f = e.finding
    text = f"instance ...{f.sop_instance_uid[-12:]}, frame {f.frame}"
    if f.box:
        text += ", box (" + ", ".join(f"{v:.0f}" for v in f.box.as_list()) + ") px"
    return text


def what(e: Evidence) -> str:
    """Label, laterality and location, as a reader would say it."""
    f = e.finding
    text = f.label
    extra = [x for x in (f.laterality, f.location) if x]
    if extra:
        text += " (" + ", ".join(extra) + ")"
    return text


def measurements(e: Evidence) -> str:
    return "; ".join(f"{m.name.meaning} {m.value:g} {m.unit.value}" for m in e.finding.measurements)


def evidence_line(index: int, e: Evidence) -> str:
    """One line of evidence for a model: ``[F3] study ... (date, CT CHEST): label ...``."""
    f = e.finding
    context = ", ".join(x for x in (
        e.study_date.isoformat() if e.study_date else "date unknown",
        " ".join(x for x in (e.modality, e.body_part) if x),
    ) if x)
    parts = [f"[{ref(index)}] study {e.study_uid} ({context}): {what(e)}"]
    parts.append(f"code {f.code.scheme} {f.code.value} {f.code.meaning!r}")
    if f.description:
        parts.append(f"description {f.description!r}")
    parts.append(where(e))
    parts.append("confidence " + ("unknown" if f.confidence is None else f"{f.confidence:.2f}"))
    if f.measurements:
        parts.append("measurements " + measurements(e))
    return "; ".join(parts)


def user_prompt(question: str, evidence: Sequence[Evidence], earlier: Turn | None = None) -> str:
    lines = [f"Question: {question}", "", f"Evidence ({len(evidence)} findings, most relevant first):"]
    lines += [evidence_line(k, e) for k, e in enumerate(evidence)]
    if earlier is not None:
        index = {e.tracking_uid: k for k, e in enumerate(evidence)}
        cited = [f"[{ref(index[u])}]" for u in earlier.citations if u in index]
        lines += ["", "This question follows up the earlier answer above"
                  + (f"; the findings it cited are {', '.join(cited)}: \"it\" or \"that finding\" means them." if cited
                     else ".")]
    lines += ["", "Answer the question from this evidence, citing references like [F1]."]
    return "\n".join(lines)


def earlier_answer(answer: str) -> str:
    """An earlier answer's text without its own [F..] references (they numbered other evidence)."""
    return REFERENCES.sub("", answer).strip()


def messages(question: str, evidence: Sequence[Evidence], earlier: Turn | None = None) -> list[dict[str, str]]:
    """The chat: our rules as the system message, the question and evidence as the user's.

    A follow-up puts the earlier turns before it (the one it follows last): each question as
    the user's, each answer as the assistant's.
    """
    chat = [{"role": "system", "content": SYSTEM_PROMPT}]
    if earlier is not None:
        for question_then, answer_then in (*earlier.history, (earlier.question, earlier.answer)):
            chat += [
                {"role": "user", "content": f"Question: {question_then}"},
                {"role": "assistant", "content": earlier_answer(answer_then)},
            ]
    chat.append({"role": "user", "content": user_prompt(question, evidence, earlier)})
    return chat
