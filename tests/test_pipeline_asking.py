"""``pipeline.asking``: real dates through the vault for those who hold its key, shifted ones said so.

A study taken 2024-01-02 is catalogued under its shifted date; ``--since 2024-01-01`` finds it
with the vault key and not without, and no real date reaches the catalog or the logs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, inspect, text

from apolo_node import config as config_mod
from apolo_node.catalog.answers import audit_of
from apolo_node.catalog.engine import engine_for
from apolo_node.config import Config
from apolo_node.deid.vault import Vault
from apolo_node.pipeline.asking import REAL, SHIFTED, BadRequest, ask_question
from apolo_node.pipeline.ingest import ingest
from apolo_node.reasoning.ask import Filters
from tests.nodes import apolo, upgraded_engine
from tests.synthetic import new_marker, phantom_ct
from tests.test_reasoning_retrieval import Seen, add_study

REAL_A, SHIFTED_A = dt.date(2024, 1, 2), dt.date(2019, 8, 26)  # patient A's shift: -1590 days
REAL_B, SHIFTED_B = dt.date(2023, 6, 1), dt.date(2020, 1, 1)  # patient B's: another
SHIFTED_C = dt.date(2023, 12, 31)  # a study the vault holds nothing of (sent before the key)
NODULE = [Seen("Nodule", "Solid nodule of 6 mm in the right upper lobe", "right upper lobe", 0.6)]


def with_key(cfg: Config, key: str) -> Config:
    """``cfg`` whose user holds the vault key (sending back on: the vault is kept), or not (``key`` empty)."""
    return config_mod.replace(cfg, deid={"vault_key": key}, send={"enabled": bool(key)},
                              reasoning={"semantic": False})


def original(study_uid: str, day: dt.date) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "DOE^JANE", "MRN-77", "ACC9"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, f"{study_uid}.1", f"{study_uid}.1.1"
    ds.StudyDate = day.strftime("%Y%m%d")
    return ds


@pytest.fixture
def catalog(cfg: Config) -> tuple[Config, Engine]:
    """Three reported studies under shifted dates; the vault holds the real dates of A and B."""
    key = Fernet.generate_key().decode()
    cfg = with_key(cfg, key)
    engine = upgraded_engine(cfg)
    vault = Vault.from_config(cfg)
    for uid, shifted, real in (("2.25.71", SHIFTED_A, REAL_A), ("2.25.72", SHIFTED_B, REAL_B),
                               ("2.25.73", SHIFTED_C, None)):
        add_study(engine, uid, modality="CT", body_part="CHEST", date=shifted, seen=NODULE)
        if real is not None:
            vault.put(uid, f"{uid}.1.1", original(f"1.2.3.{uid[-2:]}", real))
    return cfg, engine


def studies_found(cfg: Config, engine: Engine, **dates: dt.date) -> set[str]:
    return set(ask_question(cfg, engine, "Is there a nodule?", Filters(**dates)).result.studies)


# (the dates a user gives, the studies found with the vault key, and without it)
DATE_CASES = [
    ({"since": dt.date(2024, 1, 1)}, {"2.25.71"}, set()),  # real 2024-01-02: only with the key
    ({"since": REAL_A, "until": REAL_A}, {"2.25.71"}, set()),  # inclusive
    ({"since": dt.date(2024, 1, 3)}, set(), set()),
    ({"until": dt.date(2023, 12, 31)}, {"2.25.72"}, {"2.25.71", "2.25.72", "2.25.73"}),
    ({"since": dt.date(2019, 8, 1), "until": dt.date(2019, 9, 1)}, set(), {"2.25.71"}),  # A's shifted date
]


@pytest.mark.parametrize(("dates", "with_vault_key", "without"), DATE_CASES)
def test_dates_are_real_with_the_vault_key_and_shifted_without(
    catalog: tuple[Config, Engine], dates: dict[str, dt.date], with_vault_key: set[str], without: set[str]
) -> None:
    cfg, engine = catalog
    assert studies_found(cfg, engine, **dates) == with_vault_key
    assert studies_found(with_key(cfg, ""), engine, **dates) == without


def test_real_dates_are_shown_audited_and_never_stored_or_logged(
    catalog: tuple[Config, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, engine = catalog
    with caplog.at_level(logging.DEBUG):
        asked = ask_question(cfg, engine, "Is there a nodule?", Filters(since=dt.date(2024, 1, 1)), actor="dr-who")
    assert asked.dates == REAL and asked.undated == 1  # C: the vault holds no date of it
    shown = asked.as_json()
    [item] = shown["evidence"]
    assert (item["study_date"], item["shifted_study_date"]) == (REAL_A.isoformat(), SHIFTED_A.isoformat())
    assert shown["dates"] == "real" and shown["filters"]["since"] == "2024-01-01"
    assert any("no real date in the vault" in n for n in shown["date_notes"])
    audit = audit_of(engine, asked.result.answer_id)
    assert [(a.actor, a.action, a.detail, a.studies) for a in audit][1:] == [
        ("dr-who", "real dates", "study date", ("2.25.71",))
    ]
    with engine.connect() as conn:
        stored = " ".join(
            str(row) for table in inspect(engine).get_table_names()
            for row in conn.execute(text(f'SELECT * FROM "{table}"'))
        )
    assert SHIFTED_A.isoformat() in stored  # the dump holds the catalog's dates ...
    for day in (REAL_A, REAL_B, dt.date(2024, 1, 1)):  # ... and never a real one, nor the filter's
        for form in (day.isoformat(), day.strftime("%Y%m%d")):
            assert form not in stored and form not in caplog.text, form


def test_without_the_vault_key_every_date_says_it_is_shifted(catalog: tuple[Config, Engine]) -> None:
    cfg, engine = catalog
    asked = ask_question(with_key(cfg, ""), engine, "Is there a nodule?", Filters(study_uid="2.25.71"))
    shown = asked.as_json()
    assert asked.dates == SHIFTED and shown["dates"] == "shifted" and "shifted" in shown["date_notes"][0]
    assert shown["evidence"][0]["study_date"] == SHIFTED_A.isoformat()
    assert "shifted_study_date" not in shown["evidence"][0]
    assert [a.action for a in audit_of(engine, asked.result.answer_id)] == ["ask"]  # no vault read
    # A vault key that only encrypts the quarantine (no sending back, so no vault) opens no date.
    quarantine_only = config_mod.replace(cfg, send={"enabled": False})
    asked = ask_question(quarantine_only, engine, "Is there a nodule?", Filters(since=SHIFTED_A, until=SHIFTED_A))
    assert asked.dates == SHIFTED and asked.result.studies == ["2.25.71"]


def test_a_named_study_is_checked_against_real_dates_too(catalog: tuple[Config, Engine]) -> None:
    cfg, engine = catalog
    assert studies_found(cfg, engine, since=REAL_A) == {"2.25.71"}
    named = ask_question(cfg, engine, "nodule?", Filters(study_uid="2.25.72", since=REAL_A))
    assert named.result.evidence == ()
    named = ask_question(cfg, engine, "nodule?", Filters(study_uid="2.25.72", until=REAL_B))
    assert named.result.studies == ["2.25.72"]


def test_send_and_reveal_need_sending_back_before_anything_is_asked(catalog: tuple[Config, Engine]) -> None:
    cfg, engine = catalog
    cfg = config_mod.replace(cfg, send={"enabled": False})
    with pytest.raises(BadRequest, match="--send and --reveal need sending back enabled"):
        ask_question(cfg, engine, "nodule?", Filters(), reveal=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM answer")).scalar_one() == 0


def test_ask_on_an_ingested_study_takes_its_real_date_with_the_key(tmp_path: Path, cfg: Config) -> None:
    """The real de-identifier shifts the date, the real vault keeps it, the CLI turns one into the other."""
    key = Fernet.generate_key().decode()
    cfg = config_mod.replace(with_key(cfg, key), log={"file": str(tmp_path / "apolo.log")})
    marker = new_marker()
    (tmp_path / "in").mkdir()
    ds = phantom_ct(study_uid=generate_uid(), series_uid=generate_uid(), marker=marker)
    ds.StudyDate = "20240102"
    ds.save_as(tmp_path / "in" / "ct.dcm", enforce_file_format=True)
    upgraded_engine(cfg).dispose()
    assert ingest(cfg, [tmp_path / "in"]).stored == 1

    real = apolo(cfg, "ask", "Is there any metal?", "--since", "2024-01-01", "--json")
    assert real.returncode == 0, real.stderr
    shown = json.loads(real.stdout)
    assert shown["dates"] == "real" and shown["citations"]
    assert {e["study_date"] for e in shown["evidence"]} == {"2024-01-02"}
    [shifted_day] = {e["shifted_study_date"] for e in shown["evidence"]}
    assert shifted_day < "2023-01-03"  # moved back a year or more

    no_key = with_key(cfg, "")
    missed = apolo(no_key, "ask", "Is there any metal?", "--since", "2024-01-01", "--json")
    assert missed.returncode == 0, missed.stderr
    assert json.loads(missed.stdout)["evidence"] == [] and json.loads(missed.stdout)["dates"] == "shifted"
    table = apolo(no_key, "ask", "Is there any metal?", "--since", shifted_day, "--until", shifted_day)
    assert table.returncode == 0, table.stderr
    assert "retrieval, shifted dates" in table.stdout and shifted_day in table.stdout
    assert "dates are shifted (de-identified)" in " ".join(table.stdout.split())

    engine = engine_for(cfg)
    try:
        with engine.connect() as conn:
            stored = " ".join(
                str(r) for t in ("study", "answer", "audit") for r in conn.execute(text(f"SELECT * FROM {t}"))
            )
    finally:
        engine.dispose()
    logged = (tmp_path / "apolo.log").read_text() if (tmp_path / "apolo.log").exists() else ""
    for form in ("2024-01-02", "20240102", "2024-01-01", "20240101", marker):
        assert form not in stored and form not in logged, form
