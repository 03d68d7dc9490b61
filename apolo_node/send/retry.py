"""When to try a result again: exponential backoff with a cap and jitter, never a last attempt.

A PACS that is down delays delivery, it never drops it (design.md), so there is no maximum
number of attempts: the wait doubles from ``[send] retry_base`` up to ``[send] retry_max`` and
stays there. Jitter (up to a tenth of the wait) spreads the retries of many rows, or of several
nodes sharing one catalog, after the PACS comes back.
"""

from __future__ import annotations

import random

JITTER = 0.1  # at most this fraction of the wait is added


def retry_delay(
    attempts: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after a failed attempt, ``attempts`` being the failures before this one.

    ``base * 2**attempts``, at most ``cap``, plus up to ``JITTER`` of that.
    """
    if attempts < 0:
        raise ValueError(f"attempts must be >= 0, got {attempts}")
    if base <= 0 or cap < base:
        raise ValueError(f"base must be > 0 and cap >= base, got base={base}, cap={cap}")
    wait = cap if attempts >= 64 else min(base * 2.0**attempts, cap)
    return wait * (1.0 + JITTER * (rng or random).random())
