"""Safe free text: identifiers typed in a question never reach the catalog, the logs or an answerer."""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine

from apolo_node import config as config_mod
from apolo_node.catalog.answers import answer_by_id, audit_of
from apolo_node.config import Config, ReasoningSettings
from apolo_node.reasoning import identifiers
from apolo_node.reasoning.ask import Filters, IdentifiersInQuestion, ask
from apolo_node.reasoning.identifiers import (
    ACCESSION,
    BIRTH_DATE,
    EMAIL,
    NAME,
    NUMBER,
    PATIENT_ID,
    PHONE,
    scrub,
)
from tests.nodes import apolo, upgraded_engine
from tests.openai_server import OpenAIServer
from tests.test_reasoning_retrieval import three_studies

TEXT_ONLY = ReasoningSettings(semantic=False)

# Each rule: a question it must catch (with what must go) and one it must let through as typed.
CAUGHT = [
    ("Does Mary have a mass?", ["Mary"], NAME),
    ("Compare with Mary Smith's prior CT", ["Mary", "Smith"], NAME),
    ("nodule in patient John Doe?", ["John", "Doe"], NAME),
    ("any fracture for Mr. Xanthopoulos", ["Xanthopoulos"], NAME),
    ("Mrs. O'Brien has a mass", ["O'Brien"], NAME),
    ("Dr. Kowalczyk ordered a CT", ["Kowalczyk"], NAME),
    ("John's nodule, bigger?", ["John"], NAME),
    ("prior of DOE^JANE?", ["DOE^JANE"], NAME),
    ("姓名：张三 有骨折吗", ["张三"], NAME),
    ("MRN 12345678 metal?", ["12345678"], PATIENT_ID),
    ("patient id: PSN77X1 effusion?", ["PSN77X1"], PATIENT_ID),
    ("病历号 A0099 有气胸吗", ["A0099"], PATIENT_ID),
    ("accession RX2024-0001 nodule?", ["RX2024-0001"], ACCESSION),
    ("DOB 1961-03-12 any lesion?", ["1961-03-12"], BIRTH_DATE),
    ("born on 12 March 1961, any lesion?", ["12 March 1961"], BIRTH_DATE),
    ("call 555-123-4567 about the nodule", ["555-123-4567"], PHONE),
    ("SSN 123-45-6789 any nodule", ["123-45-6789"], PATIENT_ID),
    ("call +1 (555) 123 4567 about the nodule", ["+1 (555) 123 4567"], PHONE),
    ("mail jane.doe@example.org the effusion", ["jane.doe@example.org"], EMAIL),
    ("pneumothorax in 1234567?", ["1234567"], NUMBER),
]
KEPT = [
    "Is there a mass in the left lung?",  # "mass" is no name
    "Will it grow? May it be a Brain lesion? Mark the box.",  # names that are English or medical words
    "CT 2024: any nodule since 2024-01-10?",  # a year and a (shifted) study date are no phone
    "what changed between 2023 2024?",
    "Compare study 2.25.123456789012345678901234567 with the prior",  # a pseudonymous UID
    "6 mm nodule at T12 and L4-L5, grade 2, 12.5 mm2",
    "MRN unknown: any metal?",  # a cue without a value holding a digit
    "Did patient CT show a nodule? Patient MRI of the HEAD?",  # modalities after a name cue
    "Any change between 03/12/2021 and 2024-01-10?",  # dates without a birth cue
    "Which accession numbers were sent back for the CT?",
    "nodule @ right upper lobe, DOB unknown",  # no e-mail address, no date after the birth cue
    "有金属吗？",
]


@pytest.mark.parametrize(("question", "values", "kind"), CAUGHT)
def test_each_rule_catches_its_identifier(question: str, values: list[str], kind: str) -> None:
    done = scrub(question)
    for value in values:
        assert value not in done.text
    assert kind in done.kinds and identifiers.PLACEHOLDERS[kind] in done.text


@pytest.mark.parametrize("question", KEPT)
def test_medical_words_dates_and_pseudonyms_pass_as_typed(question: str) -> None:
    done = scrub(question)
    assert (done.text, done.kinds, done.replaced) == (question, (), 0)


