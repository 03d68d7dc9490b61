"""Finding vectors embedded once and kept: stored in the catalog, ranked in memory with NumPy.

``embed_missing`` embeds the findings that have no vector of a model yet and stores them
(``catalog.embeddings``): at report time, or lazily, a bounded batch per question, until every
finding has one. ``VectorIndex`` holds one model's stored vectors of one catalog in memory (a
process keeps it between questions; each question reads only the rows written since) and
gives the findings nearest a question: one matrix product, however large the catalog
(100,000 findings x 384 dimensions: 154 MB of float32, a few milliseconds a question).
NumPy on both databases: no pgvector, so PostgreSQL needs no extension for this.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine

from apolo_node.catalog import embeddings
from apolo_node.logs import event, get_logger
from apolo_node.reasoning.embedding import SentenceEmbedder

log = get_logger("reasoning.vectors")

BATCH = 256  # findings read and embedded at a time


def text_of(label: str, meaning: str, description: str | None, laterality: str | None, location: str | None) -> str:
    """What a finding says, as one sentence for the embedding model (stored and compared alike)."""
    parts = [label]
    if meaning.lower() != label.lower():
        parts.append(meaning)
    if description:
        parts.append(description)
    where = " ".join(x for x in (laterality, location) if x)
    if where:
        parts.append(where)
    return ". ".join(p.strip().rstrip(".") for p in parts if p.strip())


def as_bytes(vector: Any) -> bytes:
    """A vector as the catalog stores it: little-endian float32."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blob: bytes) -> Any:
    """A stored vector as a float32 array."""
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def embed_missing(
    engine: Engine, embedder: SentenceEmbedder, *, at_most: int | None = None, after_id: int = 0
) -> tuple[int, int]:
    """Embed and store up to ``at_most`` (None: all) findings above ``after_id`` lacking a vector.

    Returns (how many were stored, the last finding id looked at). Each distinct text is
    embedded once (findings repeat their labels and descriptions).
    """
    stored, last = 0, after_id
    while at_most is None or stored < at_most:
        size = BATCH if at_most is None else min(BATCH, at_most - stored)
        rows = embeddings.missing(engine, embedder.key, last, size)
        if not rows:
            break
        texts = [text_of(r.label, r.code_meaning, r.description, r.laterality, r.location) for r in rows]
        matrix = embedder.encode(texts)
        stored += embeddings.store(engine, embedder.key, matrix.shape[1],
                                   [(r.id, as_bytes(v)) for r, v in zip(rows, matrix)])
        last = rows[-1].id
        if len(rows) < size:
            break
    if stored:
        event(log, "reasoning.vectors.stored", model=embedder.key, findings=stored)
    return stored, last


class VectorIndex:
    """One model's stored vectors of one catalog, in memory, refreshed with the rows written since.

    It holds no engine (``index_for`` keeps it as long as its engine lives): each call names it.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.ids = np.zeros(0, dtype=np.int64)  # finding ids, one per row of ``matrix``
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.last_row = 0  # the last finding_embedding row read
        self.checked_through = 0  # every finding up to this id has a stored vector
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def refresh(self, engine: Engine) -> int:
        """Read the rows written since the last refresh; how many were new."""
        rows = embeddings.rows_after(engine, self.model, self.last_row)
        if not rows:
            return 0
        block = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").astype(np.float32)
        block = block.reshape(len(rows), -1)
        ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        self.matrix = block if not len(self.ids) else np.concatenate([self.matrix, block])
        self.ids = ids if not len(self.ids) else np.concatenate([self.ids, ids])
        self.last_row = rows[-1][0]
        return len(rows)

    def update(self, engine: Engine, embedder: SentenceEmbedder, budget: int) -> bool:
        """Embed up to ``budget`` findings that lack a vector, read new rows; whether none lack one."""
        with self.lock:
            newest = embeddings.last_finding_id(engine)
            complete = newest <= self.checked_through
            if not complete:
                stored, last = embed_missing(engine, embedder, at_most=budget, after_id=self.checked_through)
                complete = stored < budget
                self.checked_through = newest if complete else last
            self.refresh(engine)
            return complete

    def nearest(self, query: Any, k: int, among: Sequence[int] | None = None) -> list[int]:
        """The ids of the ``k`` findings most similar to the ``query`` vector, best first
        (only those of ``among``, if given)."""
        with self.lock:
            ids, matrix = self.ids, self.matrix
        if not len(ids) or k < 1:
            return []
        if among is not None:
            keep = np.isin(ids, np.fromiter(among, dtype=np.int64))
            ids, matrix = ids[keep], matrix[keep]
            if not len(ids):
                return []
        scores = matrix @ np.asarray(query, dtype=np.float32)
        if k < len(scores):
            top = np.argpartition(-scores, k - 1)[:k]
        else:
            top = np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [int(i) for i in ids[top]]


_INDEXES: weakref.WeakKeyDictionary[Engine, dict[str, VectorIndex]] = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


def index_for(engine: Engine, model: str) -> VectorIndex:
    """This process's index of ``model`` for the catalog of ``engine`` (made once, kept as long as the engine)."""
    with _INDEXES_LOCK:
        of_engine = _INDEXES.setdefault(engine, {})
        if model not in of_engine:
            of_engine[model] = VectorIndex(model)
        return of_engine[model]
