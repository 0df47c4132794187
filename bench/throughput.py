"""GPU utilisation: 20 projects x 7 shots with a simulated GPU generator (holds a GPU slot for
`--gpu-seconds` per shot) and real CPU stages (storyboard, frame extraction, compose, sheet writes).
Prints GPU busy time / wall time with one slot, and the throughput gain of two slots.

    python bench/throughput.py [--projects 20] [--gpu-seconds 1.0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the repo root is what we want.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import APP_ID, ASSETS, SECRET, bench_table  # noqa: E402
from connectors.feishu.emulator import Emulator  # noqa: E402
from connectors.video.kenburns import KenBurnsGenerator  # noqa: E402
from connectors.video.protocol import SegmentRequest, SharedGenerator  # noqa: E402
from storage.models import ProjectState  # noqa: E402
from sync.app import App, make_table  # noqa: E402


class SimulatedGpu(SharedGenerator):
    """Stands in for image-to-video inference: the slot is held while 'the GPU' works, then the
    frames are written (here: a pre-rendered clip copied), as the diffusers backend does."""

    name, uses_gpu = "simgpu", True

    def __init__(self, seconds: float, clip: Path):
        self.seconds, self.clip = seconds, clip
        self.busy: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def generate(self, req: SegmentRequest) -> None:
        start = time.perf_counter()
        time.sleep(self.seconds)
        with self._lock:
            self.busy.append((start, time.perf_counter()))
        shutil.copyfile(self.clip, req.out)


def run(slots: int, projects: int, seconds: float, clip: Path) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp, Emulator(app_id=APP_ID, app_secret=SECRET) as emu:
        emu.start()
        app_token, table_id, settings = bench_table(emu, Path(tmp) / "data", SHEETREEL_GPU_SLOTS=slots,
                                                    SHEETREEL_WORKERS=slots + 3)
        cols = settings.columns
        image = [{"file_token": emu.upload_media(app_token, "a.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")}]
        emu.add_records(app_token, table_id, [{cols.title: f"p{i}", cols.image: image, cols.scene: f"场景{i}",
                                               cols.template: "bench-gpu"} for i in range(projects)])
        app = App(settings, make_table(settings))
        gpu = SimulatedGpu(seconds, clip)
        app.runner.d.generators["simgpu"] = gpu
        start = time.perf_counter()
        app.once()
        wall = time.perf_counter() - start
        done = sum(p.state == ProjectState.completed for p in app.store.projects())
        busy = sum(end - begin for begin, end in gpu.busy) / slots
        return wall, busy, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--gpu-seconds", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        from storage.storyboard import Shot

        KenBurnsGenerator().generate(SegmentRequest(image=ASSETS / "sample_2.jpg", shot=Shot(index=0, prompt="x", duration=1.0),
                                                    width=180, height=320, fps=12, out=clip))
        results = {slots: run(slots, args.projects, args.gpu_seconds, clip) for slots in (1, 2)}
    for slots, (wall, busy, done) in results.items():
        print(f"{slots} GPU slot(s): {done}/{args.projects} projects, wall {wall:.1f}s, GPU busy {busy:.1f}s per slot, "
              f"busy/wall {busy / wall:.3f}, throughput {done / wall * 60:.1f} projects/min")
    print(f"two slots vs one: {results[1][0] / results[2][0]:.2f}x throughput")


if __name__ == "__main__":
    main()
