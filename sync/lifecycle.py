"""The project lifecycle: its states, the events that move a project, and the one function per
event that moves it. Nothing else assigns `Project.state` or its companion fields.

    pending ─step─▶ storyboarding ─ok─▶ storyboard_ready ─step─▶ generating ─ok─▶ segments_ready
       ─step─▶ composing ─ok─▶ completed;   any step ─error─▶ failed (or back, to retry later);
    取消 ─▶ cancelled;   an edited input ─▶ pending (or failed when the row is invalid).

`TABLE` says, for every event, which states accept it and where each one goes; a pair missing
from it is refused (`Refused`). `Lifecycle.commit` applies a transition to the freshest copy of the
project, through the versioned store, and asks its observer (the sheet side) what the outcome
owes the row and the chat, so those are written in the same transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.errors import RateLimited, SheetReelError, Transient, Unavailable
from storage.models import Mode, Project, ProjectState, Segment, StepOutcome
from storage.projects import Effects, ProjectStore
from storage.retry import RetryPolicy

S = ProjectState

RUNNING = frozenset({S.storyboarding, S.generating, S.composing})
FINAL = frozenset({S.completed, S.failed, S.cancelled})
# Where step mode stops until the user picks 继续.
RESTING = frozenset({S.storyboard_ready, S.segments_ready})
# The step that starts from each state, and the running state it shows meanwhile.
STEPS = {S.pending: ("storyboard", S.storyboarding), S.storyboard_ready: ("segments", S.generating),
         S.segments_ready: ("compose", S.composing)}
# Where a running step falls back to when it stops early: the state whose outputs it started from.
RESUME_FROM = {S.storyboarding: S.pending, S.generating: S.storyboard_ready, S.composing: S.segments_ready}
SUCCEEDS_TO = {S.storyboarding: S.storyboard_ready, S.generating: S.segments_ready, S.composing: S.completed}
# States a user may restart from with 重新生成分镜 / 重做第N段 / 合成.
RESTARTABLE = frozenset({S.storyboard_ready, S.segments_ready, S.completed, S.failed, S.cancelled})
ALL = frozenset(S)


class Event(str, enum.Enum):
    inputs_changed = "inputs_changed"  # a new row, or the user edited an input; all inputs valid
    inputs_invalid = "inputs_invalid"  # the same, with problems the user must fix
    # the user's 操作
    start = "start"
    resume = "resume"
    redo_storyboard = "redo_storyboard"
    redo_segment = "redo_segment"
    compose = "compose"
    retry = "retry"
    cancel = "cancel"
    action_refused = "action_refused"
    # the runner
    step_started = "step_started"
    step_progress = "step_progress"
    task_saved = "task_saved"  # a provider task was journalled on its segment; the row does not change
    step_succeeded = "step_succeeded"
    step_retry = "step_retry"  # failed, will be tried again later
    step_failed = "step_failed"  # failed for good
    step_cancelled = "step_cancelled"
    step_interrupted = "step_interrupted"  # SIGTERM: checkpointed, resumes on the next start
    crash_resumed = "crash_resumed"  # found mid-step with its process gone
    crash_loop = "crash_loop"  # ... once too often
    # operators and repair
    reset = "reset"
    missing_segments = "missing_segments"  # repair: segment files are gone, make them again
    missing_final = "missing_final"  # repair: the final video or cover is gone
    resync = "resync"  # repair: write the whole row again
    row_deleted = "row_deleted"
    sheet_refused = "sheet_refused"  # the sheet refused our write for good
    columns_missing = "columns_missing"  # the table lacks columns the write needs; the rest landed
    links_renewed = "links_renewed"  # signed URLs about to expire were signed anew
    cleaned_up = "cleaned_up"  # `cleanup` removed a finished project's intermediates
    reprioritised = "reprioritised"  # the row's 优先级 changed: the queue order, nothing in the row
    # pictures drawn after their stage committed (so the next stage did not wait for them)
    plan_drawn = "plan_drawn"  # the storyboard's contact sheet and animatic
    shots_drawn = "shots_drawn"  # the segments' contact sheet


USER_ACTIONS = frozenset({Event.start, Event.resume, Event.redo_storyboard, Event.redo_segment, Event.compose,
                          Event.retry, Event.cancel})


class _Same:
    def __repr__(self) -> str:
        return "SAME"


class _LastGood:
    def __repr__(self) -> str:
        return "LAST_GOOD"


SAME, LAST_GOOD = _Same(), _LastGood()
Target = ProjectState | _Same | _LastGood


def _to(states, target) -> dict[ProjectState, Target]:
    return {s: target for s in states}


TABLE: dict[Event, dict[ProjectState, Target]] = {
    Event.inputs_changed: _to(ALL, S.pending),
    Event.inputs_invalid: _to(ALL, S.failed),
    Event.start: {S.pending: SAME, S.cancelled: LAST_GOOD},
    Event.resume: {S.storyboard_ready: SAME, S.segments_ready: SAME, S.cancelled: LAST_GOOD},
    Event.redo_storyboard: _to(RESTARTABLE, S.pending),
    Event.redo_segment: _to(RESTARTABLE, S.storyboard_ready),
    Event.compose: _to(RESTARTABLE, S.segments_ready),
    Event.retry: {S.failed: LAST_GOOD},
    Event.cancel: _to(ALL - FINAL, S.cancelled),
    Event.action_refused: _to(ALL, SAME),
    Event.step_started: {state: running for state, (_, running) in STEPS.items()},
    Event.step_progress: _to(RUNNING, SAME),
    Event.task_saved: _to(RUNNING, SAME),
    Event.step_succeeded: dict(SUCCEEDS_TO),
    Event.step_retry: dict(RESUME_FROM),
    Event.step_failed: _to(RUNNING, S.failed),
    Event.step_cancelled: _to(RUNNING | set(STEPS), S.cancelled),
    Event.step_interrupted: dict(RESUME_FROM),
    Event.crash_resumed: dict(RESUME_FROM),
    Event.crash_loop: _to(RUNNING, S.failed),
    Event.reset: dict(RESUME_FROM),
    Event.missing_segments: _to(ALL - {S.pending}, S.storyboard_ready),
    Event.missing_final: _to(ALL - {S.pending}, S.segments_ready),
    Event.resync: _to(ALL, SAME),
    Event.row_deleted: _to(ALL, SAME),
    Event.sheet_refused: _to(ALL, SAME),
    Event.columns_missing: _to(ALL, SAME),
    Event.links_renewed: _to(ALL, SAME),
    Event.cleaned_up: {S.completed: SAME},
    Event.reprioritised: _to(ALL, SAME),
    Event.plan_drawn: _to(ALL, SAME),
    Event.shots_drawn: _to(ALL, SAME),
}
ANNOUNCED = frozenset({Event.step_failed, Event.crash_loop, Event.inputs_invalid})
# Events after which a pending 取消 means nothing any more: the user asked for something newer,
# or the work it would have stopped has ended.
SETTLES_CANCEL = USER_ACTIONS | {Event.inputs_changed, Event.inputs_invalid, Event.step_cancelled,
                                 Event.step_failed, Event.crash_loop}


STEP_OUTCOMES = {
    Event.step_succeeded: StepOutcome.succeeded,
    Event.step_retry: StepOutcome.failed,
    Event.step_failed: StepOutcome.failed,
    Event.step_cancelled: StepOutcome.cancelled,
    Event.step_interrupted: StepOutcome.interrupted,
    Event.crash_resumed: StepOutcome.crashed,
    Event.crash_loop: StepOutcome.crashed,
}
_STEP_NOTES = {
    StepOutcome.cancelled: "已取消",
    StepOutcome.interrupted: "进程退出，下次启动时继续",
    StepOutcome.crashed: "处理进程中断（崩溃或被强制结束）",
}


class Refused(SheetReelError):
    """The event does not apply in the project's current state."""

    def __init__(self, event: Event, state: ProjectState):
        super().__init__(f"{event.value} 不适用于当前状态（{state.label}）")
        self.event, self.state = event, state


