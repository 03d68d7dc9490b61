"""``apolo-node ask``: retrieve the evidence, answer from it, record the answer and its audit row.

``ask`` does the work and returns an ``AskResult``; the command line only prints it. Every
question is recorded, with its answer, in the ``answer`` table and, with the operating-system
user who asked and the pseudonymous studies the evidence came from, in the ``audit`` table.

Before anything else, identifiers typed in the question (names, patient IDs, ...) are replaced
by placeholders (``identifiers.scrub``), or the question is refused, as ``[reasoning]
identifiers_in_questions`` says: what is stored, logged, audited and sent to an answerer is
the scrubbed question. A follow-up (``follow_up``: an earlier answer's id) keeps the earlier
question, answer and cited findings as context, and its answer row records what it follows.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from apolo_node.catalog import search
from apolo_node.catalog.answers import AnswerRecord, answer_by_id, record_answer
from apolo_node.catalog.search import Filters
from apolo_node.config import ReasoningSettings
from apolo_node.logs import event, get_logger
from apolo_node.reasoning import identifiers
from apolo_node.reasoning.backend import Answer, Answerer, Turn, nothing_found
from apolo_node.reasoning.backends import make_answerer
from apolo_node.reasoning.evidence import Evidence, ref
from apolo_node.reasoning.phrases import language
from apolo_node.reasoning.retrieval import FILTERS, Retrieved, Retriever, query_terms, studies_of

__all__ = [
    "QUESTION_MAX", "AskResult", "Filters", "IdentifiersInQuestion", "UnknownAnswer", "UnknownStudy", "ask",
    "os_user", "parse_date",
]

log = get_logger("reasoning.ask")

QUESTION_MAX = 4000  # characters
FOLLOW_UP_TURNS = 4  # earlier turns of a conversation a model is shown, the one followed included
# Words by which a follow-up points at what the earlier answer found ("is it bigger?").
BACK_REFERENCES = frozenset(["it", "its", "that", "this", "those", "these", "them", "they", "same"])
BACK_REFERENCES_ZH = ("它", "这个", "那个", "该", "此", "这些", "那些")


class UnknownStudy(LookupError):
    """``--study`` names no study of the catalog."""


class UnknownAnswer(LookupError):
    """``--follow-up`` names no answer of the catalog."""


class IdentifiersInQuestion(ValueError):
    """The question holds identifiers and ``[reasoning] identifiers_in_questions = "refuse"``."""


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

    question: str  # as stored: identifiers replaced
    filters: Filters
    retrieved: Retrieved
    answer: Answer
    answer_id: int
    seconds: float
    replaced: tuple[str, ...] = ()  # kinds of identifiers replaced in the question, never the values
    follows: int | None = None  # the answer this one follows up

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
            "identifiers_replaced": list(self.replaced),
            "follows": self.follows,
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
    follow_up: int | None = None,
) -> AskResult:
    """Answer ``question`` from the findings within ``filters``; record answer and audit row.

    ``answerer`` and ``retriever`` default to what ``settings`` names (built here, and the
    answerer closed after); pass them to reuse a loaded model across questions. With no
    finding within the filters, neither a model nor the embedder is loaded. ``follow_up``
    is the id of the answer this question continues.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be non-empty text")
    question = question.strip()
    if len(question) > QUESTION_MAX:
        raise ValueError(f"question must be at most {QUESTION_MAX} characters, got {len(question)}")
    question, replaced = scrub_question(question, settings)
    if filters.study_uid and not search.study_exists(engine, filters.study_uid):
        raise UnknownStudy(f"study {filters.study_uid} is not in the catalog (see apolo-node studies)")
    earlier = earlier_turn(engine, follow_up)
    started = time.perf_counter()
    searched = identifiers.without_placeholders(question)
    if search.count_findings(engine, filters, at_most=0) == 0:
        retrieved = Retrieved((), FILTERS, 0, 0.0)
    else:
        finder = retriever or Retriever.from_settings(engine, settings, language(question))
        retrieved = finder.retrieve(searched, filters)
    if earlier is not None:
        retrieved = with_earlier(engine, retrieved, earlier, searched, settings.evidence)
    if not retrieved.evidence:
        answer = nothing_found(answerer.name if answerer else settings.backend)
    elif answerer is not None:
        answer = answerer.answer(question, retrieved.evidence, earlier)
    else:
        own = make_answerer(settings)
        try:
            answer = own.answer(question, retrieved.evidence, earlier)
        finally:
            own.close()
    studies = studies_of(retrieved.evidence)
    record = AnswerRecord(
        question=question, answer=answer.text, trace=answer.trace, citations=answer.citations,
        dropped_citations=answer.dropped_citations, backend=answer.backend, follows=follow_up,
    )
    answer_id = record_answer(engine, record, actor=actor or os_user(), studies=studies)
    seconds = time.perf_counter() - started
    event(log, "reasoning.answered", answer_id=answer_id, backend=answer.backend, mode=retrieved.mode,
          evidence=len(retrieved.evidence), studies=len(studies), citations=len(answer.citations),
          dropped_citations=answer.dropped_citations, follows=follow_up, seconds=round(seconds, 4))
    return AskResult(question, filters, retrieved, answer, answer_id, seconds, replaced, follow_up)


