"""``apolo-node ask``: retrieve the evidence, answer from it, record the answer and its audit row.

``ask`` does the work and returns an ``AskResult``; the command line only prints it. Every
question is recorded, with its answer, in the ``answer`` table and, with the operating-system
user who asked and the pseudonymous studies the evidence came from, in the ``audit`` table.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from apolo_node.catalog import search
from apolo_node.catalog.answers import AnswerRecord, record_answer
from apolo_node.catalog.search import Filters
from apolo_node.config import ReasoningSettings
from apolo_node.logs import event, get_logger
from apolo_node.reasoning.backend import Answer, Answerer, nothing_found
from apolo_node.reasoning.backends import make_answerer
from apolo_node.reasoning.evidence import Evidence, ref
from apolo_node.reasoning.retrieval import FILTERS, Retrieved, Retriever, studies_of

__all__ = ["QUESTION_MAX", "AskResult", "Filters", "UnknownStudy", "ask", "os_user", "parse_date"]

log = get_logger("reasoning.ask")

QUESTION_MAX = 4000  # characters


class UnknownStudy(LookupError):
    """``--study`` names no study of the catalog."""


def parse_date(value: str | None, name: str) -> dt.date | None:
    """A date given as YYYY-MM-DD or DICOM's YYYYMMDD; ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    text = value.strip()
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise ValueError(f"{name} must be a date as YYYY-MM-DD (or YYYYMMDD), got {value!r}")


def os_user() -> str:
    """The operating-system user running this process: who asked, for the audit."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class AskResult:
    """A question, the evidence found for it, the answer, and the id it was recorded under."""

    question: str
    filters: Filters
    retrieved: Retrieved
    answer: Answer
    answer_id: int
    seconds: float

    @property
    def evidence(self) -> tuple[Evidence, ...]:
        return self.retrieved.evidence

    @property
    def studies(self) -> list[str]:
        """Pseudonymous UIDs of the studies the evidence came from, best first."""
        return studies_of(self.evidence)

    def as_json(self) -> dict[str, object]:
        """The shape of ``ask --json`` (design.md): answer, trace, citations, evidence, and more."""
        cited = set(self.answer.citations)
        evidence = []
        for k, e in enumerate(self.evidence):
            item = e.as_json(ref(k))
            item["cited"] = e.tracking_uid in cited
            evidence.append(item)
        return {
            "answer_id": self.answer_id,
            "question": self.question,
            "answer": self.answer.text,
            "trace": self.answer.trace,
            "citations": list(self.answer.citations),
            "dropped_citations": self.answer.dropped_citations,
            "backend": self.answer.backend,
            "evidence": evidence,
            "studies": self.studies,
            "filters": self.filters.as_json(),
            "retrieval": {
                "mode": self.retrieved.mode,
                "candidates": self.retrieved.candidates,
                "seconds": round(self.retrieved.seconds, 4),
                "note": self.retrieved.note,
            },
        }


def ask(
    engine: Engine,
    settings: ReasoningSettings,
    question: str,
    filters: Filters,
    *,
    answerer: Answerer | None = None,
    retriever: Retriever | None = None,
    actor: str | None = None,
) -> AskResult:
    """Answer ``question`` from the findings within ``filters``; record answer and audit row.

    ``answerer`` and ``retriever`` default to what ``settings`` names (built here, and the
    answerer closed after); pass them to reuse a loaded model across questions. With no
    finding within the filters, neither a model nor the embedder is loaded.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be non-empty text, got {question!r}")
    question = question.strip()
    if len(question) > QUESTION_MAX:
        raise ValueError(f"question must be at most {QUESTION_MAX} characters, got {len(question)}")
    if filters.study_uid and not search.study_exists(engine, filters.study_uid):
        raise UnknownStudy(f"study {filters.study_uid} is not in the catalog (see apolo-node studies)")
    started = time.perf_counter()
    if search.count_findings(engine, filters, at_most=0) == 0:
        retrieved = Retrieved((), FILTERS, 0, 0.0)
    else:
        retrieved = (retriever or Retriever.from_settings(engine, settings)).retrieve(question, filters)
    if not retrieved.evidence:
        answer = nothing_found(answerer.name if answerer else settings.backend)
    elif answerer is not None:
        answer = answerer.answer(question, retrieved.evidence)
    else:
        own = make_answerer(settings)
        try:
            answer = own.answer(question, retrieved.evidence)
        finally:
            own.close()
    studies = studies_of(retrieved.evidence)
    record = AnswerRecord(
        question=question, answer=answer.text, trace=answer.trace, citations=answer.citations,
        dropped_citations=answer.dropped_citations, backend=answer.backend,
    )
    answer_id = record_answer(engine, record, actor=actor or os_user(), studies=studies)
    seconds = time.perf_counter() - started
    event(log, "reasoning.answered", answer_id=answer_id, backend=answer.backend, mode=retrieved.mode,
          evidence=len(retrieved.evidence), studies=len(studies), citations=len(answer.citations),
          dropped_citations=answer.dropped_citations, seconds=round(seconds, 4))
    return AskResult(question, filters, retrieved, answer, answer_id, seconds)
