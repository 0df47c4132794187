"""The project runner: owns every state transition, and alone decides retry versus fail."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from connectors import ffmpeg
from connectors.asr import Transcriber
from connectors.store.protocol import ObjectStore
from connectors.tts import Speech
from connectors.video.protocol import SegmentGenerator
from connectors.video.stock import StockGenerator
from pipeline import compose, final_cut
from pipeline.mix import plan_sources
from pipeline.segments import SegmentResult, generate_segments
from pipeline.storyboard import Storyboarder, to_text
from pipeline.templates import TemplateLibrary
from storage import atomic
from storage.errors import BadInput, Cancelled, MediaError, Permanent, SheetReelError, Transient
from storage.locks import ProjectLocks
from storage.models import (
    RESUME_FROM,
    Mode,
    Project,
    ProjectState,
    Segment,
    SegmentSource,
    SegmentState,
)
from storage.repo import ProjectStore
from storage.storyboard import Storyboard
from sync import sheet_view
from sync.columns import Columns
from sync.messages import announcement
from sync.rows import ImageRef

log = logging.getLogger(__name__)
TAKE_SEED_STRIDE = 1000  # take t seeds its shots at template seed + 1000t + index: takes never share a seed

MAX_IMAGE_PIXELS = 50_000_000  # beyond this, decoding one frame can take gigabytes of memory
RESTING = (ProjectState.storyboard_ready, ProjectState.segments_ready)


@dataclass
class RunnerDeps:
    store: ProjectStore
    locks: ProjectLocks
    templates: TemplateLibrary
    storyboarders: dict[str, Storyboarder]
    generators: dict[str, SegmentGenerator]
    objects: ObjectStore
    fetch_image: Callable[[ImageRef, Path], None]
    columns: Columns
    clock: Callable[[], datetime]
    storyboard_backend: str = "template"
    segment_backend: str = "kenburns"
    max_attempts: int = 3
    retry_base_seconds: float = 5.0
    host: str = field(default_factory=socket.gethostname)
    # The GPU host has this many generation slots; CPU stages of other projects run meanwhile.
    gpu_slots: threading.Semaphore = field(default_factory=lambda: threading.BoundedSemaphore(1))
    # Set on SIGTERM: running steps stop at their next safe point and checkpoint.
    stopping: threading.Event = field(default_factory=threading.Event)
    sheet_url: str = ""
    speech: Speech | None = None
    transcriber: Transcriber | None = None


class Stopping(Exception):
    """The process is shutting down; the step checkpoints and the project resumes on next start."""


@dataclass(frozen=True)
class Step:
    name: str
    running: ProjectState


# The step that starts from each resting state; each stage saves the state it reaches.
STEPS = {
    ProjectState.pending: Step("storyboard", ProjectState.storyboarding),
    ProjectState.storyboard_ready: Step("segments", ProjectState.generating),
    ProjectState.segments_ready: Step("compose", ProjectState.composing),
}
PROGRESS = {"storyboard": (5, "生成分镜"), "segments": (10, "生成视频段"), "compose": (90, "合成成片")}


class ProjectRunner:
    def __init__(self, deps: RunnerDeps):
        self.d = deps

    def run(self, project_id: str) -> bool:
        """Work on one project as far as it can go now. False if another worker holds it."""
        with self.d.locks.hold(project_id) as got:
            if not got:
                return False
            project = self.d.store.get(project_id)
            if project is None:
                return True
            if project.state.is_running:
                # We hold the lock, so whoever left it running is gone: resume from the last good stage.
                project.state = RESUME_FROM[project.state]
            if project.state.is_final:
                self.d.store.clear_cancel(project.id)
            while (step := STEPS.get(project.state)) is not None:
                if project.mode == Mode.step and project.state in RESTING and not project.advance_once:
                    break
                if (project.retry_at and project.retry_at > self.d.clock()) or self.d.stopping.is_set():
                    break
                if self.d.store.cancel_requested(project.id):
                    self._cancelled(project)
                    break
                project.advance_once = False
                if not self._attempt(project, step):
                    break
            return True

    def _checkpoint(self, p: Project) -> None:
        """A safe point inside a step: honour 取消 and shutdown here, never mid-write."""
        if self.d.store.cancel_requested(p.id):
            raise Cancelled("已取消")
        if self.d.stopping.is_set():
            raise Stopping()

    def _cancelled(self, p: Project) -> None:
        self.d.store.clear_cancel(p.id)
        p.retry_at = None
        self._save(p, ProjectState.cancelled, p.progress, "已取消", error="")
        log.info("project cancelled project=%s record=%s", p.id, p.record_id)

    # -- transitions --------------------------------------------------------------------------

    def _attempt(self, p: Project, step: Step) -> bool:
        run = self.d.store.start_step(p.id, step.name, self.d.host)
        pct, text = PROGRESS[step.name]
        self._save(p, step.running, pct, text, error="")
        log.info("step started project=%s record=%s step=%s attempt=%d", p.id, p.record_id, step.name, run.attempt)
        try:
            self._checkpoint(p)
            getattr(self, f"_{step.name}")(p)
        except Cancelled:
            self.d.store.end_step(run, "已取消")
            self._cancelled(p)
            return False
        except Stopping:
            self.d.store.end_step(run, "进程退出，下次启动时继续")
            self._save(p, p.last_good, p.progress, "等待继续")
            return False
        except Exception as e:
            err = e if isinstance(e, SheetReelError) else None
            if err is None:
                log.exception("step crashed project=%s record=%s step=%s", p.id, p.record_id, step.name)
                err = SheetReelError(f"内部错误，请联系工程师查看日志：{type(e).__name__}: {e}")
            self.d.store.end_step(run, str(err))
            self._after_failure(p, step, err)
            return False
        self.d.store.end_step(run)
        log.info("step done project=%s record=%s step=%s state=%s", p.id, p.record_id, step.name, p.state.value)
        return True

    def _after_failure(self, p: Project, step: Step, err: SheetReelError) -> None:
        p.attempts += 1
        if isinstance(err, Transient) and p.attempts < self.d.max_attempts:
            delay = getattr(err, "retry_after", None) or self.d.retry_base_seconds * 2 ** (p.attempts - 1)
            p.retry_at = self.d.clock() + timedelta(seconds=delay)
            log.warning("step will retry project=%s step=%s in=%.0fs error=%s", p.id, step.name, delay, err)
            self._save(p, p.last_good, p.progress, f"等待重试（第{p.attempts}次）", error=str(err))
            return
        log.warning("step failed project=%s record=%s step=%s error=%s", p.id, p.record_id, step.name, err)
        p.retry_at = None
        self._save(p, ProjectState.failed, p.progress, "失败", error=str(err), notify=True)

    def _save(
        self,
        p: Project,
        state: ProjectState,
        progress: int,
        text: str,
        *,
        error: str | None = None,
        segments: tuple[Segment, ...] = (),
        extra: dict | None = None,
        attachments: dict[str, list[str]] | None = None,
        notify: bool = False,
    ) -> None:
        p.state, p.progress, p.progress_text = state, progress, text
        if error is not None:
            p.error = error
        if state in (ProjectState.storyboard_ready, ProjectState.segments_ready, ProjectState.completed):
            p.last_good, p.attempts, p.retry_at = state, 0, None
        all_segments = {s.index: s for s in self.d.store.segments(p.id)} | {s.index: s for s in segments}
        sheet = sheet_view.render(p, list(all_segments.values()), self.d.columns, self.d.clock(), attachments)
        sheet.fields.update(extra or {})
        self.d.store.save(p, segments, sheet, announcement(p, self.d.sheet_url) if notify else None)

    # -- stages ---------------------------------------------------------------------------------

    def _storyboard(self, p: Project) -> None:
        paths = self.d.store.paths(p)
        paths.make_dirs()
        template = self.d.templates.get(p.template)
        if not paths.opening_image.is_file():
            if not p.image_ref:
                raise BadInput("首帧图片为空：请在「首帧图片」列上传一张图片，或填写图片链接 (opening image missing)")
            self.d.fetch_image(ImageRef.model_validate_json(p.image_ref), paths.opening_image)
        _check_image(paths.opening_image)
        backend = template.storyboard_backend or self.d.storyboard_backend
        if backend == "llm" and template.llm_images:
            backend = "llm-images"
        board = self._storyboarder(backend).write(template, p.scene, p.shot_count or template.shot_count, paths.opening_image)
        atomic.write_text(paths.storyboard, board.model_dump_json(indent=2))
        p.storyboard_json = board.model_dump_json()
        self._save(p, ProjectState.storyboard_ready, 10, "分镜完成", extra={self.d.columns.storyboard: to_text(board)})

    def _segments(self, p: Project) -> None:
        board = Storyboard.model_validate_json(p.storyboard_json)
        template = self.d.templates.get(p.template)
        paths = self.d.store.paths(p)
        total = len(board.shots)
        sources = plan_sources(p.id, total, template.ai_ratio)
        ai = _SlotGuard(self._generator(template.segment_backend or self.d.segment_backend), self.d.gpu_slots)
        finished = [s for s in self.d.store.segments(p.id) if s.state == SegmentState.done]
        done = {s.index for s in finished}
        # Clips already in this video, from earlier runs too: a restart or a redone shot must
        # not bring one of them back.
        stock = self._stock(template, p, {s.clip for s in finished if s.clip}) if SegmentSource.stock in sources else None

        def generator_for(k: int, source: SegmentSource) -> SegmentGenerator:
            return stock if source == SegmentSource.stock else ai

        def on_start(k: int) -> None:
            self._checkpoint(p)
            seg = Segment(project_id=p.id, index=k, state=SegmentState.generating, source=sources[k],
                          backend=generator_for(k, sources[k]).name)
            self._save(p, ProjectState.generating, 10 + 75 * k // total, f"生成第{k + 1}/{total}段", segments=(seg,))

        def on_done(res: SegmentResult) -> None:
            url = self.d.objects.put(paths.segment(res.index), self._key(p, f"segments/seg_{res.index:02d}.mp4"))
            clip = stock.picks.get(res.index) if stock is not None and res.source == SegmentSource.stock else None
            seg = Segment(project_id=p.id, index=res.index, state=SegmentState.done, source=res.source,
                          backend=res.backend, duration=res.duration, url=url, drift=res.drift, clip=clip)
            self._save(p, ProjectState.generating, 10 + 75 * (res.index + 1) // total,
                       f"完成第{res.index + 1}/{total}段", segments=(seg,))

        generate_segments(board, paths, template, sources, generator_for, done, on_start, on_done,
                          seed=TAKE_SEED_STRIDE * p.takes)
        self._save(p, ProjectState.segments_ready, 85, "视频段完成")

    def _compose(self, p: Project) -> None:
        board = Storyboard.model_validate_json(p.storyboard_json)
        template = self.d.templates.get(p.template)
        paths = self.d.store.paths(p)
        paths.make_dirs()
        if template.narration.enabled and self.d.speech is None:
            log.warning("narration skipped project=%s template=%s reason=TTS_BASE_URL not set", p.id, template.id)
        sound = final_cut.soundtrack(board, template, self.d.speech, self.d.transcriber, paths.final_dir)
        self._checkpoint(p)
        music = final_cut.music_bed(template, board.total_duration, paths.final_dir)
        spec = final_cut.compose_spec(board, template, [paths.segment(s.index) for s in board.shots], sound, music)
        result = compose.compose(spec, paths.final_video, paths.final_dir, cover=paths.cover)
        p.final_duration = result.duration
        p.final_url = self.d.objects.put(paths.final_video, self._key(p, "final/final.mp4"))
        p.cover_url = self.d.objects.put(paths.cover, self._key(p, "final/cover.jpg"))
        cols = self.d.columns
        files = {cols.final_video: [str(paths.final_video)], cols.cover: [str(paths.cover)]}
        self._save(p, ProjectState.completed, 100, "已完成", error="", attachments=files, notify=True)

    # -- helpers --------------------------------------------------------------------------------

    def _key(self, p: Project, name: str) -> str:
        return "/".join(self.d.store.paths(p).root.relative_to(self.d.store.data_dir / "projects").parts) + "/" + name

    def _storyboarder(self, name: str) -> Storyboarder:
        try:
            return self.d.storyboarders[name]
        except KeyError:
            raise BadInput(f"分镜后端“{name}”未配置：可选 {', '.join(self.d.storyboarders)}") from None

    def _stock(self, template, p: Project, used: set[str]) -> StockGenerator:
        library = self.d.generators.get("stock")
        if not isinstance(library, StockGenerator):
            raise Permanent(f"模板“{template.id}”要求部分镜头使用实拍素材（ai_ratio={template.ai_ratio:g}），"
                            "但没有配置素材库：请设置 STOCK_LIBRARY_DIR")
        return library.for_project(p.id, used)

    def _generator(self, name: str) -> SegmentGenerator:
        try:
            return self.d.generators[name]
        except KeyError:
            raise BadInput(f"视频段后端“{name}”未配置：可选 {', '.join(self.d.generators)}") from None


class _SlotGuard:
    """Holds a GPU slot for exactly the duration of one generation call, for GPU backends."""

    def __init__(self, generator: SegmentGenerator, slots: threading.Semaphore):
        self.inner, self.slots, self.name = generator, slots, generator.name

    def generate(self, req) -> None:
        with self.slots if getattr(self.inner, "uses_gpu", False) else nullcontext():
            self.inner.generate(req)


def _check_image(path: Path) -> None:
    try:
        info = ffmpeg.probe(path)
    except MediaError as e:
        raise BadInput("首帧图片无法识别：请上传 jpg/png/webp 格式的图片 (opening image is not a readable image)") from e
    if not info.width or not info.height:
        raise BadInput("首帧图片无法识别：请上传 jpg/png/webp 格式的图片 (opening image is not a readable image)")
    if info.width * info.height > MAX_IMAGE_PIXELS:
        raise BadInput(f"首帧图片太大（{info.width}x{info.height}），请缩小到 5000 万像素以内后重新上传")
