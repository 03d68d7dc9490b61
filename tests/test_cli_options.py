"""Options before any command's name (design.md's command line): ``--version``, ``--config``."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

import apolo_node
from apolo_node.config import Config
from tests.nodes import apolo


def test_version_prints_the_package_version(cfg: Config) -> None:
    done = apolo(cfg, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"apolo-node {apolo_node.__version__}\n"
    assert apolo_node.__version__ == version("apolo-node")  # __init__ and pyproject agree


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_before_or_after_the_command_name(cfg: Config, tmp_path: Path, where: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[receive]\nmax_associations = 0\n")
    args = ["--config", str(bad), "studies"] if where == "before" else ["studies", "--config", str(bad)]
    done = apolo(cfg, *args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "apolo-node: error: [receive] max_associations must be >= 1, got 0"
    ]


def test_config_before_names_a_missing_file(cfg: Config, tmp_path: Path) -> None:
    done = apolo(cfg, "--config", str(tmp_path / "nowhere.toml"), "studies")
    assert done.returncode == 2
    assert "nowhere.toml does not exist" in done.stderr


def test_an_ask_loads_neither_pydicom_nor_the_vault_unless_it_needs_them() -> None:
    # A CLI ask through the running node is mostly imports: the vault (and pydicom with it)
    # loads only for a key holder's dates, --send or --reveal, or to name a vault failure.
    import subprocess
    import sys

    code = (
        "import sys, apolo_node.cli, apolo_node.pipeline.asking, apolo_node.reasoning.remote\n"
        "print(sorted(m for m in ('pydicom', 'apolo_node.deid', 'highdicom') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    from apolo_node.cli import _vault_error
    from apolo_node.deid.vault import VaultError

    assert _vault_error() is VaultError
