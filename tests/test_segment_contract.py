"""One contract, every segment backend that can run here (kenburns, stock, the cloud providers, diffusers).

Whatever makes a segment must write exactly `frame_count` frames of the requested size as H.264
yuv420p, leave nothing behind when it fails, and produce files that join by stream copy.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from connectors.video.kenburns import KenBurnsGenerator
from connectors.video.protocol import SegmentGenerator, SegmentRequest
from connectors.video.stock import StockGenerator, StockLibrary
from pipeline.compose import compose
from pipeline.compose_plan import ComposeSpec
from storage.errors import SheetReelError
from storage.storyboard import Camera, Shot

from fake_video_providers import FakeVideoProviders

W, H, FPS = 160, 288, 12
HAS_GPU_EXTRA = all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "transformers"))
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers
BACKENDS = [
    "kenburns",
    "stock",
    "openai",
    "wan",
    "seedance",
    "kling",
    pytest.param("diffusers", marks=pytest.mark.skipif(not HAS_GPU_EXTRA, reason="needs the optional gpu extra")),
]


def lavfi(out: Path, source: str, *extra: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", source, *extra, str(out)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return lavfi(tmp_path_factory.mktemp("img") / "start.jpg", "testsrc2=s=320x240", "-frames:v", "1")


@pytest.fixture(scope="module")
def stock_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stock")
    lavfi(root / "landscape" / "sea" / "waves.mp4", "testsrc2=s=320x180:r=30:d=2")
    return root


@pytest.fixture(scope="module")
def video_providers():
    with FakeVideoProviders(polls_before_done=1) as fake:
        yield fake


@pytest.fixture(scope="module")
def tiny_diffusers(tmp_path_factory):
    # Imported here so that the modules above run without the gpu extra.
    from test_diffusers_i2v import save_tiny_svd, single_threaded_torch, tiny_generator

    with single_threaded_torch():
        yield tiny_generator(save_tiny_svd(tmp_path_factory.mktemp("tiny-svd")))


def make_backend(name: str, fixtures: pytest.FixtureRequest) -> SegmentGenerator:
    if name == "kenburns":
        return KenBurnsGenerator()
    if name == "stock":
        return StockGenerator(StockLibrary(fixtures.getfixturevalue("stock_root"))).for_project("contract")
    if name in ("openai", "wan", "seedance", "kling"):
        from test_video_providers import generator

        return generator(name, fixtures.getfixturevalue("video_providers"))
    return fixtures.getfixturevalue("tiny_diffusers")


def segment_request(image: Path, out: Path, duration: float = 1.0, index: int = 0) -> SegmentRequest:
    shot = Shot(index=index, prompt="the sea at dawn", duration=duration, camera=Camera.pan_right,
                stock_tags=["sea"])
    return SegmentRequest(image=image, shot=shot, width=W, height=H, fps=FPS, out=out, seed=index)


def stream(video: Path) -> dict:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,pix_fmt,width,height,nb_read_frames:format=duration", "-of", "json", str(video)],
        capture_output=True, check=True,
    )
    data = json.loads(done.stdout)
    return {**data["streams"][0], "duration": float(data["format"]["duration"])}


@pytest.mark.parametrize("name", BACKENDS)
def test_writes_exactly_the_requested_segment(name, request, image, tmp_path):
    backend = make_backend(name, request)
    req = segment_request(image, tmp_path / "seg_00.mp4", duration=1.25)
    backend.generate(req)
    info = stream(req.out)
    assert int(info["nb_read_frames"]) == req.frame_count == 15
    assert (info["width"], info["height"]) == (W, H)
    assert (info["codec_name"], info["pix_fmt"]) == ("h264", "yuv420p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg_00.mp4"]  # no temp files left


def broken_setup(name: str, tmp_path: Path, fixtures: pytest.FixtureRequest) -> tuple[SegmentGenerator, Path]:
    """A backend and a start image such that generation must fail on its input."""
    broken = tmp_path / "inputs" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    if name != "stock":
        return make_backend(name, fixtures), broken
    corrupt = tmp_path / "lib" / "sea" / "bad.mp4"  # stock ignores the image: break its clip instead
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypisom not a movie")
    return StockGenerator(StockLibrary(tmp_path / "lib")), broken


@pytest.mark.parametrize("name", BACKENDS)
def test_failure_leaves_no_partial_file(name, request, tmp_path):
    backend, broken = broken_setup(name, tmp_path, request)
    out_dir = tmp_path / "segments"
    out_dir.mkdir()
    with pytest.raises(SheetReelError):
        backend.generate(segment_request(broken, out_dir / "seg_00.mp4"))
    assert list(out_dir.iterdir()) == []


def test_segments_from_every_backend_join_by_stream_copy(request, image, tmp_path):
    names = [b if isinstance(b, str) else b.values[0] for b in BACKENDS]
    names = [n for n in names if n != "diffusers" or HAS_GPU_EXTRA]
    segments, frames = [], 0
    for k, name in enumerate(names):
        req = segment_request(image, tmp_path / f"seg_{k:02d}.mp4", duration=0.5 + 0.25 * k, index=k)
        make_backend(name, request).generate(req)
        segments.append(req.out)
        frames += req.frame_count
    total = frames / FPS
    final = tmp_path / "final.mp4"
    durations = [0.5 + 0.25 * k for k in range(len(segments))]
    compose(ComposeSpec(segments=segments, durations=durations, width=W, height=H, fps=FPS), final, tmp_path)
    info = stream(final)
    assert int(info["nb_read_frames"]) == frames
    assert info["duration"] == pytest.approx(total, abs=0.05)
