"""The ``ask`` use case, in one audited function: dates, question, answer, send, reveal.

The command line (and the web, or ``serve``) parse and print; ``ask_question`` does the rest.
The catalog holds de-identified (shifted) Study Dates only: each patient's dates moved back by
one whole number of days (``deid.dates``). A user who holds the vault key gives and sees real
dates: ``--since``/``--until`` are translated here, per study, through the vault's original
Study Date, into the set of pseudonymous studies whose real date lies in range, and only that
set goes down to reasoning (which never imports the vault); the dates shown are read back the
same way, and that reading is audited (``real dates``). Without the key the filters compare
the shifted dates, and what is shown says so (``dates: "shifted"``). No real date is stored
in the catalog or logged: the answer, its audit rows and the logs hold UIDs and counts only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from apolo_node.catalog import search
from apolo_node.catalog.answers import record_audit
from apolo_node.config import Config
from apolo_node.logs import event, get_logger
from apolo_node.reasoning.backend import Answerer
from apolo_node.reasoning.ask import AskResult, Filters, ask, os_user
from apolo_node.reasoning.evidence import Evidence
from apolo_node.reasoning.retrieval import Retriever
from apolo_node.spool import Spool

if TYPE_CHECKING:  # the vault, pydicom and the SR writers load only when a question needs them
    from apolo_node.deid.vault import Vault
    from apolo_node.pipeline.results import QueuedResult

__all__ = ["REAL", "SHIFTED", "Asked", "BadRequest", "allowed", "ask_question", "holds_vault_key"]

log = get_logger("pipeline.asking")

REAL = "real"
SHIFTED = "shifted"
# Studies whose real date one question may look up in the vault (one decryption each).
REAL_DATE_STUDIES_MAX = 10_000
SHIFTED_NOTE = (
    "dates are shifted (de-identified): each patient's dates are moved back by a fixed number of "
    "days, so --since/--until compare shifted dates; with the vault key ([deid] vault_key) they "
    "take and show real dates"
)
REAL_NOTE = (
    "dates are real, read through the vault (audited); the answer text quotes the shifted dates "
    "the answerer saw"
)


class BadRequest(ValueError):
    """What was asked cannot be done as asked (exit 2); the message says why, without PHI."""


@dataclass(frozen=True)
class Asked:
    """An answered question and what came with it: the dates' kind, what was sent or revealed."""

    result: AskResult
    dates: str  # REAL or SHIFTED: what the filters' and the shown study dates are
    filters: Filters  # as the user gave them (real dates when ``dates`` is REAL)
    real_dates: dict[str, dt.date | None] = field(default_factory=dict)  # REAL only: per evidence study
    sent: list[QueuedResult] = field(default_factory=list)
    revealed: dict[str, str | None] = field(default_factory=dict)
    undated: int = 0  # studies of the date window whose real date the vault does not hold

    def study_date(self, e: Evidence) -> dt.date | None:
        """The date to show for a piece of evidence: real with the key, else the catalog's (shifted)."""
        return self.real_dates.get(e.study_uid) if self.dates == REAL else e.study_date

    @property
    def notes(self) -> list[str]:
        notes = [REAL_NOTE if self.dates == REAL else SHIFTED_NOTE]
        if self.undated:
            notes.append(f"{self.undated} studies in the date window have no real date in the vault "
                         "and were left out")
        return notes

    def as_json(self, send: bool = False, reveal: bool = False) -> dict[str, Any]:
        """``ask --json``: the ``AskResult``'s shape, with ``dates`` saying which dates it shows."""
        out = self.result.as_json()
        out["dates"] = self.dates
        out["date_notes"] = self.notes
        out["filters"] = self.filters.as_json()
        for e, item in zip(self.result.evidence, out["evidence"], strict=True):
            if self.dates == REAL:
                shown = self.study_date(e)
                item["shifted_study_date"] = item["study_date"]
                item["study_date"] = shown.isoformat() if shown else None
        if send:
            out["sent"] = [
                {"study_uid": q.study_uid, "kind": q.kind, "sop_instance_uid": q.sop_instance_uid}
                for q in self.sent
            ]
        if reveal:
            out["accession_numbers"] = self.revealed
        return out


def holds_vault_key(cfg: Config) -> bool:
    """Whether this user holds the vault's key: then dates are real.

    The vault is kept only with sending back enabled (``pipeline.parts``); a ``[deid]
    vault_key`` without it only encrypts the quarantine, and opens no study date.
    """
    return cfg.send.enabled and bool(cfg.deid.vault_key.strip())


