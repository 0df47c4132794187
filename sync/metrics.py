"""What a service is doing, for Prometheus (`/metrics`) and a load balancer (`/healthz`).

Each process owns one `Metrics` with its own registry (no global default registry): counters and
histograms are fed by the runner and the Feishu client as work happens; the project and outbox
gauges are read from the database at scrape time, so they are true for the whole fleet."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from storage.outbox import OutboxStore
from storage.projects import ProjectStore
from sync.cli_support import CliError

log = logging.getLogger(__name__)
STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.step_seconds = Histogram("sheetreel_step_seconds", "Wall time of one pipeline step attempt",
                                      ["step", "outcome"], buckets=STEP_BUCKETS, registry=r)
        self.shot_seconds = Histogram("sheetreel_shot_seconds", "Wall time of one generated shot, by backend",
                                      ["backend"], buckets=STEP_BUCKETS, registry=r)
        self.gpu_busy = Counter("sheetreel_gpu_busy_seconds", "Seconds the GPU slots spent generating", registry=r)
        self.provider_wait = Histogram("sheetreel_provider_task_wait_seconds",
                                       "From submit to finished video of a cloud provider task", ["provider"],
                                       buckets=STEP_BUCKETS, registry=r)
        self.feishu_calls = Counter("sheetreel_feishu_calls", "Feishu API calls, by call and result (ok or the error code)",
                                    ["api", "result"], registry=r)
        self._watched: _Database | None = None

    def watch(self, projects: ProjectStore, outbox: OutboxStore, clock: Callable[[], datetime]) -> None:
        """Report projects by state and the outbox backlog from this database (once per process)."""
        if self._watched is None:
            self._watched = _Database(projects, outbox, clock)
            self.registry.register(self._watched)

    def feishu_call(self, api: str, result: str) -> None:
        self.feishu_calls.labels(api=api, result=result).inc()

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    def healthy(self) -> tuple[bool, dict[str, object]]:
        if self._watched is None:
            return True, {"status": "ok"}
        try:
            pending, _ = self._watched.outbox.backlog(self._watched.clock())
        except SQLAlchemyError as e:
            return False, {"status": "database unreachable", "error": type(e).__name__}
        return True, {"status": "ok", "pending_writes": pending}


class _Database:
    """A collector: read at each scrape, so the numbers are the database's, not this process's."""

    def __init__(self, projects: ProjectStore, outbox: OutboxStore, clock: Callable[[], datetime]):
        self.projects, self.outbox, self.clock = projects, outbox, clock

    def describe(self):  # no eager collect at registration (the database may be slow to answer)
        return []

    def collect(self):
        try:
            by_state = self.projects.count_by_state()
            pending, oldest = self.outbox.backlog(self.clock())
        except SQLAlchemyError as e:
            log.warning("metrics could not read the database error=%s", type(e).__name__)
            return
        states = GaugeMetricFamily("sheetreel_projects", "Projects by state", labels=["state"])
        for state, count in sorted(by_state.items()):
            states.add_metric([state], count)
        yield states
        yield GaugeMetricFamily("sheetreel_outbox_pending", "Sheet writes waiting to be sent", value=pending)
        yield GaugeMetricFamily("sheetreel_outbox_oldest_seconds", "Age of the oldest pending sheet write",
                                value=oldest)


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, self.metrics.scrape())
        elif path == "/healthz":
            ok, body = self.metrics.healthy()
            self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
        else:
            self._send(404, "text/plain", b"try /metrics or /healthz\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # scrapes every 15 s are not news
        pass


@contextmanager
def serving(metrics: Metrics, host: str, port: int | None) -> Iterator[ThreadingHTTPServer | None]:
    """Serve /metrics and /healthz on host:port (0: an unused port) for the block; None when off."""
    if port is None:
        yield None
        return
    handler = type("Handler", (_Handler,), {"metrics": metrics})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:  # the port is taken, or the host is not this machine's
        raise CliError(f"cannot serve /metrics on {host}:{port}: {e.strerror or e}",
                       "set SHEETREEL_METRICS_PORT to a free port (or unset it) and SHEETREEL_METRICS_HOST "
                       "to an address of this machine") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("metrics served url=http://%s:%d/metrics", *server.server_address[:2])
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
