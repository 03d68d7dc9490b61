"""Access to the HTTP side: the rule of each binding, what it refuses and what it lets through."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from apolo_node.config import ConfigError, WebSettings
from apolo_node.web.auth import Access, is_loopback


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "node.example.org"])
def test_addresses_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_beyond_loopback_with_no_credential_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"\[web\] host '0.0.0.0' is beyond loopback: set \[web\] token"):
        Access.from_settings(WebSettings(host="0.0.0.0"))


def test_beyond_loopback_with_a_token_or_client_certificates_is_allowed() -> None:
    assert Access.from_settings(WebSettings(host="0.0.0.0", token="t0k")).token == "t0k"
    certs = Access.from_settings(WebSettings(host="0.0.0.0", tls_cert="c", tls_key="k", tls_ca="ca"))
    assert certs.client_certs and certs.allows(None)


def test_loopback_without_a_token_lets_requests_through() -> None:
    assert Access.from_settings(WebSettings()).allows(None)


def test_token_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "web.token"
    f.write_text("from-file\n")
    access = Access.from_settings(WebSettings(host="0.0.0.0", token_file=str(f)))
    assert access.allows("Bearer from-file")
    f.write_text("  \n")
    with pytest.raises(ConfigError, match=r"\[web\] token_file is empty"):
        Access.from_settings(WebSettings(token_file=str(f)))
    with pytest.raises(ConfigError, match=r"\[web\] token_file cannot be read \(FileNotFoundError\)"):
        Access.from_settings(WebSettings(token_file=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer wrong", "Bearer s3cret-not", "Basic !!!", basic("u", "wrong"),
     "Basic " + base64.b64encode(b"s3cret").decode(), "Token s3cret"],
)
def test_a_set_token_refuses_anything_else(header: str | None) -> None:
    assert not Access(token="s3cret", loopback=False).allows(header)
    assert not Access(token="s3cret", loopback=True).allows(header)  # set: needed on loopback too


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer  s3cret ", basic("anyone", "s3cret"), basic("", "s3cret")])
def test_a_set_token_lets_the_token_through(header: str) -> None:
    assert Access(token="s3cret", loopback=False).allows(header)


def test_no_rule_on_the_app_means_no_access() -> None:
    assert not Access(loopback=False).allows("Bearer anything")
