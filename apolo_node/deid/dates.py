"""Retain Longitudinal Temporal Information with Modified Dates (PS3.15 E.3.6).

Every DA and DT value of a patient moves back by the same whole number of days, derived from a
keyed hash of the original Patient ID: intervals between a patient's studies survive, the
calendar dates do not. Whole days leave TM values consistent with their dates, so they are kept.
"""

from __future__ import annotations

import datetime as dt
import re

from apolo_node.deid.patient import keyed_digest

MIN_SHIFT_DAYS = 365
MAX_SHIFT_DAYS = 3650

_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_DT = re.compile(r"(\d{8})(.*)", re.DOTALL)


def shift_days(key: bytes, patient_key: str) -> int:
    """Days to move this patient's dates by: negative, between one and ten years."""
    number = int.from_bytes(keyed_digest(key, "dateshift", patient_key)[:8], "big")
    return -(MIN_SHIFT_DAYS + number % (MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1))


def shift_da(value: str, days: int) -> str | None:
    """A DA value (``YYYYMMDD``, or the old ``YYYY.MM.DD``) moved by ``days``; None if unreadable."""
    m = _DA.fullmatch(value.strip())
    if not m:
        return None
    try:
        day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_dt(value: str, days: int) -> str | None:
    """A DT value moved by ``days``, its time and offset kept; None if it lacks a full date."""
    m = _DT.fullmatch(value.strip())
    if not m:
        return None
    day = shift_da(m.group(1), days)
    return None if day is None else day + m.group(2)
