"""Feishu misbehaves while SheetReel works: 30% rate limits, 5% 5xx, then a whole outage, then the
noise again. Prints what a user would notice: projects failed by it (should be 0), announcements
sent (each exactly once), and how long after the outage the sheet showed the DB again.

    python bench/outage.py [--rows 10] [--outage 60]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # bench/ first would shadow the sync package

from bench.common import APP_ID, ASSETS, SECRET, bench_table  # noqa: E402
from connectors.feishu.emulator import Emulator, FaultPlan  # noqa: E402
from storage.models import ProjectState  # noqa: E402
from sync import lifecycle  # noqa: E402
from sync.app import App, make_table  # noqa: E402
from sync.rows import text_of  # noqa: E402
from sync.sheet_view import progress_text  # noqa: E402


@dataclass
class Figures:
    rows: int
    calls: int
    faults: dict
    failed: int
    completed: int
    announced: Counter  # record id -> messages that reached the chat
    lag_after_outage: float | None  # seconds from the outage's end until sheet == DB, None if never
    finished_after: float  # seconds from the start until every project rested and every write landed

    def line(self) -> str:
        once = sum(1 for n in self.announced.values() if n == 1)
        lag = f"{self.lag_after_outage:.1f}s" if self.lag_after_outage is not None else "never"
        return (f"{self.rows} rows: {self.completed} completed, {self.failed} failed | {self.calls} Feishu calls, "
                f"faults {self.faults} | announcements {sum(self.announced.values())} sent, {once} exactly once | "
                f"sheet == DB {lag} after the outage | all done after {self.finished_after:.1f}s")


def sheet_matches_db(app: App, emu: Emulator, app_token: str) -> bool:
    cols = app.settings.columns
    records = {r["record_id"]: r["fields"] for r in emu.records(app_token, app.table.table_id)}
    for p in app.store.projects():
        row = records.get(p.record_id, {})
        if text_of(row.get(cols.status)) != p.state.label or text_of(row.get(cols.progress)) != progress_text(p):
            return False
    return not app.stores.outbox.size()


def run(rows: int = 10, outage: float = 60, before: float = 5, seed: int = 7, timeout: float = 900,
        data_dir: Path | None = None) -> Figures:
    noisy = FaultPlan(rate_limit=0.30, server_error=0.05, reset_seconds=1, seed=seed)
    with tempfile.TemporaryDirectory() as tmp, Emulator(app_id=APP_ID, app_secret=SECRET) as emu:
        emu.start()
        app_token, table_id, settings = bench_table(
            emu, data_dir or Path(tmp) / "data", FEISHU_CHAT_ID="oc_ops", POLL_INTERVAL_SECONDS=0.5,
            FLUSH_INTERVAL_SECONDS=0.3, SHEETREEL_RETRY_BASE_SECONDS=1, OUTBOX_BACKOFF_BASE_SECONDS=1)
        cols = settings.columns
        image = [{"file_token": emu.upload_media(app_token, "a.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")}]
        emu.add_records(app_token, table_id, [{cols.title: f"故障演练-{i:03d}", cols.image: image, cols.template: "bench-small",
                                               cols.shot_count: 2} for i in range(rows)])
        app = App(settings, make_table(settings))
        stop = threading.Event()
        runner = threading.Thread(target=app.run, args=(stop,), daemon=True)
        start = time.monotonic()
        emu.faults = noisy
        runner.start()
        time.sleep(before)  # a bench drives a timeline; tests of this wait on outcomes instead
        emu.faults = FaultPlan(outage=(0, 10**9), seed=seed)
        time.sleep(outage)
        emu.faults = noisy
        back, lag = time.monotonic(), None
        deadline = start + timeout
        while time.monotonic() < deadline:
            if lag is None and sheet_matches_db(app, emu, app_token):
                lag = time.monotonic() - back
            projects = app.store.projects()
            if (lag is not None and len(projects) == rows and all(lifecycle.is_final(p.state) for p in projects)
                    and not app.stores.outbox.size() and not app.stores.notes.due()):
                break
            time.sleep(0.1)
        finished = time.monotonic() - start
        faults = dict(emu.faults_injected)
        emu.faults = FaultPlan()
        stop.set()
        runner.join(120)
        calls = sum(emu.calls.values())
        projects = app.store.projects()
        announced = Counter()
        for m in emu.messages:
            for p in projects:
                if p.title and p.title in str(m["content"]):
                    announced[p.record_id] += 1
        return Figures(rows=rows, calls=calls, faults=faults,
                       failed=sum(p.state == ProjectState.failed for p in projects),
                       completed=sum(p.state == ProjectState.completed for p in projects),
                       announced=announced, lag_after_outage=lag, finished_after=finished)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--outage", type=float, default=60, help="seconds the whole Feishu API is down")
    ap.add_argument("--before", type=float, default=5, help="seconds of noise before the outage")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the outage's warnings are the point, not the output
    print(run(args.rows, args.outage, args.before).line())


if __name__ == "__main__":
    main()
