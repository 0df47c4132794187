"""How long a project still needs, from how long the same work took before (on this host when it
has done such work, else anywhere in the fleet). No history, no estimate: a guess is worse."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pipeline.mix import plan_sources
from pipeline.templates import TemplateLibrary
from storage.errors import SheetReelError
from storage.models import Mode, Project, Segment, SegmentSource, SegmentState
from storage.models import ProjectState as S
from storage.storyboard import Storyboard
from storage.timings import TimingStore

RATES_TTL = 10.0  # seconds a read of the history serves (a row is rendered at every shot's start and end)
# What is left to do from each state: the storyboard, the shots, the compose.
WORK_LEFT = {
    S.pending: ("storyboard", "shot", "compose"),
    S.storyboarding: ("storyboard", "shot", "compose"),
    S.storyboard_ready: ("shot", "compose"),
    S.generating: ("shot", "compose"),
    S.segments_ready: ("compose",),
    S.composing: ("compose",),
}
RESTING = {S.storyboard_ready, S.segments_ready}
COMPOSER = "ffmpeg"


class Estimator:
    def __init__(self, timings: TimingStore, templates: TemplateLibrary, storyboard_backend: str,
                 segment_backend: str, host: str, clock: Callable[[], float] = time.monotonic):
        self.timings, self.templates, self.host, self.clock = timings, templates, host, clock
        self.storyboard_backend, self.segment_backend = storyboard_backend, segment_backend
        self._rates: dict[tuple[str, str], float] = {}
        self._read_at: float | None = None
        self._read_added = -1

    def __call__(self, p: Project, segments: list[Segment]) -> float | None:
        """Seconds of work left, or None when there is no history for some of it (or nothing runs)."""
        left = WORK_LEFT.get(p.state)
        if left is None or (p.mode == Mode.step and p.state in RESTING):
            return None  # finished, or resting until the operator says 继续
        try:
            template = self.templates.get(p.template)
        except SheetReelError:
            return None
        durations = _shot_durations(p, template.shot_count, template.shot_duration)
        done = {s.index for s in segments if s.state == SegmentState.done}
        sources = plan_sources(p.id, len(durations), template.ai_ratio)
        ai = template.segment_backend or self.segment_backend
        work: list[tuple[str, str, float]] = []
        if "storyboard" in left:
            work.append(("storyboard", template.storyboard_backend or self.storyboard_backend, sum(durations)))
        if "shot" in left:
            work += [("shot", "stock" if sources[k] == SegmentSource.stock else ai, d)
                     for k, d in enumerate(durations) if k not in done]
        work.append(("compose", COMPOSER, sum(durations)))
        rates = self.rates()
        if any((kind, backend) not in rates for kind, backend, _ in work):
            return None
        return sum(rates[(kind, backend)] * seconds for kind, backend, seconds in work)

    def rates(self) -> dict[tuple[str, str], float]:
        now = self.clock()
        if self._read_at is None or now - self._read_at > RATES_TTL or self._read_added != self.timings.added:
            self._read_added = self.timings.added
            self._rates, self._read_at = self.timings.rates(self.host), now
        return self._rates


def _shot_durations(p: Project, count: int, duration: float) -> list[float]:
    if p.storyboard_json:
        try:
            return [s.duration for s in Storyboard.model_validate_json(p.storyboard_json).shots]
        except ValueError:
            pass
    return [duration] * (p.shot_count or count)


def spoken(seconds: float) -> str:
    """`6分钟`, `40秒`: as precise as an estimate deserves."""
    if seconds >= 90:
        return f"{round(seconds / 60)}分钟"
    return f"{max(1, math.ceil(seconds))}秒"
