"""Catalog queries for ``apolo-node ask``: findings by study, modality, body part, date and words.

Only catalog rows are read (never pixels, spools or the vault). A finding's modality and body
part are those of the series of the instance it was seen on; its date is the study's
de-identified Study Date. Text search is SQLite FTS5 (``finding_fts``) or PostgreSQL full text
search (the GIN index on ``FINDING_TSVECTOR``), both made by migration 0005 and both stemmed
in English, over label, code meaning, description and location; words are OR-ed, and the
relevance (higher is better) ranks the hits. Words of scripts written without spaces (Chinese)
are searched as substrings instead (``substring_search``), through the trigram indexes of
migration 0008 for terms of 3 characters or more.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Engine,
    Float,
    Integer,
    Select,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from apolo_node.catalog.models import FindingRow, Instance, Report, Series, Study
from apolo_node.catalog.reports import _finding
from apolo_node.findings import Finding

# Must equal the expression migration 0005 indexes, or PostgreSQL will not use the index.
FINDING_TSVECTOR = (
    "to_tsvector('english', finding.label || ' ' || finding.code_meaning || ' ' "
    "|| finding.description || ' ' || coalesce(finding.location, ''))"
)
# Must equal the expression migration 0008 indexes with pg_trgm (PostgreSQL), or the planner will not use it.
FINDING_TEXT = (
    "lower(finding.label || ' ' || finding.code_meaning || ' ' || finding.description || ' ' "
    "|| coalesce(finding.location, ''))"
)
SUBSTRING_MAX = 32  # characters of one substring term
TRIGRAM = 3  # the shortest term a trigram index can serve
# SQLite bm25 weights of label, code_meaning, description, location: what a finding is first.
FTS5_WEIGHTS = (4.0, 2.0, 1.0, 1.0)
TERM = re.compile(r"^[a-z0-9]+$")


@dataclass(frozen=True)
class Filters:
    """Which findings a question is about; None means any. Dates are inclusive.

    ``study_uid`` is the pseudonymous Study Instance UID; ``modality`` and ``body_part`` are
    DICOM code strings, compared without regard to case. ``since``/``until`` compare the
    catalog's (shifted) Study Date; ``studies``, when given, lets only these pseudonymous
    studies through (empty: none), which is how real dates arrive here: the pipeline finds the
    studies whose real date is in range through the vault, and the catalog never sees the date.
    """

    study_uid: str | None = None
    modality: str | None = None
    body_part: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    studies: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.studies is not None and (
            not isinstance(self.studies, tuple) or not all(isinstance(u, str) and u for u in self.studies)
        ):
            raise ValueError("filter studies must be a tuple of study UIDs or None")
        for name in ("study_uid", "modality", "body_part"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"filter {name} must be a non-empty string or None, got {value!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, dt.date) or isinstance(value, dt.datetime)):
                raise ValueError(f"filter {name} must be a date or None, got {value!r}")
        if self.since and self.until and self.since > self.until:
            raise ValueError(f"filter since {self.since} is after until {self.until}: no date lies between")

    def as_json(self) -> dict[str, object]:
        return {
            "study": self.study_uid, "modality": self.modality, "body_part": self.body_part,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            **({} if self.studies is None else {"studies": len(self.studies)}),
        }


@dataclass(frozen=True)
class FindingHit:
    """A finding with what places it: its study, its SR (the ``report`` row), series and date."""

    finding: Finding
    study_uid: str
    sr_sop_instance_uid: str
    sr_series_uid: str
    modality: str | None
    body_part: str | None
    study_date: dt.date | None
    relevance: float | None = None  # text search only: higher is better, comparable within one query


def _base() -> Select:  # type: ignore[type-arg]
    return (
        select(
            FindingRow, Study.study_uid, Study.study_date, Report.sop_instance_uid,
            Report.series_uid, Series.modality, Series.body_part,
        )
        .join(Report, Report.id == FindingRow.report_id)
        .join(Study, Study.id == FindingRow.study_id)
        .outerjoin(Instance, Instance.sop_instance_uid == FindingRow.sop_instance_uid)
        .outerjoin(Series, Series.id == Instance.series_id)
    )


def _filtered(stmt: Select, filters: Filters) -> Select:  # type: ignore[type-arg]
    conditions = []
    if filters.study_uid:
        conditions.append(Study.study_uid == filters.study_uid.strip())
    if filters.modality:
        conditions.append(func.upper(Series.modality) == filters.modality.strip().upper())
    if filters.body_part:
        conditions.append(func.upper(Series.body_part) == filters.body_part.strip().upper())
    if filters.since:
        conditions.append(Study.study_date >= filters.since)
    if filters.until:
        conditions.append(Study.study_date <= filters.until)
    if filters.studies is not None:
        conditions.append(Study.study_uid.in_(filters.studies))
    return stmt.where(and_(*conditions)) if conditions else stmt


def _hits(engine: Engine, stmt: Select, relevance: bool = False) -> list[FindingHit]:  # type: ignore[type-arg]
    with Session(engine) as session:
        rows = session.execute(stmt).all()
        return [
            FindingHit(
                finding=_finding(r[0]), study_uid=r[1], study_date=r[2], sr_sop_instance_uid=r[3],
                sr_series_uid=r[4], modality=r[5], body_part=r[6],
                relevance=float(r[7]) if relevance else None,
            )
            for r in rows
        ]


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")


def study_exists(engine: Engine, study_uid: str) -> bool:
    """Whether the catalog holds a study of this pseudonymous UID (reported or not)."""
    with engine.connect() as conn:
        return conn.execute(select(Study.id).where(Study.study_uid == study_uid)).first() is not None


def studies_dated(engine: Engine, since: dt.date | None, until: dt.date | None) -> list[str]:
    """Pseudonymous UIDs of the studies whose catalog Study Date lies within (inclusive), or is unknown."""
    within = []
    if since:
        within.append(Study.study_date >= since)
    if until:
        within.append(Study.study_date <= until)
    stmt = select(Study.study_uid).order_by(Study.id)
    if within:
        stmt = stmt.where(or_(Study.study_date.is_(None), and_(*within)))
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(stmt)]


def count_findings(engine: Engine, filters: Filters, at_most: int | None = None) -> int:
    """How many findings the filters let through; counting stops past ``at_most``, if given.

    ``at_most=0`` asks only whether there is any (0 or 1), which costs one row, not a count.
    """
    if at_most is None:
        stmt = _filtered(_base().with_only_columns(func.count(FindingRow.id)), filters)
    else:
        if isinstance(at_most, bool) or not isinstance(at_most, int) or at_most < 0:
            raise ValueError(f"at_most must be an integer >= 0 or None, got {at_most!r}")
        some = _filtered(_base().with_only_columns(FindingRow.id), filters).limit(at_most + 1).subquery()
        stmt = select(func.count()).select_from(some)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def recent_findings(
    engine: Engine, filters: Filters, limit: int, labels: Sequence[str] | None = None
) -> list[FindingHit]:
    """Findings within the filters (and of these labels, if given), newest study first."""
    _check_limit(limit)
    stmt = _filtered(_base(), filters)
    if labels is not None:
        if not labels:
            return []
        stmt = stmt.where(FindingRow.label.in_(list(labels)))
    stmt = stmt.order_by(
        Study.study_date.desc().nulls_last(), FindingRow.confidence.desc().nulls_last(), FindingRow.id.desc()
    ).limit(limit)
    return _hits(engine, stmt)


def concepts(engine: Engine, limit: int) -> list[tuple[str, str]]:
    """(label, a code meaning of it) of the catalog's findings, at most ``limit``, by label.

    The catalog's vocabulary, read from the label index alone (filters are left to the
    queries that follow: joining every finding to its series costs far more than this).
    """
    _check_limit(limit)
    labels = select(FindingRow.label).distinct().order_by(FindingRow.label).limit(limit).subquery("labels")
    other = FindingRow.__table__.alias("other")
    meaning = (
        select(other.c.code_meaning).where(other.c.label == labels.c.label).limit(1).scalar_subquery()
    )
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(select(labels.c.label, meaning))]


def findings_by_tracking_uid(engine: Engine, tracking_uids: Sequence[str]) -> list[FindingHit]:
    """The findings of these tracking UIDs, in the order given; UIDs the catalog lacks are left out.

    A follow-up question's context: the findings an earlier answer cited, whatever its filters.
    """
    wanted = list(dict.fromkeys(tracking_uids))
    if not wanted:
        return []
    hits = _hits(engine, _base().where(FindingRow.tracking_uid.in_(wanted)))
    by_uid = {h.finding.tracking_uid: h for h in hits}
    return [by_uid[u] for u in wanted if u in by_uid]


def substring_search(engine: Engine, filters: Filters, terms: Sequence[str], limit: int) -> list[FindingHit]:
    """Findings within the filters whose text holds any of ``terms``, most matched characters first.

    For scripts without spaces between words (``reasoning`` cuts a Chinese question into
    two-character terms). ``terms`` are letters without case (Han, kana, Hangul: no wildcard
    or quote reaches the query, and no case to fold), 1-32 of each; the relevance is the
    number of the terms' characters found.
    """
    _check_limit(limit)
    terms = list(dict.fromkeys(terms))
    for term in terms:
        if (not isinstance(term, str) or not 0 < len(term) <= SUBSTRING_MAX or not term.isalpha()
                or term.lower() != term.upper()):
            raise ValueError(f"substring term must be 1-{SUBSTRING_MAX} letters without case, got {term!r}")
    if not terms:
        return []
    found = [_holds(engine, t) for t in terms]
    relevance = sum((case((f, len(t)), else_=0) for f, t in zip(found, terms)), start=literal_column("0"))
    if engine.dialect.name == "sqlite" and all(len(t) >= TRIGRAM for t in terms):  # the trigram index
        holding: Select = select(  # type: ignore[type-arg]
            text("SELECT rowid FROM finding_trigram WHERE finding_trigram MATCH :query").bindparams(
                query=" OR ".join(f'"{t}"' for t in terms)
            ).columns(rowid=Integer).subquery().c.rowid
        )
    else:  # a scan of the finding table alone, before any join
        holding = select(FindingRow.id).where(or_(*found))
    stmt = _base().add_columns(relevance).where(FindingRow.id.in_(holding))
    stmt = _filtered(stmt, filters).order_by(relevance.desc(), FindingRow.id.desc()).limit(limit)
    return _hits(engine, stmt, relevance=True)


def _holds(engine: Engine, term: str) -> ColumnElement[bool]:
    """Whether a finding's text holds ``term``: the indexed expression on PostgreSQL (pg_trgm
    serves 3 characters or more); column by column on SQLite, 3 times faster a scan than the
    lower-cased whole (60 ms for 100,000 findings here), which a shorter term always needs."""
    if engine.dialect.name == "postgresql":
        return literal_column(FINDING_TEXT).contains(term, autoescape=True)
    columns = (FindingRow.label, FindingRow.code_meaning, FindingRow.description, FindingRow.location)
    return or_(*(func.instr(c, term) > 0 for c in columns))


def text_search(engine: Engine, filters: Filters, terms: Sequence[str], limit: int) -> list[FindingHit]:
    """Findings within the filters whose text holds any of ``terms``, most relevant first.

    ``terms`` are lower-case words of letters and digits (``reasoning`` cuts a question into
    them); anything else is refused, since the words go into a full-text query language.
    """
    _check_limit(limit)
    terms = list(dict.fromkeys(terms))
    for term in terms:
        if not isinstance(term, str) or not TERM.match(term):
            raise ValueError(f"search term must be lower-case letters and digits, got {term!r}")
    if not terms:
        return []
    if engine.dialect.name == "sqlite":
        weights = ", ".join(str(w) for w in FTS5_WEIGHTS)
        matches = (
            text(
                f"SELECT rowid AS id, -bm25(finding_fts, {weights}) AS relevance "
                "FROM finding_fts WHERE finding_fts MATCH :query"
            )
            .bindparams(query=" OR ".join(f'"{t}"' for t in terms))
            .columns(id=Integer, relevance=Float)
            .subquery("matches")
        )
        relevance = matches.c.relevance
        stmt = _base().add_columns(relevance).join(matches, matches.c.id == FindingRow.id)
    elif engine.dialect.name == "postgresql":
        query = func.to_tsquery(literal_column("'english'"), " | ".join(terms))
        vector = literal_column(FINDING_TSVECTOR)
        relevance = func.ts_rank_cd(vector, query, 1)  # 1: divided by 1 + log(length)
        stmt = _base().add_columns(relevance).where(vector.op("@@")(query))
    else:  # pragma: no cover - make_engine refuses other dialects
        raise ValueError(f"text search needs sqlite or postgresql, got {engine.dialect.name!r}")
    stmt = _filtered(stmt, filters).order_by(relevance.desc(), FindingRow.id.desc()).limit(limit)
    return _hits(engine, stmt, relevance=True)
