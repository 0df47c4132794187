"""The scale-out work queue: procrastinate, on the PostgreSQL database that is already the truth.

One job runs one stage of one project. A job is deferred inside the transaction of the state
change that makes its stage due (ProjectStore's dispatch hook), so no change is ever committed
without its job or the other way round. Each job's `lock` is its project (one job per project
runs at a time, across hosts) and so is its `queueing_lock` (at most one job per project waits).
Stages are routed to queues by what they need, so a host runs only what it can:

    storyboard, compose            cpu
    segments                       the template's `queue`, else SHEETREEL_QUEUES[backend],
                                   else cpu (kenburns), gpu:diffusers, api:<provider>
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import text
from sqlmodel import Session

from pipeline.templates import TemplateLibrary
from storage.errors import SheetReelError
from storage.models import Project
from sync import lifecycle

log = logging.getLogger(__name__)
TASK = "sheetreel.run_stage"
CPU = "cpu"
OFFLINE_BACKENDS = frozenset({"kenburns", "stock"})
GPU_QUEUES = "gpu:"  # the queues of stages that run on this host's own GPU
# A job that has waited less than this is left to idle GPU hosts by a host whose GPU slots all
# have a job: far longer than a new job's notification takes to reach an idle host and its fetch
# to run, short against a shot.
YIELD_SECONDS = 0.5
# This worker's running jobs, and how long the longest-waiting job it could take has been due.
_BUSY = """
SELECT (SELECT count(*) FROM procrastinate_jobs WHERE worker_id = %(worker_id)s AND status = 'doing') AS running,
       (SELECT EXTRACT(EPOCH FROM now() - min((args->>'due')::timestamptz)) FROM procrastinate_jobs
         WHERE status = 'todo' AND queue_name = ANY(%(queues)s) AND (scheduled_at IS NULL OR scheduled_at <= now())) AS waited
"""


def default_queue(backend: str) -> str:
    if backend in OFFLINE_BACKENDS:
        return CPU
    return "gpu:diffusers" if backend == "diffusers" else f"api:{backend}"


class Router:
    """Which queue runs a project's next stage."""

    def __init__(self, templates: TemplateLibrary, segment_backend: str, routes: dict[str, str] | None = None):
        self.templates, self.segment_backend, self.routes = templates, segment_backend, routes or {}

    def queue(self, project: Project, step: str) -> str:
        if step != "segments":
            return CPU
        try:
            template = self.templates.get(project.template)
        except SheetReelError:
            return CPU  # an unknown template fails on whichever host picks it up, with its row error
        backend = template.segment_backend or self.segment_backend
        return template.queue or self.routes.get(backend) or default_queue(backend)


