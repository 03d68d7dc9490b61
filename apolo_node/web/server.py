"""The HTTP side inside serve: uvicorn on a thread, next to the SCP and the workers.

The socket is bound here, before serve reports itself started, so that a port already taken
stops serve at once with a message naming the setting, not later in a thread nobody watches.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import uvicorn
from fastapi import FastAPI

from apolo_node.config import ConfigError, WebSettings
from apolo_node.logs import event, get_logger

log = get_logger("web")
STARTUP_TIMEOUT = 30.0


def bind(web: WebSettings) -> socket.socket:
    """A listening socket on [web] host and port; ConfigError naming them if that fails."""
    try:
        infos = socket.getaddrinfo(web.host, web.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"[web] host {web.host!r} cannot be listened on ({exc.strerror or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"[web] port {web.port} on {web.host} cannot be listened on ({exc.strerror or exc}): "
            "choose another [web] port, or set [web] enabled = false"
        ) from None
    sock.set_inheritable(True)
    return sock


class WebServer:
    """Serves one app on [web] host:port until ``stop``."""

    def __init__(self, app: FastAPI, web: WebSettings) -> None:
        self.web = web
        ssl_options: dict[str, object] = {}
        if web.tls_cert:
            ssl_options = {"ssl_certfile": web.tls_cert, "ssl_keyfile": web.tls_key}
            if web.tls_ca:
                ssl_options |= {"ssl_ca_certs": web.tls_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        self.server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5,
            # uvicorn counts the connection asking too: this lets max_connections in, not one fewer
            limit_concurrency=web.max_connections + 1,
            **ssl_options,  # type: ignore[arg-type]
        ))
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one asked for, or the one given for port 0)."""
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        """Bind, then serve on a thread; returns once uvicorn has started (or raises)."""
        self._socket = bind(self.web)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, name="web", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the HTTP side did not start (see the logs)")
            time.sleep(0.02)
        scheme = "https" if self.web.tls_cert else "http"
        event(log, "web.listening", url=f"{scheme}://{self.web.host}:{self.port}")

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop taking connections, let requests in flight finish (a few seconds), close."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
