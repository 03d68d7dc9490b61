"""``apolo-node``: the command line (a contract: scripts and people rely on it).

Exit codes: 0 done, 1 failed, 2 bad usage or input. A domain error becomes one clean line on
standard error; an unexpected one is reported by its type only, since its text could quote a
value from a dataset.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from apolo_node import __version__, logs
from apolo_node import config as config_mod
from apolo_node.config import Config, ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

# The catalog (SQLAlchemy, Alembic) and the model stages are imported by the commands that use
# them, not here: ``apolo-node deid`` over a folder should not pay for what it never touches.

app = typer.Typer(
    name="apolo-node",
    help="A DICOM node that puts medical AI next to a PACS without leaking patient identifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the catalog database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
quarantine_app = typer.Typer(
    help="Review what could not be de-identified: list, show, release, purge.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")

EXIT_FAILED = 1
EXIT_USAGE = 2


class BadInput(Exception):
    """The user's input is wrong (exit 2); the message says how."""


class NotYet(Exception):
    """What was asked for does not exist yet (exit 1): a study not yet reported."""


class Failed(Exception):
    """The command could not do its work (exit 1); the message says why, without PHI."""


F = TypeVar("F", bound=Callable[..., Any])


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"apolo-node {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", show_default=False,
            help="TOML settings file for the command (else $APOLO_CONFIG, else config/apolo.toml); "
            "a --config after the command's name wins",
        ),
    ] = None,
) -> None:
    """Options before any command's name."""
    if config is not None:  # every command reads it from there when not given its own
        os.environ["APOLO_CONFIG"] = str(config)


def clean_errors(fn: F) -> F:
    """Turn domain errors into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, BadInput, FileNotFoundError) as exc:
            typer.echo(f"apolo-node: error: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if isinstance(exc, _failures()):
                typer.echo(f"apolo-node: error: {exc}", err=True)
                raise typer.Exit(EXIT_FAILED) from None
            typer.echo(
                f"apolo-node: error: internal error ({type(exc).__name__}); see the logs",
                err=True,
            )
            logs.get_logger("cli").error("cli.failed", exc_info=True)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


def _failures() -> tuple[type[Exception], ...]:
    """Domain errors that mean "failed" (exit 1), imported only once one is to be told apart."""
    from apolo_node.catalog.migrate import SchemaError
    from apolo_node.vision.backend import BackendUnavailable

    return (SchemaError, BackendUnavailable, NotYet, Failed)


@contextmanager
def catalog(cfg: Config, at_head: bool = True) -> Iterator[Engine]:
    """The catalog's engine, checked to be at the newest schema, disposed of afterwards."""
    from apolo_node.catalog.engine import engine_for
    from apolo_node.catalog.migrate import require_head

    engine = engine_for(cfg)
    try:
        if at_head:
            require_head(engine)
        yield engine
    finally:
        engine.dispose()


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML settings file (else $APOLO_CONFIG, else config/apolo.toml)",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable JSON output")]


def load_config(path: Path | None) -> Config:
    cfg = config_mod.load(path)
    logs.setup(cfg.log.level, cfg.log.file)
    return cfg


@app.command()
@clean_errors
def serve(config: ConfigOption = None) -> None:
    """Run the DICOM SCP and the workers until SIGTERM or Ctrl-C."""
    from apolo_node.pipeline.node import Node

    cfg = load_config(config)
    Node(cfg).run_until_signalled()


@app.command()
@clean_errors
def worker(
    stage: Annotated[str, typer.Option("--stage", help="deidentify, describe or send")],
    concurrency: Annotated[int, typer.Option("--concurrency", help="jobs worked at once (threads)")] = 1,
    config: ConfigOption = None,
) -> None:
    """Work one pipeline stage on its own, beside `serve`, on a catalog and spool it shares."""
    from apolo_node.pipeline.stages import StageWorker

    cfg = load_config(config)
    StageWorker(cfg, stage, concurrency).run_until_signalled()


@db_app.command("upgrade")
@clean_errors
def db_upgrade(config: ConfigOption = None) -> None:
    """Bring the catalog to the newest schema (creating it if new)."""
    from apolo_node.catalog.migrate import current, head, upgrade

    cfg = load_config(config)
    with catalog(cfg, at_head=False) as engine:
        before = current(engine)
        upgrade(engine)
        after = current(engine)
    typer.echo(f"catalog schema: {before or 'empty'} -> {after} (head {head()})")


