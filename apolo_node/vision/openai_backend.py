"""The ``openai`` vision backend: any OpenAI-compatible chat server (vLLM, SGLang) over HTTP.

Each image goes as its own ``POST {base}/chat/completions`` with the model family's prompt
(``vision.profiles``, chosen by ``[vision] profile``, or from the served name and, where that
says nothing, from the weights ``GET /models`` names), the image as a PNG
data URL and, for our own JSON profile, our findings schema as ``response_format``; the requests of one batch are
sent at once, because the server batches them on the GPU. A server that refuses
``response_format`` is asked again without it, and never again with it (the prompt asks for the
same JSON). Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and
jitter; what still fails raises ``VisionServerError`` and the caller decides about the study.
The API key goes only into the Authorization header: never into a log, an error or a repr.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from apolo_node.config import VisionSettings
from apolo_node.findings import Algorithm
from apolo_node.imaging import ModelImage
from apolo_node.logs import event, get_logger
from apolo_node.openai_http import ChatClient, ChatServerError, normalise_base_url  # noqa: F401 (re-exported)
from apolo_node.vision import grounding, profiles, prompts
from apolo_node.vision.backend import Context, Described, VisionBackend

log = get_logger("vision.openai")

MODELS_TIMEOUT = 10.0  # seconds: GET /models only names the weights; it must not hold a study
ALGORITHM_VERSION_MAX = 64  # TID 4019 Algorithm Version is LO
UNKNOWN_VERSION = "unknown"


class VisionServerError(ChatServerError):
    """The vision server could not answer, after retries; the message names the URL and status."""


def available() -> str | None:
    """None: httpx is a core dependency, and the server is checked at the first request."""
    return None


def png_data_url(image: ModelImage) -> str:
    """The model image as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    image.image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIBackend(VisionBackend):
    """A served vision-language model behind an OpenAI-compatible ``/chat/completions``."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str = "",
        timeout: float = 120.0,
        retries: int = 3,
        max_new_tokens: int = 512,
        batch_size: int = 4,
        backoff: float = 0.5,
        profile: str = "auto",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must name the served model, got {model!r}")
        # An auto profile the served name cannot tell (vLLM's --served-model-name) waits for the
        # first request: GET /models names the weights (``root``), and that names the family.
        self._named = profiles.choose(profile, model)
        self._auto = profile == "auto"
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if not isinstance(backoff, (int, float)) or not backoff >= 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        for name, value, low in (
            ("retries", retries, 0),
            ("max_new_tokens", max_new_tokens, 1),
            ("batch_size", batch_size, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.model = model
        self.timeout = float(timeout)
        self.retries = retries
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.backoff = float(backoff)
        # One pooled client, shared by the batch's threads (httpx clients may be); the timeout
        # bounds connecting and each wait for bytes, so one answer waits at most about `timeout`.
        self._http = ChatClient(
            url, api_key=api_key, timeout=self.timeout, retries=retries, backoff=self.backoff,
            what="vision server", error=VisionServerError, event="vision.openai",
        )
        self.base_url = self._http.base_url
        self._shown_url = self._http.shown_url
        self._has_key = bool(api_key)
        self._lock = threading.Lock()  # guards _structured
        self._algorithm_lock = threading.Lock()  # one GET /models, even from several threads
        self._structured = True  # send response_format until the server refuses it
        self._algorithm: Algorithm | None = None
        self._family: profiles.Profile | None = None
        self._root: str | None = None
        self._root_asked = False

    @classmethod
    def from_settings(cls, settings: VisionSettings, *, backoff: float = 0.5) -> OpenAIBackend:
        """The backend that ``[vision]`` with ``backend = "openai"`` describes."""
        return cls(
            settings.url,
            settings.model,
            api_key=settings.api_key,
            timeout=settings.timeout,
            retries=settings.retries,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            backoff=backoff,
            profile=settings.profile,
        )

    def __repr__(self) -> str:
        key = "set" if self._has_key else "none"
        return (
            f"OpenAIBackend(url={self._shown_url!r}, model={self.model!r}, "
            f"profile={self._profile_name()!r}, api_key=<{key}>)"
        )

    # -- algorithm (TID 4019) -----------------------------------------------------------------
    @property
    def algorithm(self) -> Algorithm:  # type: ignore[override]
        """The served name, and as version the weights the server names (vLLM's ``root``)."""
        with self._algorithm_lock:
            if self._algorithm is None:
                self._algorithm = Algorithm(name=self.model, version=self._served_version())
            return self._algorithm

    def _served_version(self) -> str:
        root = self._served_root()
        # A local path's end names the weights best; LO holds 64 characters.
        return root[-ALGORITHM_VERSION_MAX:] if root else UNKNOWN_VERSION

    def _served_root(self) -> str | None:
        """The weights the server names for our model (vLLM's ``root``), asked once; call it
        holding ``_algorithm_lock``."""
        if not self._root_asked:
            self._root_asked = True
            models = self._http.get_json("/models", min(self.timeout, MODELS_TIMEOUT))
            cards = models.get("data", []) if isinstance(models, dict) else []
            for card in cards if isinstance(cards, list) else []:
                if isinstance(card, dict) and card.get("id") == self.model:
                    root = card.get("root")
                    if isinstance(root, str) and root.strip():
                        self._root = root.strip()
        return self._root

    # -- profile ------------------------------------------------------------------------------
    def _profile_name(self) -> str:
        """The profile's name as far as it is known, without asking the server."""
        if not self._auto:
            return self._named.name
        return self._family.name if self._family is not None else "auto"

    @property
    def family(self) -> profiles.Profile:
        """The model's own family: from the served name, else from the weights the server names."""
        with self._algorithm_lock:
            if self._family is None:
                found = profiles.detect(self.model)
                self._family = found if found.name != "apolo" else profiles.detect(self._served_root() or "")
            return self._family

    @property
    def profile(self) -> profiles.Profile:
        """How the model is asked and read: the configured profile, or with auto its family."""
        return self.family if self._auto else self._named

    # -- describing ---------------------------------------------------------------------------
    def describe_batch(
        self, images: Sequence[ModelImage], contexts: Sequence[Context]
    ) -> list[Described]:
        if len(images) != len(contexts):
            raise ValueError(
                f"describe_batch needs one context per image, got {len(images)} images "
                f"and {len(contexts)} contexts"
            )
        if not images:
            return []
        if len(images) == 1:
            return [self._describe_one(images[0], contexts[0])]
        pool = ThreadPoolExecutor(
            max_workers=min(self.batch_size, len(images)),
            thread_name_prefix="vision-openai",
        )
        try:
            futures = [pool.submit(self._describe_one, i, c) for i, c in zip(images, contexts)]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _describe_one(self, image: ModelImage, context: Context) -> Described:
        messages = self.profile.messages(
            context, {"type": "image_url", "image_url": {"url": png_data_url(image)}}
        )
        if messages[0]["role"] == "system":  # plain text, as every server takes it
            messages[0] = {"role": "system", "content": self.profile.system}
        answer = self._chat(messages)
        return self._described(answer, self.coordinates(image))

    def coordinates(self, image: ModelImage) -> grounding.Coordinates:
        """How bare bbox_2d in the answer about ``image`` are scaled: Qwen2.5-VL's are pixels of
        the image the server's processor resized, which ``profiles.qwen_resized`` recomputes."""
        width, height = profiles.qwen_resized(image.image.width, image.image.height)
        profile = self.profile
        return profile.coordinates(width, height, self.family if profile.bbox is None else None)

    def _chat(self, messages: list[dict[str, Any]]) -> Any:
        """POST the chat request, with retries; the parsed JSON body of the 200 answer."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
        }
        if self._structured and self.profile.structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "findings", "schema": prompts.FINDINGS_SCHEMA, "strict": True},
            }
        return self._http.post_chat(body, fallback=self._without_response_format)

    def _without_response_format(
        self, status: int, text: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A server that refuses structured output is asked again without it, and never again with it."""
        if "response_format" not in body or status not in (400, 422) or not _refuses_response_format(text):
            return None
        with self._lock:
            if self._structured:
                self._structured = False
                event(
                    log, "vision.openai.response_format_refused", logging.WARNING,
                    server=self._shown_url, model=self.model, status=status,
                )
        return {k: v for k, v in body.items() if k != "response_format"}

    def _described(self, answer: Any, coords: grounding.Coordinates = grounding.THOUSANDTHS) -> Described:
        """The findings in ``choices[0].message.content``; an answer with none is counted unparsed.

        A server that splits the reasoning off (vLLM's ``reasoning_content``) gives it as the trace.
        """
        if not isinstance(answer, dict):
            return _unparsed("the server's answer was not a JSON object")
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return _unparsed("the server's answer had no choices")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts, as some servers write them
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        reasoning = _reasoning(message)
        if not isinstance(content, str) or not content.strip():
            reason = choices[0].get("finish_reason")
            found = _unparsed(f"the server's answer had no content (finish_reason {reason!r})")
        else:
            found = self.profile.parse(content, coords)
        if reasoning:
            found = replace(found, trace=(grounding.clip_trace(reasoning), *found.trace))
        return found

    def close(self) -> None:
        self._http.close()


def _reasoning(message: Any) -> str | None:
    """The reasoning a server gave beside the content (vLLM: ``reasoning_content``), if any."""
    if not isinstance(message, dict):
        return None
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _unparsed(why: str) -> Described:
    return Described(unparsed=1, free_text=(why,))


def _refuses_response_format(text: str) -> bool:
    low = text.lower()
    return "response_format" in low or "json_schema" in low
