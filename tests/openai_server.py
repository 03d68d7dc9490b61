"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, with answers a test scripts.

It speaks the two routes our backends use, in the shapes vLLM and SGLang give them:
``POST /v1/chat/completions`` and ``GET /v1/models`` (vLLM's model cards, with ``root`` naming
the weights). A test decides each answer, in this order: ``responder`` (a callable that may
return a ``Reply`` or None), then the replies queued for that path, then the default (a chat
completion with ``default_content``, or the model list). Every request is recorded
(``requests``), and every answer once written (``answered``), so a test can check what was sent
and in what order the answers went out. Vision and reasoning stages both use it.

    with OpenAIServer() as server:
        server.queue(Reply(503), Reply(body=chat_completion('{"findings": []}')))
        backend = OpenAIBackend(server.url, "test-model")
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from PIL import Image

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, body (JSON-able, or str/bytes sent as is), delay, headers."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request as the server saw it; header names are lower-case, ``json`` None if not JSON."""

    method: str
    path: str
    headers: Mapping[str, str]
    json: Any
    at: float  # time.monotonic() on arrival

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages", []))

    def image_urls(self) -> list[str]:
        """Every ``image_url`` URL of every message, in order."""
        urls = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, list):
                urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        return urls

    def images(self) -> list[Image.Image]:
        """The images sent as base64 data URLs, decoded."""
        out = []
        for url in self.image_urls():
            header, _, data = url.partition(",")
            if not header.startswith("data:image/") or not header.endswith(";base64"):
                raise ValueError(f"image_url is not a base64 data URL: {url[:40]!r}")
            image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
            image.load()
            out.append(image)
        return out

    def text(self) -> str:
        """All text the messages carry, joined: what a responder may key its answer on."""
        parts = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p.get("text", "") for p in content if p.get("type") == "text"]
        return "\n".join(parts)


def chat_completion(
    content: str | None, model: str = "test-model", finish_reason: str = "stop"
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` body with one choice whose message holds ``content``."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def error_body(message: str, status: int = 400, type_: str = "BadRequestError") -> dict[str, Any]:
    """An error body as vLLM and OpenAI write it."""
    return {"error": {"message": message, "type": type_, "param": None, "code": status}}


def model_list(models: Mapping[str, str | None]) -> dict[str, Any]:
    """vLLM's ``GET /v1/models`` body: one card per served name, ``root`` the weights' path or id."""
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": 32768,
                "permission": [],
            }
            for name, root in models.items()
        ],
    }


class OpenAIServer:
    """An OpenAI-compatible server in a thread; a context manager; ``url`` ends in ``/v1``."""

    def __init__(
        self,
        models: Mapping[str, str | None] | None = None,
        default_content: str = '{"findings": []}',
    ) -> None:
        self.models: dict[str, str | None] = dict(models or {"test-model": "/models/test-model"})
        self.default_content = default_content
        self.responder: Callable[[Received], Reply | None] | None = None
        self.requests: list[Received] = []
        self.answered: list[Received] = []
        self._queues: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------
    def queue(self, *replies: Reply, path: str = CHAT_PATH) -> None:
        """Answer the next requests to ``path`` with these replies, in order."""
        with self._lock:
            self._queues.setdefault(path, deque()).extend(replies)

    def received(self, path: str = CHAT_PATH) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _decide(self, request: Received) -> Reply:
        if self.responder is not None:
            reply = self.responder(request)
            if reply is not None:
                return reply
        with self._lock:
            pending = self._queues.get(request.path)
            if pending:
                return pending.popleft()
        if request.method == "POST" and request.path == CHAT_PATH:
            model = (request.json or {}).get("model", "test-model")
            return Reply(body=chat_completion(self.default_content, model=model))
        if request.method == "GET" and request.path == MODELS_PATH:
            return Reply(body=model_list(self.models))
        return Reply(
            404,
            error_body(f"no route {request.method} {request.path}", 404, "NotFoundError"),
        )

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go as two writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                request = Received(
                    method=self.command,
                    path=self.path.split("?", 1)[0],
                    headers={k.lower(): v for k, v in self.headers.items()},
                    json=parsed,
                    at=time.monotonic(),
                )
                with server._lock:
                    server.requests.append(request)
                reply = server._decide(request)
                if reply.delay and server._stopping.wait(reply.delay):
                    return
                if isinstance(reply.body, bytes):
                    payload, kind = reply.body, "application/octet-stream"
                elif isinstance(reply.body, str):
                    payload, kind = reply.body.encode(), "text/plain; charset=utf-8"
                else:
                    payload = json.dumps(reply.body if reply.body is not None else {}).encode()
                    kind = "application/json"
                try:
                    self.send_response(reply.status, HTTPStatus(reply.status).phrase)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (its timeout): nothing to answer
                with server._lock:
                    server.answered.append(request)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(**kwargs: Any) -> Iterator[OpenAIServer]:
    """The body of a pytest fixture: ``yield from serve()``."""
    with OpenAIServer(**kwargs) as server:
        yield server
