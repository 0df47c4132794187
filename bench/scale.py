"""Scale-out throughput: one table, simulated 1 s GPU shots, 1 vs 2 vs 4 GPU workers, each a
"host" of its own (a process with its data dir, one GPU slot, a procrastinate worker on queue
gpu:sim), one CPU worker for the storyboards and compose and one gateway (processes too), all on
one PostgreSQL database, against the emulated table. Prints throughput ratios against one worker in
the same run and the queue wait per shot.

    SHEETREEL_BENCH_POSTGRES=postgresql://user:pw@127.0.0.1:5432/postgres python bench/scale.py [--projects 16]

Hosts are processes, as in a deployment, so the roles do not queue for one interpreter lock; they
still share this machine's cores, which real hosts would not.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import resource
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
from storage.db import make_engine  # noqa: E402
from storage.models import ProjectState  # noqa: E402
from storage.stores import Stores  # noqa: E402
from storage.storyboard import Shot  # noqa: E402
from sync.settings import Settings  # noqa: E402

SHOTS = 7  # bench-gpu's shot count
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter per host, as on its own machine


def database(admin: str) -> tuple[str, callable]:
    name = f"sheetreel_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin.rsplit("/", 1)[0] + f"/{name}", drop


def host(role: str, settings: Settings, ready, go, stop, results, gpu_seconds: float = 0.0, clip: Path | None = None) -> None:
    """One host's process: build the role, say so, run it from `go` until `stop`, report its figures."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: maximum number of running instances"
    from sync.app import make_table
    from sync.roles import Gateway, Worker

    if role == "gateway":
        gateway, halt = Gateway(settings, make_table(settings)), threading.Event()
        ready.put(role)
        go.wait()
        started = cpu_seconds()
        threading.Thread(target=lambda: (stop.wait(), halt.set()), daemon=True).start()
        gateway.run(halt)
        results.put((role, [], 0.0, cpu_seconds() - started))
        return
    queues = ["cpu"] if role == "cpu" else ["gpu:sim"]
    worker = Worker(settings, queues)
    gpu = None
    if role != "cpu":
        gpu = worker.runner.d.generators["simgpu"] = SimulatedGpu(gpu_seconds, clip)
    # Running before the clock starts, as a fleet is when rows come in: the run measures work,
    # not the workers connecting and starting to listen for jobs.
    threading.Thread(target=lambda: (stop.wait(), worker.stop()), daemon=True).start()
    running = threading.Thread(target=worker.run, kwargs={"signals": False}, name="worker")
    running.start()
    ready.put(role)
    go.wait()
    started = cpu_seconds()
    running.join()
    busy = sum(end - begin for begin, end in gpu.busy) if gpu else 0.0
    results.put((role, [seconds for _, seconds in worker.waits], busy, cpu_seconds() - started))


