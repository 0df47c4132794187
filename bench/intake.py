"""Intake of a batch of new rows by the scale-out gateway: each row's opening image is fetched
before its project is queued, several at once. Prints one poll's time with the images fetched one
at a time against several at once, in the same process, for a given fetch latency.

    python bench/intake.py [--rows 16] [--latency 0.2]

The fetch is simulated (a sleep, as a download from Feishu waits on the network); the rows, the
database and the poll are real, against the emulated table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import APP_ID, ASSETS, SECRET, bench_table  # noqa: E402
from connectors.feishu.emulator import Emulator  # noqa: E402
from sync import poller  # noqa: E402
from sync.app import App, make_links, make_table  # noqa: E402


def one_poll(rows: int, latency: float, at_once: int) -> float:
    """Seconds one poll takes to take in `rows` new rows whose images each take `latency` to fetch."""
    poller.STAGING_AT_ONCE = at_once
    with tempfile.TemporaryDirectory() as tmp, Emulator(app_id=APP_ID, app_secret=SECRET) as emu:
        emu.start()
        app_token, table_id, settings = bench_table(emu, Path(tmp) / "data", False)
        cols = settings.columns
        image = [{"file_token": emu.upload_media(app_token, "a.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")}]
        emu.add_records(app_token, table_id, [{cols.title: f"p{i}", cols.image: image, cols.template: "bench-gpu"}
                                              for i in range(rows)])
        app = App(settings, make_table(settings))
        (link,) = make_links(settings, app.stores, app.life, app.locks, app.templates, app.clock, app.table,
                             stage=lambda p: time.sleep(latency))
        start = time.perf_counter()
        link.poller.poll()
        took = time.perf_counter() - start
        assert len(app.store.projects()) == rows
        return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds to fetch one image (default 0.2)")
    args = ap.parse_args()
    at_once = poller.STAGING_AT_ONCE
    sequential, concurrent = one_poll(args.rows, args.latency, 1), one_poll(args.rows, args.latency, at_once)
    print(f"{args.rows} new rows, {args.latency:g} s per image: one at a time {sequential:.2f} s, "
          f"{at_once} at once {concurrent:.2f} s: {sequential / concurrent:.2f}x faster")


if __name__ == "__main__":
    main()