@dataclass(frozen=True)
class Change:
    event: Event
    before: ProjectState
    after: ProjectState

    @property
    def announced(self) -> bool:
        return self.event in ANNOUNCED or (self.event == Event.step_succeeded and self.after == S.completed)

    @property
    def settles_cancel(self) -> bool:
        return self.event in SETTLES_CANCEL or (self.event == Event.step_succeeded and self.after == S.completed)


def target(event: Event, state: ProjectState, last_good: ProjectState) -> ProjectState:
    """Where `event` takes a project in `state`; Refused if it does not apply there."""
    to = TABLE[event].get(state)
    if to is None:
        raise Refused(event, state)
    if to is SAME:
        return state
    if to is LAST_GOOD:
        return last_good
    return to


def _move(p: Project, event: Event, text: str | None = None) -> Change:
    before = p.state
    p.state = target(event, before, p.last_good)
    if text is not None:
        p.progress_text = text
    if p.state in (S.failed, S.cancelled) and before not in FINAL:
        # 重试 and 开始 resume from the last stage whose outputs are complete.
        p.last_good = RESUME_FROM.get(before, before)
    return Change(event, before, p.state)


# -- predicates ---------------------------------------------------------------------------------


def is_running(state: ProjectState) -> bool:
    return state in RUNNING


