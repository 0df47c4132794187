"""The one backoff rule. Every place that waits before trying again asks a RetryPolicy how long.

Used by the project runner (a failed step), the outbox (a record's sheet write), the notifier (a
chat message), the LLM storyboarder and the HTTP video client (one request).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait after failure n is base * 2**(n-1), capped, jittered.

    A server's own Retry-After wins over the formula (it knows its quota), but a server asking for
    longer than `max_retry_after` is not waited on in-process: the caller gives up and the step is
    rescheduled instead of holding a worker.
    """

    attempts: int = 3
    base: float = 5.0
    cap: float = 300.0
    jitter: float = 0.0  # 0.5: each wait is drawn from [50%, 100%] of the formula's
    max_retry_after: float | None = None

    def delay(self, failures: int, retry_after: float | None = None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1 = the first)."""
        if retry_after is not None and retry_after >= 0:
            # Past max_retry_after the caller gives up (exhausted); below it the server is right.
            return retry_after if self.max_retry_after is not None else min(retry_after, self.cap)
        wait = min(self.cap, self.base * 2 ** max(0, min(failures - 1, 30)))
        return wait * (1 - self.jitter * rand()) if self.jitter else wait

    def exhausted(self, failures: int, retry_after: float | None = None) -> bool:
        """No try left after `failures` failures, or the server asks for a wait we will not sit out."""
        if failures >= self.attempts:
            return True
        return self.max_retry_after is not None and retry_after is not None and retry_after > self.max_retry_after

    def next_delay(self, failures: int, retry_after: float | None = None) -> float | None:
        """The wait before the next try, or None when the policy says give up."""
        return None if self.exhausted(failures, retry_after) else self.delay(failures, retry_after)


@dataclass
class Probe:
    """While a service is down, what waits on it backs off item by item; the probe tries one of them
    every `every` seconds anyway, and the first success releases them all. So the lag after an
    outage is about `every`, not the longest backoff reached during it."""

    every: timedelta = timedelta(seconds=10)
    last_try: datetime | None = field(default=None)

    def due(self, now: datetime) -> bool:
        return self.last_try is None or now - self.last_try >= self.every

    def tried(self, now: datetime) -> None:
        self.last_try = now
