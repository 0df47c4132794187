"""Injected failures: what to break (`FaultPlan`) and the dice that decide (`FaultInjector`).

Randomness comes from a seeded `random.Random` per plan so a test run is
reproducible; the outage window counts only calls to the targeted endpoints.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

WRITE_ENDPOINTS = frozenset({
    "fields.create", "records.create", "records.update", "records.delete",
    "records.batch_create", "records.batch_update", "records.batch_delete",
})


@dataclass(frozen=True)
class FaultPlan:
    rate_limit: float = 0
    too_many: float = 0
    write_conflict: float = 0
    server_error: float = 0
    latency: float = 0
    outage: tuple[int, int] | None = None
    endpoints: frozenset[str] | None = None
    seed: int = 0
    reset_seconds: int = 1
    limit_header: int = 50  # value of x-ogw-ratelimit-limit

    def targets(self, endpoint: str) -> bool:
        if self.endpoints is None:
            return endpoint != "token"  # breaking auth by default would mask everything else
        return endpoint in self.endpoints

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FaultPlan:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown FaultPlan fields: {sorted(unknown)}")
        values = dict(raw)
        if values.get("endpoints") is not None:
            values["endpoints"] = frozenset(values["endpoints"])
        if values.get("outage") is not None:
            start, end = values["outage"]
            values["outage"] = (int(start), int(end))
        return cls(**values)


class FaultInjector:
    """Decides, per call, which fault (if any) replaces the real answer."""

    def __init__(
        self,
        plan: FaultPlan,
        on_fault: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        self._on_fault = on_fault
        self._sleep = sleep
        self._rng = random.Random(plan.seed)
        self._targeted_calls = 0
        self._lock = threading.Lock()

    def decide(self, endpoint: str) -> str | None:
        """Sleep the configured latency, then return a fault kind or None."""
        plan = self.plan
        if not plan.targets(endpoint):
            return None
        with self._lock:
            index = self._targeted_calls
            self._targeted_calls += 1
            # Always draw the same number of values so one call's fault does not
            # shift the dice for the next.
            rolls = [self._rng.random() for _ in range(4)]
        if plan.latency > 0:
            self._on_fault("latency")
            self._sleep(plan.latency)
        kind = self._pick(plan, endpoint, index, rolls)
        if kind:
            self._on_fault(kind)
        return kind

    @staticmethod
    def _pick(plan: FaultPlan, endpoint: str, index: int, rolls: list[float]) -> str | None:
        if plan.outage is not None and plan.outage[0] <= index < plan.outage[1]:
            return "outage"
        if rolls[0] < plan.rate_limit:
            return "rate_limit"
        if rolls[1] < plan.too_many:
            return "too_many"
        if endpoint in WRITE_ENDPOINTS and rolls[2] < plan.write_conflict:
            return "write_conflict"
        if rolls[3] < plan.server_error:
            return "server_error"
        return None