def scrub_question(question: str, settings: ReasoningSettings) -> tuple[str, tuple[str, ...]]:
    """The question with its identifiers replaced, and their kinds; or IdentifiersInQuestion."""
    scrubbed = identifiers.scrub(question)
    if not scrubbed.kinds:
        return question, ()
    event(log, "reasoning.question.scrubbed", kinds=list(scrubbed.kinds), replaced=scrubbed.replaced,
          policy=settings.identifiers_in_questions)
    if settings.identifiers_in_questions == "refuse":
        raise IdentifiersInQuestion(
            f"the question holds identifiers ({', '.join(scrubbed.kinds)}) and [reasoning] "
            "identifiers_in_questions = 'refuse': ask again without them (name studies by their "
            "pseudonymous UIDs, with --study)"
        )
    return scrubbed.text, scrubbed.kinds


def earlier_turn(engine: Engine, answer_id: int | None) -> Turn | None:
    """The stored turn a follow-up continues; UnknownAnswer when there is no such answer."""
    if answer_id is None:
        return None
    if isinstance(answer_id, bool) or not isinstance(answer_id, int) or answer_id < 1:
        raise UnknownAnswer(f"--follow-up must be an answer id (an integer >= 1), got {answer_id!r}")
    stored = answer_by_id(engine, answer_id)
    if stored is None:
        raise UnknownAnswer(f"answer {answer_id} is not in the catalog (--follow-up takes the answer_id ask gave)")
    history: list[tuple[str, str]] = []
    at = stored.follows
    while at is not None and len(history) < FOLLOW_UP_TURNS - 1:  # a follow-up of a follow-up ...
        older = answer_by_id(engine, at)
        if older is None:
            break
        history.append((older.question, older.answer))
        at = older.follows
    return Turn(answer_id, stored.question, stored.answer, stored.citations, tuple(reversed(history)))


def refers_back(question: str) -> bool:
    """Whether a follow-up points at the earlier answer's findings ("is it bigger?", "它")."""
    words = set(identifiers.WORD.findall(question.lower()))
    return bool(words & BACK_REFERENCES) or any(w in question for w in BACK_REFERENCES_ZH)


def with_earlier(engine: Engine, retrieved: Retrieved, earlier: Turn, question: str, limit: int) -> Retrieved:
    """The evidence with the earlier answer's cited findings: first when the question refers to them.

    "Is it bigger?" has no word to search for: its "it" is what the earlier answer cited. A
    follow-up with words of its own and no such reference ("and a fracture?") keeps its own
    hits first.
    """
    cited = search.findings_by_tracking_uid(engine, earlier.citations)
    if not cited:
        return retrieved
    first = refers_back(question) or not query_terms(question) or retrieved.mode == FILTERS
    top = max((e.score for e in retrieved.evidence), default=1.0) or 1.0
    kept = [Evidence.from_hit(h, top) for h in cited]
    new = [e for e in retrieved.evidence if e.tracking_uid not in set(earlier.citations)]
    evidence = kept + new if first else new[: max(limit - len(kept), 0)] + kept
    note = f"follow-up of answer {earlier.answer_id}: the findings it cited are kept as context"
    note = "; ".join(x for x in (retrieved.note, note) if x)
    return Retrieved(tuple(evidence[: max(limit, len(kept))]), retrieved.mode, retrieved.candidates,
                     retrieved.seconds, note)
