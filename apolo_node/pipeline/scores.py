"""Scores of the evaluation harness, as the published medical VLM papers compute them.

Boxes: intersection over union, a reference counted found when a prediction of its label
overlaps it by IoU >= a threshold (0.5 by default), each prediction matched once, best overlap
first. Closed questions (yes/no, left/right): exact match after normalising case, punctuation
and articles. Open answers: token F1 (SQuAD's) and BLEU-1 and BLEU-4 (Papineni et al. 2002, one
reference, the orders above one add-one smoothed as Lin and Och 2004 do for sentences, NLTK's
``method2``). Pure functions on plain values: no DICOM, no model.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

BoxValues = tuple[float, float, float, float]  # x1, y1, x2, y2 in source pixels

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")


def iou(a: BoxValues, b: BoxValues) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when either has no area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Match:
    """A reference box (by index) and the prediction matched to it, with their IoU."""

    reference: int
    prediction: int
    iou: float


def match_boxes(references: Sequence[BoxValues], predictions: Sequence[BoxValues], threshold: float) -> list[Match]:
    """Greedy one-to-one matching, highest IoU first, of pairs with IoU >= ``threshold``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU threshold must lie in (0, 1], got {threshold!r}")
    pairs = sorted(
        ((iou(r, p), i, j) for i, r in enumerate(references) for j, p in enumerate(predictions)),
        reverse=True,
    )
    used_r: set[int] = set()
    used_p: set[int] = set()
    out = []
    for value, i, j in pairs:
        if value < threshold:
            break
        if i in used_r or j in used_p:
            continue
        used_r.add(i)
        used_p.add(j)
        out.append(Match(i, j, value))
    return out


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's answer normalisation)."""
    text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    return normalize(text).split()


def exact(prediction: str, reference: str) -> bool:
    """Closed-question accuracy: the normalised answers are equal."""
    return normalize(prediction) == normalize(reference)


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bags of normalised words)."""
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def bleu(prediction: str, reference: str, n: int = 4) -> float:
    """Sentence BLEU-n against one reference: geometric mean of clipped n-gram precisions
    (orders 2..n add-one smoothed), times the brevity penalty; 0 with no unigram in common."""
    if n < 1:
        raise ValueError(f"BLEU order must be >= 1, got {n!r}")
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return 0.0
    logs = []
    for k in range(1, n + 1):
        grams = Counter(tuple(p[i : i + k]) for i in range(len(p) - k + 1))
        ref_grams = Counter(tuple(r[i : i + k]) for i in range(len(r) - k + 1))
        total = sum(grams.values())
        clipped = sum((grams & ref_grams).values())
        if k == 1 and clipped == 0:
            return 0.0
        if k > 1:
            clipped, total = clipped + 1, total + 1
        logs.append(math.log(clipped / total))
    penalty = 1.0 if len(p) > len(r) else math.exp(1 - len(r) / len(p))
    return penalty * math.exp(sum(logs) / n)
