"""Stored finding embeddings (migration 0010): written once per finding and model, read by ranking.

A question then embeds only itself: the findings' vectors are read here, not computed again.
Vectors travel as bytes (``dim`` little-endian float32); ``reasoning.vectors`` turns them into
arrays. ``finding_embedding.id`` grows with each row written, so a running process reads only
the rows it has not seen (``rows_after``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite

from apolo_node.catalog import search
from apolo_node.catalog.models import FindingEmbedding, FindingRow
from apolo_node.catalog.search import Filters, FindingHit

MODEL_MAX = 64  # characters of a model key
IN_MAX = 5000  # ids in one IN list (SQLite allows 32,766 parameters; fewer keep plans cheap)


@dataclass(frozen=True)
class FindingText:
    """What an embedding is made of: a finding's id and its words (no place, no patient)."""

    id: int
    label: str
    code_meaning: str
    description: str
    laterality: str | None
    location: str | None


def _check_model(model: str) -> None:
    if not isinstance(model, str) or not 0 < len(model) <= MODEL_MAX:
        raise ValueError(f"embedding model key must be 1-{MODEL_MAX} characters")


def missing(engine: Engine, model: str, after_id: int, limit: int) -> list[FindingText]:
    """Findings with an id above ``after_id`` that have no vector of ``model`` yet, by id, at most ``limit``."""
    _check_model(model)
    stored = select(FindingEmbedding.id).where(
        and_(FindingEmbedding.finding_id == FindingRow.id, FindingEmbedding.model == model)
    )
    stmt = (
        select(FindingRow.id, FindingRow.label, FindingRow.code_meaning, FindingRow.description,
               FindingRow.laterality, FindingRow.location)
        .where(FindingRow.id > after_id, ~stored.exists())
        .order_by(FindingRow.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [FindingText(*row) for row in conn.execute(stmt)]


def store(engine: Engine, model: str, dim: int, vectors: Sequence[tuple[int, bytes]]) -> int:
    """Write (finding id, vector bytes) rows of ``model``; a finding that has one already keeps it.

    Another process may have stored the same finding meanwhile (serve and a worker, or two
    questions): the unique (finding, model) pair makes that a no-op, not an error.
    """
    _check_model(model)
    if not vectors:
        return 0
    for _, blob in vectors:
        if len(blob) != 4 * dim:
            raise ValueError(f"an embedding of dim {dim} takes {4 * dim} bytes, got {len(blob)}")
    rows = [{"finding_id": fid, "model": model, "dim": dim, "vector": blob} for fid, blob in vectors]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(FindingEmbedding).on_conflict_do_nothing(index_elements=["finding_id", "model"])
    with engine.begin() as conn:
        for lo in range(0, len(rows), IN_MAX):
            conn.execute(stmt, rows[lo:lo + IN_MAX])
    return len(rows)


def rows_after(engine: Engine, model: str, after_row: int) -> list[tuple[int, int, bytes]]:
    """(row id, finding id, vector bytes) of ``model`` written after row ``after_row``, in order."""
    _check_model(model)
    stmt = (
        select(FindingEmbedding.id, FindingEmbedding.finding_id, FindingEmbedding.vector)
        .where(FindingEmbedding.model == model, FindingEmbedding.id > after_row)
        .order_by(FindingEmbedding.id)
    )
    with engine.connect() as conn:
        return [(r[0], r[1], bytes(r[2])) for r in conn.execute(stmt)]


def last_finding_id(engine: Engine) -> int:
    """The highest finding id (0 for none): findings above it are newer than a check made now."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(FindingRow.id), 0))).scalar_one())


def vectors_of(engine: Engine, model: str, tracking_uids: Sequence[str]) -> dict[str, bytes]:
    """The stored vectors of ``model`` of these findings, by tracking UID (those stored only)."""
    _check_model(model)
    wanted = list(dict.fromkeys(tracking_uids))
    found: dict[str, bytes] = {}
    with engine.connect() as conn:
        for lo in range(0, len(wanted), IN_MAX):
            stmt = (
                select(FindingRow.tracking_uid, FindingEmbedding.vector)
                .join(FindingEmbedding, FindingEmbedding.finding_id == FindingRow.id)
                .where(FindingEmbedding.model == model, FindingRow.tracking_uid.in_(wanted[lo:lo + IN_MAX]))
            )
            found.update((r[0], bytes(r[1])) for r in conn.execute(stmt))
    return found


def hits_of(engine: Engine, filters: Filters, finding_ids: Sequence[int]) -> list[FindingHit]:
    """The findings of these ids that lie within the filters (in no particular order)."""
    wanted = list(dict.fromkeys(finding_ids))
    hits: list[FindingHit] = []
    for lo in range(0, len(wanted), IN_MAX):
        stmt = search._filtered(search._base(), filters).where(FindingRow.id.in_(wanted[lo:lo + IN_MAX]))
        hits.extend(search._hits(engine, stmt))
    return hits


def among_within(engine: Engine, filters: Filters, finding_ids: Sequence[int]) -> set[int]:
    """Which of these finding ids lie within the filters (ids only: cheaper than whole hits)."""
    wanted = list(dict.fromkeys(finding_ids))
    found: set[int] = set()
    with engine.connect() as conn:
        for lo in range(0, len(wanted), IN_MAX):
            stmt = search._filtered(search._base().with_only_columns(FindingRow.id), filters)
            found.update(r[0] for r in conn.execute(stmt.where(FindingRow.id.in_(wanted[lo:lo + IN_MAX]))))
    return found


def ids_within(engine: Engine, filters: Filters) -> list[int]:
    """The ids of every finding within the filters (for exact ranking of a narrow set)."""
    stmt = search._filtered(search._base().with_only_columns(FindingRow.id), filters)
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(stmt)]
