"""The stock footage backend: tags, reproducible picks, no repeats, trimming and looping, real ffmpeg."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from connectors.video.protocol import SegmentRequest
from connectors.video.stock import StockGenerator, StockLibrary
from storage.errors import MediaError, Permanent
from storage.storyboard import Shot

W, H, FPS = 160, 288, 12
SEA, PEAK, CAT, DOG = "landscape/sea/waves.mp4", "landscape/mountain/peak.mov", "animals/cat.mp4", "animals/dog.webm"


def clip(out: Path, seconds: float, size: str = "320x180", audio: bool = False) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=d={seconds}"]
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *inputs, "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> StockLibrary:
    root = tmp_path_factory.mktemp("stock")
    clip(root / SEA, 3.0, audio=True)  # tagged by its folders: landscape, sea
    clip(root / PEAK, 2.0)
    clip(root / CAT, 2.0, size="180x320")
    (root / (CAT + ".json")).write_text(json.dumps({"tags": ["Cat", "pet"]}))  # a sidecar
    clip(root / DOG, 0.5)  # shorter than any shot
    (root / (DOG + ".json")).write_text(json.dumps({"tags": ["dog", "pet"]}))
    (root / "animals" / "tags.json").write_text(json.dumps({"tags": ["cute"]}))  # for the folder
    (root / "landscape" / ".waves.partial.mp4").write_bytes(b"")  # ignored, like any dot file
    return StockLibrary(root)


def request(out: Path, tags: list[str], index: int = 0, duration: float = 1.0, seed: int = 0) -> SegmentRequest:
    shot = Shot(index=index, prompt="stock", duration=duration, stock_tags=tags)
    return SegmentRequest(image=out.with_suffix(".jpg"), shot=shot, width=W, height=H, fps=FPS, out=out, seed=seed)


def probe(video: Path) -> dict:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,pix_fmt,width,height,nb_read_frames", "-of", "json", str(video)],
        capture_output=True, check=True,
    )
    return json.loads(done.stdout)


def frames(video: Path) -> np.ndarray:
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-f", "rawvideo",
                           "-pix_fmt", "gray", "-"], capture_output=True, check=True)
    return np.frombuffer(done.stdout, np.uint8).reshape(-1, H, W).astype(np.int16)


def assert_segment(req: SegmentRequest) -> None:
    streams = probe(req.out)["streams"]
    assert [s["codec_type"] for s in streams] == ["video"]  # no audio, even from a clip that had some
    s = streams[0]
    assert (s["codec_name"], s["pix_fmt"], s["width"], s["height"]) == ("h264", "yuv420p", W, H)
    assert int(s["nb_read_frames"]) == req.frame_count


# ---- the library -----------------------------------------------------------------------------


def test_tags_come_from_folders_and_sidecars(library):
    tags = {c.key: c.tags for c in library.clips()}
    assert tags == {
        SEA: {"landscape", "sea"},
        PEAK: {"landscape", "mountain"},
        CAT: {"animals", "cute", "cat", "pet"},
        DOG: {"animals", "cute", "dog", "pet"},
    }


def test_pick_prefers_the_most_matching_tags(library):
    assert library.pick(["sea"], set(), seed=1) == library.root / SEA
    assert library.pick(["CAT "], set(), seed=1) == library.root / CAT
    assert library.pick(["landscape", "mountain"], set(), seed=1) == library.root / PEAK
    assert library.pick(["pet", "dog", "sea"], set(), seed=1) == library.root / DOG


def test_pick_avoids_used_clips_until_all_are_used(library):
    assert library.pick(["sea"], {SEA}, seed=1) != library.root / SEA
    assert library.pick(["landscape"], {SEA}, seed=1) == library.root / PEAK  # the other match
    everything = {SEA, PEAK, CAT, DOG}
    assert library.pick(["sea"], everything, seed=1) == library.root / SEA


def test_pick_is_reproducible_per_seed_and_spreads_over_seeds(library):
    assert len({library.pick(["unknown"], set(), seed=7) for _ in range(3)}) == 1
    assert len({library.pick(["unknown"], set(), seed=s) for s in range(20)}) > 1
    assert library.pick([], {SEA, PEAK, CAT}, seed=3) == library.root / DOG  # no match: any unused


def test_empty_or_missing_library_is_permanent(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(Permanent, match=str(root)):
            StockLibrary(root).pick(["sea"], set(), seed=0)


def test_a_broken_sidecar_is_ignored(tmp_path):
    clip(tmp_path / "birds" / "gull.mp4", 0.5)
    (tmp_path / "birds" / "gull.mp4.json").write_text("{not json")
    assert StockLibrary(tmp_path).clips()[0].tags == {"birds"}


# ---- rendering -------------------------------------------------------------------------------


def test_long_clip_is_trimmed_to_the_shot(library, tmp_path):
    req = request(tmp_path / "seg.mp4", ["sea"], duration=1.5)
    gen = StockGenerator(library).for_project("p1")
    gen.generate(req)
    assert_segment(req)
    assert gen.picks == {0: SEA}


def test_short_clip_loops_rather_than_freezing(library, tmp_path):
    req = request(tmp_path / "seg.mp4", ["dog"], duration=2.0)  # the clip is 0.5 s
    StockGenerator(library).for_project("p1").generate(req)
    assert_segment(req)
    tail = frames(req.out)[-6:]
    assert all(np.abs(a - b).mean() > 1 for a, b in itertools.pairwise(tail))  # still moving at the end


def test_window_start_is_reproducible_and_seeded(library, tmp_path):
    def first_frame(name: str, seed: int) -> np.ndarray:
        req = request(tmp_path / name, ["sea"], duration=0.5, seed=seed)
        StockGenerator(library).for_project("p1").generate(req)
        return frames(req.out)[0]

    a, again, other = first_frame("a.mp4", 1), first_frame("b.mp4", 1), first_frame("c.mp4", 2)
    assert np.abs(a - again).max() == 0
    assert np.abs(a - other).mean() > 1


def test_one_project_never_repeats_a_clip_while_others_are_free(library, tmp_path):
    gen = StockGenerator(library).for_project("p1")
    for k in range(2):
        gen.generate(request(tmp_path / f"p1_{k}.mp4", ["sea"], index=k, duration=0.25, seed=k))
    assert gen.picks[0] == SEA and gen.picks[1] != SEA
    other = StockGenerator(library).for_project("p2")
    other.generate(request(tmp_path / "p2_0.mp4", ["sea"], duration=0.25))
    assert other.picks == {0: SEA}
    # A restarted run is told what the project used before.
    resumed = StockGenerator(library).for_project("p1", used_clips=gen.used)
    resumed.generate(request(tmp_path / "p1_2.mp4", ["landscape"], index=2, duration=0.25, seed=2))
    assert resumed.picks[2] not in gen.picks.values()


def test_a_corrupt_clip_is_a_media_error_and_leaves_nothing(tmp_path):
    lib = tmp_path / "lib"
    (lib / "sea").mkdir(parents=True)
    (lib / "sea" / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")
    out_dir = tmp_path / "segments"
    out_dir.mkdir()
    with pytest.raises(MediaError, match="bad.mp4"):
        StockGenerator(StockLibrary(lib)).generate(request(out_dir / "seg.mp4", ["sea"]))
    assert list(out_dir.iterdir()) == []


def test_a_clip_that_is_a_playlist_of_another_video_is_never_followed(tmp_path):
    # A "clip" in the library that is an HLS playlist naming another project's video by path.
    other = tmp_path / "elsewhere"
    other.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x180:d=1", "-c:v", "libx264",
                    "-f", "hls", "-hls_segment_filename", str(other / "seg%d.ts"), str(other / "final.m3u8")],
                   check=True)
    root = tmp_path / "stock"
    (root / "sea").mkdir(parents=True)
    playlist = (other / "final.m3u8").read_text().replace("seg0.ts", str(other / "seg0.ts"))
    (root / "sea" / "waves.mp4").write_text(playlist)
    gen = StockGenerator(StockLibrary(root)).for_project("p1")
    with pytest.raises(MediaError, match="cannot be read"):
        gen.generate(request(tmp_path / "out.mp4", ["sea"]))
    assert not (tmp_path / "out.mp4").exists()