def is_final(state: ProjectState) -> bool:
    return state in FINAL


def rests(p: Project) -> bool:
    """Step mode waits here for the user's 继续."""
    return p.mode == Mode.step and p.state in RESTING and not p.advance_once


def upcoming_step(p: Project) -> tuple[str, datetime | None] | None:
    """The step this project waits to start, and from when (None: now); None if it waits for none."""
    if p.state not in STEPS or rests(p):
        return None
    return STEPS[p.state][0], p.retry_at


def next_step(p: Project, now: datetime) -> str | None:
    """The step that may start now, if any."""
    upcoming = upcoming_step(p)
    if upcoming is None or (upcoming[1] is not None and upcoming[1] > now):
        return None
    return upcoming[0]


def due(p: Project, now: datetime) -> bool:
    """Worth handing to a worker: a step can start, or a dead worker's step must be resumed."""
    return is_running(p.state) or next_step(p, now) is not None


# -- the row's inputs ---------------------------------------------------------------------------


def inputs_changed(p: Project, problems: list[str]) -> Change:
    """New inputs: everything made from the old ones is stale (the caller removed the files)."""
    change = _move(p, Event.inputs_invalid if problems else Event.inputs_changed)
    p.last_good, p.attempts, p.retry_at, p.crash_resumes, p.advance_once = S.pending, 0, None, 0, False
    p.outage_waits, p.cleaned_at = 0, None
    p.storyboard_json = p.final_url = p.cover_url = p.final_duration = None
    p.progress = 0
    p.error, p.notice = "；".join(problems), ""
    p.progress_text = "输入有误" if problems else "排队中"
    return change


# -- the user's actions -------------------------------------------------------------------------


def action(p: Project, event: Event) -> Change:
    """A user action the state accepts; Refused otherwise. Side effects (files, segments) are the
    caller's, done before this and only once this is known to apply (see `accepts`)."""
    if event not in USER_ACTIONS:
        raise ValueError(f"{event} is not a user action")
    change = _move(p, event)
    p.retry_at, p.error, p.notice = None, "", ""
    if event == Event.cancel:
        p.progress_text, p.advance_once = "已取消", False
        return change
    p.attempts, p.outage_waits, p.crash_resumes, p.advance_once, p.progress_text = 0, 0, 0, True, "排队中"
    p.cleaned_at = None  # whatever runs next makes intermediates again
    if event == Event.redo_segment:
        p.takes += 1  # part of every generation seed: a redo is a new take, not the same video
    if event == Event.redo_storyboard:
        p.storyboard_json = p.final_url = p.cover_url = p.final_duration = None
    return change


def accepts(p: Project, event: Event) -> bool:
    return p.state in TABLE[event]


def action_refused(p: Project, message: str) -> Change:
    """The 操作 is cleared, and the row says why it was not taken (beside its own problems) until
    the next 操作 or input edit."""
    p.notice = message
    return _move(p, Event.action_refused)


