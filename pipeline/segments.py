"""Segments stage: AI shots chain frame to frame from the opening image; stock shots are cut
from the library and the chain skips them (the next AI shot continues from the last AI frame).
A drift guard pulls a chained frame's colours back towards the opening image before it seeds
the next shot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connectors import ffmpeg
from connectors.video.camera import next_view
from connectors.video.protocol import SegmentGenerator, SegmentRequest, TaskJournal, View
from pipeline import drift, frames
from pipeline.templates import TemplateConfig
from storage.models import SegmentSource
from storage.paths import ProjectPaths
from storage.storyboard import Storyboard


@dataclass(frozen=True)
class SegmentResult:
    index: int
    duration: float
    backend: str
    source: SegmentSource
    drift: float | None  # colour distance of the last frame to the opening image (AI shots)
    clip: str | None = None  # the library clip a stock shot was cut from
    probed: ffmpeg.ProbedFile | None = None  # what the segment file is, for compose to reuse


def generate_segments(
    board: Storyboard,
    paths: ProjectPaths,
    template: TemplateConfig,
    sources: list[SegmentSource],
    generator_for: Callable[[int, SegmentSource], SegmentGenerator],
    done: set[int],
    on_start: Callable[[int], None],
    on_done: Callable[[SegmentResult], None],
    seed: int = 0,
    journal_for: Callable[[int], TaskJournal] | None = None,
) -> None:
    """Render every shot not in `done`, in order. Re-running skips finished shots (checkpoints).

    `journal_for(k)` keeps shot k's provider task for backends whose work outlives the process."""
    paths.make_dirs()
    seed_frame = paths.opening_image
    # While every AI shot so far moved over the opening image, the next one can go on from where
    # the camera is (a pure function of the cameras, so a resumed run finds the same view).
    view: View | None = View()
    for shot in board.shots:
        k, source = shot.index, sources[shot.index]
        generator = generator_for(k, source)
        over_origin = view is not None and source == SegmentSource.ai and generator.moves_over_origin
        if k in done and paths.segment(k).is_file():
            _ensure_frames(paths, k)
        else:
            on_start(k)
            paths.last_frame(k).unlink(missing_ok=True)  # only a backend's own last frame may be there after
            clip = generator.generate(
                SegmentRequest(image=seed_frame, shot=shot, width=template.width, height=template.height,
                               fps=template.fps, out=paths.segment(k), seed=template.seed + seed + k,
                               tuning=template.diffusion, origin=paths.opening_image if over_origin else None,
                               view=view if over_origin else None, last_frame=paths.last_frame(k),
                               end_image=paths.opening_image if template.end_frame == "opening" else None,
                               journal=journal_for(k) if journal_for else None)
            )
            own_last = paths.last_frame(k).is_file()
            info = frames.extract_first_last(paths.segment(k), paths.first_frame(k), None if own_last else paths.last_frame(k))
            distance = _guard_drift(paths, k, template.drift_threshold) if source == SegmentSource.ai else None
            probed = ffmpeg.ProbedFile(sha256=ffmpeg.file_sha256(paths.segment(k)), info=info)
            on_done(SegmentResult(k, info.duration, generator.name, source, distance, clip, probed))
        if source == SegmentSource.ai:
            seed_frame = paths.seed_frame(k) if paths.seed_frame(k).is_file() else paths.last_frame(k)
            view = next_view(view, shot.camera) if over_origin else None
        elif template.chain_from_stock:
            # The next AI shot continues the real footage; the camera leaves the opening image.
            seed_frame, view = paths.last_frame(k), None


def _guard_drift(paths: ProjectPaths, k: int, threshold: float | None) -> float:
    paths.seed_frame(k).unlink(missing_ok=True)
    return round(drift.guard(paths.last_frame(k), paths.opening_image, paths.seed_frame(k), threshold), 2)


def _ensure_frames(paths: ProjectPaths, k: int) -> None:
    """A finished segment whose frames were cleaned up still has to seed the next shot."""
    if not (paths.first_frame(k).is_file() and paths.last_frame(k).is_file()):
        frames.extract_first_last(paths.segment(k), paths.first_frame(k), paths.last_frame(k))