def libpq_url(url: str) -> str:
    """psycopg's own form of a SQLAlchemy URL (without the +driver)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def yielding_manager(connector, gpu_slots: int, stopping: threading.Event, wait: float = YIELD_SECONDS):
    """A GPU host's procrastinate job manager. A host runs more jobs than it has GPUs so that one
    job's frame work overlaps another's inference; but a host that took two of a burst of new
    projects while another host's GPU idled would run both at half speed. So while its GPU slots
    all have a job, it leaves a job that has just come in to the idle hosts for a moment. Jobs
    that have waited longer (every host busy) it takes at once."""
    from procrastinate.manager import JobManager

    class YieldingJobManager(JobManager):
        async def fetch_job(self, queues, worker_id):
            try:
                row = await self.connector.execute_query_one_async(query=_BUSY, worker_id=worker_id,
                                                                   queues=list(queues or []))
                early = row["running"] >= gpu_slots and row["waited"] is not None and float(row["waited"]) < wait
            except Exception:  # noqa: BLE001 - only a courtesy: the fetch itself says what is wrong
                log.warning("job fetch courtesy skipped queues=%s", ",".join(queues or []), exc_info=True)
                early = False
            if early:
                await asyncio.sleep(wait - max(0.0, float(row["waited"])))
                if stopping.is_set():
                    return None
            return await super().fetch_job(queues, worker_id)

    return YieldingJobManager(connector)


class JobQueue:
    def __init__(self, url: str, router: Router, clock: Callable[[], datetime]):
        from procrastinate import App, PsycopgConnector, SyncPsycopgConnector

        self.router, self.clock = router, clock
        self.app = App(connector=PsycopgConnector(conninfo=libpq_url(url)))
        # Deferring always rides on the caller's own (synchronous) connection, inside its
        # transaction; this app is never opened, it only writes the job row there.
        self._deferrer = App(connector=SyncPsycopgConnector(conninfo=libpq_url(url)))

    # -- deferring, inside the caller's transaction ---------------------------------------------

    def dispatch(self, session: Session, project: Project) -> None:
        """The ProjectStore hook: called with every project change before it commits."""
        upcoming = lifecycle.upcoming_step(project)
        if upcoming is None:
            return
        step, at = upcoming
        self.defer(session, project, self.router.queue(project, step), at)

    def defer(self, session: Session, project: Project, queue: str, at: datetime | None) -> None:
        """Have a job run this project's next stage on `queue` from `at`, in the session's transaction."""
        from procrastinate.exceptions import AlreadyEnqueued

        # The job already waiting for this project (at most one) is moved to where and when the
        # project now needs it: a 重试 brings a scheduled retry forward, new inputs re-route it, a
        # new 优先级 reorders it (workers take higher priority first, then the job queued first).
        moved = session.execute(
            text("UPDATE procrastinate_jobs SET queue_name = :queue, scheduled_at = :at, priority = :priority, "
                 "args = jsonb_set(args, '{due}', to_jsonb(CAST(:due AS text))) "
                 "WHERE queueing_lock = :pid AND status = 'todo' RETURNING id"),
            {"queue": queue, "at": at, "pid": project.id, "due": (at or self.clock()).isoformat(),
             "priority": project.priority},
        ).first()
        if moved is not None:
            return
        raw = session.connection().connection.driver_connection
        try:
            # A savepoint: a job deferred meanwhile by someone else is refused without
            # aborting the change it rides with.
            with session.begin_nested():
                self._deferrer.configure_task(TASK, lock=project.id, queueing_lock=project.id, queue=queue,
                                              schedule_at=at, priority=project.priority, connection=raw).defer(
                    project_id=project.id, due=(at or self.clock()).isoformat())
        except AlreadyEnqueued:
            return
        log.info("job queued project=%s record=%s queue=%s at=%s", project.id, project.record_id, queue,
                 at.isoformat() if at else "now")

    # -- the gateway's sweep ----------------------------------------------------------------------

    def sweep(self, session_factory: Callable[[], Session], projects: Iterable[Project]) -> int:
        """Queue a job for each due project that has none (a project from before scale-out, a
        row whose job was lost with a database restore). Returns how many were queued."""
        queued = 0
        with session_factory() as s:
            active = {row[0] for row in s.execute(text(
                "SELECT lock FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"))}
            for p in projects:
                if p.id in active:
                    continue
                step = lifecycle.upcoming_step(p)
                if step is None and lifecycle.is_running(p.state):
                    step = (lifecycle.STEPS[lifecycle.RESUME_FROM[p.state]][0], None)  # its job died with it
                if step is None:
                    continue
                self.defer(s, p, self.router.queue(p, step[0]), step[1])
                queued += 1
            s.commit()
        return queued

    def retry_stalled(self, seconds_since_heartbeat: float) -> int:
        """Jobs whose worker stopped sending heartbeats (killed, host lost) go back to the queue."""
        from procrastinate.exceptions import UniqueViolation
        from procrastinate.jobs import Status

        async def retry() -> int:
            async with self.app.open_async():
                stalled = await self.app.job_manager.get_stalled_jobs(seconds_since_heartbeat=seconds_since_heartbeat)
                for job in stalled:
                    project = job.task_kwargs.get("project_id")
                    try:
                        await self.app.job_manager.retry_job(job)
                    except UniqueViolation:
                        # The stage it ran had finished and queued the next one before the worker
                        # died: that job carries the project on; this one only has to end.
                        await self.app.job_manager.finish_job(job, Status.FAILED, delete_job=False)
                    log.warning("stalled job requeued job=%s project=%s queue=%s", job.id, project, job.queue)
                return len(stalled)

        return asyncio.run(retry())
