"""Which vision backend the configuration names, built; or a clear line on what is missing.

Backends are plugins with a small contract (``available()``, ``from_settings()``); the model
backends import their heavy libraries only when chosen.
"""

from __future__ import annotations

import importlib

from apolo_node.config import VisionSettings
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
    if settings.backend not in _MODULES:
        raise BackendUnavailable(
            f"[vision] backend {settings.backend!r} is unknown; choose baseline, transformers or openai"
        )
    module_name, class_name = _MODULES[settings.backend]
    module = importlib.import_module(module_name)
    missing = module.available()
    if missing:
        raise BackendUnavailable(f"[vision] backend {settings.backend!r} cannot run here: {missing}")
    backend: VisionBackend = getattr(module, class_name).from_settings(settings)
    return backend
