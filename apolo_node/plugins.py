"""Backends named in the configuration and imported only when chosen: what the vision and the
reasoning stages share to build theirs. Imports nothing of ours.

A plugin module offers ``available()`` (None, or what it lacks to run here) and a class with
``from_settings(settings)``; heavy libraries are imported by that module, so a node that never
chooses it never pays for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any


def build_plugin(
    table: str,
    settings: Any,
    modules: Mapping[str, tuple[str, str]],
    choices: Sequence[str],
    unavailable: type[Exception],
) -> Any:
    """``settings.backend`` looked up in ``modules`` (name: (module, class)), checked and built;
    ``unavailable`` names ``[table] backend`` and says what is unknown or missing."""
    name = settings.backend
    if name not in modules:
        raise unavailable(f"[{table}] backend {name!r} is unknown; choose {', '.join(choices)}")
    module_name, class_name = modules[name]
    module = importlib.import_module(module_name)
    missing = module.available()
    if missing:
        raise unavailable(f"[{table}] backend {name!r} cannot run here: {missing}")
    return getattr(module, class_name).from_settings(settings)
