"""The offline answerer: the evidence itself, composed into an answer; no model, nothing to download.

It says which studies, which findings, where (instance, frame, box), how confident and what
was measured, study by study in order of relevance, and cites each finding it mentions. It
does not judge the question: it is the evidence, put in words a clinician reads quickly, with
its fixed phrases in the question's language (``phrases``: English or Chinese). A follow-up
question's "it" is the findings the earlier answer cited: they are named first.
"""

from __future__ import annotations

from apolo_node.reasoning import prompts
from apolo_node.reasoning.backend import Answer, Answerer, Turn
from apolo_node.reasoning.evidence import Evidence, ref
from apolo_node.reasoning.phrases import Phrases, phrases_for


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class ExtractiveAnswerer(Answerer):
    """Answers by listing the evidence, grouped by study; each line cites its finding."""

    name = "extractive"

    def _answer(self, question: str, evidence: list[Evidence], earlier: Turn | None = None) -> Answer:
        say = phrases_for(question)
        studies: dict[str, list[int]] = {}
        for k, e in enumerate(evidence):
            studies.setdefault(e.study_uid, []).append(k)
        matched = any(e.score != 0 for e in evidence)  # 0 everywhere: filters alone (retrieval.FILTERS)
        counts = {"findings": say.count(len(evidence), say.finding), "studies": say.count(len(studies), say.study)}
        lines = [(say.matched if matched else say.unmatched).format(**counts)]
        if earlier is not None:
            lines.append(self._follow_up(say, earlier, evidence))
        for study_uid, indexes in studies.items():
            first = evidence[indexes[0]]
            context = ", ".join(x for x in (
                first.study_date.isoformat() if first.study_date else "",
                " ".join(x for x in (first.modality, first.body_part) if x),
            ) if x)
            lines.append("")
            lines.append(say.study_line.format(uid=study_uid, context=f" ({context})" if context else ""))
            for k in indexes:
                lines.append(self._line(say, k, evidence[k]))
        sure = [(e.finding.confidence, k) for k, e in enumerate(evidence) if e.finding.confidence is not None]
        if len(sure) > 1:
            confidence, k = max(sure)
            lines += ["", say.most_confident.format(what=prompts.what(evidence[k]), ref=ref(k), value=f"{confidence:.2f}")]
        lines += ["", say.disclaimer]
        text = "\n".join(lines)
        # Every finding is stated once, with its reference: cited by construction, in text order
        # (a description's own words are not read as citations).
        citations = tuple(evidence[k].tracking_uid for indexes in studies.values() for k in indexes)
        if earlier is not None:  # named first in the follow-up line
            named = [e.tracking_uid for e in evidence if e.tracking_uid in set(earlier.citations)]
            citations = tuple(dict.fromkeys([*named, *citations]))
        scores = [e.score for e in evidence]
        trace = (
            "Extractive answer: no language model was run. "
            f"Listed the {_plural(len(evidence), 'retrieved finding', 'retrieved findings')} grouped by "
            f"study, in order of retrieval score ({max(scores):.3f} to {min(scores):.3f}); "
            "each line cites the finding it states."
        )
        if earlier is not None:
            trace += f" Follow-up of answer {earlier.answer_id}: the findings it cited are taken as what the question refers to."
        return Answer(text, trace, citations, 0, self.name)

    @staticmethod
    def _follow_up(say: Phrases, earlier: Turn, evidence: list[Evidence]) -> str:
        cited = set(earlier.citations)
        named = [f"{prompts.what(e)} [{ref(k)}]" for k, e in enumerate(evidence) if e.tracking_uid in cited]
        if not named:
            return say.follow_up_none.format(answer_id=earlier.answer_id)
        return say.follow_up.format(answer_id=earlier.answer_id, cited=say.separator.join(named))

    @staticmethod
    def _line(say: Phrases, k: int, e: Evidence) -> str:
        f = e.finding
        where = say.where.format(instance=f.sop_instance_uid[-12:], frame=f.frame)
        if f.box:
            where += say.box.format(box=", ".join(f"{v:.0f}" for v in f.box.as_list()))
        parts = [where, say.confidence.format(value=say.not_given if f.confidence is None else f"{f.confidence:.2f}")]
        if f.measurements:
            parts.append(prompts.measurements(e))
        text = f"- {prompts.what(e)} [{ref(k)}]{say.colon}" + say.separator.join(parts) + say.stop
        if f.description:
            text += f" {f.description.strip().rstrip('.')}{say.stop}"
        return text
