"""Settings: defaults, environment overrides, refusals, and the docs staying true."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from apolo_node import config as config_mod
from apolo_node.config import ConfigError

TOML = Path(__file__).resolve().parents[1] / "config" / "apolo.toml"


def test_documented_file_equals_the_declared_defaults() -> None:
    from_file = config_mod.load(TOML, env={})
    assert from_file == config_mod.Config()


def test_every_setting_is_documented_with_a_comment() -> None:
    text = TOML.read_text()
    parsed = tomllib.loads(text)
    for table, cls in config_mod.tables().items():
        assert table in parsed, f"[{table}] missing from {TOML.name}"
        for f in dataclasses.fields(cls):
            assert f.name in parsed[table], f"[{table}] {f.name} missing from {TOML.name}"
            assert f.metadata.get("help"), f"[{table}] {f.name} has no help text"
            block = text.split(f"[{table}]", 1)[1]
            assert re.search(rf"#[^\n]*\n(#[^\n]*\n)*{f.name} =", block), (
                f"[{table}] {f.name} has no comment line above it in {TOML.name}"
            )


def test_environment_overrides_the_file() -> None:
    cfg = config_mod.load(
        TOML,
        env={
            "APOLO_RECEIVE__PORT": "11113",
            "APOLO_RECEIVE__ALLOWED_AETS": "PACS1, PACS2",
            "APOLO_SEND__ENABLED": "yes",
            "APOLO_RECEIVE__STABLE_AFTER": "2.5",
        },
    )
    assert cfg.receive.port == 11113
    assert cfg.receive.allowed_aets == ["PACS1", "PACS2"]
    assert cfg.send.enabled is True
    assert cfg.receive.stable_after == 2.5


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"APOLO_RECEIVE__PORT": "eleven"}, r"\[receive\] port must be int, got 'eleven'"),
        ({"APOLO_RECEIVE__PORT": "70000"}, r"port must be 1-65535, got 70000"),
        ({"APOLO_RECEIVE__NOPE": "1"}, r"APOLO_RECEIVE__NOPE names no setting"),
        ({"APOLO_SEND__ENABLED": "maybe"}, r"\[send\] enabled must be true or false, got 'maybe'"),
        ({"APOLO_RECEIVE__TLS_CERT": "/x.pem"}, r"tls_cert and tls_key go together"),
        ({"APOLO_RECEIVE__ALLOWED_ADDRESSES": "10.0.0.0/33"}, r"'10.0.0.0/33' is not an address"),
        ({"APOLO_RECEIVE__AE_TITLE": "A" * 17}, r"ae_title must be 1-16 characters"),
        ({"APOLO_REASONING__IDENTIFIERS_IN_QUESTIONS": "keep"},
         r"\[reasoning\] identifiers_in_questions must be one of replace, refuse, got 'keep'"),
        ({"APOLO_REASONING__EMBEDDING": "bert"}, r"\[reasoning\] embedding must be one of auto, minilm"),
        ({"APOLO_WEB__STOW_MAX_PARTS": "0"}, r"\[web\] stow_max_body and stow_max_parts must be >= 1"),
    ],
)
def test_bad_values_are_refused_by_name(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_mod.load(TOML, env=env)


def test_unknown_keys_and_tables_in_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[receive]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key \[receive\] prot"):
        config_mod.load(bad, env={})
    bad.write_text("[recieve]\nport = 1\n")
    with pytest.raises(ConfigError, match=r"unknown table \[recieve\]"):
        config_mod.load(bad, env={})
    bad.write_text("[receive]\nport = '11112'\n")
    with pytest.raises(ConfigError, match=r"\[receive\] port must be int, got '11112'"):
        config_mod.load(bad, env={})


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config_mod.load(tmp_path / "nope.toml", env={})