def wait_listening(url: str, workers: int, timeout: float = 120) -> None:
    """Until `workers` connections listen for new jobs (a job deferred before would wait for
    procrastinate's next poll)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND query LIKE 'LISTEN %'").fetchone()[0] < workers:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not start listening for jobs in time")
            time.sleep(0.05)


def machine_cpu_seconds() -> float:
    """CPU time every process on this machine has used (Linux), in seconds."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, *_ = (int(v) for v in f.readline().split()[1:])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """This process's CPU time and its children's (ffmpeg), in seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(gpu_workers: int, projects: int, seconds: float, clip: Path, admin: str, per_host: int,
        previews: bool = True) -> tuple[float, list[float], float]:
    url, drop = database(admin)
    try:
        with tempfile.TemporaryDirectory() as tmp, Emulator(app_id=APP_ID, app_secret=SECRET) as emu:
            emu.start()
            root = Path(tmp)
            # Every row is there at the first poll, and a stage defers the next one itself: the gateway's
            # poll (30 s by default) and flush (2 s) gate no work here, only how soon the sheet shows it.
            app_token, table_id, settings = bench_table(
                emu, root / "gateway", previews, SHEETREEL_DATABASE_URL=url, SHEETREEL_STORE_DIR=root / "store",
                SHEETREEL_QUEUES={"simgpu": "gpu:sim"})
            cols = settings.columns
            image = [{"file_token": emu.upload_media(app_token, "a.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")}]
            emu.add_records(app_token, table_id, [{cols.title: f"p{i}", cols.image: image, cols.template: "bench-gpu"}
                                                  for i in range(projects)])
            store = Stores.open(make_engine(url), root / "observer").projects  # opening it migrates the database
            ready, results, go, stop = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Event()
            hosts = [("gateway", settings, {}), ("cpu", settings.model_copy(update={"data_dir": root / "cpu", "workers": 4}), {})]
            # One GPU slot per host, a few jobs at once: one shot's frame work overlaps the next's inference.
            hosts += [(f"gpu{i}", settings.model_copy(update={"data_dir": root / f"gpu{i}", "workers": per_host, "gpu_slots": 1}),
                       {"gpu_seconds": seconds, "clip": clip}) for i in range(gpu_workers)]
            procs = [SPAWN.Process(target=host, args=(role, s, ready, go, stop, results), kwargs=kw, name=role)
                     for role, s, kw in hosts]
            for proc in procs:
                proc.start()
            waiting = len(procs)  # started and built, before the clock starts: start-up is not throughput
            while waiting:
                try:
                    ready.get(timeout=1)
                    waiting -= 1
                except queue.Empty:
                    if not all(proc.is_alive() for proc in procs):
                        raise SystemExit("a host died while starting: see its output above") from None
            wait_listening(url, len(procs) - 1)  # every worker but the gateway
            start, machine = time.perf_counter(), machine_cpu_seconds()
            go.set()
            try:
                while (states := [p.state for p in store.projects()]).count(ProjectState.completed) < projects:
                    if ProjectState.failed in states:
                        raise SystemExit(f"a project failed: {[p.error for p in store.projects() if p.error]}")
                    if not all(proc.is_alive() for proc in procs):
                        raise SystemExit("a host died: see its output above")
                    time.sleep(0.25)  # the watching costs CPU the hosts share: not too often
                wall, machine = time.perf_counter() - start, machine_cpu_seconds() - machine
                stop.set()
                reports = [results.get(timeout=180) for _ in procs]
            finally:
                stop.set()
                for proc in procs:
                    proc.join(timeout=60)
                    if proc.is_alive():
                        proc.kill()
            waits = [w for role, ws, _, _ in reports if role.startswith("gpu") for w in ws]
            busy = sum(b for _, _, b, _ in reports)
            cpus = {role: cpu for role, _, _, cpu in reports}
            gpu_cpu = sum(cpu for role, cpu in cpus.items() if role.startswith("gpu"))
            print(f"  {gpu_workers} GPU worker(s): CPU seconds while timed: gateway {cpus['gateway']:.1f}, "
                  f"CPU worker {cpus['cpu']:.1f}, GPU hosts {gpu_cpu:.1f} ({gpu_cpu / (projects * SHOTS):.2f} per shot); "
                  f"hosts together {sum(cpus.values()) / wall:.2f} cores, the whole machine (PostgreSQL, the emulated "
                  f"Feishu too) {machine / wall:.2f} of its {os.cpu_count()}", flush=True)
            return wall, waits, busy
    finally:
        drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=16)
    ap.add_argument("--gpu-seconds", type=float, default=1.0)
    ap.add_argument("--workers", default="1,2,4", help="GPU worker counts to compare (default 1,2,4)")
    ap.add_argument("--per-host", type=int, default=2, help="jobs each GPU worker runs at once on its one GPU slot: one infers while the other does its frame work (default 2)")
    ap.add_argument("--no-previews", action="store_true",
                    help="a table without the 预览 / 分镜预览 columns, so the CPU worker draws no previews")
    args = ap.parse_args()
    admin = os.environ.get("SHEETREEL_BENCH_POSTGRES") or os.environ.get("SHEETREEL_TEST_POSTGRES")
    if not admin:
        raise SystemExit("set SHEETREEL_BENCH_POSTGRES=postgresql://user:password@127.0.0.1:5432/postgres")
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        KenBurnsGenerator().generate(SegmentRequest(image=ASSETS / "sample_2.jpg", shot=Shot(index=0, prompt="x", duration=1.0),
                                                    width=180, height=320, fps=12, out=clip))
        results = {n: run(n, args.projects, args.gpu_seconds, clip, admin, args.per_host, not args.no_previews)
                   for n in counts}
    base = results[counts[0]][0]
    for n, (wall, waits, busy) in results.items():
        per_shot = statistics.mean(waits) / SHOTS if waits else 0.0
        print(f"{n} GPU worker(s): {args.projects} projects x {SHOTS} shots in {wall:.1f}s, "
              f"{args.projects / wall * 60:.1f} projects/min, GPU busy {busy / (n * wall):.0%} of each slot, "
              f"throughput {base / wall:.2f}x of {counts[0]}, queue wait {per_shot:.2f}s per shot "
              f"(median job wait {statistics.median(waits) if waits else 0:.2f}s)")


if __name__ == "__main__":
    main()
