"""The scale-out roles, on PostgreSQL: one gateway owns the Feishu link; any number of workers run
stages from the job queue and never talk to Feishu.

    sheetreel gateway                   poll the table, send row writes and chat messages, renew
                                        links, requeue the jobs of dead workers
    sheetreel worker --queues gpu:wan   run the stages routed to those queues
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from connectors.feishu.protocol import BitableClient
from storage.db import normalize_url
from storage.models import Project
from sync import lifecycle, links
from sync.app import (
    drain,
    each_link,
    make_fetch_image,
    make_lifecycle,
    make_links,
    make_locks,
    make_publisher,
    make_runner,
    make_stores,
    polling_all,
    schedule,
    shares_files,
    tables_of,
    template_library,
    utc_clock,
    watched,
)
from sync.cli_support import CliError
from sync.jobqueue import GPU_QUEUES, TASK, JobQueue, Router, yielding_manager
from sync.metrics import Metrics
from sync.settings import Settings
from sync.staging import fetch_opening_image, fresh_cache

log = logging.getLogger(__name__)
REQUEUE_SECONDS = 2.0  # a job that found its project held (an intake in progress) runs again this soon


def require_postgres(settings: Settings) -> str:
    if not shares_files(settings):
        raise CliError("the gateway and worker roles need PostgreSQL as the one database of every host",
                       "set SHEETREEL_DATABASE_URL=postgresql://user:password@host:5432/sheetreel, "
                       "or run everything on one host with `sheetreel run`")
    return normalize_url(settings.db_url)


def make_queue(settings: Settings, clock: Callable[[], datetime]) -> JobQueue:
    router = Router(template_library(settings), settings.segment_backend, settings.queues)
    return JobQueue(require_postgres(settings), router, clock)


class Gateway:
    """The one process per table that reads and writes Feishu."""

    def __init__(self, settings: Settings, table: BitableClient | None = None,
                 clock: Callable[[], datetime] = utc_clock):
        self.settings, self.clock = settings, clock
        self.queue = make_queue(settings, clock)
        self.stores = make_stores(settings, self.queue.dispatch)
        self.life = make_lifecycle(settings, self.stores, clock)
        self.locks = make_locks(settings)
        self.publisher = make_publisher(settings)
        self.links = make_links(settings, self.stores, self.life, self.locks, template_library(settings), clock, table,
                                stage=self.stage)
        self.metrics = watched(Metrics(), self.stores, [link.table for link in self.links], clock)
        self.fetch_image = make_fetch_image(settings, tables_of(self.links))

    def stage(self, p: Project) -> None:
        """The row's new opening image, fetched here (the one host that talks to Feishu) into the
        object store, where the worker that runs its storyboard finds it."""
        paths = self.stores.projects.paths(p)
        fresh_cache(p, paths)
        if not paths.opening_image.is_file():
            fetch_opening_image(p, paths, self.fetch_image)
        self.publisher.push(paths.opening_image)

    def tick(self) -> int:
        """Poll each table; queue a job for any due project that has none. Returns how many were queued."""
        each_link(self.links, lambda link: link.poller.poll())
        due = self.stores.projects.projects(lifecycle.ALL - lifecycle.FINAL)
        return self.queue.sweep(self.stores.projects.session, due)

    def flush(self) -> None:
        each_link(self.links, lambda link: link.writer.flush())

    def requeue_stalled(self) -> int:
        return self.queue.retry_stalled(self.settings.stalled_seconds)

    def renew_links(self) -> int:
        margin = timedelta(seconds=self.settings.oss_url_expiry_seconds / 3)
        return links.renew_links(self.stores.projects, self.publisher, self.life, self.locks, self.clock(), margin)

    def run(self, stop: threading.Event) -> None:
        scheduler = schedule(self.settings, {
            self.flush: self.settings.flush_interval_seconds,
            self.requeue_stalled: self.settings.stalled_seconds / 3,
            self.renew_links: min(3600.0, self.settings.oss_url_expiry_seconds / 6),
        })
        poll, events = polling_all(self.settings, self.links, self.tick, stop)
        try:
            stop.wait()
        finally:
            if events is not None:
                events.close()
            poll.join()
            scheduler.shutdown(wait=True)
            drain(self.links, timeout=30)


class Worker:
    """Runs the stages routed to its queues, `settings.workers` at a time."""

    def __init__(self, settings: Settings, queues: list[str], clock: Callable[[], datetime] = utc_clock):
        self.settings, self.queues, self.clock = settings, queues, clock
        self.queue = make_queue(settings, clock)
        self.stores = make_stores(settings, self.queue.dispatch)
        self.stopping = threading.Event()
        if any(q.startswith(GPU_QUEUES) for q in queues):
            self.queue.app.job_manager = yielding_manager(self.queue.app.connector, settings.gpu_slots, self.stopping)
        self.metrics = Metrics()  # steps, shots, GPU time; the gateway's report the projects and outbox
        self.runner = make_runner(settings, self.stores, make_lifecycle(settings, self.stores, clock), make_locks(settings),
                                  template_library(settings), make_publisher(settings),
                                  make_fetch_image(settings, None), clock, self.stopping, self.metrics)
        self.queue.app.task(name=TASK, pass_context=True)(self._run_stage)
        # (queue, seconds from due to started) of each job taken: the queue wait bench/scale.py prints.
        self.waits: deque[tuple[str, float]] = deque(maxlen=10_000)

    def _run_stage(self, context, project_id: str, due: str | None = None) -> None:
        queue, ran = context.job.queue, []
        waited = (self.clock() - datetime.fromisoformat(due)).total_seconds() if due else 0.0
        self.waits.append((queue, waited))
        log.info("job started project=%s queue=%s waited=%.2fs", project_id, queue, waited)

        def accepts(p, step: str) -> bool:
            # One stage per job: the commit that ends it queued the job of the next stage, which
            # may belong to another queue (another host).
            if ran or self.queue.router.queue(p, step) != queue:
                return False
            ran.append(step)
            return True

        if not self.runner.run(project_id, accepts) and not self.stopping.is_set():
            # Held for a moment (the gateway applying an edit of the row): try again shortly.
            with self.stores.projects.session() as s:
                p = self.stores.projects.get(project_id)
                if p is not None:
                    self.queue.defer(s, p, queue, self.clock() + timedelta(seconds=REQUEUE_SECONDS))
                    s.commit()

    def run(self, signals: bool = True) -> None:
        """Until stop() (or SIGTERM / SIGINT, with `signals`): then running steps stop at their
        next safe point (checkpointed, resumed by whichever worker takes the project next)."""
        asyncio.run(self._run(signals))

    def stop(self) -> None:
        """From any thread."""
        log.info("worker stopping queues=%s", ",".join(self.queues))
        self.stopping.set()
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)

    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task | None = None

    async def _run(self, signals: bool) -> None:
        self._loop = asyncio.get_running_loop()
        async with self.queue.app.open_async():
            self._task = asyncio.create_task(self.queue.app.run_worker_async(
                queues=self.queues, concurrency=self.settings.workers, name=f"sheetreel-{'+'.join(self.queues)}",
                install_signal_handlers=False, update_heartbeat_interval=self.settings.stalled_seconds / 3,
                stalled_worker_timeout=self.settings.stalled_seconds, delete_jobs="successful"))
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.add_signal_handler(sig, self.stop)
            if self.stopping.is_set():  # stop() came before the task existed
                self._task.cancel()
            log.info("worker started queues=%s concurrency=%d", ",".join(self.queues), self.settings.workers)
            try:
                await self._task
            except asyncio.CancelledError:
                pass
