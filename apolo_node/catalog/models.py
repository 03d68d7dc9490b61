"""Catalog tables: studies, series, instances and the job queue. Never a patient identifier.

Every UID held here is a keyed pseudonym (``apolo_node.pseudonym``); paths are relative to the
spool root and made of those pseudonyms. The schema changes only through ``migrations/``.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in Python, on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: catalog times must be timezone-aware UTC")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if getattr(dialect, "name", "") == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class StudyStatus(str, enum.Enum):
    """Where a study stands; ``quarantined`` and ``failed`` carry a reason."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    DEIDENTIFIED = "deidentified"
    REPORTED = "reported"
    SENT = "sent"
    QUARANTINED = "quarantined"
    FAILED = "failed"


class InstanceState(str, enum.Enum):
    """Where one instance stands: spooled as received, cleaned, or quarantined with a reason."""

    RECEIVED = "received"
    CLEAN = "clean"
    QUARANTINED = "quarantined"
    PURGED = "purged"  # a quarantined original deleted by the operator or its retention period


class JobState(str, enum.Enum):
    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.RECEIVING.value, index=True)
    # the de-identified (shifted) Study Date, set when an instance is cleaned: for date filters
    study_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True, index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    body_part: Mapped[str | None] = mapped_column(String(64), nullable=True)  # from the clean instance

    study: Mapped[Study] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    calling_aet: Mapped[str | None] = mapped_column(String(16), nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(
        String(16), default=InstanceState.RECEIVED.value, server_default=InstanceState.RECEIVED.value
    )
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    clean_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # when it was quarantined: the retention period of quarantined originals counts from here
    quarantined_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (Index("ix_job_kind_state", "kind", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=JobState.PENDING.value)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Report(Base):
    """The vision stage's TID 1500 SR of a study: one per study, replaced when described again."""

    __tablename__ = "report"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), unique=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255))  # spool-relative SR file
    algorithm: Mapped[str] = mapped_column(String(128))
    algorithm_version: Mapped[str] = mapped_column(String(64))
    images: Mapped[int] = mapped_column(Integer, default=0)
    unparsed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The study's narrative as the SR holds it (issue 12): findings text, impression, and the
    # model's reasoning trace; NULL on reports written before it.
    narrative_findings: Mapped[str | None] = mapped_column(Text, nullable=True)
    impression: Mapped[str | None] = mapped_column(Text, nullable=True)
    trace: Mapped[str | None] = mapped_column(Text, nullable=True)


class FindingRow(Base):
    """One finding of a report, as the SR holds it: where (instance, frame, box), what, how sure."""

    __tablename__ = "finding"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("report.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    tracking_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    frame: Mapped[int] = mapped_column(Integer, default=1)
    label: Mapped[str] = mapped_column(String(64), index=True)
    code_value: Mapped[str] = mapped_column(String(16))
    code_scheme: Mapped[str] = mapped_column(String(16))
    code_meaning: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    x1: Mapped[float | None] = mapped_column(Float, nullable=True)
    y1: Mapped[float | None] = mapped_column(Float, nullable=True)
    x2: Mapped[float | None] = mapped_column(Float, nullable=True)
    y2: Mapped[float | None] = mapped_column(Float, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    laterality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    location: Mapped[str | None] = mapped_column(String(64), nullable=True)
    measurements: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{name, value, unit}]
    model: Mapped[str] = mapped_column(String(128))


class FindingEmbedding(Base):
    """A finding's unit vector from one embedding model, stored once (``catalog.embeddings``)."""

    __tablename__ = "finding_embedding"
    __table_args__ = (UniqueConstraint("finding_id", "model"),)  # no index on model: see 0010

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("finding.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(64))  # the embedder's key, e.g. minilm
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # dim little-endian float32


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Outbox(Base):
    """A result waiting to go back to the PACS: durable, retried with backoff, sent once."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # report_sr, answer_sr, gsps
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)  # of the de-identified object
    path: Mapped[str] = mapped_column(String(255))  # spool-relative de-identified object to re-link
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # no PHI: status codes, error kinds
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Answer(Base):
    """A clinician's question and the node's answer, with its trace and citations."""

    __tablename__ = "answer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    trace: Mapped[str] = mapped_column(Text, default="")
    citations: Mapped[str] = mapped_column(Text, default="[]")  # JSON: tracking UIDs
    dropped_citations: Mapped[int] = mapped_column(Integer, default=0)
    backend: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # ask --follow-up: the earlier answer this one continues (migration 0008)
    follows_answer_id: Mapped[int | None] = mapped_column(ForeignKey("answer.id"), nullable=True, index=True)


class Audit(Base):
    """Who did what, when, to which studies: every question, answer, reveal and send."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))  # the operating-system user who asked
    action: Mapped[str] = mapped_column(String(16))  # ask, reveal, send
    answer_id: Mapped[int | None] = mapped_column(ForeignKey("answer.id"), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")  # the question asked, or what was revealed (never the value)
    studies: Mapped[str] = mapped_column(Text, default="[]")  # JSON: pseudonymous study UIDs touched
