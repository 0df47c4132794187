"""The time work took, by kind, backend and host: what an estimate of the time left is made of."""

from __future__ import annotations

import statistics
from collections import defaultdict

from sqlmodel import col, select

from storage.base import Repo
from storage.models import Timing

RECENT = 20  # the latest runs of each kind of work: a faster GPU or a slower provider shows soon
SCANNED = 2000  # rows read to find them


class TimingStore(Repo):
    # Runs this process recorded: a cached reading of the history is stale once it changes.
    added = 0

    def add(self, timing: Timing) -> None:
        with self.session() as s:
            s.add(timing)
            s.commit()
        self.added += 1

    def rates(self, host: str) -> dict[tuple[str, str], float]:
        """Wall seconds per second of video, by (work, backend): the median of this host's recent
        runs, else of every host's (a host new to the fleet estimates from the others)."""
        with self.session() as s:
            rows = s.exec(select(Timing).order_by(col(Timing.id).desc()).limit(SCANNED)).all()
        here: dict[tuple[str, str], list[float]] = defaultdict(list)
        anywhere: dict[tuple[str, str], list[float]] = defaultdict(list)
        for t in rows:
            if t.media_seconds <= 0:
                continue
            key = (t.work, t.backend)
            for found in (anywhere, here) if t.host == host else (anywhere,):
                if len(found[key]) < RECENT:
                    found[key].append(t.wall_seconds / t.media_seconds)
        return {key: statistics.median(here.get(key) or values) for key, values in anywhere.items()}
