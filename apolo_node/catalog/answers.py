"""Catalog records of the reasoning stage: every question, its answer, and the audit row.

An answer and its audit row are written in one transaction, so no answer is ever given that
the audit trail does not hold. The audit names the operating-system user who asked, the
question, and the pseudonymous UIDs of the studies whose findings were evidence: never a
patient identifier (the catalog holds none).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, Select, insert, select

from apolo_node.catalog.models import Answer, Audit, utcnow

ASK = "ask"
ACTION_MAX = 16  # audit.action is String(16)
TEXT_MAX = 128  # answer.backend and audit.actor are String(128)


@dataclass(frozen=True)
class AnswerRecord:
    """A question and the answer given, as the ``answer`` table keeps it."""

    question: str
    answer: str
    trace: str
    citations: tuple[str, ...]  # tracking UIDs of the findings the answer cites
    dropped_citations: int
    backend: str
    follows: int | None = None  # the answer this one follows up (ask --follow-up)

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise ValueError("answer record question must be non-empty")
        if self.dropped_citations < 0:
            raise ValueError(f"dropped_citations must be >= 0, got {self.dropped_citations}")
        if not self.backend.strip() or len(self.backend) > TEXT_MAX:
            raise ValueError(f"backend must be 1-{TEXT_MAX} characters, got {self.backend!r}")


@dataclass(frozen=True)
class AuditRecord:
    """One audit row: who did what, when, to which (pseudonymous) studies."""

    at: dt.datetime
    actor: str
    action: str
    answer_id: int | None
    detail: str
    studies: tuple[str, ...]


def record_answer(
    engine: Engine, record: AnswerRecord, *, actor: str, studies: Sequence[str], action: str = ASK
) -> int:
    """Store the answer and its audit row in one transaction; the answer's id."""
    if not actor.strip() or len(actor) > TEXT_MAX:
        raise ValueError(f"audit actor must be 1-{TEXT_MAX} characters, got {actor!r}")
    if not action.strip() or len(action) > ACTION_MAX:
        raise ValueError(f"audit action must be 1-{ACTION_MAX} characters, got {action!r}")
    now = utcnow()
    with engine.begin() as conn:
        answer_id = conn.execute(
            insert(Answer).returning(Answer.id),
            {
                "question": record.question,
                "answer": record.answer,
                "trace": record.trace,
                "citations": json.dumps(list(record.citations)),
                "dropped_citations": record.dropped_citations,
                "backend": record.backend,
                "follows_answer_id": record.follows,
                "created_at": now,
            },
        ).scalar_one()
        conn.execute(
            insert(Audit),
            {
                "at": now,
                "actor": actor,
                "action": action,
                "answer_id": answer_id,
                "detail": ask_detail(record),
                "studies": json.dumps(list(dict.fromkeys(studies))),
            },
        )
    return int(answer_id)


def ask_detail(record: AnswerRecord) -> str:
    """An ask's audit detail: the question (identifiers already replaced) and what it follows up."""
    if record.follows is None:
        return record.question
    return f"follow-up of answer {record.follows}: {record.question}"


def answer_by_id(engine: Engine, answer_id: int) -> AnswerRecord | None:
    """The stored answer, or None if there is no answer of that id."""
    with engine.connect() as conn:
        row = conn.execute(select(Answer).where(Answer.id == answer_id)).mappings().first()
    if row is None:
        return None
    return AnswerRecord(
        question=row["question"], answer=row["answer"], trace=row["trace"],
        citations=tuple(json.loads(row["citations"] or "[]")),
        dropped_citations=row["dropped_citations"], backend=row["backend"], follows=row["follows_answer_id"],
    )


def audit_of(engine: Engine, answer_id: int) -> list[AuditRecord]:
    """The audit rows of one answer, oldest first."""
    return _audit(engine, select(Audit).where(Audit.answer_id == answer_id).order_by(Audit.id))


def recent_audit(engine: Engine, limit: int = 20) -> list[AuditRecord]:
    """The newest audit rows, newest first: for the status page."""
    return _audit(engine, select(Audit).order_by(Audit.id.desc()).limit(limit))


def _audit(engine: Engine, query: Select[tuple[Audit]]) -> list[AuditRecord]:
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        AuditRecord(
            at=r["at"], actor=r["actor"], action=r["action"], answer_id=r["answer_id"],
            detail=r["detail"], studies=tuple(json.loads(r["studies"] or "[]")),
        )
        for r in rows
    ]


def record_audit(
    engine: Engine, *, actor: str, action: str, detail: str, studies: Sequence[str], answer_id: int | None = None
) -> None:
    """One audit row: a reveal (``detail`` says what kind of value, never the value) or a send."""
    if not actor.strip() or len(actor) > TEXT_MAX:
        raise ValueError(f"audit actor must be 1-{TEXT_MAX} characters, got {actor!r}")
    if not action.strip() or len(action) > ACTION_MAX:
        raise ValueError(f"audit action must be 1-{ACTION_MAX} characters, got {action!r}")
    with engine.begin() as conn:
        conn.execute(insert(Audit), {
            "at": utcnow(), "actor": actor, "action": action, "answer_id": answer_id,
            "detail": detail, "studies": json.dumps(list(dict.fromkeys(studies))),
        })
