"""Running Hugging Face models in this process: what the vision and reasoning backends share.

Whether torch and transformers 5 (the ``ml`` extra) are there, which device to use, and one
line of a loading error to show. Imports nothing of ours, and neither torch nor transformers
until asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

INSTALL_HINT = "pip install 'apolo-node[ml]' (torch==2.13.0, the CPU wheel will do, and transformers 5)"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def ml_problem(what: str) -> str | None:
    """None when torch and transformers 5 import; else what ``what`` lacks and how to install it."""
    missing = []
    for name in ("torch", "transformers"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        return f"{what} needs {' and '.join(missing)}: {INSTALL_HINT}"
    import transformers

    major = transformers.__version__.split(".", 1)[0]
    if not major.isdigit() or int(major) < 5:
        return f"{what} needs transformers 5, found {transformers.__version__}: {INSTALL_HINT}"
    return None


@contextmanager
def progress_bars_off() -> Iterator[None]:
    """Load without transformers' progress bars (our logs are JSON lines, not bars), then put
    them back as they were."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def torch_dtype(torch: Any, dtype: str) -> Any:
    """A ``dtype`` setting (one of DTYPES) as ``from_pretrained`` takes it."""
    return dtype if dtype == "auto" else getattr(torch, dtype)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The error's type and the first line of its message, cut at ``limit`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text[:limit] + ("..." if len(text) > limit else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def resolve_device(device: str, torch: Any, table: str, unavailable: type[Exception]) -> str:
    """``auto`` as cuda when torch sees one, else cpu; a CUDA device torch cannot see raises
    ``unavailable``; a malformed one ValueError naming ``[table] device``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ValueError(f"[{table}] device must be cpu, cuda, cuda:N or auto, got {device!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise unavailable(
            f"[{table}] device is {device!r} but torch {torch.__version__} sees no CUDA device; "
            "use device = 'cpu' or 'auto'"
        )
    return device
