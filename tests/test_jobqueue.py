"""The scale-out job queue: where each stage is routed, and the one waiting job that follows its
project's changes inside their transactions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.templates import TemplateLibrary
from storage.db import make_engine
from storage.models import Mode, Project, ProjectState
from storage.projects import Effects
from storage.stores import Stores
from sync.jobqueue import JobQueue, Router

from conftest import TEST_TEMPLATES

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def templates(tmp_path: Path) -> TemplateLibrary:
    routed = tmp_path / "templates" / "routed"
    routed.mkdir(parents=True)
    (routed / "template.toml").write_text((TEST_TEMPLATES / "tiny" / "template.toml").read_text()
                      .replace('segment_backend = "kenburns"', 'segment_backend = "diffusers"\nqueue = "gpu:ltx"'))
    return TemplateLibrary(tmp_path / "templates", TEST_TEMPLATES)


def test_stages_go_to_the_queue_of_what_they_need(tmp_path):
    lib = templates(tmp_path)
    p = Project(id="p", table_id="t", record_id="r", template="tiny")
    assert Router(lib, "kenburns").queue(p, "storyboard") == "cpu"
    assert Router(lib, "kenburns").queue(p, "segments") == "cpu"
    assert Router(lib, "kenburns").queue(p, "compose") == "cpu"
    cloud = Project(id="c", table_id="t", record_id="r", template="cloud")
    assert Router(lib, "seedance").queue(cloud, "segments") == "api:seedance"
    assert Router(lib, "diffusers").queue(cloud, "segments") == "gpu:diffusers"
    assert Router(lib, "diffusers", {"diffusers": "gpu:wan"}).queue(cloud, "segments") == "gpu:wan"
    routed = Project(id="x", table_id="t", record_id="r", template="routed")
    assert Router(lib, "kenburns", {"diffusers": "gpu:wan"}).queue(routed, "segments") == "gpu:ltx"
    # A template that no longer exists fails on whichever host takes it, with its row error.
    assert Router(lib, "diffusers").queue(Project(id="g", table_id="t", record_id="r", template="gone"), "segments") == "cpu"


def jobs(stores: Stores) -> list[tuple]:
    with stores.projects.session() as s:
        return [tuple(r) for r in s.execute(text(
            "SELECT queue_name, scheduled_at, status FROM procrastinate_jobs WHERE lock = 'p1' ORDER BY id"))]


def change(**fields):
    def apply(q: Project, _segments) -> Effects:
        for name, value in fields.items():
            setattr(q, name, value)
        return Effects()

    return apply


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_one_waiting_job_per_project_follows_where_and_when_it_is_due(database_url, tmp_path):
    queue = JobQueue(database_url, Router(templates(tmp_path), "kenburns"), clock=lambda: NOW)
    stores = Stores.open(make_engine(database_url), tmp_path, queue.dispatch)
    later = NOW + timedelta(hours=1)
    # A new project waiting out a retry: its job waits as long, on the storyboard's queue.
    assert stores.projects.create(Project(id="p1", table_id="t", record_id="r1", template="routed", retry_at=later))
    assert jobs(stores) == [("cpu", later, "todo")]
    # 重试 now: the same job, brought forward (no second one).
    stores.projects.update("p1", change(retry_at=None))
    assert jobs(stores) == [("cpu", None, "todo")]
    # The storyboard is done meanwhile: the waiting job moves to the shots' queue.
    stores.projects.update("p1", change(state=ProjectState.storyboard_ready))
    assert jobs(stores) == [("gpu:ltx", None, "todo")]
    # Step mode resting there, or a running or finished project: nothing new is queued.
    stores.projects.update("p1", change(mode=Mode.step))
    stores.projects.update("p1", change(state=ProjectState.generating))
    stores.projects.update("p1", change(state=ProjectState.completed))
    assert jobs(stores) == [("gpu:ltx", None, "todo")]

    # The job rides in the change's transaction: a change that fails after deferring leaves no job.
    def then_fail(session, project):
        queue.dispatch(session, project)
        raise RuntimeError("the commit never happens")

    failing = Stores.open(stores.projects.engine, tmp_path, then_fail)
    stores.projects.update("p1", change(state=ProjectState.completed))
    with stores.projects.session() as s:
        s.execute(text("DELETE FROM procrastinate_jobs"))
        s.commit()
    with pytest.raises(RuntimeError):
        failing.projects.update("p1", change(state=ProjectState.pending, mode=Mode.auto))
    assert jobs(stores) == [] and stores.projects.get("p1").state == ProjectState.completed


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("ends", ["deleted on success", "failed"])
def test_the_next_stage_is_woken_when_the_running_one_ends_not_at_the_next_poll(database_url, tmp_path, ends):
    """The next stage's job is deferred while the running job still holds the project's lock, so
    procrastinate's own wake-up comes too early; the running job's end must wake its queue again."""
    import psycopg
    from procrastinate.manager import get_channel_for_queues

    from sync.jobqueue import libpq_url

    queue = JobQueue(database_url, Router(templates(tmp_path), "kenburns"), clock=lambda: NOW)
    stores = Stores.open(make_engine(database_url), tmp_path, queue.dispatch)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as db:
        running = db.execute("INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status) "
                             "VALUES ('cpu', 'sheetreel.run_stage', 'p1', '{}', 'doing') RETURNING id").fetchone()[0]
        # The storyboard (that running job) ends by making the shots due: their job waits on the lock.
        stores.projects.create(Project(id="p1", table_id="t", record_id="r1", template="routed",
                                       state=ProjectState.storyboard_ready))
        (waiting,) = db.execute("SELECT id FROM procrastinate_jobs WHERE lock = 'p1' AND status = 'todo'").fetchone()
        with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
            for channel in get_channel_for_queues(["gpu:ltx"]):  # where a gpu:ltx worker listens
                listener.execute(f'LISTEN "{channel}"')
            db.execute("SELECT procrastinate_finish_job_v1(%s, %s, %s)",
                       (running, "succeeded" if ends.startswith("deleted") else "failed", ends.startswith("deleted")))
            woken = [json.loads(n.payload) for n in listener.notifies(timeout=30, stop_after=1)]
    assert woken == [{"type": "job_inserted", "job_id": waiting}]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_gpu_host_whose_slot_has_a_job_leaves_a_new_one_to_an_idle_host(database_url, tmp_path):
    """Two GPU hosts, each allowed two jobs on its one GPU: A already runs one. A project that has
    just become due goes to B, which would otherwise idle while A ran both at half speed; a job
    that has waited (every host busy) A takes at once."""
    import asyncio
    import threading
    import time

    from sync.jobqueue import libpq_url, yielding_manager

    router = Router(templates(tmp_path), "kenburns")
    stores = Stores.open(make_engine(database_url), tmp_path, JobQueue(database_url, router, clock=lambda: NOW).dispatch)
    a, b = (JobQueue(database_url, router, clock=lambda: NOW).app for _ in range(2))
    for app in (a, b):
        app.job_manager = yielding_manager(app.connector, gpu_slots=1, stopping=threading.Event(), wait=4.0)

    def due(project_id: str, ago: float) -> None:
        # The storyboard is done: the shots' job is due on the GPU queue from `ago` seconds back.
        assert stores.projects.create(Project(id=project_id, table_id="t", record_id=project_id, template="routed",
                                              state=ProjectState.storyboard_ready))
        with stores.projects.session() as s:
            s.execute(text("UPDATE procrastinate_jobs SET args = jsonb_set(args, '{due}', to_jsonb("
                           "CAST(now() - make_interval(secs => :ago) AS text))) WHERE lock = :pid"),
                      {"ago": ago, "pid": project_id})
            s.commit()

    def taken(job) -> str | None:
        return job.task_kwargs["project_id"] if job else None

    async def scenario() -> None:
        async with a.open_async(), b.open_async():
            host_a, host_b = await a.job_manager.register_worker(), await b.job_manager.register_worker()
            import psycopg
            with psycopg.connect(libpq_url(database_url), autocommit=True) as db:
                db.execute("INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, worker_id) "
                           "VALUES ('gpu:ltx', 'sheetreel.run_stage', 'running', '{}', 'doing', %s)", (host_a,))
            due("fresh", ago=0)
            from_a = asyncio.create_task(a.job_manager.fetch_job(["gpu:ltx"], host_a))
            done, _ = await asyncio.wait({from_a}, timeout=1.0)
            assert not done  # A holds back: a fetch alone takes milliseconds
            assert taken(await b.job_manager.fetch_job(["gpu:ltx"], host_b)) == "fresh"
            assert taken(await from_a) is None

            due("waited", ago=60)
            started = time.monotonic()
            assert taken(await a.job_manager.fetch_job(["gpu:ltx"], host_a)) == "waited"
            assert time.monotonic() - started < 4.0  # taken at once, not after the courtesy

            # B has a free slot no longer either, but A's slot is what matters for A: a fresh job
            # that no idle host took is A's after the moment.
            due("late", ago=0)
            assert taken(await a.job_manager.fetch_job(["gpu:ltx"], host_a)) == "late"

    asyncio.run(scenario())
