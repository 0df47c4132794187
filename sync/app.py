"""The composition root: settings in, a wired application out. Nothing else builds clients."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from apscheduler.schedulers.background import BackgroundScheduler

from connectors.feishu.protocol import BitableClient, Messenger, RecordEvents
from connectors.fetch import ImageFetcher
from pipeline.publish import Publisher
from pipeline.templates import TemplateLibrary, bundled_templates_dir
from storage import atomic
from storage.db import make_engine, normalize_url
from storage.errors import Unavailable
from storage.locks import AdvisoryLocks, FileLocks, ProjectLocks
from storage.models import Project
from storage.projects import Dispatch
from storage.stores import Stores
from sync import backends, lifecycle, links
from sync.connections import Connection, load_connections
from sync.eta import Estimator
from sync.lifecycle import Lifecycle
from sync.metrics import Metrics
from sync.notify import Notifier
from sync.outbox import OutboxFlusher, TableWriter
from sync.poller import Poller, queue_rank
from sync.rows import ImageRef
from sync.runner import ProjectRunner, RunnerDeps
from sync.settings import Settings
from sync.sheet_view import ByTable, SheetSide
from sync.staging import FetchImage
from sync.wakeup import Wakeup, listen_for_edits
from sync.workers import WorkerPool

log = logging.getLogger(__name__)
T = TypeVar("T")


def utc_clock() -> datetime:
    return datetime.now(UTC)


def make_table(settings: Settings) -> BitableClient:
    # lark-oapi takes seconds to import: only the commands that reach Feishu pay for it.
    from connectors.feishu.lark_client import LarkBitable, make_lark_client

    client = make_lark_client(
        settings.feishu_app_id,
        settings.feishu_app_secret.get_secret_value(),
        settings.feishu_base_url,
        settings.feishu_timeout,
    )
    return LarkBitable(client, settings.feishu_app_token, settings.feishu_table_id,
                       deadline_seconds=settings.feishu_deadline)


def make_messenger(settings: Settings, table: BitableClient) -> Messenger | None:
    """The IM bot when a chat id is set (reusing the table's SDK client), else a webhook, else none."""
    from connectors.feishu.lark_client import LarkBitable
    from connectors.feishu.messenger import LarkMessenger, WebhookMessenger

    if settings.feishu_chat_id and isinstance(table, LarkBitable):
        # Counted with the table's calls: `watched` gives the table its counter after this is built.
        def observe(kind: str, result: str) -> None:
            if table.observe:
                table.observe(kind, result)

        return LarkMessenger(table.client, settings.feishu_chat_id, observe)
    if settings.feishu_webhook_url:
        return WebhookMessenger(settings.feishu_webhook_url, settings.feishu_webhook_secret.get_secret_value())
    return None


def make_record_events(settings: Settings, table: BitableClient, app_tokens: list[str]) -> RecordEvents | None:
    """The long connection when FEISHU_EVENTS is on and the tables are real Feishu ones (one
    connection for the app, subscribed to each base)."""
    from connectors.feishu.lark_client import LarkBitable

    if not settings.feishu_events or not isinstance(table, LarkBitable):
        return None
    from connectors.feishu.lark_events import LarkRecordEvents

    return LarkRecordEvents(table.client, settings.feishu_app_id, settings.feishu_app_secret.get_secret_value(),
                            settings.feishu_base_url, app_tokens)


def template_library(settings: Settings) -> TemplateLibrary:
    """The operator's templates folder first (a template there overrides a bundled one of the same id)."""
    return TemplateLibrary(*[r for r in (settings.templates_dir, bundled_templates_dir()) if r])


def shares_files(settings: Settings) -> bool:
    """PostgreSQL means several hosts may work on one project: each host's project folders are
    a cache, and the object store holds what the others need (meta.json, inputs, frames)."""
    return normalize_url(settings.db_url).startswith("postgresql")


def make_stores(settings: Settings, dispatch: Dispatch | None = None) -> Stores:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mirror = make_publisher(settings).push if shares_files(settings) else None
    return Stores.open(make_engine(settings.db_url), settings.data_dir, dispatch, mirror)


def make_locks(settings: Settings) -> ProjectLocks:
    """File locks on one host; advisory locks when the database is PostgreSQL (several hosts)."""
    if shares_files(settings):
        return AdvisoryLocks(normalize_url(settings.db_url))
    return FileLocks(settings.data_dir / "locks")


def make_lifecycle(settings: Settings, stores: Stores, clock: Callable[[], datetime] = utc_clock) -> Lifecycle:
    """Project changes, with the sheet side subscribed: each outcome writes its row (in the
    column names of the project's table) and chat."""
    estimate = make_estimator(settings, stores)
    sides = {c.table_id: SheetSide(stores.projects, c.settings.columns, clock, c.settings.feishu_sheet_url, estimate)
             for c in load_connections(settings)}
    return Lifecycle(stores.projects, ByTable(sides))


def make_estimator(settings: Settings, stores: Stores) -> Estimator:
    """The time a project still needs, from this database's history of this host's work."""
    return Estimator(stores.timings, template_library(settings), settings.storyboard_backend, settings.segment_backend,
                     socket.gethostname())


def make_writer(settings: Settings, stores: Stores, table: BitableClient, life: Lifecycle,
                clock: Callable[[], datetime] = utc_clock) -> TableWriter:
    """The table's one sender of sheet writes and chat messages, for `run`, `once` and repairs alike."""

    def refused(project_id: str, message: str) -> None:
        # No lock needed: the versioned commit applies this to whatever the project is by now.
        try:
            life.commit(project_id, lambda q: lifecycle.sheet_refused(q, message))
        except KeyError:
            log.warning("sheet write refused for a project that no longer exists project=%s", project_id)

    def missing(project_id: str, columns: list[str]) -> None:
        project = stores.projects.get(project_id)
        if project is not None and not lifecycle.columns_noticed(project, columns):  # said once, not every flush
            try:
                life.commit(project_id, lambda q: lifecycle.columns_missing(q, columns))
            except KeyError:
                pass  # deleted meanwhile

    flusher = OutboxFlusher(stores.outbox, stores.sync, table, clock, settings.sheet_retry(),
                            on_permanent=refused, on_missing=missing, optional=settings.columns.optional())
    messenger = make_messenger(settings, table)
    notifier = None
    if messenger:
        # The chat target (hashed: a webhook URL is a credential) names when this chat was turned on.
        target = hashlib.sha256((settings.feishu_chat_id or settings.feishu_webhook_url).encode()).hexdigest()[:16]
        notifier = Notifier(stores.notes, messenger, clock, settings.sheet_retry(),
                            since=stores.sync.first_seen(f"chat:{target}", clock()),
                            backlog=timedelta(hours=settings.chat_backlog_hours), table_id=settings.feishu_table_id)
    return TableWriter(make_locks(settings), table.table_id, flusher, notifier)


def make_fetch_image(settings: Settings, tables: Mapping[str, BitableClient] | None) -> FetchImage:
    """Fetch a row's opening image: a sheet attachment through the row's table (when this process
    may talk to Feishu), a link through the guarded fetcher."""
    fetcher = ImageFetcher(settings.image_max_bytes, settings.allow_private_urls, deadline=settings.image_deadline_seconds)

    def fetch_image(ref: ImageRef, dest: Path, table_id: str) -> None:
        if ref.file_token:
            table = (tables or {}).get(table_id)
            if table is None:
                raise Unavailable("首帧图片还在从飞书取回，稍后自动重试 (opening image not staged yet)")
            atomic.write_bytes(dest, table.download_media(ref.file_token))
        else:
            fetcher.fetch(ref.url or "", dest)

    return fetch_image


def make_runner(settings: Settings, stores: Stores, life: Lifecycle, locks: ProjectLocks, templates: TemplateLibrary,
                publisher: Publisher, fetch_image: Callable[[ImageRef, Path], None], clock: Callable[[], datetime],
                stopping: threading.Event, metrics: Metrics) -> ProjectRunner:
    return ProjectRunner(
        RunnerDeps(
            store=stores.projects,
            life=life,
            locks=locks,
            templates=templates,
            storyboarders=backends.storyboarders(settings),
            generators=backends.generators(settings),
            publisher=publisher,
            speech=backends.speech(settings),
            transcriber=backends.transcriber(settings),
            fetch_image=fetch_image,
            clock=clock,
            storyboard_backend=settings.storyboard_backend,
            segment_backend=settings.segment_backend,
            retry=settings.step_retry(),
            outage_retry=settings.outage_retry(),
            max_crash_resumes=settings.max_crash_resumes,
            gpu_slots=threading.BoundedSemaphore(settings.gpu_slots),
            stopping=stopping,
            prices=settings.video_prices,
            shared=shares_files(settings),
            metrics=metrics,
            timings=stores.timings,
            # Unknown until a poller (of this process or the gateway) has read the table's columns: made.
            shows_previews=lambda p: stores.sync.shows_previews(p.table_id) is not False,
        )
    )


def watched(metrics: Metrics, stores: Stores, tables: list[BitableClient], clock: Callable[[], datetime]) -> Metrics:
    """`metrics`, reporting this database's projects and outbox and counting the tables' calls."""
    metrics.watch(stores.projects, stores.outbox, clock)
    for table in tables:
        if getattr(table, "observe", False) is None:  # the lark client; fakes and emulated tables have none
            table.observe = metrics.feishu_call  # type: ignore[attr-defined]
    return metrics


def make_publisher(settings: Settings) -> Publisher:
    return Publisher(backends.object_store(settings), settings.data_dir / "projects")


@dataclass
class Link:
    """One table the service serves: its Feishu client, its poller and its one writer."""

    connection: Connection
    table: BitableClient
    poller: Poller
    writer: TableWriter


def each_link(links: list[Link], work: Callable[[Link], T]) -> list[T]:
    """`work` on every table even when one fails (one table's outage must not hold up the others);
    the first failure is raised after the rest had their turn, for the caller to log or report."""
    done, failed = [], None
    for link in links:
        try:
            done.append(work(link))
        except Exception as e:
            failed = failed or e
    if failed is not None:
        raise failed
    return done


def make_links(settings: Settings, stores: Stores, life: Lifecycle, locks: ProjectLocks, templates: TemplateLibrary,
               clock: Callable[[], datetime], table: BitableClient | None = None,
               stage: Callable[[Project], None] | None = None) -> list[Link]:
    """A link per configured table; `table` is the client of the only one (tests, the demo)."""
    connections = load_connections(settings)
    if table is not None and len(connections) != 1:
        raise ValueError("a table client was given, but SHEETREEL_CONNECTIONS names several tables")
    out = []
    for c in connections:
        s, client = c.settings, table or make_table(c.settings)
        poller = Poller(client, stores, life, locks, s.columns, templates, s.tz, clock, s.default_template,
                        timedelta(minutes=s.full_scan_minutes), stage=stage)
        out.append(Link(c, client, poller, make_writer(s, stores, client, life, clock)))
    return out


def tables_of(links: list[Link]) -> dict[str, BitableClient]:
    return {link.connection.table_id: link.table for link in links}


def drain(links: list[Link], timeout: float) -> bool:
    """Send every table's pending writes, within `timeout` in all; False when some are left."""
    deadline = time.monotonic() + timeout
    return all([link.writer.drain(max(deadline - time.monotonic(), 0.0)) for link in links])


def polling_all(settings: Settings, links: list[Link], tick: Callable[[], object], stop: threading.Event
                ) -> tuple[Wakeup, RecordEvents | None]:
    """`tick` every POLL_INTERVAL_SECONDS, and at once when record events say a row changed."""
    poll = Wakeup(safe(tick), settings.poll_interval_seconds, stop).start()
    events = make_record_events(settings, links[0].table, [link.connection.settings.feishu_app_token for link in links])
    if events is not None:
        events = listen_for_edits(events, [(link.table, link.connection.settings.columns) for link in links], poll.poke)
    return poll, events


class App:
    """The all-in-one service of one host: the Feishu link of each table and the workers, in one process."""

    def __init__(self, settings: Settings, table: BitableClient | None = None, clock: Callable[[], datetime] = utc_clock):
        self.settings, self.clock = settings, clock
        self.stores = make_stores(settings)
        self.store = self.stores.projects
        self.life = make_lifecycle(settings, self.stores, clock)
        self.stopping = threading.Event()
        self.templates = template_library(settings)
        self.locks = make_locks(settings)
        self.publisher = make_publisher(settings)
        self.links = make_links(settings, self.stores, self.life, self.locks, self.templates, clock, table)
        self.metrics = watched(Metrics(), self.stores, [link.table for link in self.links], clock)
        self.runner = make_runner(settings, self.stores, self.life, self.locks, self.templates, self.publisher,
                                  make_fetch_image(settings, tables_of(self.links)), clock, self.stopping, self.metrics)
        self.pool = WorkerPool(self.runner.run, settings.workers)

    # The first (in one-table set-ups, the only) table's parts.
    @property
    def table(self) -> BitableClient:
        return self.links[0].table

    @property
    def poller(self) -> Poller:
        return self.links[0].poller

    @property
    def writer(self) -> TableWriter:
        return self.links[0].writer

    def tick(self) -> int:
        """Poll each table once and queue whatever can run. Returns how many projects were queued."""
        return sum(each_link(self.links, lambda link: sum(self.pool.submit(p.id, queue_rank(p))
                                                          for p in link.poller.poll())))

    def flush(self) -> None:
        each_link(self.links, lambda link: link.writer.flush())

    def once(self, timeout: float = 3600, write_timeout: float = 600) -> bool:
        """One poll, run everything it found to a resting point, writing results back as they come
        (cron users see 生成中 and finished rows while a slow one still runs). False when sheet
        writes are still pending at the end (the table is down): the next `once` or `run` sends them."""
        safe(self.renew_links)()
        try:
            self.tick()
            failed = None
        except Exception as e:  # a table that could not be read: the others' rows are still made
            failed = e
        flush, deadline = safe(self.flush), time.monotonic() + timeout
        while not self.pool.wait_idle(min(self.settings.flush_interval_seconds, max(deadline - time.monotonic(), 0))):
            if time.monotonic() > deadline:
                break
            flush()
        # Work ahead (soundtracks, previews) ends before this process may: kept, and in the row.
        self.runner.d.ahead.wait_idle(max(deadline - time.monotonic(), 0))
        drained = self.drain_outbox(timeout=write_timeout)
        if failed is not None:
            raise failed
        return drained

    def drain_outbox(self, timeout: float) -> bool:
        return drain(self.links, timeout)

    def renew_links(self) -> int:
        """Sign anew the links that have less than a third of their lifetime left."""
        margin = timedelta(seconds=self.settings.oss_url_expiry_seconds / 3)
        return links.renew_links(self.store, self.publisher, self.life, self.locks, self.clock(), margin)

    def run(self, stop: threading.Event) -> None:
        """Poll and flush on a schedule until `stop` is set, then let running steps finish."""
        scheduler = schedule(self.settings, {
            self.flush: self.settings.flush_interval_seconds,
            self.renew_links: min(3600.0, self.settings.oss_url_expiry_seconds / 6),
        })
        poll, events = polling_all(self.settings, self.links, self.tick, stop)
        try:
            stop.wait()
        finally:
            # Running steps stop at their next safe point; their projects resume on the next start.
            self.stopping.set()
            if events is not None:
                events.close()
            poll.join()
            scheduler.shutdown(wait=True)
            self.pool.shutdown()
            self.drain_outbox(timeout=30)


def schedule(settings: Settings, jobs: dict[Callable[[], object], float]) -> BackgroundScheduler:
    """Start running each job every so many seconds (the first run now), one run at a time."""
    scheduler = BackgroundScheduler(timezone=settings.tz)
    opts = {"max_instances": 1, "coalesce": True, "next_run_time": datetime.now(settings.tz)}
    for job, seconds in jobs.items():
        scheduler.add_job(safe(job), "interval", seconds=seconds, id=job.__name__, **opts)
    scheduler.start()
    return scheduler


def safe(job: Callable[[], T], name: str | None = None) -> Callable[[], T | None]:
    """The job (its result, or None when it failed), logging its first failure and its recovery
    rather than every tick of an outage."""
    failing, name = {"now": False}, name or job.__name__

    def wrapped() -> T | None:
        try:
            result = job()
        except Exception as e:
            if not failing["now"]:
                log.warning("job failing job=%s error=%s", name, e)
            failing["now"] = True
            return None
        if failing["now"]:
            log.info("job recovered job=%s", name)
        failing["now"] = False
        return result

    wrapped.__name__ = job.__name__
    return wrapped
