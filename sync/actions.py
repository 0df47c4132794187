"""What each 操作 does to a project. Every function either changes state or says why it cannot."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

from pipeline.storyboard import from_text
from storage import atomic
from storage.errors import BadInput
from storage.models import Project, ProjectState, SegmentState
from storage.repo import ProjectStore
from storage.storyboard import Storyboard
from sync.columns import Action
from sync.rows import RowInput

_REDO = re.compile(r"^重做第\s*(\d+)\s*段$")
RESTARTABLE = (ProjectState.storyboard_ready, ProjectState.segments_ready, ProjectState.completed,
               ProjectState.failed, ProjectState.cancelled)


@dataclass(frozen=True)
class Requested:
    action: Action
    segment: int | None = None  # 1-based, for 重做第N段


def parse_action(text: str) -> Requested:
    if m := _REDO.match(text):
        return Requested(Action.redo_segment, int(m[1]))
    try:
        return Requested(Action(text))
    except ValueError:
        choices = "、".join(a.value for a in Action if a is not Action.redo_segment)
        raise BadInput(f"操作“{text}”无法识别：可选 {choices}、重做第N段") from None


class Actions:
    def __init__(self, store: ProjectStore):
        self.store = store

    def apply(self, p: Project, req: Requested, row: RowInput) -> None:
        """Change `p` as the action asks, or raise BadInput saying why it does not fit now."""
        handler = getattr(self, f"_{req.action.name}")
        handler(p, req, row)
        p.error = ""

    def _refuse(self, p: Project, req: Requested, why: str) -> None:
        raise BadInput(f"操作“{req.action.value}”在当前状态（{p.state.label}）下无效：{why}")

    def _start(self, p: Project, req: Requested, row: RowInput) -> None:
        if p.state == ProjectState.cancelled:
            self._resume_at(p, p.last_good)
        elif p.state != ProjectState.pending:
            self._refuse(p, req, "项目已经开始；失败后请用“重试”，要从头再来请用“重新生成分镜”")

    def _resume(self, p: Project, req: Requested, row: RowInput) -> None:
        if p.state == ProjectState.storyboard_ready:
            self._take_storyboard_edits(p, row)
            p.advance_once = True
        elif p.state == ProjectState.segments_ready:
            p.advance_once = True
        elif p.state == ProjectState.cancelled:
            self._resume_at(p, p.last_good)
        else:
            self._refuse(p, req, "只有分步模式下“分镜完成”或“视频段完成”时才能继续")

    def _redo_storyboard(self, p: Project, req: Requested, row: RowInput) -> None:
        if p.state not in RESTARTABLE:
            self._refuse(p, req, "请等当前步骤结束")
        paths = self.store.paths(p)
        for stale in (paths.segments, paths.frames, paths.final_dir):
            shutil.rmtree(stale, ignore_errors=True)
        paths.storyboard.unlink(missing_ok=True)
        self.store.delete_segments_from(p.id, 0)
        p.storyboard_json = p.final_url = p.cover_url = p.final_duration = None
        self._resume_at(p, ProjectState.pending)

    def _redo_segment(self, p: Project, req: Requested, row: RowInput) -> None:
        shots = _shot_count(p)
        if p.state not in RESTARTABLE or not shots:
            self._refuse(p, req, "需要先有分镜，且当前步骤已结束")
        if not 1 <= (req.segment or 0) <= shots:
            self._refuse(p, req, f"段号应在 1 到 {shots} 之间")
        # Later shots start from this one's last frame, so they are remade too.
        self.store.delete_segments_from(p.id, req.segment - 1)
        p.takes += 1
        self._resume_at(p, ProjectState.storyboard_ready)

    def _compose(self, p: Project, req: Requested, row: RowInput) -> None:
        segs = self.store.segments(p.id)
        shots = _shot_count(p)
        all_done = shots > 0 and len(segs) == shots and all(s.state == SegmentState.done for s in segs)
        if p.state not in RESTARTABLE or not all_done:
            self._refuse(p, req, "所有视频段完成后才能合成")
        self._resume_at(p, ProjectState.segments_ready)

    def _retry(self, p: Project, req: Requested, row: RowInput) -> None:
        if p.state != ProjectState.failed:
            self._refuse(p, req, "只有失败的项目可以重试")
        self._resume_at(p, p.last_good)

    def _cancel(self, p: Project, req: Requested, row: RowInput) -> None:
        if p.state.is_final:
            self._refuse(p, req, "项目已经结束")
        p.state, p.progress_text, p.retry_at = ProjectState.cancelled, "已取消", None

    @staticmethod
    def _resume_at(p: Project, state: ProjectState) -> None:
        p.state, p.advance_once, p.attempts, p.retry_at = state, True, 0, None
        p.progress_text = "排队中"

    def _take_storyboard_edits(self, p: Project, row: RowInput) -> None:
        """The user may have edited 分镜脚本 while the project waited: use what the cell says now."""
        if not row.storyboard.strip():
            return
        board = from_text(row.storyboard)
        if board.model_dump_json() != p.storyboard_json:
            p.storyboard_json = board.model_dump_json()
            p.shot_count = len(board.shots)
            atomic.write_text(self.store.paths(p).storyboard, board.model_dump_json(indent=2))
            self.store.delete_segments_from(p.id, 0)


def _shot_count(p: Project) -> int:
    return len(Storyboard.model_validate_json(p.storyboard_json).shots) if p.storyboard_json else 0
