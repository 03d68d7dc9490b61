"""``POST /reasoning/retrieve``: a question's evidence from the running node, whose model stays loaded.

``apolo-node ask`` asks here first (``reasoning.remote``): the node keeps the embedding model
and the stored finding vectors in memory, so a question costs milliseconds instead of the
seconds a fresh process spends importing and loading them. It answers only with tracking UIDs
and scores (the asker reads the findings from the same catalog) and never logs the question.
The first question with semantic ranking loads the model and starts storing a vector for
every finding that lacks one, in the background (a catalog from before migration 0010).
Behind ``require_access`` like every route but /healthz and /metrics.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from sqlalchemy import Engine

from apolo_node.catalog.search import Filters
from apolo_node.logs import event, get_logger
from apolo_node.reasoning import vectors
from apolo_node.reasoning.ask import QUESTION_MAX
from apolo_node.reasoning.embedding import SentenceEmbedder
from apolo_node.reasoning.phrases import language
from apolo_node.reasoning.retrieval import Retriever
from apolo_node.web.auth import require_access

log = get_logger("web.reasoning")
router = APIRouter()
STUDIES_MAX = 10_000  # pseudonymous study UIDs a filter may list
_LOCK = threading.Lock()


def filters_from_json(body: Any) -> Filters:
    """The filters a request names (``Filters.as_json`` keys); ValueError names the bad key."""
    if body is None:
        return Filters()
    if not isinstance(body, dict):
        raise ValueError("filters must be an object")
    unknown = set(body) - {"study", "modality", "body_part", "since", "until", "studies"}
    if unknown:
        raise ValueError(f"unknown filter keys: {', '.join(sorted(unknown))}")
    dates = {}
    for key in ("since", "until"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"filter {key} must be an ISO date")
            dates[key] = dt.date.fromisoformat(value)
    studies = body.get("studies")
    if studies is not None:
        if not isinstance(studies, list) or len(studies) > STUDIES_MAX or not all(isinstance(s, str) for s in studies):
            raise ValueError(f"filter studies must be a list of at most {STUDIES_MAX} UIDs")
        studies = tuple(studies)
    return Filters(study_uid=body.get("study"), modality=body.get("modality"), body_part=body.get("body_part"),
                   studies=studies, **dates)


def _retriever(request: Request, lang: str) -> Retriever:
    """This node's retriever for questions in ``lang``: made on the first such question, then kept."""
    state = request.app.state
    with _LOCK:
        kept: dict[str, Retriever] = getattr(state, "retrievers", None) or {}
        state.retrievers = kept
        if lang not in kept:
            kept[lang] = made = Retriever.from_settings(state.engine, state.cfg.reasoning, lang)
            if made.embedder is not None:  # a catalog's findings from before 0010: all embedded, once
                threading.Thread(target=_embed_all, args=(state.engine, made.embedder), daemon=True,
                                 name=f"apolo-embed-{made.embedder.key}").start()
        return kept[lang]


def _embed_all(engine: Engine, embedder: SentenceEmbedder) -> None:
    """Store a vector for every finding that lacks one (questions meanwhile embed 256 each and
    rank the concepts' findings until none lacks one); a failure is logged, never raised."""
    try:
        vectors.embed_missing(engine, embedder)
    except Exception as exc:  # noqa: BLE001 - a background fill must not take the node down
        event(log, "reasoning.vectors.fill_failed", error_type=type(exc).__name__)


@router.post("/reasoning/retrieve", dependencies=[Depends(require_access)])
def retrieve(request: Request, body: Any = Body(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
    """The evidence for one (already scrubbed) question: tracking UIDs and scores, best first."""
    if not isinstance(body, dict) or not isinstance(body.get("question"), str):
        raise HTTPException(status_code=422, detail="body must be an object with a question")
    question = body["question"].strip()
    if not question or len(question) > QUESTION_MAX:
        raise HTTPException(status_code=422, detail=f"question must be 1-{QUESTION_MAX} characters")
    try:
        filters = filters_from_json(body.get("filters"))
    except ValueError:  # its text may quote a value: not echoed
        raise HTTPException(status_code=422, detail="filters are not valid") from None
    found = _retriever(request, language(question)).retrieve(question, filters)
    return {
        "mode": found.mode, "candidates": found.candidates, "seconds": found.seconds, "note": found.note,
        "evidence": [[e.tracking_uid, e.score] for e in found.evidence],
    }
