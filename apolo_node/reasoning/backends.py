"""Which answerer the configuration names, built; or a clear line on what is missing.

Answerers are plugins with a small contract (``available()``, ``from_settings()``); the model
answerers import their heavy libraries only when chosen.
"""

from __future__ import annotations

from apolo_node.config import REASONING_BACKENDS, ReasoningSettings
from apolo_node.plugins import build_plugin
from apolo_node.reasoning.backend import Answerer, ReasoningUnavailable

_MODULES = {  # backend name: (module, class)
    "transformers": ("apolo_node.reasoning.transformers_backend", "TransformersAnswerer"),
    "openai": ("apolo_node.reasoning.openai_backend", "OpenAIAnswerer"),
}


def make_answerer(settings: ReasoningSettings) -> Answerer:
    """The configured answerer, ready to answer; ReasoningUnavailable says why not."""
    if settings.backend == "extractive":
        from apolo_node.reasoning.extractive import ExtractiveAnswerer

        return ExtractiveAnswerer()
    answerer: Answerer = build_plugin(
        "reasoning", settings, _MODULES, REASONING_BACKENDS, ReasoningUnavailable
    )
    return answerer
