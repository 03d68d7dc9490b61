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
