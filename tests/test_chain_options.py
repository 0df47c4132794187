"""Template choices for first+last-frame models and for shots after stock footage, seen in the
frames and in what the provider was sent."""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from connectors.video.kenburns import KenBurnsGenerator
from connectors.video.stock import StockGenerator, StockLibrary
from pipeline.segments import generate_segments
from pipeline.templates import TemplateConfig
from storage.models import SegmentSource
from storage.paths import ProjectPaths
from storage.storyboard import Camera, Shot, Storyboard

from fake_video_providers import FakeVideoProviders
from test_video_providers import generator

BLUE, RED = (30, 60, 220), (220, 30, 30)


def board(n: int) -> Storyboard:
    return Storyboard(shots=[Shot(index=k, prompt=f"shot {k + 1}", duration=1.0, camera=Camera.zoom_in) for k in range(n)])


def template(tmp_path: Path, **kw) -> TemplateConfig:
    return TemplateConfig(id="t", name="t", width=144, height=256, fps=8, folder=tmp_path, **kw)


def project(tmp_path: Path, colour: tuple[int, int, int]) -> ProjectPaths:
    paths = ProjectPaths(tmp_path / "project")
    paths.make_dirs()
    Image.new("RGB", (288, 512), colour).save(paths.opening_image, quality=95)
    return paths


def first_frame_colour(video: Path) -> tuple[int, ...]:
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-frames:v", "1", "-vf", "scale=1:1:flags=area",
                           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    return tuple(done.stdout[:3])


def render(paths: ProjectPaths, tmpl: TemplateConfig, sources: list[SegmentSource], generators: dict) -> None:
    generate_segments(board(len(sources)), paths, tmpl, sources, lambda k, source: generators[source], set(),
                      on_start=lambda k: None, on_done=lambda res: None)


def red_stock(tmp_path: Path) -> StockGenerator:
    clip = tmp_path / "stock" / "red" / "red.mp4"
    clip.parent.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "color=c=0xdc1e1e:s=320x568:r=8:d=2",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    return StockGenerator(StockLibrary(tmp_path / "stock")).for_project("p")


def close(a: tuple[int, ...], b: tuple[int, ...], levels: int = 25) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= levels


def test_an_ai_shot_after_stock_footage_continues_from_the_clip_when_the_template_says_so(tmp_path):
    sources = [SegmentSource.ai, SegmentSource.stock, SegmentSource.ai]
    gens = {SegmentSource.ai: KenBurnsGenerator(), SegmentSource.stock: red_stock(tmp_path)}

    chained = project(tmp_path / "chained", BLUE)
    render(chained, template(tmp_path, chain_from_stock=True), sources, gens)
    assert close(first_frame_colour(chained.segment(2)), RED)

    default = project(tmp_path / "default", BLUE)
    render(default, template(tmp_path), sources, gens)
    assert close(first_frame_colour(default.segment(2)), BLUE)  # the camera goes on over the opening image


def test_end_frame_opening_sends_the_opening_image_as_every_shots_last_frame(tmp_path):
    paths = project(tmp_path, BLUE)
    with FakeVideoProviders(polls_before_done=0) as fake:
        gens = {SegmentSource.ai: generator("seedance", fake)}
        render(paths, template(tmp_path, end_frame="opening", drift_threshold=None), [SegmentSource.ai] * 2, gens)
        sent = fake.submits("seedance")
    assert len(sent) == 2
    for s in sent:
        end = Image.open(io.BytesIO(base64.b64decode(s.params["end_image"].split(",", 1)[1]))).convert("RGB")
        assert close(tuple(np.asarray(end).reshape(-1, 3).mean(axis=0).round().astype(int)), BLUE, 4)
    # Ark's own last frame of shot 1 (the fake's magenta) seeded shot 2, not a frame decoded from the clip.
    seed = Image.open(io.BytesIO(sent[1].params["image"])).convert("RGB").resize((1, 1)).getpixel((0, 0))
    assert close(seed, (255, 0, 255), 6)
