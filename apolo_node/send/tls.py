"""TLS for the C-STORE SCU: the PACS proves who it is before any PHI-bearing result goes out.

With ``[send] tls_ca`` set, every association to the PACS runs over TLS 1.2 or newer, and the
PACS's certificate must chain to that bundle and name ``[send] host`` (an IP address SAN for an
address, a DNS SAN for a name). ``tls_cert``/``tls_key`` add a client certificate for a PACS
that asks for one. A handshake that fails is remembered on the context with its reason (the
verifier's message or the TLS alert, never a value of the object), so the outbox row can say
why it is waiting rather than only that the association failed.
"""

from __future__ import annotations

import ssl
from typing import Any

from apolo_node.config import ConfigError, SendSettings


class _RecordingSocket(ssl.SSLSocket):
    """An SSL socket whose failed handshake leaves its reason on its context."""

    def connect(self, addr: Any) -> None:
        try:
            super().connect(addr)
        except ssl.SSLError as exc:  # the certificate or the handshake, not the TCP connection
            self.context.handshake_failure = handshake_reason(exc)  # type: ignore[attr-defined]
            raise


class ClientContext(ssl.SSLContext):
    """A client context that keeps the reason of its last failed handshake."""

    sslsocket_class = _RecordingSocket
    handshake_failure: str | None = None


def handshake_reason(exc: ssl.SSLError) -> str:
    """Why a handshake failed, in the library's words: a verify message or an alert name."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or type(exc).__name__)


def client_context(settings: SendSettings) -> ClientContext | None:
    """A fresh TLS client context from ``[send]``, or None for plain TCP.

    Raises ``ConfigError`` naming the setting when a file cannot be loaded.
    """
    if not settings.tls_ca:
        return None
    ctx = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its name by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(settings.tls_ca)
        if settings.tls_cert:
            ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[send] tls_ca/tls_cert/tls_key could not be loaded: {exc.__class__.__name__}: {exc}"
        ) from None
    return ctx
