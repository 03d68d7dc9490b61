"""Retrieval: the findings that answer a question, from the catalog alone, best first.

Filters (study, modality, body part, dates) narrow the findings; the question's words find
them by full-text search; with the embedding model, semantic similarity finds them too ("air
in the chest" reaches a pneumothorax). A Chinese question is cut into character pairs searched
as substrings, and its medical words also into the English words findings use (``cjk``); its
semantic ranking takes the multilingual model (``[reasoning] embedding``). What the score
means depends on the mode:

- ``text``: full-text relevance divided by the best hit's, in (0, 1].
- ``text+semantic``: cosine similarity of question and finding text, plus ``LEXICAL_BONUS`` when
  the finding's text also holds a word of the question (the multilingual model: the bonus times
  the text relevance over the best's, since its similarities lie in a narrow band).
- ``filters``: no finding holds a word of the question (and no embeddings): the most recent
  findings within the filters, each scored 0, so an answer can say that nothing matched.

Semantic candidates: every finding within the filters when they are few (``EXHAUSTIVE_MAX``),
else the newest findings within the filters of the concepts (the catalog's distinct labels)
most similar to the question; plus the best text hits. A question thus costs a bounded number of embeddings
(``SEMANTIC_FACTOR`` x evidence from each source) however large the catalog.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine

from apolo_node.catalog import embeddings, reports, search
from apolo_node.catalog.search import Filters, FindingHit
from apolo_node.config import ReasoningSettings
from apolo_node.findings import Finding
from apolo_node.logs import event, get_logger
from apolo_node.reasoning import cjk, embedding, vectors
from apolo_node.reasoning.embedding import Embedder, MultilingualEmbedder, SentenceEmbedder
from apolo_node.reasoning.evidence import Evidence
from apolo_node.reasoning.phrases import EN

log = get_logger("reasoning.retrieval")

TEXT, SEMANTIC, FILTERS = "text", "text+semantic", "filters"
POOL_FACTOR = 5  # text hits considered per piece of evidence kept
POOL_MIN = 50
# Semantic candidates per piece of evidence kept, from text hits and from similar concepts each:
# every one is embedded (about 5 ms each on a CPU core), so fewer than for text alone.
SEMANTIC_FACTOR = 2
EXHAUSTIVE_MAX = 100  # within the filters, up to this many findings are all scored semantically
CONCEPTS_MAX = 1000  # distinct labels compared with the question (each embedded once)
CONCEPTS_PICKED = 5  # the most similar concepts whose findings become candidates
LEXICAL_BONUS = 0.1
# Findings lacking a stored vector that one question embeds and stores (until none lack one, a
# question ranks the concepts' findings instead of the whole catalog's vectors).
BACKFILL_PER_QUESTION = 256
NEAREST_FACTOR = 8  # nearest findings of the catalog read first per candidate wanted
NEAREST_MAX = 4000  # past this many, every finding within the filters is ranked instead
TERMS_MAX = 24
# Words that say nothing about a finding: English function words, and the question's framing.
STOPWORDS = frozenset(["a", "about", "above", "after", "all", "also", "am", "an", "and", "any", "anything", "are", "as", "at", "be", "been", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "done", "during", "each", "either", "else", "ever", "few", "find", "findings", "finding", "for", "found", "from", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "list", "me", "more", "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "out", "over", "own", "please", "same", "seen", "she", "should", "show", "shown", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "study", "studies", "image", "images", "patient", "patients", "scan", "scans", "exam", "seen", "see", "any", "there"])
WORD = re.compile(r"[a-z0-9]+")


def query_terms(question: str) -> list[str]:
    """The words of a question worth searching for: lower-case, no stop words, no bare numbers.

    A Chinese question's medical words count as the English words findings use (``cjk``).
    """
    words = WORD.findall(question.lower())
    terms = [w for w in words if len(w) > 1 and not w.isdigit() and w not in STOPWORDS]
    return list(dict.fromkeys(terms + cjk.english_terms(question)))[:TERMS_MAX]


def finding_text(f: Finding) -> str:
    """What a finding says, as one sentence for the embedding model (as its stored vector was made)."""
    return vectors.text_of(f.label, f.code.meaning, f.description, f.laterality, f.location)


@dataclass(frozen=True)
class Retrieved:
    """The evidence for a question (best first), how it was found, and how many were weighed."""

    evidence: tuple[Evidence, ...]
    mode: str  # TEXT, SEMANTIC or FILTERS
    candidates: int  # findings scored before the best were kept
    seconds: float
    note: str = ""  # why semantic search was off, when it was


def embedding_for(settings: ReasoningSettings, language: str) -> str:
    """``minilm`` or ``multilingual``: the model ``[reasoning] embedding`` names for this language."""
    if settings.embedding == "auto":
        return "minilm" if language == EN else "multilingual"
    return settings.embedding


def make_embedder(settings: ReasoningSettings, language: str = EN) -> tuple[SentenceEmbedder | None, str]:
    """The embedder ``[reasoning] semantic`` and ``embedding`` ask for, for questions in ``language``
    (``phrases.language``), or None and why not (text search then)."""
    if not settings.semantic:
        return None, "semantic search is off ([reasoning] semantic = false)"
    multilingual = embedding_for(settings, language) == "multilingual"
    problem = embedding.multilingual_available() if multilingual else embedding.available()
    if problem:
        event(log, "reasoning.semantic.unavailable", reason="not installed")
        return None, problem
    try:
        return (MultilingualEmbedder() if multilingual else Embedder(device="cpu")), ""
    except Exception as exc:  # noqa: BLE001 - a broken install degrades to text search
        event(log, "reasoning.semantic.unavailable", reason=type(exc).__name__)
        return None, f"semantic search could not load its model ({type(exc).__name__}); text search only"


class Retriever:
    """Finds evidence for questions in one catalog: ``limit`` findings at most per question."""

    def __init__(
        self, engine: Engine, *, limit: int = 20, embedder: SentenceEmbedder | None = None, note: str = ""
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"[reasoning] evidence must be an integer >= 1, got {limit!r}")
        self.engine = engine
        self.limit = limit
        self.embedder = embedder
        self.note = note  # why there is no embedder, said with every result

    @classmethod
    def from_settings(cls, engine: Engine, settings: ReasoningSettings, language: str = EN) -> Retriever:
        """The retriever the settings describe, its embedder chosen for questions in ``language``."""
        embedder, note = make_embedder(settings, language)
        return cls(engine, limit=settings.evidence, embedder=embedder, note=note)

    @property
    def pool(self) -> int:
        return max(self.limit * POOL_FACTOR, POOL_MIN)

    def retrieve(self, question: str, filters: Filters) -> Retrieved:
        """The findings within ``filters`` that best answer ``question``, best first."""
        started = time.perf_counter()
        terms = query_terms(question)
        text_hits = self._text_hits(question, filters, terms)
        # a report's narrative (findings text, impression) holding a term brings its study's findings
        text_hits = reports.with_narrative_hits(self.engine, filters, terms, text_hits, self.pool)
        note = self.note
        result: tuple[list[Evidence], str, int] | None = None
        if self.embedder is not None:
            try:
                result = self._semantic(*self._candidates(question, filters), text_hits)
            except Exception as exc:  # noqa: BLE001 - the model failing must not fail the question
                event(log, "reasoning.semantic.failed", error_type=type(exc).__name__)
                note = f"semantic search failed ({type(exc).__name__}); text search only"
        if result is None:
            result = self._lexical(filters, text_hits)
        evidence, mode, candidates = result
        seconds = time.perf_counter() - started
        event(log, "reasoning.retrieved", mode=mode, terms=len(terms), candidates=candidates,
              evidence=len(evidence), seconds=round(seconds, 4))
        return Retrieved(tuple(evidence), mode, candidates, seconds, note)

    def _text_hits(self, question: str, filters: Filters, terms: list[str]) -> list[FindingHit]:
        """Full-text hits of the words, and substring hits of Chinese character pairs, merged.

        Each list's relevance is divided by its best, and a finding in both has the sum.
        """
        words = search.text_search(self.engine, filters, terms, self.pool) if terms else []
        pairs = cjk.terms(question)
        if not pairs:
            return words
        found = search.substring_search(self.engine, filters, pairs, self.pool)
        merged: dict[str, tuple[float, FindingHit]] = {}
        for hits in (words, found):
            best = max((h.relevance or 0.0 for h in hits), default=0.0) or 1.0
            for h in hits:
                before = merged.get(h.finding.tracking_uid, (0.0, h))[0]
                merged[h.finding.tracking_uid] = (before + (h.relevance or 0.0) / best, h)
        ranked = sorted(merged.values(), key=lambda x: -x[0])
        return [dataclasses.replace(h, relevance=score) for score, h in ranked[: self.pool]]

    def _lexical(self, filters: Filters, text_hits: list[FindingHit]) -> tuple[list[Evidence], str, int]:
        if text_hits:
            best = max(h.relevance or 0.0 for h in text_hits) or 1.0
            kept = text_hits[: self.limit]
            return [Evidence.from_hit(h, max((h.relevance or 0.0) / best, 1e-6)) for h in kept], TEXT, len(text_hits)
        recent = search.recent_findings(self.engine, filters, self.limit)
        return [Evidence.from_hit(h, 0.0) for h in recent], FILTERS, len(recent)

    def _candidates(self, question: str, filters: Filters) -> tuple[np.ndarray, list[FindingHit]]:
        """The question's vector, and the findings within the filters that are semantic candidates."""
        assert self.embedder is not None
        wanted = self.limit * SEMANTIC_FACTOR
        index = vectors.index_for(self.engine, self.embedder.key)
        stored_all = index.update(self.engine, self.embedder, BACKFILL_PER_QUESTION)
        query = self.embedder.question(question)
        total = search.count_findings(self.engine, filters, at_most=EXHAUSTIVE_MAX)
        if total <= EXHAUSTIVE_MAX:
            candidates = search.recent_findings(self.engine, filters, max(total, 1))
        elif stored_all:
            candidates = self._nearest(index, query, filters, wanted)
        else:  # findings still lack stored vectors: the concepts most like the question
            concepts = search.concepts(self.engine, CONCEPTS_MAX)
            texts = [
                label if label.lower() == meaning.lower() else f"{label}. {meaning}" for label, meaning in concepts
            ]
            similar = sorted(zip(self.embedder.similarities(question, texts), range(len(concepts))), reverse=True)
            picked = list(dict.fromkeys(concepts[k][0] for _, k in similar[:CONCEPTS_PICKED]))
            per = -(-wanted // max(len(picked), 1))  # ceiling
            candidates = [h for label in picked for h in search.recent_findings(self.engine, filters, per, [label])]
        return query, candidates

    def _semantic(
        self, query: np.ndarray, candidates: list[FindingHit], text_hits: list[FindingHit]
    ) -> tuple[list[Evidence], str, int]:
        """The text hits and semantic candidates, ranked by similarity plus the lexical bonus."""
        assert self.embedder is not None
        text_hits = text_hits[: self.limit * SEMANTIC_FACTOR]
        best = max((h.relevance or 0.0 for h in text_hits), default=0.0) or 1.0
        graded = self.embedder.graded_bonus  # else each text hit gets the whole bonus
        lexical = {h.finding.tracking_uid: (h.relevance or 0.0) / best if graded else 1.0 for h in text_hits}
        pool = list({h.finding.tracking_uid: h for h in [*text_hits, *candidates]}.values())
        if not pool:
            return [], SEMANTIC, 0
        similarity = [float(x) for x in self._vectors_of(pool) @ query]
        scores = [s + LEXICAL_BONUS * lexical.get(h.finding.tracking_uid, 0.0) for s, h in zip(similarity, pool)]
        scored = sorted(((s, k) for k, s in enumerate(scores)), key=lambda x: (-x[0], x[1]))
        return [Evidence.from_hit(pool[k], s) for s, k in scored[: self.limit]], SEMANTIC, len(pool)

    def _nearest(self, index: vectors.VectorIndex, query: np.ndarray, filters: Filters, wanted: int) -> list[FindingHit]:
        """The findings within the filters nearest the question by their stored vectors.

        The nearest of the whole catalog first, widened while the filters keep too few of
        them; then every finding within the filters is ranked (a narrow filter over a large catalog).
        """
        k = wanted * NEAREST_FACTOR
        while k <= NEAREST_MAX:
            nearest = index.nearest(query, k)
            if filters == Filters():  # no filter: every one of the nearest is in
                return embeddings.hits_of(self.engine, filters, nearest[:wanted])
            within = embeddings.among_within(self.engine, filters, nearest)
            kept = [i for i in nearest if i in within][:wanted]
            if len(kept) >= wanted or k >= len(index):
                return embeddings.hits_of(self.engine, filters, kept)
            # the share the filters kept tells how many more to read (twice that, for luck)
            k = max(k * 2, 2 * k * wanted // max(len(within), 1))
        kept = index.nearest(query, wanted, among=embeddings.ids_within(self.engine, filters))
        return embeddings.hits_of(self.engine, filters, kept)

    def _vectors_of(self, pool: Sequence[FindingHit]) -> np.ndarray:
        """The unit vectors of the pool's findings, one row each: stored ones read, others embedded."""
        assert self.embedder is not None
        stored = embeddings.vectors_of(self.engine, self.embedder.key, [h.finding.tracking_uid for h in pool])
        absent = [finding_text(h.finding) for h in pool if h.finding.tracking_uid not in stored]
        made = iter(self.embedder.encode(absent)) if absent else iter(())
        rows = [
            vectors.from_bytes(stored[h.finding.tracking_uid]) if h.finding.tracking_uid in stored else next(made)
            for h in pool
        ]
        return np.stack(rows)


def retrieve(
    engine: Engine, question: str, filters: Filters, *, limit: int = 20, embedder: SentenceEmbedder | None = None
) -> Retrieved:
    """One question's evidence (a ``Retriever`` for one use)."""
    return Retriever(engine, limit=limit, embedder=embedder).retrieve(question, filters)


def studies_of(evidence: Sequence[Evidence]) -> list[str]:
    """The pseudonymous study UIDs of the evidence, in order of first appearance."""
    return list(dict.fromkeys(e.study_uid for e in evidence))
