"""Which vision backend the configuration names, built; or a clear line on what is missing.

Backends are plugins with a small contract (``available()``, ``from_settings()``); the model
backends import their heavy libraries only when chosen.
"""

from __future__ import annotations

from apolo_node.config import VISION_BACKENDS, VisionSettings
from apolo_node.plugins import build_plugin
from apolo_node.vision.backend import BackendUnavailable, VisionBackend

_MODULES = {  # backend name: (module, class)
    "transformers": ("apolo_node.vision.transformers_backend", "TransformersBackend"),
    "openai": ("apolo_node.vision.openai_backend", "OpenAIBackend"),
}


def make_backend(settings: VisionSettings) -> VisionBackend:
    """The configured backend, ready to describe images; BackendUnavailable says why not."""
    if settings.backend == "baseline":
        from apolo_node.vision.baseline import BaselineBackend

        return BaselineBackend()
    backend: VisionBackend = build_plugin(
        "vision", settings, _MODULES, VISION_BACKENDS, BackendUnavailable
    )
    return backend
