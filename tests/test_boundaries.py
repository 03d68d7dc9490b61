"""The module table of shared/design.md, held by reading every import of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "apolo_node"

# module -> the modules of ours it may import (design.md, plus the small shared helpers:
# `logs`, `durable` (crash-safe file writes), `pseudonym` (keyed UIDs, needed on the PHI
# side to name files and rows) and `findings` (findings as data, shared by vision, sr, the
# catalog and reasoning, so that none of them imports another) and `openai_http` (the HTTP and
# retry half of the OpenAI-compatible backends of vision and reasoning) and `hf_local` (what
# their transformers backends share: the ml extra check, the device, a loading error's line)
# and `plugins` (how both build the backend the configuration names) and `metrics` (this
# process's Prometheus counters, counted where things happen: the store path, the stages) and
# `spool` (the spool's folders, named in one place, and its crash-safe incoming files; the
# stages after the wall never import it: the pipeline hands them what they read).
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "logs": set(),
    "durable": set(),
    "pseudonym": {"config"},
    "findings": set(),
    "openai_http": set(),
    "hf_local": set(),
    "plugins": set(),
    "metrics": set(),
    "spool": {"durable", "pseudonym", "config"},
    "catalog": {"config", "logs", "findings"},
    "receive": {"config", "catalog", "logs", "pseudonym", "durable", "metrics", "spool"},
    "deid": {"config", "catalog", "logs", "pseudonym", "durable", "spool"},
    "imaging": set(),
    "vision": {"config", "imaging", "logs", "findings", "openai_http", "hf_local", "plugins", "metrics"},
    "sr": {"findings"},
    "reasoning": {"config", "catalog", "logs", "findings", "openai_http", "hf_local", "plugins"},
    "send": {"config", "catalog", "logs", "deid.vault", "pseudonym", "durable"},
    "pipeline": {"*"},
    "web": {"*"},
    "cli": {"*"},
}
PHI_SIDE = {"receive", "deid"}


def imports_of(path: Path) -> set[str]:
    """Our top-level modules (or deid.vault) that a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "apolo_node" or len(parts) < 2:
                continue
            found.add("deid.vault" if parts[1:3] == ["deid", "vault"] else parts[1])
    return found


def owner(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_the_design_allows(path: Path) -> None:
    me = owner(path)
    assert me in ALLOWED, f"{me} is not in the module table: add it to design and to this test"
    allowed = ALLOWED[me]
    if "*" in allowed:
        return
    for imported in imports_of(path) - {me}:
        if imported == "deid.vault" and me == "deid":
            continue
        base = imported.split(".")[0]
        assert imported in allowed or (base in allowed and imported != "deid.vault"), (
            f"{path.relative_to(PACKAGE)} imports apolo_node.{imported}; {me} may import only "
            f"{sorted(allowed) or 'nothing of ours'}"
        )


def test_the_stages_after_the_wall_never_reach_the_phi_side() -> None:
    for stage in ("vision", "reasoning", "imaging", "sr"):
        assert not (ALLOWED[stage] & (PHI_SIDE | {"deid.vault"})), stage
