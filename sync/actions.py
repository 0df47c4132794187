"""What each 操作 asks for. The state change is the lifecycle's; this module checks what the
action needs besides the state (a storyboard, finished segments, a shot number), does the file
work, and explains a refusal in words the user can act on."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.storyboard import from_text
from pipeline.templates import TemplateLibrary
from storage import atomic
from storage.errors import BadInput, Permanent
from storage.models import Project, SegmentState
from storage.projects import ProjectStore
from storage.storyboard import Storyboard
from sync import lifecycle
from sync.columns import Action
from sync.lifecycle import Event
from sync.rows import RowInput

_REDO = re.compile(r"^重做第\s*(\d+)\s*段$")
# Why the action does not fit the state it found, for the user.
WHY = {
    Event.start: "项目已经开始；失败后请用“重试”，要从头再来请用“重新生成分镜”",
    Event.resume: "只有分步模式下“分镜完成”或“视频段完成”时才能继续",
    Event.redo_storyboard: "请等当前步骤结束",
    Event.redo_segment: "需要先有分镜，且当前步骤已结束",
    Event.compose: "所有视频段完成后才能合成",
    Event.retry: "只有失败的项目可以重试",
    Event.cancel: "项目已经结束",
}


@dataclass(frozen=True)
class Requested:
    action: Action
    segment: int | None = None  # 1-based, for 重做第N段

    @property
    def label(self) -> str:
        return f"重做第{self.segment}段" if self.action == Action.redo_segment and self.segment else self.action.value


def parse_action(text: str) -> Requested:
    if m := _REDO.match(text):
        return Requested(Action.redo_segment, int(m[1][:6]))  # past 6 digits it is out of range anyway
    if text == Action.redo_segment.value:
        raise BadInput("操作“重做第N段”需要写明段号：请把 N 换成要重做的段号，例如 重做第2段")
    try:
        return Requested(Action(text))
    except ValueError:
        choices = "、".join(a.value for a in Action if a is not Action.redo_segment)
        raise BadInput(f"操作“{text}”无法识别：可选 {choices}、重做第N段（例如 重做第2段）") from None


class Actions:
    def __init__(self, store: ProjectStore, templates: TemplateLibrary):
        self.store, self.templates = store, templates

    def prepare(self, p: Project, req: Requested, row: RowInput) -> Callable[[Project], lifecycle.Change]:
        """Check the action against `p` and do its file work; the transition to commit.

        Raises BadInput saying why the action does not fit now, before touching anything. The
        transition is pure (it may be applied again to a fresher copy of the project)."""
        event = Event[req.action.name]  # each 操作 is the lifecycle event of the same name
        if not lifecycle.accepts(p, event):
            self._refuse(p, req, WHY[event])
        # Only actions that need more than the state (checks, file work) have a method here.
        extra = getattr(self, f"_{req.action.name}", None)
        patch = extra(p, req, row) if extra else None

        def transition(q: Project) -> lifecycle.Change:
            if patch is not None:
                patch(q)
            return lifecycle.action(q, event)

        return transition

    @staticmethod
    def _refuse(p: Project, req: Requested, why: str) -> None:
        raise BadInput(f"操作“{req.label}”在当前状态（{p.state.label}）下无效：{why}")

    def _retry(self, p: Project, req: Requested, row: RowInput) -> Callable[[Project], None] | None:
        """A row that failed on its template (no such template, or its file was broken) takes the
        template again: the operator may have fixed the file, which does not change the row."""
        if p.template:
            return None
        try:
            template = self.templates.get(row.template)
        except (BadInput, Permanent) as e:
            raise BadInput(f"操作“{req.label}”无法执行：{e}") from None

        def patch(q: Project) -> None:
            q.template, q.shot_count = template.id, row.shot_count or template.shot_count

        return patch

    def _resume(self, p: Project, req: Requested, row: RowInput) -> Callable[[Project], None] | None:
        return self._take_storyboard_edits(p, row) if p.state == lifecycle.S.storyboard_ready else None

    def _redo_storyboard(self, p: Project, req: Requested, row: RowInput) -> None:
        paths = self.store.paths(p)
        for stale in (paths.segments, paths.frames, paths.final_dir):
            shutil.rmtree(stale, ignore_errors=True)
        paths.storyboard.unlink(missing_ok=True)
        self.store.delete_segments_from(p.id, 0)

    def _redo_segment(self, p: Project, req: Requested, row: RowInput) -> None:
        shots = _shot_count(p)
        if not shots:
            self._refuse(p, req, WHY[Event.redo_segment])
        if not 1 <= (req.segment or 0) <= shots:
            self._refuse(p, req, f"段号应在 1 到 {shots} 之间")
        # Later shots start from this one's last frame, so they are remade too.
        self.store.delete_segments_from(p.id, req.segment - 1)

    def _compose(self, p: Project, req: Requested, row: RowInput) -> None:
        segs = self.store.segments(p.id)
        shots = _shot_count(p)
        if not (shots > 0 and len(segs) == shots and all(s.state == SegmentState.done for s in segs)):
            self._refuse(p, req, WHY[Event.compose])

    def _take_storyboard_edits(self, p: Project, row: RowInput) -> Callable[[Project], None] | None:
        """The user may have edited 分镜脚本 while the project waited: use what the cell says now."""
        if not row.storyboard.strip():
            return None
        board = from_text(row.storyboard)
        if board.model_dump_json() == p.storyboard_json:
            return None
        atomic.write_text(self.store.paths(p).storyboard, board.model_dump_json(indent=2))
        self.store.delete_segments_from(p.id, 0)

        def edited(q: Project) -> None:
            q.storyboard_json, q.shot_count = board.model_dump_json(), len(board.shots)

        return edited


def _shot_count(p: Project) -> int:
    return len(Storyboard.model_validate_json(p.storyboard_json).shots) if p.storyboard_json else 0
