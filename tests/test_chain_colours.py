"""A 7-shot chain over an ordinary photo keeps its colours: the drift guard must not mistake a
change of framing (a zoom into the green ground) for a colour cast and tint the film."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from storage.models import ProjectState

from conftest import Sheet

SKY, GROUND, TEXT = (70, 130, 220), (60, 150, 50), (255, 255, 255)


def photo(path: Path) -> Path:
    """Blue sky over green ground with a white caption, a little texture so it is not flat."""
    w, h = 720, 1280
    im = Image.new("RGB", (w, h), SKY)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, h * 0.55, w, h), fill=GROUND)
    for x in range(80, w - 120, 160):  # a caption: big white letters on the sky
        draw.rectangle((x, h * 0.36, x + 110, h * 0.46), fill=TEXT)
    rng = np.random.default_rng(0)
    pixels = np.asarray(im).astype(np.int16) + rng.integers(-6, 7, size=(h, w, 1))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=95)
    return path


def frame_pixels(video: Path, which: str) -> np.ndarray:
    """The first or last frame of a video, 48x64, as RGB pixels."""
    seek = ["-sseof", "-0.2"] if which == "last" else []
    done = subprocess.run(["ffmpeg", "-v", "error", *seek, "-i", str(video), "-frames:v", "1",
                           "-vf", "scale=48:64:flags=area,format=rgb24", "-f", "rawvideo", "-"],
                          capture_output=True, check=True)
    return np.frombuffer(done.stdout, np.uint8).reshape(-1, 3).astype(int)


def region_colours(pixels: np.ndarray) -> dict[tuple, tuple]:
    """For each of the photo's colours, the mean of the pixels that are plainly it (within 40 levels)."""
    palette = np.array([SKY, GROUND, TEXT])
    distance = np.abs(pixels[:, None, :] - palette[None, :, :]).max(axis=2)
    nearest, close = distance.argmin(axis=1), distance.min(axis=1) <= 40
    return {tuple(c): tuple(pixels[close & (nearest == i)].mean(axis=0).round()) for i, c in enumerate(palette)
            if (close & (nearest == i)).sum() >= 20}


def test_seven_chained_shots_over_a_photo_keep_its_colours(sheet: Sheet, tmp_path):
    cols = sheet.cols
    token = sheet.emu.upload_media(sheet.app_token, "photo.jpg", photo(tmp_path / "photo.jpg").read_bytes(), "image/jpeg")
    (rid,) = sheet.add_rows([{cols.image: [{"file_token": token}], cols.template: "photo-chain", cols.scene: "草地"}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed, project.error
    paths = app.store.paths(project)
    for k in range(7):
        regions = region_colours(frame_pixels(paths.segment(k), "last"))
        assert regions, f"shot {k + 1} shows none of the photo's colours"
        for colour, seen in regions.items():
            # Each shot re-encodes the last one's frame (about 1.5 levels darker a shot, until the guard
            # pulls it back); the old guard turned the sky (70,130,220) into (35,125,229) by shot 3.
            assert max(abs(a - b) for a, b in zip(colour, seen, strict=True)) <= 12, \
                f"shot {k + 1}: {colour} came out as {seen}"


def sharpness(video: Path) -> float:
    """Mean gradient energy of the last frame (grey, full size): blur lowers it."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-sseof", "-0.2", "-i", str(video), "-frames:v", "1",
                           "-vf", "format=gray", "-f", "rawvideo", "-"], capture_output=True, check=True)
    grey = np.frombuffer(done.stdout, np.uint8).reshape(320, 240).astype(float)
    return float((np.diff(grey, axis=0) ** 2).mean() + (np.diff(grey, axis=1) ** 2).mean())


def test_a_chain_of_zooms_keeps_its_resolution_by_moving_over_the_original(sheet: Sheet, tmp_path, monkeypatch):
    from connectors.video.kenburns import KenBurnsGenerator

    rng = np.random.default_rng(1)
    texture = tmp_path / "texture.png"  # fine detail everywhere: what a re-sampled crop loses first
    Image.fromarray(rng.integers(0, 256, size=(1280, 960, 3), dtype=np.uint8)).resize((960, 1280)).save(texture)
    cols = sheet.cols
    token = sheet.emu.upload_media(sheet.app_token, "t.png", texture.read_bytes(), "image/png")

    def seventh_shot(moves_over_origin: bool) -> float:
        monkeypatch.setattr(KenBurnsGenerator, "moves_over_origin", moves_over_origin)
        (rid,) = sheet.add_rows([{cols.image: [{"file_token": token}], cols.template: "photo-chain",
                                  cols.scene: f"纹理{moves_over_origin}"}])
        app = sheet.app()
        app.once()
        project = app.store.by_record(sheet.table_id, rid)
        assert project.state == ProjectState.completed, project.error
        return sharpness(app.store.paths(project).segment(6))

    chained, continuous = seventh_shot(False), seventh_shot(True)
    assert continuous > 3 * chained, (continuous, chained)  # measured: 30x