def planted() -> dict[str, str]:
    """Identifiers no catalog, log or request could hold by chance."""
    digits = str(secrets.randbelow(9 * 10**7) + 10**7)
    return {
        "surname": "Q" + "".join(secrets.choice("bcdfghjklmnpqrstvwxz") for _ in range(8)),
        "mrn": digits,
        "accession": f"ACC{secrets.randbelow(10**6):06d}",
        "phone": f"555-{secrets.randbelow(900) + 100}-{secrets.randbelow(9000) + 1000}",
        "email": f"x{secrets.token_hex(3)}@example.org",
    }


def question_with(p: dict[str, str]) -> str:
    return (f"Does Mary {p['surname'].capitalize()} (MRN {p['mrn']}, accession {p['accession']}, "
            f"phone {p['phone']}, {p['email']}) have a pneumothorax or a mass?")


def test_planted_identifiers_reach_neither_catalog_nor_logs_nor_the_answer_server(cfg: Config) -> None:
    p = planted()
    upgraded_engine(cfg).dispose()
    engine = upgraded_engine(cfg)
    try:
        three_studies(engine)
    finally:
        engine.dispose()
    with OpenAIServer(default_content="A pneumothorax [F1].") as server:
        cfg = config_mod.replace(cfg, reasoning={"semantic": False, "backend": "openai", "model": "test-model",
                                                 "url": server.url}, log={"level": "DEBUG"})
        done = apolo(cfg, "ask", question_with(p), "--json")
        table = apolo(cfg, "ask", question_with(p))
        sent = json.dumps([r.json for r in server.requests])
    assert done.returncode == 0 and table.returncode == 0, done.stderr + table.stderr
    assert ("note: identifiers replaced by placeholders before the question was stored or sent: name, patient ID, "
            "accession number, phone number, e-mail address") in " ".join(table.stdout.split())
    shown = json.loads(done.stdout)
    assert shown["identifiers_replaced"] == [NAME, PATIENT_ID, ACCESSION, PHONE, EMAIL]
    assert "[NAME] [NAME] (MRN [PATIENT-ID]" in shown["question"] and "pneumothorax" in sent
    with sqlite3.connect(cfg.catalog_url.removeprefix("sqlite:///")) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        stored = json.dumps([db.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables], ensure_ascii=False, default=repr)
    assert "[PATIENT-ID]" in stored  # the question was stored, scrubbed
    for name, value in p.items():
        for place, text in (("catalog", stored), ("logs", done.stderr + table.stderr),
                            ("output", done.stdout + table.stdout), ("request", sent)):
            assert value.lower() not in text.lower(), f"{name} in {place}"


def test_refuse_makes_such_a_question_an_error_that_does_not_repeat_it(cfg: Config) -> None:
    p = planted()
    upgraded_engine(cfg).dispose()
    refusing = config_mod.replace(cfg, reasoning={"semantic": False, "identifiers_in_questions": "refuse"})
    done = apolo(refusing, "ask", question_with(p))
    assert done.returncode == 2
    assert "the question holds identifiers (name, patient ID, accession number, phone number, e-mail address)" in (
        done.stderr)
    assert all(v.lower() not in (done.stderr + done.stdout).lower() for v in p.values())
    with sqlite3.connect(cfg.catalog_url.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT count(*) FROM answer").fetchone() == (0,)
    kept = apolo(refusing, "ask", "Is there a mass in the left lung?")
    assert kept.returncode == 0, kept.stderr


def test_ask_stores_and_audits_the_scrubbed_question(engine: Engine) -> None:
    three_studies(engine)
    result = ask(engine, TEXT_ONLY, "Does Mary have a pneumothorax?", Filters(), actor="dr-who")
    assert result.question == "Does [NAME] have a pneumothorax?" and result.replaced == (NAME,)
    assert [e.finding.label for e in result.evidence][:1] == ["Pneumothorax"]  # placeholders are not searched
    stored = answer_by_id(engine, result.answer_id)
    assert stored is not None and stored.question == result.question
    assert [a.detail for a in audit_of(engine, result.answer_id)] == [result.question]
    with pytest.raises(IdentifiersInQuestion, match=r"holds identifiers \(name\)"):
        ask(engine, ReasoningSettings(semantic=False, identifiers_in_questions="refuse"), "Mary?", Filters())


def test_a_long_hostile_question_is_scrubbed_quickly() -> None:
    import time

    question = ("1-" * 1000 + "Mary^" * 200 + "a@" * 300)[:4000]
    started = time.perf_counter()
    scrub(question)
    assert time.perf_counter() - started < 1.0
