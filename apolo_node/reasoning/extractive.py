"""The offline answerer: the evidence itself, composed into an answer; no model, nothing to download.

It says which studies, which findings, where (instance, frame, box), how confident and what
was measured, study by study in order of relevance, and cites each finding it mentions. It
does not judge the question: it is the evidence, put in words a clinician reads quickly.
"""

from __future__ import annotations

from apolo_node.reasoning import prompts
from apolo_node.reasoning.backend import DISCLAIMER, Answer, Answerer
from apolo_node.reasoning.evidence import Evidence, ref


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class ExtractiveAnswerer(Answerer):
    """Answers by listing the evidence, grouped by study; each line cites its finding."""

    name = "extractive"

    def _answer(self, question: str, evidence: list[Evidence]) -> Answer:
        studies: dict[str, list[int]] = {}
        for k, e in enumerate(evidence):
            studies.setdefault(e.study_uid, []).append(k)
        matched = any(e.score != 0 for e in evidence)  # 0 everywhere: filters alone (retrieval.FILTERS)
        if matched:
            head = (
                f"{_plural(len(evidence), 'finding', 'findings')} in "
                f"{_plural(len(studies), 'study', 'studies')} relate to the question, most relevant first."
            )
        else:
            head = (
                "No finding's text matches the words of the question; the most recent "
                f"{_plural(len(evidence), 'finding', 'findings')} within the filters, in "
                f"{_plural(len(studies), 'study', 'studies')}, are listed instead."
            )
        lines = [head]
        for study_uid, indexes in studies.items():
            first = evidence[indexes[0]]
            context = ", ".join(x for x in (
                first.study_date.isoformat() if first.study_date else "",
                " ".join(x for x in (first.modality, first.body_part) if x),
            ) if x)
            lines.append("")
            lines.append(f"Study {study_uid}" + (f" ({context})" if context else "") + ":")
            for k in indexes:
                lines.append(self._line(k, evidence[k]))
        sure = [(e.finding.confidence, k) for k, e in enumerate(evidence) if e.finding.confidence is not None]
        if len(sure) > 1:
            confidence, k = max(sure)
            lines += ["", f"Most confident: {prompts.what(evidence[k])} [{ref(k)}] at {confidence:.2f}."]
        lines += ["", DISCLAIMER]
        text = "\n".join(lines)
        # Every finding is stated once, with its reference: cited by construction, in text order
        # (a description's own words are not read as citations).
        citations = tuple(evidence[k].tracking_uid for indexes in studies.values() for k in indexes)
        scores = [e.score for e in evidence]
        trace = (
            "Extractive answer: no language model was run. "
            f"Listed the {_plural(len(evidence), 'retrieved finding', 'retrieved findings')} grouped by "
            f"study, in order of retrieval score ({max(scores):.3f} to {min(scores):.3f}); "
            "each line cites the finding it states."
        )
        return Answer(text, trace, citations, 0, self.name)

    @staticmethod
    def _line(k: int, e: Evidence) -> str:
        f = e.finding
        parts = [prompts.where(e)]
        parts.append("confidence " + ("not given" if f.confidence is None else f"{f.confidence:.2f}"))
        if f.measurements:
            parts.append(prompts.measurements(e))
        text = f"- {prompts.what(e)} [{ref(k)}]: " + "; ".join(parts) + "."
        if f.description:
            text += f" {f.description.strip().rstrip('.')}."
        return text
