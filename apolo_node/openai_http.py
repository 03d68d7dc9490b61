"""POST to an OpenAI-compatible ``/chat/completions`` with retries: the HTTP half of a backend.

Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and jitter,
honouring a short ``Retry-After``; other statuses fail at once. What still fails raises
``ChatServerError`` naming the URL (without credentials) and the last status. The API key goes
only into the Authorization header, and is scrubbed from any server text we quote.

Shared by the vision and reasoning backends, so it imports nothing of ours (logs go through
``logging`` with the ``fields`` our JSON formatter prints). A caller may pass a ``fallback``
that turns a refused request into another one tried at once (the vision backend drops
``response_format`` when a server refuses structured output).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger("apolo.openai_http")

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
RETRY_AFTER_MAX = 30.0  # seconds: a longer Retry-After is not waited for, our backoff is used
BACKOFF_MAX = 30.0  # seconds: the longest pause between two attempts


class ChatServerError(RuntimeError):
    """The server could not answer, after retries; the message names the URL and the status."""


def normalise_base_url(url: str) -> str:
    """``http://host:8000``, ``.../v1/`` or ``.../v1/chat/completions`` all become ``.../v1``."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be an http(s) base URL such as http://127.0.0.1:8000/v1, got {url!r}")
    base = url.strip().rstrip("/")
    for suffix in ("/chat/completions", "/completions", "/models"):
        base = base.removesuffix(suffix)
    return base if base.endswith("/v1") else f"{base}/v1"


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return None if when is None else max(when.timestamp() - time.time(), 0.0)


class ChatClient:
    """A pooled HTTP client for one server's ``/chat/completions``."""

    def __init__(
        self, url: str, *, api_key: str = "", timeout: float = 120.0, retries: int = 3,
        backoff: float = 0.5, what: str = "chat server", error: type[Exception] = ChatServerError,
        event: str = "chat",
    ) -> None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(backoff, (int, float)) or not backoff >= 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        self.base_url = normalise_base_url(url)
        self.shown_url = str(httpx.URL(self.base_url).copy_with(username=None, password=None))
        self.retries = retries
        self.backoff = float(backoff)
        self.what = what
        self.error = error  # raised when the server cannot answer
        self.event = event  # prefix of the retry log event, e.g. "vision.openai"
        self._key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(float(timeout), pool=None))

    def __repr__(self) -> str:
        return f"ChatClient(url={self.shown_url!r}, api_key=<{'set' if self._key else 'none'}>)"

    def post_chat(
        self, body: dict[str, Any],
        fallback: Callable[[int, str, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> Any:
        """POST ``body``, with retries; the parsed JSON of the 200 answer (None if not JSON).

        ``fallback(status, text, body)`` may answer a refused request with another body, sent
        at once without counting as a retry (it is asked once per body).
        """
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            wait: float | None = None
            try:
                response = self._client.post(url, json=body)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        return None
                if fallback is not None:
                    other = fallback(response.status_code, response.text, body)
                    if other is not None:
                        body, fallback = other, None
                        continue
                last = f"HTTP {response.status_code}"
                if response.status_code not in RETRY_STATUSES:
                    raise self.error(
                        f"{self.what} {self.shown_url} answered POST /chat/completions with {last}, "
                        f"not retried: {self.excerpt(response.text)}"
                    )
                wait = retry_after(response.headers.get("Retry-After"))
            if attempt >= self.retries:
                raise self.error(
                    f"{self.what} {self.shown_url} failed POST /chat/completions after {attempt + 1} "
                    f"attempt(s) ({self.retries} retries); last: {last}"
                )
            pause = min(self.backoff * 2**attempt, BACKOFF_MAX) * random.uniform(0.5, 1.5)
            if wait is not None and wait <= RETRY_AFTER_MAX:
                pause = max(pause, wait)
            log.warning(f"{self.event}.retry", extra={"fields": {
                "server": self.shown_url, "attempt": attempt + 1, "last": last, "pause": round(pause, 3),
            }})
            time.sleep(pause)
            attempt += 1

    def get_json(self, path: str, timeout: float) -> Any:
        """GET ``{base}{path}`` once (no retries); its JSON, or None on any error or status."""
        try:
            response = self._client.get(f"{self.base_url}{path}", timeout=timeout)
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def excerpt(self, text: str, limit: int = 200) -> str:
        """A short quote of the server's text, with the API key scrubbed should it echo it."""
        text = " ".join(text.split())
        if self._key:
            text = text.replace(self._key, "<api_key>")
        return text[:limit] + ("..." if len(text) > limit else "")

    def close(self) -> None:
        self._client.close()
