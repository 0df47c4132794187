"""Project (DB) -> the system cells of its row. The single definition of what the sheet shows."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pipeline.storyboard import to_text
from storage.models import Project, ProjectState, Segment, SegmentSource
from storage.outbox import SheetUpdate
from storage.projects import Effects, ProjectStore
from storage.storyboard import Storyboard
from sync.columns import Columns
from sync.eta import spoken
from sync.lifecycle import USER_ACTIONS, Change, Event
from sync.messages import announcement

log = logging.getLogger(__name__)
ESTIMATE_MARK = " · 约"
SOURCE_LABELS = {SegmentSource.ai: "AI", SegmentSource.stock: "实拍素材"}
# Where the 预览 cell shows the shots' contact sheet, not the plan's.
SHOTS_MADE = frozenset({ProjectState.segments_ready, ProjectState.composing, ProjectState.completed})
# Outcomes that change nothing the row shows.
QUIET = frozenset({Event.sheet_refused, Event.row_deleted, Event.cleaned_up, Event.task_saved, Event.reprioritised})


Estimate = Callable[[Project, list[Segment]], "float | None"]


def progress_text(project: Project, left: float | None = None) -> str:
    """`45% 生成第3/7段`, and `· 约6分钟` when the history says how long the rest takes."""
    text = f"{project.progress}% {project.progress_text}".strip()
    return f"{text}{ESTIMATE_MARK}{spoken(left)}" if left is not None else text


def without_estimate(progress: str) -> str:
    """The 进度 cell as the DB knows it: the estimate is of its moment and no state of ours."""
    return progress.split(ESTIMATE_MARK, 1)[0]


def render(
    project: Project,
    segments: list[Segment],
    cols: Columns,
    now: datetime,
    attachments: dict[str, list[str]] | None = None,
    left: float | None = None,
) -> SheetUpdate:
    fields: dict = {
        cols.status: project.state.label,
        cols.progress: progress_text(project, left),
        cols.error: "；".join(m for m in (project.error, project.notice) if m) or None,
        cols.project_id: project.id,
        cols.updated_at: int(now.timestamp() * 1000),
    }
    if project.cost is not None:
        fields[cols.cost] = project.cost
    by_index = {s.index: s for s in segments}
    count = project.shot_count or 0
    for n in range(1, cols.max_segments + 1):
        seg = by_index.get(n - 1)
        if seg is not None and seg.url:
            fields[cols.segment(n)] = {"text": f"段{n} · {SOURCE_LABELS[seg.source]}", "link": seg.url}
        elif n <= max(count, len(by_index)):
            fields[cols.segment(n)] = None
    if project.state == ProjectState.completed and project.final_url:
        fields[cols.final_url] = {"text": "成片", "link": project.final_url}
    elif project.state in (ProjectState.pending, ProjectState.storyboarding):
        fields[cols.final_url] = None
    return SheetUpdate(fields=fields, attachments=attachments or {})


class ByTable:
    """The sheet side of each served table (each with its column names), chosen by the project's table."""

    def __init__(self, sides: dict[str, SheetSide]):
        self.sides, self.default = sides, next(iter(sides.values()))

    def __call__(self, p: Project, segments: list[Segment], changes: list[Change]) -> Effects:
        return self.sides.get(p.table_id, self.default)(p, segments, changes)


class SheetSide:
    """Subscribes to the lifecycle: what each committed outcome owes the row and the chat.

    The one place that decides when the row is written, with which extra cells (the storyboard
    text, the consumed 操作, the video files), and which outcomes are announced.
    """

    def __init__(self, store: ProjectStore, cols: Columns, clock: Callable[[], datetime], sheet_url: str = "",
                 estimate: Estimate | None = None):
        self.store, self.cols, self.clock, self.sheet_url, self.estimate = store, cols, clock, sheet_url, estimate

    def __call__(self, p: Project, segments: list[Segment], changes: list[Change]) -> Effects:
        events = {c.event for c in changes}
        notify = announcement(p, self.sheet_url, self.store.paths(p).cover) if any(c.announced for c in changes) else None
        if p.row_deleted or events <= QUIET:
            return Effects(notify=notify)  # a write the sheet refused would be refused again
        attachments, paths = {}, self.store.paths(p)
        if p.state == ProjectState.completed and events & {Event.step_succeeded, Event.resync}:
            attachments = {self.cols.final_video: [str(paths.final_video)], self.cols.cover: [str(paths.cover)]}
        made = {c.after for c in changes if c.event == Event.step_succeeded}
        # Previews are drawn after their stage commits; one drawn late for a project that has moved
        # on keeps out of the way: the plan's sheet never covers the shots' in 预览.
        if Event.plan_drawn in events:
            attachments |= _present({self.cols.animatic: paths.animatic}
                                    | ({} if _shots_made(p) else {self.cols.preview: paths.plan_sheet}))
        if Event.shots_drawn in events and _shots_made(p):
            attachments |= _present({self.cols.preview: paths.shots_sheet})
        sheet = render(p, segments, self.cols, self.clock(), attachments, self._left(p, segments))
        if p.storyboard_json and ProjectState.storyboard_ready in made:
            sheet.fields[self.cols.storyboard] = to_text(Storyboard.model_validate_json(p.storyboard_json))
        if events & (USER_ACTIONS | {Event.action_refused}):
            sheet.fields[self.cols.action] = None
        return Effects(sheet=sheet, notify=notify)

    def _left(self, p: Project, segments: list[Segment]) -> float | None:
        if self.estimate is None:
            return None
        try:
            return self.estimate(p, segments)
        except Exception as e:  # noqa: BLE001 - an estimate is a nicety; the row's write is not
            log.warning("estimate failed project=%s error=%s", p.id, e)
            return None


def _shots_made(p: Project) -> bool:
    """Whether the project's current take has all its shots (where a failed or cancelled one got to)."""
    reached = p.last_good if p.state in (ProjectState.failed, ProjectState.cancelled) else p.state
    return reached in SHOTS_MADE


def _present(files: dict[str, Path]) -> dict[str, list[str]]:
    """The pictures that were drawn (a preview is best effort: its absence is no error)."""
    return {column: [str(path)] for column, path in files.items() if path.is_file()}
