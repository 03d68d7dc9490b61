"""HTTPS on the HTTP side, and client certificates (``[web] tls_cert, tls_key, tls_ca``): the
TLS handshake refuses a client without a certificate the CA signed, and lets one with it in
without a token, which is what lets serve listen beyond loopback on certificates alone."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from apolo_node.config import ConfigError
from apolo_node.web.app import create_app
from apolo_node.web.server import WebServer
from tests.conftest import make_config
from tests.nodes import upgraded_engine
from tests.tls_certs import Authority

# how a connection the TLS handshake refused ends, depending on when the client notices
REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def test_client_certificates_are_required_and_are_enough(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "pki", "web-ca")
    stranger_ca = Authority.create(tmp_path / "pki", "other-ca")
    server_cert = ca.issue(tmp_path / "pki", "node")
    client = ca.issue(tmp_path / "pki", "client")
    stranger = stranger_ca.issue(tmp_path / "pki", "stranger")
    cfg = make_config(tmp_path, web={
        "tls_cert": str(server_cert.cert), "tls_key": str(server_cert.key), "tls_ca": str(ca.cert),
    })
    upgraded_engine(cfg).dispose()
    server = WebServer(create_app(cfg), cfg.web)
    server.start()
    url = f"https://127.0.0.1:{server.port}"
    try:
        trusted = httpx.get(f"{url}/", verify=client_context(ca.cert, client.cert, client.key))
        for who in (client_context(ca.cert), client_context(ca.cert, stranger.cert, stranger.key)):
            with pytest.raises(REFUSED):
                httpx.get(f"{url}/healthz", verify=who).raise_for_status()
        with pytest.raises(REFUSED):  # plain HTTP is not served at all
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=3).raise_for_status()
        again = httpx.get(f"{url}/healthz", verify=client_context(ca.cert, client.cert, client.key))
    finally:
        server.stop()
    assert trusted.status_code == 200 and "apolo-node" in trusted.text
    assert again.status_code == 200  # the refusals left the server serving


def test_client_certificates_need_https_and_allow_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[web\] tls_ca \(client certificates\) needs tls_cert and tls_key"):
        make_config(tmp_path, web={"tls_ca": "/ca.pem"})
    with pytest.raises(ConfigError, match=r"\[web\] tls_cert and tls_key go together"):
        make_config(tmp_path, web={"tls_cert": "/c.pem"})
    cfg = make_config(tmp_path, web={
        "host": "0.0.0.0", "tls_cert": "/c.pem", "tls_key": "/k.pem", "tls_ca": "/ca.pem",
    })
    upgraded_engine(cfg).dispose()
    assert create_app(cfg).state.access.client_certs
