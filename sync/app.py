"""The composition root: settings in, a wired application out. Nothing else builds clients."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from connectors.feishu.lark_client import LarkBitable, make_lark_client
from connectors.feishu.messenger import LarkMessenger, WebhookMessenger
from connectors.feishu.protocol import BitableClient, Messenger
from connectors.fetch import ImageFetcher
from pipeline.templates import TemplateLibrary, bundled_templates_dir
from storage import atomic
from storage.db import make_engine
from storage.locks import ProjectLocks
from storage.repo import ProjectStore
from sync import backends
from sync.notify import Notifier
from sync.outbox import OutboxFlusher
from sync.poller import Poller
from sync.rows import ImageRef
from sync.runner import ProjectRunner, RunnerDeps
from sync.settings import Settings
from sync.workers import WorkerPool

log = logging.getLogger(__name__)


def utc_clock() -> datetime:
    return datetime.now(UTC)


def make_table(settings: Settings) -> LarkBitable:
    client = make_lark_client(
        settings.feishu_app_id,
        settings.feishu_app_secret.get_secret_value(),
        settings.feishu_base_url,
        settings.feishu_timeout,
    )
    return LarkBitable(client, settings.feishu_app_token, settings.feishu_table_id)


def make_messenger(settings: Settings, table: BitableClient) -> Messenger | None:
    """The IM bot when a chat id is set (reusing the table's SDK client), else a webhook, else none."""
    if settings.feishu_chat_id and isinstance(table, LarkBitable):
        return LarkMessenger(table.client, settings.feishu_chat_id)
    if settings.feishu_webhook_url:
        return WebhookMessenger(settings.feishu_webhook_url, settings.feishu_webhook_secret.get_secret_value())
    return None


def template_library(settings: Settings) -> TemplateLibrary:
    """The operator's templates folder first (a template there overrides a bundled one of the same id)."""
    return TemplateLibrary(*[r for r in (settings.templates_dir, bundled_templates_dir()) if r])


def make_store(settings: Settings) -> ProjectStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return ProjectStore(make_engine(settings.db_url), settings.data_dir)


class App:
    def __init__(self, settings: Settings, table: BitableClient, clock: Callable[[], datetime] = utc_clock):
        self.settings, self.table, self.clock = settings, table, clock
        self.store = make_store(settings)
        self.stopping = threading.Event()
        self.templates = template_library(settings)
        fetcher = ImageFetcher(settings.image_max_bytes, settings.allow_private_urls)

        def fetch_image(ref: ImageRef, dest: Path) -> None:
            if ref.file_token:
                atomic.write_bytes(dest, table.download_media(ref.file_token))
            else:
                fetcher.fetch(ref.url or "", dest)

        self.locks = ProjectLocks(settings.data_dir / "locks")
        self.runner = ProjectRunner(
            RunnerDeps(
                store=self.store,
                locks=self.locks,
                templates=self.templates,
                storyboarders=backends.storyboarders(settings),
                generators=backends.generators(settings),
                objects=backends.object_store(settings),
                speech=backends.speech(settings),
                transcriber=backends.transcriber(settings),
                fetch_image=fetch_image,
                columns=settings.columns,
                clock=clock,
                storyboard_backend=settings.storyboard_backend,
                segment_backend=settings.segment_backend,
                max_attempts=settings.max_attempts,
                retry_base_seconds=settings.retry_base_seconds,
                gpu_slots=threading.BoundedSemaphore(settings.gpu_slots),
                stopping=self.stopping,
                sheet_url=settings.feishu_sheet_url,
            )
        )
        self.poller = Poller(table, self.store, self.locks, settings.columns, self.templates, settings.tz, clock,
                             settings.default_template, timedelta(minutes=settings.full_scan_minutes), settings.feishu_sheet_url)
        self.flusher = OutboxFlusher(
            self.store, table, clock, backoff_cap=settings.outbox_backoff_cap_seconds, on_permanent=self._sheet_refused
        )
        messenger = make_messenger(settings, table)
        self.notifier = Notifier(self.store, messenger) if messenger else None
        self.pool = WorkerPool(self.runner.run, settings.workers)

    def _sheet_refused(self, project_id: str, message: str) -> None:
        project = self.store.get(project_id)
        if project is not None:
            project.error = f"写回表格失败：{message}"
            self.store.save(project)  # no outbox entry: the same write would be refused again

    def tick(self) -> int:
        """Poll once and queue whatever can run. Returns how many projects were queued."""
        return sum(self.pool.submit(pid) for pid in self.poller.poll())

    def flush(self) -> None:
        # One flusher per table across processes: Feishu rejects concurrent writes to a table
        # (1254291), and two notifiers would announce the same event twice.
        with self.locks.hold(f"_flush-{self.table.table_id}") as got:
            if not got:
                return
            self.flusher.flush()
            if self.notifier:
                self.notifier.flush()

    def once(self, timeout: float = 3600) -> None:
        """One poll, run everything it found to a resting point, write every result back."""
        self.tick()
        self.pool.wait_idle(timeout)
        self.drain_outbox(timeout=min(timeout, 600))

    def drain_outbox(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            if not self.store.outbox_size():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def run(self, stop: threading.Event) -> None:
        """Poll and flush on a schedule until `stop` is set, then let running steps finish."""
        scheduler = BackgroundScheduler(timezone=self.settings.tz)
        opts = {"max_instances": 1, "coalesce": True, "next_run_time": datetime.now(self.settings.tz)}
        scheduler.add_job(self._safe(self.tick), "interval", seconds=self.settings.poll_interval_seconds, id="poll", **opts)
        scheduler.add_job(self._safe(self.flush), "interval", seconds=self.settings.flush_interval_seconds, id="flush", **opts)
        scheduler.start()
        try:
            stop.wait()
        finally:
            # Running steps stop at their next safe point; their projects resume on the next start.
            self.stopping.set()
            scheduler.shutdown(wait=True)
            self.pool.shutdown()
            self.drain_outbox(timeout=30)

    def _safe(self, job: Callable[[], object]) -> Callable[[], None]:
        failing = {"now": False}

        def wrapped() -> None:
            # Log the first failure and the recovery, not every tick of an outage.
            try:
                job()
            except Exception as e:
                if not failing["now"]:
                    log.warning("job failing job=%s error=%s", job.__name__, e)
                failing["now"] = True
                return
            if failing["now"]:
                log.info("job recovered job=%s", job.__name__)
            failing["now"] = False

        return wrapped
