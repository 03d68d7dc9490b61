"""docs/conformance.md says what the code does: its SOP class, transfer syntax and settings
tables are compared with the SCP's accepted presentation contexts, what the SCU proposes for
the objects we write, and the configuration's defaults. ``python -m tests.test_conformance``
prints the tables as the code has them, to paste into the document after a change."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from pydicom.uid import UID

from apolo_node import config as config_mod
from apolo_node.findings import Box
from apolo_node.receive.scp import supported_contexts
from apolo_node.send.scu import proposed_transfer_syntaxes
from tests.sr_evidence import uid
from tests.test_send_scu import an_sr
from tests.test_sr_presentation_state import boxed, build, ct_slice

DOC = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"
SETTINGS = {  # (table, key): what the statement says about it
    ("receive", "ae_title"): "SCP AE title",
    ("receive", "port"): "SCP port",
    ("receive", "max_pdu"): "maximum PDU length received, bytes (0: unlimited)",
    ("receive", "max_associations"): "associations served at once",
    ("receive", "max_per_address"): "connections at once from one address",
    ("receive", "max_pending"): "connections not yet associated",
    ("receive", "artim_timeout"): "seconds to receive a whole A-ASSOCIATE-RQ (ARTIM)",
    ("receive", "request_timeout"): "seconds for one DIMSE message",
    ("receive", "network_timeout"): "seconds of silence before an association is dropped",
    ("receive", "max_instance_size"): "largest data set taken, bytes",
    ("receive", "max_depth"): "deepest sequence nesting taken",
    ("receive", "check_called_aet"): "refuse another called AE title",
    ("send", "ae_title"): "called AE title of the PACS",
    ("send", "calling_ae_title"): "SCU AE title",
    ("send", "timeout"): "SCU connection, ACSE, DIMSE and network timeout, seconds",
    ("send", "retry_base"): "first retry, seconds",
    ("send", "retry_max"): "longest wait between retries, seconds",
}


def scp_sop_classes() -> list[list[str]]:
    return [[UID(cx.abstract_syntax).name, f"`{cx.abstract_syntax}`", "SCP"] for cx in supported_contexts()]


def scp_transfer_syntaxes() -> list[list[str]]:
    [syntaxes] = {tuple(cx.transfer_syntax) for cx in supported_contexts()}  # the same for every class
    return [[UID(ts).name, f"`{ts}`"] for ts in syntaxes]


def scu_objects() -> list[list[str]]:
    """The objects the node writes and sends, with the transfer syntaxes proposed for each."""
    ct1 = ct_slice(uid())
    written = {
        "TID 1500 Measurement Report; answer SR (`ask --send`)": an_sr(),
        "grounding boxes (`ask --send`)": build([boxed(ct1, Box(10, 10, 30, 30))], [ct1]),
    }
    return [
        [UID(ds.SOPClassUID).name, f"`{ds.SOPClassUID}`", what,
         ", ".join(f"`{ts}`" for ts in proposed_transfer_syntaxes(ds))]
        for what, ds in written.items()
    ]


def settings_rows() -> list[list[str]]:
    cfg = config_mod.Config()
    rows = []
    for (table, key), meaning in SETTINGS.items():
        value = getattr(getattr(cfg, table), key)
        rows.append([f"`[{table}] {key}`", meaning, f"`{json_value(value)}`"])
    return rows


def json_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


TABLES = {
    "scp-sop-classes": scp_sop_classes,
    "scp-transfer-syntaxes": scp_transfer_syntaxes,
    "scu-sop-classes": scu_objects,
    "settings": settings_rows,
}


def document_table(name: str) -> list[list[str]]:
    """The rows of the markdown table after ``<!-- conformance:NAME -->`` (header skipped)."""
    text = DOC.read_text(encoding="utf-8")
    marker = f"<!-- conformance:{name} -->"
    assert text.count(marker) == 1, f"{DOC.name} must hold {marker} once"
    rows = []
    for line in text.split(marker, 1)[1].lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(rows) >= 2 and set(rows[1][0]) <= set("-: "), f"no table after {marker}"
    return rows[2:]


@pytest.mark.parametrize("name", list(TABLES))
def test_the_statement_lists_what_the_code_does(name: str) -> None:
    assert document_table(name) == TABLES[name](), (
        f"docs/conformance.md's {name} table differs from the code: "
        "run `python -m tests.test_conformance` and paste the table"
    )


def test_every_accepted_sop_class_takes_every_listed_transfer_syntax() -> None:
    listed = {row[1].strip("`") for row in document_table("scp-transfer-syntaxes")}
    for cx in supported_contexts():
        assert set(cx.transfer_syntax) == listed, cx.abstract_syntax


def test_a_drifted_table_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check fails when the document drops a SOP class the SCP accepts."""
    text = DOC.read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if "`1.2.840.10008.5.1.4.1.1.2`" in ln)  # CT Image Storage
    drifted = tmp_path / "conformance.md"
    drifted.write_text(text.replace(line + "\n", ""), encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.DOC", drifted)
    assert document_table("scp-sop-classes") != scp_sop_classes()


def test_the_statement_has_the_ps3_2_sections() -> None:
    headings = re.findall(r"^#+ (.+)$", DOC.read_text(encoding="utf-8"), flags=re.M)
    for needed in ("Conformance Statement Overview", "Networking", "Application Data Flow",
                   "AE Specifications", "Association Policies", "Security",
                   "Character Sets", "Configuration"):
        assert any(needed.lower() in h.lower() for h in headings), needed


def _print_tables() -> None:
    for name, rows in TABLES.items():
        print(f"<!-- conformance:{name} -->")
        for row in rows():
            print("| " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    _print_tables()
