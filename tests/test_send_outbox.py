"""The outbox on both catalogs: queued once, claimed when due, retried with backoff, sent once."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import Engine, insert, select

from apolo_node.catalog import outbox
from apolo_node.catalog.models import Audit, Outbox, Report, Study, StudyStatus, utcnow
from apolo_node.send.retry import JITTER, retry_delay

LEASE = 60.0


def new_study(engine: Engine, status: StudyStatus = StudyStatus.REPORTED) -> str:
    uid = generate_uid(prefix=None)
    with engine.begin() as conn:
        conn.execute(insert(Study).values(study_uid=uid, status=status.value))
    return uid


def queue(engine: Engine, study_uid: str, kind: str = "report_sr") -> str:
    sop = generate_uid(prefix=None)
    assert outbox.enqueue(engine, study_uid, kind, sop, f"reports/{study_uid}/{sop}.dcm")
    return sop


def status_of(engine: Engine, study_uid: str) -> str:
    with engine.connect() as conn:
        return conn.execute(select(Study.status).where(Study.study_uid == study_uid)).scalar_one()


def test_queuing_the_same_object_twice_keeps_one_row(engine: Engine) -> None:
    study = new_study(engine)
    sop = queue(engine, study)
    assert not outbox.enqueue(engine, study, "gsps", sop, "elsewhere.dcm")
    [row] = outbox.outbox_rows(engine, study)
    assert (row.sop_instance_uid, row.kind, row.state, row.attempts) == (sop, "report_sr", "pending", 0)
    assert outbox.outbox_rows(engine, new_study(engine)) == []
    with pytest.raises(ValueError, match="kind must be one of report_sr, answer_sr, gsps, got 'pdf'"):
        outbox.enqueue(engine, study, "pdf", generate_uid(prefix=None), "x.dcm")
    with pytest.raises(ValueError, match="relative to the spool root, got '/etc/x.dcm'"):
        outbox.enqueue(engine, study, "gsps", generate_uid(prefix=None), "/etc/x.dcm")
    with pytest.raises(LookupError, match="study 2.25.1 is not in the catalog"):
        outbox.enqueue(engine, "2.25.1", "gsps", generate_uid(prefix=None), "x.dcm")


def test_a_claim_takes_due_rows_only_and_holds_them_for_its_lease(engine: Engine) -> None:
    study = new_study(engine)
    first, second = queue(engine, study), queue(engine, study)
    now = utcnow() + dt.timedelta(seconds=1)
    a = outbox.claim_due(engine, "w1", now, LEASE)
    b = outbox.claim_due(engine, "w2", now, LEASE)
    assert a is not None and b is not None
    assert (a.sop_instance_uid, b.sop_instance_uid) == (first, second)
    assert (a.study_uid, a.kind, a.attempts) == (study, "report_sr", 0)
    assert outbox.claim_due(engine, "w3", now, LEASE) is None  # both held
    # w1 died: once its lease ran out the row is due again, and w1's token no longer marks it
    late = now + dt.timedelta(seconds=LEASE + 1)
    again = outbox.claim_due(engine, "w3", late, LEASE)
    assert again is not None and again.id in (a.id, b.id)
    stale = a if again.id == a.id else b
    assert not outbox.mark_retry(engine, stale.id, "late", late, lease_until=stale.lease_until)
    assert outbox.mark_retry(engine, again.id, "down", late, lease_until=again.lease_until)


def test_a_retry_counts_the_attempt_keeps_the_error_and_waits(engine: Engine) -> None:
    study = new_study(engine)
    queue(engine, study)
    now = utcnow() + dt.timedelta(seconds=1)
    claim = outbox.claim_due(engine, "w", now, LEASE)
    assert claim is not None
    later = now + dt.timedelta(seconds=30)
    error = "PACS@127.0.0.1:4242 did not answer"
    assert outbox.mark_retry(engine, claim.id, error, later, lease_until=claim.lease_until)
    [row] = outbox.outbox_rows(engine, study)
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, error)
    assert row.next_attempt_at == later
    assert outbox.claim_due(engine, "w", later - dt.timedelta(seconds=1), LEASE) is None
    claim = outbox.claim_due(engine, "w", later, LEASE)
    assert claim is not None and claim.attempts == 1


def test_the_study_is_sent_once_every_row_is_sent_and_only_from_reported(engine: Engine) -> None:
    study, other = new_study(engine), new_study(engine, StudyStatus.DEIDENTIFIED)
    queue(engine, study)
    queue(engine, study, "gsps")
    queue(engine, other)
    now = utcnow() + dt.timedelta(seconds=1)
    done = []
    while (claim := outbox.claim_due(engine, "w", now, LEASE)) is not None:
        done.append(
            outbox.mark_sent(engine, claim.id, lease_until=claim.lease_until, worker="host:1:send0")
        )
        if len(done) == 1:
            assert status_of(engine, study) == "reported"  # one of its two rows still pending
    assert [d.marked for d in done] == [True, True, True]
    assert [d.study_sent for d in done] == [False, True, False]
    assert status_of(engine, study) == "sent" and status_of(engine, other) == "deidentified"
    assert {r.state for r in outbox.outbox_rows(engine)} == {"sent"}
    assert all(r.sent_at is not None for r in outbox.outbox_rows(engine))
    # sent rows are never claimed or marked again; each send is audited once
    assert outbox.claim_due(engine, "w", now + dt.timedelta(days=1), LEASE) is None
    assert not outbox.mark_sent(engine, outbox.outbox_rows(engine)[0].id).marked
    with engine.connect() as conn:
        audits = conn.execute(select(Audit.action, Audit.actor, Audit.studies)).all()
    assert len(audits) == 3 and {a.action for a in audits} == {"send"}
    assert sum(study in a.studies for a in audits) == 2


def test_a_failed_row_keeps_its_reason_and_is_not_claimed_again(engine: Engine) -> None:
    study = new_study(engine)
    queue(engine, study)
    now = utcnow() + dt.timedelta(seconds=1)
    claim = outbox.claim_due(engine, "w", now, LEASE)
    assert claim is not None
    reason = "refused: PACS answered C-STORE status 0xA900"
    assert outbox.mark_failed(engine, claim.id, reason, lease_until=claim.lease_until)
    [row] = outbox.outbox_rows(engine, study)
    assert (row.state, row.attempts, row.last_error) == ("failed", 1, reason)
    assert outbox.claim_due(engine, "w", now + dt.timedelta(days=1), LEASE) is None
    assert status_of(engine, study) == "reported"


def test_on_postgresql_a_row_locked_by_another_claim_is_skipped(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; on SQLite BEGIN IMMEDIATE serialises claims")
    study = new_study(engine)
    first, second = queue(engine, study), queue(engine, study)
    with engine.connect() as other:  # another node in the middle of claiming the first row
        other.execute(select(Outbox.id).where(Outbox.sop_instance_uid == first).with_for_update())
        claim = outbox.claim_due(engine, "w", utcnow() + dt.timedelta(seconds=1), LEASE)
        assert claim is not None and claim.sop_instance_uid == second
        other.rollback()


def test_the_retry_delay_doubles_up_to_its_cap_with_bounded_jitter() -> None:
    rng = random.Random(7)
    waits = [retry_delay(n, 5.0, 600.0, rng) for n in range(12)]
    for n, wait in enumerate(waits):
        expected = min(5.0 * 2**n, 600.0)
        assert expected <= wait <= expected * (1 + JITTER)
    assert retry_delay(10_000, 5.0, 600.0) <= 600.0 * (1 + JITTER)  # never an overflow
    assert len({round(retry_delay(3, 5.0, 600.0, rng), 6) for _ in range(20)}) > 1  # jittered
    with pytest.raises(ValueError, match="attempts must be >= 0, got -1"):
        retry_delay(-1, 5.0, 600.0)
    with pytest.raises(ValueError, match="cap >= base, got base=5.0, cap=1.0"):
        retry_delay(0, 5.0, 1.0)


def test_own_objects_are_the_study_s_report_and_queued_results(engine: Engine) -> None:
    study, other = new_study(engine), new_study(engine)
    queued = {queue(engine, study), queue(engine, study, "gsps")}
    queue(engine, other)
    report_sop, report_series = generate_uid(prefix=None), generate_uid(prefix=None)
    with engine.begin() as conn:
        study_id = conn.execute(select(Study.id).where(Study.study_uid == study)).scalar_one()
        conn.execute(insert(Report).values(
            study_id=study_id, sop_instance_uid=report_sop, series_uid=report_series,
            path=f"reports/{study}/{report_sop}.dcm", algorithm="test", algorithm_version="1",
        ))
    assert outbox.own_objects(engine, study) == queued | {report_sop, report_series}
