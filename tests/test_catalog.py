"""The catalog on SQLite and PostgreSQL: migrations, instance records, stable studies, the job queue."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine, inspect

from apolo_node.catalog import jobs
from apolo_node.catalog.migrate import SchemaError, current, head, require_head
from apolo_node.catalog.engine import make_engine
from apolo_node.catalog.models import utcnow
from apolo_node.catalog.records import (
    InstanceRecord,
    list_studies,
    queue_stable_studies,
    record_instance,
)


def rec(study: str, series: str, sop: str) -> InstanceRecord:
    return InstanceRecord(
        study_uid=study, series_uid=series, sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT", path=f"incoming/{study}/{sop}.dcm", size=100, calling_aet="SCU",
    )


def test_upgrade_reaches_head_and_makes_every_table(engine: Engine) -> None:
    assert current(engine) == head()
    tables = set(inspect(engine).get_table_names())
    assert {"study", "series", "instance", "job", "alembic_version"} <= tables


def test_an_empty_catalog_is_refused_with_the_command_to_run(catalog_url: str) -> None:
    eng = make_engine(catalog_url)
    with pytest.raises(SchemaError, match="run `apolo-node db upgrade`"):
        require_head(eng)
    eng.dispose()


def test_instances_are_counted_once_per_sop_instance_uid(engine: Engine) -> None:
    assert record_instance(engine, rec("2.25.1", "2.25.11", "2.25.111")) is True
    assert record_instance(engine, rec("2.25.1", "2.25.11", "2.25.112")) is True
    assert record_instance(engine, rec("2.25.1", "2.25.12", "2.25.121")) is True
    assert record_instance(engine, rec("2.25.1", "2.25.11", "2.25.111")) is False
    [study] = list_studies(engine)
    assert (study.study_uid, study.status, study.instances, study.series) == ("2.25.1", "receiving", 3, 2)
    assert study.modalities == ["CT"]


def test_concurrent_writers_of_one_new_study_lose_nothing(engine: Engine) -> None:
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            for i in range(10):
                record_instance(engine, rec("2.25.7", f"2.25.7{n}", f"2.25.7{n}{i:02d}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    [study] = list_studies(engine)
    assert (study.instances, study.series) == (40, 4)


def test_a_quiet_study_is_queued_once_and_reopened_by_a_late_instance(engine: Engine) -> None:
    t0 = utcnow()
    record_instance(engine, rec("2.25.2", "2.25.21", "2.25.211"), now=t0)
    assert queue_stable_studies(engine, 30, now=t0 + dt.timedelta(seconds=10)) == []
    assert queue_stable_studies(engine, 30, now=t0 + dt.timedelta(seconds=31)) == ["2.25.2"]
    assert queue_stable_studies(engine, 30, now=t0 + dt.timedelta(seconds=62)) == []
    assert jobs.job_states(engine, "2.25.2") == [("deidentify", "pending")]

    record_instance(engine, rec("2.25.2", "2.25.21", "2.25.212"), now=t0 + dt.timedelta(seconds=70))
    [study] = list_studies(engine)
    assert study.status == "receiving" and study.instances == 2
    assert jobs.job_states(engine, "2.25.2") == [("deidentify", "cancelled")]
    assert queue_stable_studies(engine, 30, now=t0 + dt.timedelta(seconds=101)) == ["2.25.2"]
    assert jobs.job_states(engine, "2.25.2") == [("deidentify", "cancelled"), ("deidentify", "pending")]


def queued_study(engine: Engine, uid: str) -> None:
    t0 = utcnow() - dt.timedelta(seconds=100)
    record_instance(engine, rec(uid, uid + ".1", uid + ".11"), now=t0)
    assert queue_stable_studies(engine, 30) == [uid]


def test_a_job_is_claimed_by_one_worker_and_finished_by_it_only(engine: Engine) -> None:
    queued_study(engine, "2.25.3")
    job = jobs.claim(engine, "deidentify", "w1", lease=60)
    assert job is not None and job.study_uid == "2.25.3" and job.attempts == 1
    assert jobs.claim(engine, "deidentify", "w2", lease=60) is None
    assert jobs.heartbeat(engine, job, "w1", lease=60)
    assert not jobs.finish(engine, job, "w2")
    assert jobs.finish(engine, job, "w1")
    assert jobs.job_states(engine, "2.25.3") == [("deidentify", "done")]
    assert jobs.claim(engine, "deidentify", "w2", lease=60) is None


def test_a_job_whose_worker_died_is_claimed_again(engine: Engine) -> None:
    queued_study(engine, "2.25.4")
    first = jobs.claim(engine, "deidentify", "dead", lease=5)
    assert first is not None
    later = utcnow() + dt.timedelta(seconds=6)
    again = jobs.claim(engine, "deidentify", "alive", lease=60, now=later)
    assert again is not None and again.id == first.id and again.attempts == 2
    assert not jobs.finish(engine, first, "dead"), "the dead worker lost its claim"
    assert jobs.fail(engine, again, "alive", "could not decode 2 instances")
    assert jobs.job_states(engine, "2.25.4") == [("deidentify", "failed")]


def test_a_job_that_keeps_killing_workers_fails_the_study(engine: Engine) -> None:
    queued_study(engine, "2.25.5")
    now = utcnow()
    for attempt in range(3):
        job = jobs.claim(engine, "deidentify", f"w{attempt}", lease=1, now=now, max_attempts=3)
        assert job is not None and job.attempts == attempt + 1
        now += dt.timedelta(seconds=2)
    assert jobs.claim(engine, "deidentify", "w9", lease=1, now=now, max_attempts=3) is None
    [study] = list_studies(engine)
    assert study.status == "failed" and "gave up after 3 attempts" in (study.reason or "")


def test_many_workers_claim_each_job_exactly_once(engine: Engine) -> None:
    for n in range(12):
        queued_study(engine, f"2.25.6{n:02d}")
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (job := jobs.claim(engine, "deidentify", name, lease=60)) is not None:
            with lock:
                claimed.append(job.id)
            assert jobs.finish(engine, job, name)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 12 and len(set(claimed)) == 12


def test_migrations_upgrade_rows_in_place_and_downgrade_to_nothing(catalog_url: str) -> None:
    from sqlalchemy import text

    from apolo_node.catalog.migrate import upgrade

    eng = make_engine(catalog_url)
    upgrade(eng, "0001")
    with eng.begin() as conn:  # a row as the 0001 schema had it
        now = {"t": utcnow()}
        conn.execute(text(
            "INSERT INTO study (id, study_uid, status, instances, received_at, last_received_at,"
            " updated_at) VALUES (1, '2.25.8', 'receiving', 1, :t, :t, :t)"), now)
        conn.execute(text("INSERT INTO series (id, study_id, series_uid) VALUES (1, 1, '2.25.81')"))
        conn.execute(text(
            "INSERT INTO instance (study_id, series_id, sop_instance_uid, sop_class_uid,"
            " transfer_syntax_uid, path, size, received_at) VALUES (1, 1, '2.25.811', '1.2', '1.2',"
            " 'incoming/x.dcm', 1, :t)"), now)
    upgrade(eng)
    with eng.connect() as conn:
        assert conn.execute(text("SELECT state FROM instance")).scalar_one() == "received"
    from alembic import command

    from apolo_node.catalog.migrate import alembic_config

    acfg = alembic_config(catalog_url)
    with eng.begin() as conn:
        acfg.attributes["connection"] = conn
        command.downgrade(acfg, "base")
    assert "instance" not in inspect(eng).get_table_names()
    eng.dispose()


def test_a_study_is_not_settled_while_instances_wait_and_keeps_a_job_for_them(engine: Engine) -> None:
    from apolo_node.catalog.cleaning import mark_clean, pending_instances, settle_study

    t0 = utcnow() - dt.timedelta(seconds=300)
    for sop in ("2.25.911", "2.25.912"):
        record_instance(engine, rec("2.25.9", "2.25.91", sop), now=t0)
    assert queue_stable_studies(engine, 30, now=t0 + dt.timedelta(seconds=31)) == ["2.25.9"]
    first = jobs.claim(engine, "deidentify", "worker-a", 60)
    assert first is not None
    listed = pending_instances(engine, first.study_id)  # the job lists its instances ...
    record_instance(engine, rec("2.25.9", "2.25.91", "2.25.913"), now=t0 + dt.timedelta(seconds=40))
    assert queue_stable_studies(engine, 30, now=t0 + dt.timedelta(seconds=71)) == ["2.25.9"]
    for inst in listed:  # ... and cleans them while a late one waits, its study queued again
        mark_clean(engine, inst.id, f"clean/{inst.sop_instance_uid}.dcm")
    assert settle_study(engine, first.study_id) is None
    [study] = list_studies(engine)
    assert study.status == "queued", "not reported before every instance is clean"
    assert jobs.job_states(engine, "2.25.9") == [("deidentify", "claimed"), ("deidentify", "pending")]

    assert jobs.claim(engine, "deidentify", "worker-b", 60) is None  # one job of a study at a time
    assert jobs.finish(engine, first, "worker-a")
    second = jobs.claim(engine, "deidentify", "worker-b", 60)
    assert second is not None and second.id != first.id
    assert settle_study(engine, first.study_id) is None  # the waiting one still waits: a job again
    assert [s for _, s in jobs.job_states(engine, "2.25.9")].count("pending") == 1
    [late] = pending_instances(engine, second.study_id)
    mark_clean(engine, late.id, "clean/late.dcm")
    assert settle_study(engine, second.study_id) == "deidentified"
