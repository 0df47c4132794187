"""Identifier shapes and the write clock.

Ids only need to look like Feishu's (prefix + opaque tail) and never collide;
the clock must be strictly increasing so that ordering records by
`last_modified_time` is reliable even for writes within the same millisecond.
"""
from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Callable

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_hex_id(prefix: str, length: int) -> str:
    return prefix + secrets.token_hex((length + 1) // 2)[:length]


def new_numeric_id(length: int = 19) -> str:
    # upload_id is a long decimal string on the real service.
    return str(secrets.randbelow(9 * 10 ** (length - 1)) + 10 ** (length - 1))


def new_log_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(10).upper()


class MsClock:
    """Wall-clock milliseconds, but never the same value twice."""

    def __init__(self, now: Callable[[], float] = time.time, floor_ms: int = 0) -> None:
        self._now = now
        self._last = floor_ms
        self._lock = threading.Lock()

    def tick(self) -> int:
        with self._lock:
            self._last = max(int(self._now() * 1000), self._last + 1)
            return self._last

    def now_s(self) -> float:
        return self._now()

    def advance_floor(self, floor_ms: int) -> None:
        # After loading saved state the clock must not hand out older times.
        with self._lock:
            self._last = max(self._last, floor_ms)

    @property
    def last(self) -> int:
        return self._last