# -- the runner ---------------------------------------------------------------------------------


def step_started(p: Project, progress: int, text: str) -> Change:
    before = p.state
    change = _move(p, Event.step_started)
    p.last_good, p.advance_once, p.error = before, False, ""
    p.progress, p.progress_text = progress, text
    return change


def step_progress(p: Project, progress: int, text: str, made: bool = False) -> Change:
    """`made`: a piece of the step's output is finished and kept (a segment), so a crash after
    this is not the same crash again."""
    change = _move(p, Event.step_progress)
    p.progress, p.progress_text = progress, text
    if made:
        p.crash_resumes = 0
    return change


def task_saved(p: Project) -> Change:
    """The segment committed with this holds its provider task: kept before and after the submit."""
    return _move(p, Event.task_saved)


def step_succeeded(p: Project, progress: int, text: str, notice: str | None = None) -> Change:
    """`notice`: what the row should know about how the step went (made without narration...)."""
    change = _move(p, Event.step_succeeded)
    p.last_good, p.attempts, p.outage_waits, p.retry_at, p.crash_resumes = p.state, 0, 0, None, 0
    p.progress, p.progress_text = progress, text
    if notice is not None:
        p.notice = notice
    if p.state == S.completed:
        p.error = ""
    return change


# Waiting out a service outage: backed off to 10 minutes, for about a day.
OUTAGE = RetryPolicy(attempts=150, base=5.0, cap=600.0, jitter=0.5)


def step_failed(p: Project, err: SheetReelError, now: datetime, policy: RetryPolicy,
                outage: RetryPolicy = OUTAGE) -> Change:
    """A transient error is tried again later while the policy allows; anything else fails.

    A service that is down or busy (Unavailable) is not the project's fault: those waits back off on
    their own count under `outage` and never use up the step's attempts.
    """
    retry_after = err.retry_after if isinstance(err, RateLimited) else None
    if isinstance(err, Unavailable):
        p.outage_waits += 1
        wait, tries = outage.next_delay(p.outage_waits, retry_after), p.outage_waits
    else:
        p.attempts += 1
        wait = policy.next_delay(p.attempts, retry_after) if isinstance(err, Transient) else None
        tries = p.attempts
    if wait is not None:
        change = _move(p, Event.step_retry)
        p.retry_at = now + timedelta(seconds=wait)
        p.error, p.progress_text = str(err), f"等待重试（第{tries}次）"
        return change
    change = _move(p, Event.step_failed)
    p.retry_at, p.progress_text = None, "失败"
    message = str(err)
    if isinstance(err, Transient):
        # "will retry by itself" is no longer true: say what the user can do instead.
        message = message.replace("稍后自动重试", f"已自动重试{tries}次仍失败，请稍后在「操作」选择“重试”")
    p.error = message
    return change


def step_cancelled(p: Project) -> Change:
    change = _move(p, Event.step_cancelled)
    p.retry_at, p.error, p.progress_text, p.advance_once = None, "", "已取消", False
    return change


def step_interrupted(p: Project) -> Change:
    return _move(p, Event.step_interrupted, "等待继续")


def crash_resumed(p: Project, max_crashes: int) -> Change:
    """A worker found the project mid-step with nobody holding it: its process died there."""
    p.crash_resumes += 1
    if p.crash_resumes >= max_crashes:
        change = _move(p, Event.crash_loop)
        p.retry_at, p.progress_text = None, "失败"
        p.error = (f"这一步已连续 {p.crash_resumes} 次导致处理进程崩溃（例如内存不足），已停止自动重试："
                   "请检查图片大小、段数与模板设置后在「操作」选择“重试”，或联系工程师查看日志")
        return change
    return _move(p, Event.crash_resumed, "进程中断，继续处理")


# -- operators and repair -----------------------------------------------------------------------


def reset(p: Project) -> Change:
    return _move(p, Event.reset, "已重置，等待继续")


