"""Segments stage: shot k starts from the opening image (k = 0) or the last frame of shot k-1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from connectors.video.protocol import SegmentGenerator, SegmentRequest
from connectors import ffmpeg
from pipeline import frames
from storage.storyboard import Storyboard
from pipeline.templates import TemplateConfig
from storage.paths import ProjectPaths


@dataclass(frozen=True)
class SegmentResult:
    index: int
    duration: float
    backend: str


def generate_segments(
    board: Storyboard,
    paths: ProjectPaths,
    template: TemplateConfig,
    generator_for: Callable[[int], SegmentGenerator],
    done: set[int],
    on_start: Callable[[int], None],
    on_done: Callable[[SegmentResult], None],
    seed: int = 0,
) -> None:
    """Render every shot not in `done`, in order. Re-running skips finished shots (checkpoints)."""
    paths.make_dirs()
    for shot in board.shots:
        k = shot.index
        if k in done and paths.segment(k).is_file():
            _ensure_frames(paths, k)
            continue
        on_start(k)
        generator = generator_for(k)
        start_image = paths.opening_image if k == 0 else paths.last_frame(k - 1)
        generator.generate(
            SegmentRequest(
                image=start_image,
                shot=shot,
                width=template.width,
                height=template.height,
                fps=template.fps,
                out=paths.segment(k),
                seed=seed + k,
            )
        )
        frames.extract_first_last(paths.segment(k), paths.first_frame(k), paths.last_frame(k))
        on_done(SegmentResult(index=k, duration=ffmpeg.probe(paths.segment(k)).duration, backend=generator.name))


def _ensure_frames(paths: ProjectPaths, k: int) -> None:
    """A finished segment whose frames were cleaned up still has to seed the next shot."""
    if not (paths.first_frame(k).is_file() and paths.last_frame(k).is_file()):
        frames.extract_first_last(paths.segment(k), paths.first_frame(k), paths.last_frame(k))
