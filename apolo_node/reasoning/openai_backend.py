"""The ``openai`` answerer: a language model served behind an OpenAI-compatible chat endpoint.

One ``POST {url}/chat/completions`` per question (``prompts.messages``, greedy, at most
``max_new_tokens``). The trace is what the server returns as ``reasoning_content`` (vLLM and
SGLang with a reasoning parser, DeepSeek) or ``reasoning``, plus any ``<think>`` block left in
the content; the answer is the rest, and its citations are checked against the evidence.
"""

from __future__ import annotations

from typing import Any

from apolo_node.config import ReasoningSettings
from apolo_node.openai_http import ChatClient, ChatServerError
from apolo_node.reasoning import prompts
from apolo_node.reasoning.backend import Answer, Answerer, AnswerFailed, Turn
from apolo_node.reasoning.citations import resolve, split_trace
from apolo_node.reasoning.evidence import Evidence

NO_ANSWER = "The model gave no answer (finish_reason {reason!r}); see the trace, if any."


def available() -> str | None:
    """None: httpx is a core dependency, and the server is checked at the first question."""
    return None


class OpenAIAnswerer(Answerer):
    """Answers with a served model; ``[reasoning] url``, ``model``, ``api_key``, ``timeout``, ``retries``."""

    def __init__(
        self, url: str, model: str, *, api_key: str = "", timeout: float = 120.0, retries: int = 3,
        max_new_tokens: int = 1024, backoff: float = 0.5,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"[reasoning] model must name the served model, got {model!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"[reasoning] max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.client = ChatClient(
            url, api_key=api_key, timeout=timeout, retries=retries, backoff=backoff, what="reasoning server"
        )
        self.name = f"openai:{model}"[:128]

    @classmethod
    def from_settings(cls, settings: ReasoningSettings, *, backoff: float = 0.5) -> OpenAIAnswerer:
        """The answerer that ``[reasoning]`` with ``backend = "openai"`` describes."""
        return cls(
            settings.url, settings.model, api_key=settings.api_key, timeout=settings.timeout,
            retries=settings.retries, max_new_tokens=settings.max_new_tokens, backoff=backoff,
        )

    def __repr__(self) -> str:
        return f"OpenAIAnswerer(client={self.client!r}, model={self.model!r})"

    def request(self, question: str, evidence: list[Evidence], earlier: Turn | None = None) -> dict[str, Any]:
        """The chat completion request body for this question and evidence (and the earlier turn)."""
        return {
            "model": self.model,
            "messages": prompts.messages(question, evidence, earlier),
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
        }

    def _answer(self, question: str, evidence: list[Evidence], earlier: Turn | None = None) -> Answer:
        try:
            body = self.client.post_chat(self.request(question, evidence, earlier))
        except ChatServerError as exc:
            raise AnswerFailed(str(exc)) from None
        content, reasoning, reason = _message(body)
        trace, text = split_trace(content)
        trace = "\n\n".join(t for t in (reasoning.strip(), trace) if t)
        if not text:
            text = NO_ANSWER.format(reason=reason)
        cited = resolve(text, evidence)
        return Answer(text, trace or "(the model gave no reasoning trace)", cited.citations, cited.dropped, self.name)

    def close(self) -> None:
        self.client.close()


def _text(value: Any) -> str:
    """A message field as text: a string, or content parts (``[{"type": "text", "text": ...}]``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _message(body: Any) -> tuple[str, str, Any]:
    """(content, reasoning, finish_reason) of the first choice; empty strings when absent."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", "", None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return "", "", choices[0].get("finish_reason")
    reasoning = _text(message.get("reasoning_content")) or _text(message.get("reasoning"))
    return _text(message.get("content")), reasoning, choices[0].get("finish_reason")
