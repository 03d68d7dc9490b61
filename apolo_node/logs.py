"""Structured logs: one JSON object per line, with fields we choose, never a patient identifier.

Callers pass only pseudonymous UIDs, counts, statuses and AE titles. Third-party loggers
(pynetdicom, pydicom) are held at WARNING, and Python warnings, which pydicom uses to quote
offending values, are dropped rather than printed, because their text can hold element values.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import warnings
from typing import Any

LOGGER_NAME = "apolo"
_THIRD_PARTY = ("pynetdicom", "pydicom", "highdicom", "sqlalchemy", "alembic")


class JSONLineFormatter(logging.Formatter):
    """``{"ts":..., "level":..., "event":..., ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: its message may quote a value from a dataset.
            out["error_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str, separators=(",", ":"))


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with structured fields (pseudonyms, counts, statuses only)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def setup(level: str = "INFO", file: str = "") -> None:
    """Send our events, and third-party warnings, to stderr (and ``file``) as JSON lines."""
    formatter = JSONLineFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(logging.WARNING)
    get_logger().setLevel(level.upper())
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(name).propagate = False  # their messages may quote element values
        logging.getLogger(name).addHandler(logging.NullHandler())
    warnings.simplefilter("ignore")
