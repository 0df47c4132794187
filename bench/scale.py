"""Scale-out throughput: one table, simulated 1 s GPU shots, 1 vs 2 vs 4 GPU workers (each its own
"host": data dir, GPU slot, procrastinate worker on queue gpu:sim), one CPU worker for the
storyboards and compose, one gateway, all on one PostgreSQL database. Prints throughput ratios
against one worker in the same run and the queue wait per shot.

    SHEETREEL_BENCH_POSTGRES=postgresql://user:pw@127.0.0.1:5432/postgres python bench/scale.py [--projects 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import logging  # noqa: E402

import psycopg  # noqa: E402

from bench.common import APP_ID, ASSETS, SECRET, bench_table  # noqa: E402
from bench.throughput import SimulatedGpu  # noqa: E402
from connectors.feishu.emulator import Emulator  # noqa: E402
from connectors.video.kenburns import KenBurnsGenerator  # noqa: E402
from connectors.video.protocol import SegmentRequest  # noqa: E402
from storage.models import ProjectState  # noqa: E402
from storage.storyboard import Shot  # noqa: E402
from sync.app import make_table  # noqa: E402
from sync.roles import Gateway, Worker  # noqa: E402

SHOTS = 7  # bench-gpu's shot count


def database(admin: str) -> tuple[str, callable]:
    name = f"sheetreel_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin.rsplit("/", 1)[0] + f"/{name}", drop


def run(gpu_workers: int, projects: int, seconds: float, clip: Path, admin: str, per_host: int) -> tuple[float, list[float], float]:
    url, drop = database(admin)
    try:
        with tempfile.TemporaryDirectory() as tmp, Emulator(app_id=APP_ID, app_secret=SECRET) as emu:
            emu.start()
            root = Path(tmp)
            app_token, table_id, settings = bench_table(
                emu, root / "gateway", SHEETREEL_DATABASE_URL=url, SHEETREEL_STORE_DIR=root / "store",
                SHEETREEL_QUEUES={"simgpu": "gpu:sim"}, POLL_INTERVAL_SECONDS=0.2, FLUSH_INTERVAL_SECONDS=0.2)
            cols = settings.columns
            image = [{"file_token": emu.upload_media(app_token, "a.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")}]
            emu.add_records(app_token, table_id, [{cols.title: f"p{i}", cols.image: image, cols.template: "bench-gpu"}
                                                  for i in range(projects)])
            gateway = Gateway(settings, make_table(settings))
            cpu = Worker(settings.model_copy(update={"data_dir": root / "cpu", "workers": 4}), ["cpu"])
            gpus = []
            for i in range(gpu_workers):
                # One GPU slot per host, a few jobs at once: one shot's frame work overlaps the next's inference.
                w = Worker(settings.model_copy(update={"data_dir": root / f"gpu{i}", "workers": per_host, "gpu_slots": 1}),
                           ["gpu:sim"])
                w.runner.d.generators["simgpu"] = SimulatedGpu(seconds, clip)
                gpus.append(w)
            stop = threading.Event()
            threads = [threading.Thread(target=gateway.run, args=(stop,))]
            threads += [threading.Thread(target=w.run, kwargs={"signals": False}) for w in (cpu, *gpus)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            store = gateway.stores.projects
            while sum(p.state == ProjectState.completed for p in store.projects()) < projects:
                if any(p.state == ProjectState.failed for p in store.projects()):
                    raise SystemExit(f"a project failed: {[p.error for p in store.projects() if p.error]}")
                time.sleep(0.1)
            wall = time.perf_counter() - start
            stop.set()
            for w in (cpu, *gpus):
                w.stop()
            for t in threads:
                t.join(timeout=120)
            waits = [seconds for w in gpus for queue, seconds in w.waits]
            busy = sum(end - begin for w in gpus for begin, end in w.runner.d.generators["simgpu"].busy)
            return wall, waits, busy
    finally:
        drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=12)
    ap.add_argument("--gpu-seconds", type=float, default=1.0)
    ap.add_argument("--workers", default="1,2,4", help="GPU worker counts to compare (default 1,2,4)")
    ap.add_argument("--per-host", type=int, default=3, help="jobs each GPU worker runs at once on its one GPU slot (default 3)")
    args = ap.parse_args()
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: maximum number of running instances"
    admin = os.environ.get("SHEETREEL_BENCH_POSTGRES") or os.environ.get("SHEETREEL_TEST_POSTGRES")
    if not admin:
        raise SystemExit("set SHEETREEL_BENCH_POSTGRES=postgresql://user:password@127.0.0.1:5432/postgres")
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        KenBurnsGenerator().generate(SegmentRequest(image=ASSETS / "sample_2.jpg", shot=Shot(index=0, prompt="x", duration=1.0),
                                                    width=180, height=320, fps=12, out=clip))
        results = {n: run(n, args.projects, args.gpu_seconds, clip, admin, args.per_host) for n in counts}
    base = results[counts[0]][0]
    for n, (wall, waits, busy) in results.items():
        per_shot = statistics.mean(waits) / SHOTS if waits else 0.0
        print(f"{n} GPU worker(s): {args.projects} projects x {SHOTS} shots in {wall:.1f}s, "
              f"{args.projects / wall * 60:.1f} projects/min, GPU busy {busy / (n * wall):.0%} of each slot, "
              f"throughput {base / wall:.2f}x of {counts[0]}, queue wait {per_shot:.2f}s per shot "
              f"(median job wait {statistics.median(waits) if waits else 0:.2f}s)")


if __name__ == "__main__":
    main()