def files_missing(p: Project, segments: bool) -> Change:
    """Repair found outputs gone: go back to the stage that makes them, and run it once."""
    change = _move(p, Event.missing_segments if segments else Event.missing_final)
    p.last_good, p.advance_once, p.attempts, p.outage_waits, p.retry_at = p.state, True, 0, 0, None
    p.progress_text = "文件缺失，重新生成"
    return change


def resync(p: Project) -> Change:
    return _move(p, Event.resync)


def row_deleted(p: Project) -> Change:
    p.row_deleted = True
    return _move(p, Event.row_deleted)


def sheet_refused(p: Project, message: str) -> Change:
    # A notice, not the error: the project's own error (why it failed) must survive a refused
    # write, and a repair's rewrite of the row.
    p.notice = f"写回表格失败：{message}"
    return _move(p, Event.sheet_refused)


COLUMNS_MISSING = "表格缺少"


def columns_missing_notice(columns: list[str]) -> str:
    names = "".join(f"「{c}」" for c in columns)
    return f"{COLUMNS_MISSING}{names}列，这些内容没有写回：请在表格里加上这些列（运行 sheetreel init 可自动补齐）"


def columns_noticed(p: Project, columns: list[str]) -> bool:
    """Whether the row already says what the table lacks (nothing, once the columns are back)."""
    if columns:
        return p.notice == columns_missing_notice(columns)
    return not p.notice.startswith(COLUMNS_MISSING)


def columns_missing(p: Project, columns: list[str]) -> Change:
    """The row's other cells landed; it says which columns the table lacks until they are added."""
    p.notice = columns_missing_notice(columns) if columns else ""
    return _move(p, Event.columns_missing)


def cleaned_up(p: Project, now: datetime) -> Change:
    p.cleaned_at = now
    return _move(p, Event.cleaned_up)


def plan_drawn(p: Project) -> Change:
    """The storyboard's previews are drawn: the row shows them (those still current, see the sheet side)."""
    return _move(p, Event.plan_drawn)


def shots_drawn(p: Project) -> Change:
    """The segments' contact sheet is drawn."""
    return _move(p, Event.shots_drawn)


def reprioritised(p: Project, priority: int) -> Change:
    p.priority = priority
    return _move(p, Event.reprioritised)


def links_renewed(p: Project, final_url: str | None, cover_url: str | None) -> Change:
    """Fresh URLs for files already published (segments' come with the commit); the row is rewritten."""
    p.final_url, p.cover_url = final_url or p.final_url, cover_url or p.cover_url
    return _move(p, Event.links_renewed)


# -- committing ---------------------------------------------------------------------------------

Transition = Callable[[Project], Change | list[Change]]
# The sheet side: what a committed outcome owes the row and the chat.
Observer = Callable[[Project, list[Segment], list[Change]], Effects]


@dataclass
class Lifecycle:
    store: ProjectStore
    observer: Observer

    def commit(self, project_id: str, transition: Transition, segments: tuple[Segment, ...] = ()) -> Project:
        """Apply `transition` to the freshest copy of the project and commit it with what it owes.

        A concurrent save makes the store apply it again to the newer copy; a transition that no
        longer applies there raises Refused.
        """
        return self.store.update(project_id, lambda p, segs: self._effects(p, segs, transition(p)), segments)

    def create(self, project: Project, transition: Transition) -> bool:
        """Insert a new project after `transition`; False if its row already has one."""
        return self.store.create(project, self._effects(project, [], transition(project)))

    def _effects(self, p: Project, segments: list[Segment], outcome: Change | list[Change]) -> Effects:
        changes = [outcome] if isinstance(outcome, Change) else outcome
        effects = self.observer(p, segments, changes)
        effects.clear_cancel = effects.clear_cancel or any(c.settles_cancel for c in changes)
        # The step run is closed in the transaction of its outcome: a crash between the two
        # cannot leave it open, and one left by a dead process is closed by the resume.
        for c in changes:
            if (outcome := STEP_OUTCOMES.get(c.event)) is not None:
                effects.close_open_steps = (outcome, p.error if outcome == StepOutcome.failed else _STEP_NOTES.get(outcome))
        return effects