@db_app.command("rebuild-reports")
@clean_errors
def db_rebuild_reports(config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Catalogue each study's newest TID 1500 SR file again (after a lost or restored catalog)."""
    from apolo_node.pipeline.rebuild import rebuild_reports
    from apolo_node.spool import Spool

    cfg = load_config(config)
    with catalog(cfg) as engine:
        summary = rebuild_reports(engine, Spool(cfg.spool_root))
    if json_out:
        typer.echo(json.dumps({
            "reports": summary.reports, "findings": summary.findings,
            "unknown_studies": summary.unknown_studies, "unreadable": summary.unreadable,
        }, indent=2))
    else:
        typer.echo(
            f"rebuilt {summary.reports} reports with {summary.findings} findings; "
            f"{len(summary.unknown_studies)} SR folders of studies not in the catalog, "
            f"{len(summary.unreadable)} unreadable"
        )
        for line in summary.unreadable:
            typer.echo(f"  unreadable: {line}", err=True)
    if summary.unreadable:
        raise typer.Exit(EXIT_FAILED)


@app.command()
@clean_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders", show_default=False)],
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Feed DICOM files or folders through the pipeline, without the network."""
    from apolo_node.pipeline.ingest import ingest as run_ingest

    cfg = load_config(config)
    summary = run_ingest(cfg, paths)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "stored": summary.stored,
                    "duplicates": summary.duplicates,
                    "refused": [{"path": str(p), "reason": r} for p, r in summary.refused],
                    "skipped": [str(p) for p in summary.skipped],
                    "studies": sorted(summary.studies),
                }
            )
        )
    else:
        typer.echo(
            f"stored {summary.stored}, already held {summary.duplicates}, "
            f"refused {len(summary.refused)}, not DICOM {len(summary.skipped)}, "
            f"studies {len(summary.studies)}"
        )
        for path, reason in summary.refused:
            typer.echo(f"refused {path}: {reason}", err=True)
    if summary.refused:
        raise typer.Exit(EXIT_FAILED)


@app.command()
@clean_errors
def deid(
    source: Annotated[Path, typer.Argument(help="a DICOM file or a folder of them", show_default=False)],
    out: Annotated[Path, typer.Argument(help="folder for the de-identified files", show_default=False)],
    config: ConfigOption = None,
    quarantine: Annotated[
        Path | None,
        typer.Option(help="keep copies of the files that could not be cleaned here (they hold PHI)"),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """De-identify files or a folder with the configured PS3.15 profile, on their own."""
    from apolo_node.deid import Profile, deidentify_paths
    from apolo_node.deid.command import DUPLICATE_REASON

    cfg = load_config(config)
    Profile(cfg.deid.options)  # a bad option name is bad input, before any file is read
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise BadInput(f"OUT {out} must not be inside IN {source}")
    summary = deidentify_paths([source], out, cfg, quarantine_dir=quarantine)
    not_written = [o for o in summary.outcomes if o.status == "quarantined"]
    duplicates = [o for o in summary.outcomes if o.reason == DUPLICATE_REASON]
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "written": summary.written,
                    "quarantined": summary.quarantined,
                    "skipped": summary.skipped,
                    "outputs": [str(o.output) for o in summary.outcomes if o.status == "written"],
                    "refused": [{"path": str(o.source), "reason": o.reason} for o in not_written],
                    "duplicates": [{"path": str(o.source), "reason": o.reason} for o in duplicates],
                }
            )
        )
    else:
        typer.echo(
            f"written {summary.written}, quarantined {summary.quarantined}, "
            f"duplicates {len(duplicates)}, not DICOM {summary.skipped - len(duplicates)}"
        )
        for o in not_written:
            typer.echo(f"quarantined {o.source}: {o.reason}", err=True)
        for o in duplicates:
            typer.echo(f"skipped {o.source}: {o.reason}", err=True)
    if not_written:
        raise typer.Exit(EXIT_FAILED)


@app.command()
@clean_errors
def studies(
    config: ConfigOption = None,
    json_out: JsonOption = False,
    status: Annotated[
        str | None, typer.Option(help="only studies with this status", show_default=False)
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many, newest first")] = None,
) -> None:
    """List studies by pseudonymous UID, newest first."""
    cfg = load_config(config)
    if status is not None:
        from apolo_node.catalog.models import StudyStatus

        known = [s.value for s in StudyStatus]
        if status not in known:
            raise BadInput(f"--status must be one of {', '.join(known)}, got {status!r}")
    from apolo_node.catalog.records import list_studies

    with catalog(cfg) as engine:
        rows = list_studies(engine, status=status, limit=limit)
    if json_out:
        typer.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    table = Table(title=f"{len(rows)} studies")
    for col in ("study (pseudonym)", "status", "instances", "series", "modalities", "received"):
        table.add_column(col)
    for r in rows:
        status_text = r.status + (f" ({r.reason})" if r.reason else "")
        table.add_row(
            r.study_uid, status_text, str(r.instances), str(r.series), ",".join(r.modalities),
            r.received_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console(width=max(120, Console().width)).print(table)


@app.command()
@clean_errors
def report(
    study: Annotated[str, typer.Argument(help="the study's pseudonymous Study Instance UID")],
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a study's report: its narrative (findings text, impression), findings and TID 1500 SR."""
    from apolo_node.catalog.reports import report_for

    cfg = load_config(config)
    from apolo_node.catalog.records import list_studies

    with catalog(cfg) as engine:
        stored = report_for(engine, study)
        summary = None if stored else next((s for s in list_studies(engine) if s.study_uid == study), None)
    if stored is None:
        if summary is None:
            raise BadInput(f"study {study} is not in the catalog (see apolo-node studies)")
        raise NotYet(f"study {study} has no report yet (status: {summary.status})")
    if json_out:
        shown = stored.as_json()
        shown["sr_path"] = str(cfg.spool_root / stored.record.path)  # absolute (design.md)
        typer.echo(json.dumps(shown, indent=2))
        return
    r = stored.record
    console = Console(width=max(120, Console().width))
    console.print(f"study {r.study_uid}: SR {r.path}")
    console.print(
        f"{r.algorithm.name} {r.algorithm.version}: {r.images} images, {len(stored.findings)} findings, "
        f"{r.unparsed} unparsed"
    )
    for heading, text in (("Findings", r.narrative_findings), ("Impression", r.impression)):
        if text:
            console.print(f"\n[bold]{heading}[/bold]")
            console.print(text, markup=False, highlight=False)
    table = Table()
    for col in ("finding", "code", "instance / frame", "box (x1, y1, x2, y2)", "confidence", "measurements"):
        table.add_column(col)
    for f in stored.findings:
        box = ", ".join(f"{v:.0f}" for v in f.box.as_list()) if f.box else "-"
        table.add_row(
            f.label, f"{f.code.scheme} {f.code.value}", f"...{f.sop_instance_uid[-12:]} / {f.frame}", box,
            "-" if f.confidence is None else f"{f.confidence:.2f}",
            "; ".join(f"{m.name.meaning} {m.value:g} {m.unit.value}" for m in f.measurements) or "-",
        )
    console.print(table)


@app.command()
@clean_errors
def ask(
    question: Annotated[str, typer.Argument(help="the question, in plain words", show_default=False)],
    config: ConfigOption = None,
    json_out: JsonOption = False,
    study: Annotated[
        str | None, typer.Option(help="only this study (its pseudonymous Study Instance UID)", show_default=False)
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only studies dated on or after this day (YYYY-MM-DD)", show_default=False)
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="only studies dated on or before this day (YYYY-MM-DD)", show_default=False)
    ] = None,
    modality: Annotated[
        str | None, typer.Option(help="only series of this modality (CT, MR, CR, ...)", show_default=False)
    ] = None,
    body_part: Annotated[
        str | None,
        typer.Option("--body-part", help="only series of this body part (CHEST, HEAD, ...)", show_default=False),
    ] = None,
    send: Annotated[
        bool, typer.Option("--send", help="send the answer SR and the GSPS of its boxes to the PACS")
    ] = False,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="show the original accession numbers (needs the vault key; audited)")
    ] = False,
    follow_up: Annotated[
        int | None,
        typer.Option("--follow-up", help="continue the answer of this id (answer_id): its question, answer "
                     "and cited findings are the context", show_default=False),
    ] = None,
) -> None:
    """Answer a question from the catalog's findings, citing them; every question is audited.

    Names, patient IDs and other identifiers typed in the question are replaced by placeholders
    before it is stored or sent ([reasoning] identifiers_in_questions).
    """
    from apolo_node.pipeline.asking import BadRequest, allowed, ask_question
    from apolo_node.reasoning.remote import NodeRetriever
    from apolo_node.reasoning.ask import (
        QUESTION_MAX,
        Filters,
        IdentifiersInQuestion,
        UnknownAnswer,
        UnknownStudy,
        parse_date,
    )
    from apolo_node.reasoning.backend import AnswerFailed, ReasoningUnavailable

    cfg = load_config(config)
    try:
        allowed(cfg, send=send, reveal=reveal)
    except BadRequest as exc:
        raise BadInput(str(exc)) from None
    if not question.strip() or len(question.strip()) > QUESTION_MAX:
        raise BadInput(f"QUESTION must be 1-{QUESTION_MAX} characters, got {len(question.strip())}")
    try:
        first, last = parse_date(since, "--since"), parse_date(until, "--until")
        if first and last and first > last:
            raise ValueError(f"--since {first} is after --until {last}: no study date lies between")
        filters = Filters(study_uid=study, modality=modality, body_part=body_part, since=first, until=last)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    try:
        with catalog(cfg) as engine:
            asked = ask_question(cfg, engine, question, filters, follow_up=follow_up, send=send, reveal=reveal,
                                 retriever=NodeRetriever(engine, cfg))  # the running node's model, else here
    except (UnknownStudy, UnknownAnswer, IdentifiersInQuestion, BadRequest) as exc:
        raise BadInput(str(exc)) from None
    except _vault_error() as exc:  # looked up only when something failed: no pydicom per ask
        raise Failed(str(exc)) from None
    except (ReasoningUnavailable, AnswerFailed) as exc:
        typer.echo(f"apolo-node: error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if json_out:
        typer.echo(json.dumps(asked.as_json(send=send, reveal=reveal), indent=2))
        return
    _print_answer(asked)
    console = Console(width=max(120, Console().width))
    for q in asked.sent:
        console.print(f"queued for the PACS: {q.kind} {q.sop_instance_uid} (study {q.study_uid})")
    for study_uid, accession in asked.revealed.items():
        console.print(f"study {study_uid}: accession number {accession or '(none)'}")


def _vault_error() -> type[Exception]:
    """The vault's error class, imported on demand (the vault module loads pydicom)."""
    from apolo_node.deid.vault import VaultError

    return VaultError


def _print_answer(asked: Any) -> None:
    """An ``Asked`` for people: the answer, the evidence as a table, the trace, notes (dates' kind)."""
    from rich.markup import escape
    from rich.panel import Panel

    from apolo_node.reasoning import prompts
    from apolo_node.reasoning.evidence import ref

    console = Console(width=max(120, Console().width))
    result = asked.result
    answer = result.answer
    console.print(Panel(escape(answer.text), title=f"answer {result.answer_id} ({answer.backend})", expand=True))
    retrieved = result.retrieved
    table = Table(title=f"evidence: {len(result.evidence)} findings, {retrieved.mode} retrieval, "
                        f"{asked.dates} dates")
    for col in ("ref", "study (pseudonym)", "date", "modality / body part", "finding", "instance / frame",
                "box (x1, y1, x2, y2)", "confidence", "score", "cited"):
        table.add_column(col, overflow="fold")  # a UID is shown whole, never cut short
    cited = set(answer.citations)
    for k, e in enumerate(result.evidence):
        f = e.finding
        table.add_row(
            ref(k), e.study_uid, str(asked.study_date(e) or "-"),
            " / ".join(x or "-" for x in (e.modality, e.body_part)), escape(prompts.what(e)),
            f"...{f.sop_instance_uid[-12:]} / {f.frame}",
            ", ".join(f"{v:.0f}" for v in f.box.as_list()) if f.box else "-",
            "-" if f.confidence is None else f"{f.confidence:.2f}", f"{e.score:.3f}",
            "yes" if e.tracking_uid in cited else "",
        )
    if result.evidence:
        console.print(table)
    console.print(Panel(escape(answer.trace), title="trace", expand=True))
    notes = list(asked.notes)
    if answer.dropped_citations:
        notes.append(f"{answer.dropped_citations} citation(s) of findings not in the evidence were dropped")
    if retrieved.note:
        notes.append(retrieved.note)
    if result.replaced:
        notes.append("identifiers replaced by placeholders before the question was stored or sent: "
                     + ", ".join(result.replaced))
    for note in notes:
        console.print(f"note: {escape(note)}")


def _quarantine_rows(rows: list[Any], json_out: bool, title: str) -> None:
    if json_out:
        typer.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    table = Table(title=title)
    table.add_column("instance (pseudonym; its study: show)", no_wrap=True)  # whole, to copy
    for col in ("modality", "quarantined", "state", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        when = r.quarantined_at.strftime("%Y-%m-%d %H:%M:%S") if r.quarantined_at else "-"
        table.add_row(r.sop_instance_uid, r.modality or "-", when, r.state, r.reason)
    Console(width=max(160, Console().width)).print(table)


@quarantine_app.command("list")
@clean_errors
def quarantine_list(
    config: ConfigOption = None,
    json_out: JsonOption = False,
    study: Annotated[
        str | None, typer.Option(help="only this study (pseudonymous UID)", show_default=False)
    ] = None,
    purged: Annotated[bool, typer.Option("--purged", help="list purged instances too")] = False,
) -> None:
    """Quarantined instances with their reasons (element paths and rules, never values)."""
    from apolo_node.catalog.quarantine import list_quarantined

    with catalog(load_config(config)) as engine:
        rows = list_quarantined(engine, study_uid=study, purged=purged)
    _quarantine_rows(rows, json_out, f"{len(rows)} quarantined instances")


@quarantine_app.command("show")
@clean_errors
def quarantine_show(
    instance: Annotated[str, typer.Argument(help="pseudonymous SOP Instance UID", show_default=False)],
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """One quarantined instance: why, where in the data set, since when."""
    from apolo_node.catalog.models import InstanceState
    from apolo_node.catalog.quarantine import quarantined_instance

    with catalog(load_config(config)) as engine:
        row = quarantined_instance(engine, instance)
    if row is None or row.state not in (InstanceState.QUARANTINED.value, InstanceState.PURGED.value):
        raise BadInput(f"instance {instance} is not quarantined (see apolo-node quarantine list)")
    if json_out:
        typer.echo(json.dumps(row.as_json(), indent=2))
        return
    for key, value in row.as_json().items():
        typer.echo(f"{key}: {value if value is not None else '-'}")


@quarantine_app.command("release")
@clean_errors
def quarantine_release(
    instances: Annotated[list[str], typer.Argument(help="pseudonymous SOP Instance UIDs", show_default=False)],
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """After review: de-identify these again, with the same verifier (audited)."""
    from apolo_node.deid.quarantine import Quarantine, QuarantineError
    from apolo_node.pipeline.quarantine import NotQuarantined, find, release
    from apolo_node.reasoning.ask import os_user
    from apolo_node.spool import Spool

    cfg = load_config(config)
    with catalog(cfg) as engine:
        for uid in instances:  # every name checked before anything moves
            try:
                find(engine, uid)
            except NotQuarantined as exc:
                raise BadInput(str(exc)) from None
        box, spool, actor = Quarantine.from_config(cfg), Spool(cfg.spool_root), os_user()
        try:
            released = [release(engine, spool, box, uid, actor) for uid in instances]
        except (QuarantineError, NotQuarantined) as exc:
            raise Failed(str(exc)) from None
    if json_out:
        typer.echo(json.dumps({"released": [r.sop_instance_uid for r in released]}))
        return
    for r in released:
        typer.echo(f"released {r.sop_instance_uid}: queued for de-identification (study {r.study_uid})")


@quarantine_app.command("purge")
@clean_errors
def quarantine_purge(
    instances: Annotated[
        list[str] | None, typer.Argument(help="pseudonymous SOP Instance UIDs", show_default=False)
    ] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
    expired: Annotated[
        bool, typer.Option("--expired", help="every instance past [deid] quarantine_days")
    ] = False,
) -> None:
    """Delete quarantined originals for good (the catalog rows stay, marked purged; audited)."""
    from apolo_node.deid.quarantine import Quarantine, QuarantineError
    from apolo_node.pipeline.quarantine import NotQuarantined, find, purge
    from apolo_node.pipeline.quarantine import expired as expired_rows
    from apolo_node.reasoning.ask import os_user

    if bool(instances) == expired:
        raise BadInput("name the instances to purge, or give --expired (not both)")
    cfg = load_config(config)
    with catalog(cfg) as engine:
        if expired:
            rows, why = expired_rows(engine, cfg.deid.quarantine_days), "retention period"
        else:
            try:
                rows, why = [find(engine, uid) for uid in instances or []], "operator"
            except NotQuarantined as exc:
                raise BadInput(str(exc)) from None
        try:
            done = purge(engine, Quarantine.from_config(cfg), rows, actor=os_user(), why=why)
        except QuarantineError as exc:
            raise Failed(str(exc)) from None
    if json_out:
        typer.echo(json.dumps({"purged": done.sop_instance_uids}))
    else:
        typer.echo(f"purged {len(done.sop_instance_uids)} quarantined originals")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
