"""The transition table, pair by pair: every (state, event) either goes where the table below says
or is refused. The expectations are written out here independently of sync/lifecycle.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from storage.errors import BadInput, RateLimited, Transient, Unavailable
from storage.models import Mode, Project, ProjectState
from storage.retry import RetryPolicy
from sync import lifecycle
from sync.lifecycle import Event, Refused

P, SB, SR, G, GR, C, D, F, X = (ProjectState.pending, ProjectState.storyboarding, ProjectState.storyboard_ready,
                                ProjectState.generating, ProjectState.segments_ready, ProjectState.composing,
                                ProjectState.completed, ProjectState.failed, ProjectState.cancelled)
LAST = "last_good"  # the project's last good stage (here: storyboard_ready, set up below)
EVERY = [P, SB, SR, G, GR, C, D, F, X]
NOW = datetime(2026, 12, 2, tzinfo=UTC)


def row(**to):
    return {s: to.get(s.value) for s in EVERY}


def everywhere(to):
    return {s: (s if to == "same" else to) for s in EVERY}


# event -> {state: where it goes, or None for refused}
EXPECTED = {
    Event.inputs_changed: everywhere(P),
    Event.inputs_invalid: everywhere(F),
    Event.start: row(pending=P, cancelled=LAST),
    Event.resume: row(storyboard_ready=SR, segments_ready=GR, cancelled=LAST),
    Event.redo_storyboard: row(storyboard_ready=P, segments_ready=P, completed=P, failed=P, cancelled=P),
    Event.redo_segment: row(storyboard_ready=SR, segments_ready=SR, completed=SR, failed=SR, cancelled=SR),
    Event.compose: row(storyboard_ready=GR, segments_ready=GR, completed=GR, failed=GR, cancelled=GR),
    Event.retry: row(failed=LAST),
    Event.cancel: row(pending=X, storyboarding=X, storyboard_ready=X, generating=X, segments_ready=X, composing=X),
    Event.action_refused: everywhere("same"),
    Event.step_started: row(pending=SB, storyboard_ready=G, segments_ready=C),
    Event.step_progress: row(storyboarding=SB, generating=G, composing=C),
    Event.task_saved: row(storyboarding=SB, generating=G, composing=C),
    Event.step_succeeded: row(storyboarding=SR, generating=GR, composing=D),
    Event.step_retry: row(storyboarding=P, generating=SR, composing=GR),
    Event.step_failed: row(storyboarding=F, generating=F, composing=F),
    Event.step_cancelled: row(pending=X, storyboarding=X, storyboard_ready=X, generating=X, segments_ready=X,
                              composing=X),
    Event.step_interrupted: row(storyboarding=P, generating=SR, composing=GR),
    Event.crash_resumed: row(storyboarding=P, generating=SR, composing=GR),
    Event.crash_loop: row(storyboarding=F, generating=F, composing=F),
    Event.reset: row(storyboarding=P, generating=SR, composing=GR),
    Event.missing_segments: {**everywhere(SR), P: None},
    Event.missing_final: {**everywhere(GR), P: None},
    Event.resync: everywhere("same"),
    Event.row_deleted: everywhere("same"),
    Event.sheet_refused: everywhere("same"),
    Event.columns_missing: everywhere("same"),
    Event.links_renewed: everywhere("same"),
    Event.cleaned_up: row(completed=D),
    Event.reprioritised: everywhere("same"),
    Event.plan_drawn: everywhere("same"),
    Event.shots_drawn: everywhere("same"),
}
PAIRS = [(event, state) for event in Event for state in EVERY]


def test_every_event_has_expectations():
    assert set(EXPECTED) == set(Event) and all(set(v) == set(EVERY) for v in EXPECTED.values())


@pytest.mark.parametrize(("event", "state"), PAIRS, ids=[f"{e.value}@{s.value}" for e, s in PAIRS])
def test_transition_table(event, state):
    expected = EXPECTED[event][state]
    if expected is None:
        with pytest.raises(Refused):
            lifecycle.target(event, state, SR)
        return
    assert lifecycle.target(event, state, SR) == (SR if expected == LAST else expected)


def project(state: ProjectState, **kw) -> Project:
    return Project(id="p1", table_id="t", record_id="r", state=state, last_good=kw.pop("last_good", SR), **kw)


def test_a_refused_event_changes_nothing():
    p = project(D, error="", attempts=0)
    with pytest.raises(Refused):
        lifecycle.step_started(p, 5, "x")
    assert (p.state, p.progress_text) == (D, "")


def test_starting_a_step_remembers_where_it_started_and_failing_returns_there():
    p = project(GR, last_good=D, mode=Mode.step, advance_once=True)  # e.g. after 合成 on a completed project
    lifecycle.step_started(p, 90, "合成成片")
    assert (p.state, p.last_good, p.advance_once) == (C, GR, False)
    lifecycle.step_failed(p, BadInput("坏"), NOW, RetryPolicy())
    assert (p.state, p.last_good, p.error) == (F, GR, "坏")
    lifecycle.action(p, Event.retry)
    assert (p.state, p.attempts, p.advance_once) == (GR, 0, True)


def test_transient_failures_retry_by_the_policy_then_fail_saying_what_to_do():
    policy = RetryPolicy(attempts=3, base=5)
    p = project(G)
    lifecycle.step_failed(p, Transient("回复被截断，稍后自动重试"), NOW, policy)
    assert (p.state, p.attempts, (p.retry_at - NOW).total_seconds()) == (SR, 1, 5)
    assert lifecycle.next_step(p, NOW) is None and lifecycle.next_step(p, p.retry_at) == "segments"
    lifecycle.step_started(p, 10, "")
    lifecycle.step_failed(p, Transient("回复被截断，稍后自动重试"), NOW, policy)
    assert (p.state, p.attempts, (p.retry_at - NOW).total_seconds()) == (SR, 2, 10)
    lifecycle.step_started(p, 10, "")
    change = lifecycle.step_failed(p, Transient("回复被截断，稍后自动重试"), NOW, policy)
    assert p.state == F and change.announced and p.retry_at is None
    assert "稍后自动重试" not in p.error and "已自动重试3次仍失败" in p.error


def test_an_outage_never_uses_up_attempts_and_backs_off_on_its_own_count():
    policy, outage = RetryPolicy(attempts=3, base=5), RetryPolicy(attempts=20, base=5, cap=600)
    p = project(G)
    waits = []
    for _ in range(19):
        lifecycle.step_failed(p, Unavailable("飞书暂时不可用，稍后自动重试"), NOW, policy, outage)
        waits.append((p.retry_at - NOW).total_seconds())
        lifecycle.step_started(p, 10, "")
    assert p.attempts == 0 and p.outage_waits == 19 and waits[:3] == [5, 10, 20] and max(waits) == 600
    lifecycle.step_failed(p, RateLimited("限流，稍后自动重试", retry_after=42), NOW, policy, outage)
    assert p.state == F and "已自动重试20次仍失败" in p.error  # an outage of about a day does end
    # A success starts both counts again; the first real failure counts as attempt 1.
    q = project(G, outage_waits=7)
    lifecycle.step_failed(q, RateLimited("限流，稍后自动重试", retry_after=42), NOW, policy, outage)
    assert (q.state, q.attempts, (q.retry_at - NOW).total_seconds()) == (SR, 0, 42)  # the server's wait wins
    lifecycle.step_started(q, 10, "")
    lifecycle.step_succeeded(q, 90, "")
    assert q.outage_waits == 0


def test_crash_resumes_are_counted_and_the_third_fails_the_project():
    p = project(G)
    for n in (1, 2):
        change = lifecycle.crash_resumed(p, 3)
        assert (change.event, p.state, p.crash_resumes) == (Event.crash_resumed, SR, n)
        lifecycle.step_started(p, 10, "")
    change = lifecycle.crash_resumed(p, 3)
    assert (change.event, p.state, change.announced) == (Event.crash_loop, F, True)
    assert "连续 3 次" in p.error
    # A finished segment in between means progress: the count starts again.
    q = project(G, crash_resumes=2)
    lifecycle.step_progress(q, 50, "完成第1/2段", made=True)
    assert q.crash_resumes == 0


def test_step_mode_rests_until_the_user_continues():
    p = project(SR, mode=Mode.step)
    assert lifecycle.rests(p) and lifecycle.next_step(p, NOW) is None and not lifecycle.due(p, NOW)
    lifecycle.action(p, Event.resume)
    assert lifecycle.next_step(p, NOW) == "segments"
    lifecycle.step_started(p, 10, "")
    lifecycle.step_succeeded(p, 85, "")
    assert p.state == GR and lifecycle.rests(p)
    assert lifecycle.due(project(G, mode=Mode.step), NOW)  # a dead worker's step is always resumed


def test_which_outcomes_settle_a_pending_cancel():
    assert lifecycle.action(project(D), Event.redo_storyboard).settles_cancel
    p = project(C)
    assert lifecycle.step_succeeded(p, 100, "").settles_cancel  # too late to cancel: it is done
    p = project(SB)
    assert not lifecycle.step_succeeded(p, 10, "").settles_cancel  # still to be cancelled at the next step


def test_new_inputs_reset_everything_made_from_the_old_ones():
    p = project(D, attempts=2, crash_resumes=1, storyboard_json="{}", final_url="u", error="旧")
    change = lifecycle.inputs_changed(p, ["段数“x”无效"])
    assert (p.state, p.last_good, p.attempts, p.crash_resumes, p.storyboard_json, p.final_url) == (F, P, 0, 0, None, None)
    assert change.announced and p.error == "段数“x”无效"
    lifecycle.inputs_changed(p, [])
    assert (p.state, p.error) == (P, "")
