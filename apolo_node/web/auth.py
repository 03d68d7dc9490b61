"""Who may use the HTTP side: everything but /healthz and /metrics sits behind ``require_access``.

Bound to loopback, only this machine can connect, so no credential is needed unless a token is
set. Beyond loopback, serve refuses to start without a token or client certificates
(``Access.from_settings``). A client certificate is checked by the TLS handshake itself
(``[web] tls_ca`` makes it required), so a request that arrives over such a listener has one.
A token comes as ``Authorization: Bearer <token>``, or as the password of HTTP Basic (any user
name) so that a person's browser can ask for it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, status

from apolo_node.config import ConfigError, WebSettings

REALM = 'Basic realm="apolo-node", charset="UTF-8"'


def is_loopback(host: str) -> bool:
    """True when an address (or ``localhost``) can be reached only from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class Access:
    """The rule one app applies: the token (empty: none), client certificates, loopback."""

    token: str = ""
    client_certs: bool = False
    loopback: bool = True

    @classmethod
    def from_settings(cls, web: WebSettings) -> Access:
        """The rule [web] asks for; refuses a listener beyond loopback with no credential."""
        token = web.token.strip()
        if not token and web.token_file:
            path = Path(web.token_file).expanduser()
            try:
                token = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"[web] token_file cannot be read ({type(exc).__name__})") from None
            if not token:
                raise ConfigError("[web] token_file is empty")
        access = cls(token=token, client_certs=bool(web.tls_ca), loopback=is_loopback(web.host))
        if not access.loopback and not access.token and not access.client_certs:
            raise ConfigError(
                f"[web] host {web.host!r} is beyond loopback: set [web] token "
                "(APOLO_WEB__TOKEN or token_file) or tls_ca (client certificates), "
                "or listen on 127.0.0.1"
            )
        return access

    def allows(self, authorization: str | None) -> bool:
        """Whether a request with this Authorization header (or none) may pass."""
        if self.client_certs:
            return True  # the handshake required and verified a client certificate
        if self.token:
            given = _credential(authorization or "")
            return given is not None and hmac.compare_digest(given, self.token.encode())
        return self.loopback


def _credential(header: str) -> bytes | None:
    """The token in a Bearer header, or the password of a Basic one; None if neither."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value.encode()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _, sep, password = decoded.partition(b":")
        return password if sep else None
    return None


async def require_access(request: Request) -> None:
    """FastAPI dependency: 401 unless the app's ``Access`` rule lets this request through."""
    access: Access = getattr(request.app.state, "access", None) or Access(loopback=False)
    if not access.allows(request.headers.get("authorization")):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="access token or client certificate required ([web] token, [web] tls_ca)",
            headers={"WWW-Authenticate": REALM},
        )