def allowed(cfg: Config, *, send: bool = False, reveal: bool = False) -> None:
    """BadRequest unless this configuration may send and reveal as asked (checked before any work)."""
    if (send or reveal) and not cfg.send.enabled:
        raise BadRequest("--send and --reveal need sending back enabled ([send] enabled = true, with a vault key)")


def ask_question(
    cfg: Config,
    engine: Engine,
    question: str,
    filters: Filters,
    *,
    follow_up: int | None = None,
    send: bool = False,
    reveal: bool = False,
    actor: str | None = None,
    answerer: Answerer | None = None,
    retriever: Retriever | None = None,
) -> Asked:
    """Answer ``question`` within ``filters`` (dates real with the vault key), then send and reveal.

    Every step is audited: the question and its answer (``ask``), the real dates read
    (``real dates``), what was queued for the PACS (``send``), what was revealed (``reveal``).
    ``answerer`` and ``retriever`` reuse loaded models (``serve``); None builds them per call.
    """
    allowed(cfg, send=send, reveal=reveal)
    actor = actor or os_user()
    vault = _vault(cfg) if holds_vault_key(cfg) else None
    down, undated = filters, 0
    if vault is not None and (filters.since or filters.until):
        down, undated = _real_date_filters(engine, vault, filters)
    result = ask(engine, cfg.reasoning, question, down, follow_up=follow_up, actor=actor,
                 answerer=answerer, retriever=retriever)
    asked = Asked(result, REAL if vault is not None else SHIFTED, filters, undated=undated)
    if vault is not None and (result.studies or filters.since or filters.until):
        from apolo_node.send.reveal import study_dates

        real = study_dates(vault, result.studies)
        record_audit(engine, actor=actor, action="real dates", answer_id=result.answer_id,
                     detail="study date", studies=result.studies)
        asked = dataclasses.replace(asked, real_dates=real)
    if send and result.answer.citations:
        from apolo_node.pipeline.results import queue_answer

        sent = queue_answer(engine, Spool(cfg.spool_root), result)
        record_audit(engine, actor=actor, action="send", answer_id=result.answer_id,
                     detail=", ".join(sorted({q.kind for q in sent})), studies=[q.study_uid for q in sent])
        asked = dataclasses.replace(asked, sent=sent)
    if reveal:
        from apolo_node.send.reveal import accession_numbers

        revealed = accession_numbers(vault or _vault(cfg), result.studies)  # one vault per ask
        record_audit(engine, actor=actor, action="reveal", answer_id=result.answer_id,
                     detail="accession number", studies=result.studies)
        asked = dataclasses.replace(asked, revealed=revealed)
    return asked


def _vault(cfg: Config) -> Vault:
    from apolo_node.deid.vault import Vault

    return Vault.from_config(cfg)


def _real_date_filters(engine: Engine, vault: Vault, filters: Filters) -> tuple[Filters, int]:
    """``filters`` with its real dates turned into the studies dated within them; and how many had no date.

    A patient's shift lies between 0 (dates kept) and ``MAX_SHIFT_DAYS`` back, so a study taken
    within [since, until] has a catalog date within [since - MAX_SHIFT_DAYS, until], or none:
    only those are looked up in the vault.
    """
    from apolo_node.deid.dates import MAX_SHIFT_DAYS
    from apolo_node.send.reveal import study_dates

    low = filters.since - dt.timedelta(days=MAX_SHIFT_DAYS) if filters.since else None
    if filters.study_uid:
        candidates = [filters.study_uid]
    else:
        candidates = search.studies_dated(engine, low, filters.until)
    if len(candidates) > REAL_DATE_STUDIES_MAX:
        raise BadRequest(
            f"the dates reach {len(candidates)} studies, more than {REAL_DATE_STUDIES_MAX} to look up in "
            "the vault: narrow --since/--until, or name the study (--study)"
        )
    real = study_dates(vault, candidates)
    within = tuple(
        uid for uid, day in real.items()
        if day is not None and (not filters.since or day >= filters.since)
        and (not filters.until or day <= filters.until)
    )
    undated = sum(1 for day in real.values() if day is None)
    event(log, "ask.real_dates", candidates=len(candidates), within=len(within), undated=undated)
    return dataclasses.replace(filters, since=None, until=None, studies=within), undated

