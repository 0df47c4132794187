"""The project runner: takes a project through its stages. What each outcome means for the
project's state is the lifecycle's; what it means for the row and the chat is the sheet side's."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from connectors import ffmpeg
from connectors.asr import Transcriber
from connectors.tts import Speech
from connectors.video.protocol import RemoteTask, SegmentGenerator, SegmentRequest
from pipeline import audio_mix, compose, final_cut, premix, preview
from pipeline.mix import plan_sources
from pipeline.publish import Publisher
from pipeline.segments import SegmentResult, generate_segments
from pipeline.storyboard import Storyboarder
from pipeline.templates import TemplateConfig, TemplateLibrary
from storage import atomic
from storage.errors import BadInput, Cancelled, Permanent, SheetReelError
from storage.locks import ProjectLocks
from storage.models import Project, Segment, SegmentSource, SegmentState, Timing
from storage.projects import ProjectStore
from storage.retry import RetryPolicy
from storage.storyboard import Storyboard
from storage.timings import TimingStore
from sync import lifecycle
from sync.background import PICTURES_NICE, Ahead, in_background
from sync.eta import COMPOSER
from sync.lifecycle import Lifecycle
from sync.metrics import Metrics
from sync.requirements import Requirement, capabilities, unmet
from sync.staging import FetchImage, fetch_opening_image, fresh_cache

log = logging.getLogger(__name__)
# A project's work ahead: its soundtrack (compose waits for it) and the pictures of its plan and shots.
SOUNDTRACK, PLAN_PICTURES, SHOT_PICTURES = "soundtrack", "plan pictures", "shot pictures"
TAKE_SEED_STRIDE = 1000  # take t seeds its shots at template seed + 1000t + index: takes never share a seed


@dataclass
class RunnerDeps:
    store: ProjectStore
    life: Lifecycle
    locks: ProjectLocks
    templates: TemplateLibrary
    storyboarders: dict[str, Storyboarder]
    generators: dict[str, SegmentGenerator]
    publisher: Publisher
    fetch_image: FetchImage
    clock: Callable[[], datetime]
    storyboard_backend: str = "template"
    segment_backend: str = "kenburns"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    outage_retry: RetryPolicy = lifecycle.OUTAGE
    max_crash_resumes: int = 3
    host: str = field(default_factory=socket.gethostname)
    # The GPU host has this many generation slots; CPU stages of other projects run meanwhile.
    gpu_slots: threading.Semaphore = field(default_factory=lambda: threading.BoundedSemaphore(1))
    # Set on SIGTERM: running steps stop at their next safe point and checkpoint.
    stopping: threading.Event = field(default_factory=threading.Event)
    speech: Speech | None = None
    transcriber: Transcriber | None = None
    # Price per generated second, by model (or backend) name: what a provider shot costs.
    prices: dict[str, float] = field(default_factory=dict)
    # Scale-out mode: this host's project folders are a cache; what a later stage or another host
    # needs is kept in the object store (publisher) and pulled from there when missing here.
    shared: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    # Where the time each piece of work took is kept (for the estimate in 进度); None: not kept.
    timings: TimingStore | None = None
    # Whether the project's table has a 预览 or 分镜预览 column to show previews in (None: always
    # made). Saves the ffmpeg work where nobody would see it.
    shows_previews: Callable[[Project], bool] | None = None
    # Music beds measured for earlier videos: one template's music is measured once per process.
    loudness: audio_mix.LoudnessMemo = field(default_factory=audio_mix.LoudnessMemo)
    # Work no stage waits for now: soundtracks mixed while the shots are made (compose then only
    # copies them in), and the previews.
    ahead: Ahead = field(default_factory=Ahead)


class Stopping(Exception):
    """The process is shutting down; the step checkpoints and the project resumes on next start."""


PROGRESS = {"storyboard": (5, "生成分镜"), "segments": (10, "生成视频段"), "compose": (90, "合成成片")}


class ProjectRunner:
    def __init__(self, deps: RunnerDeps):
        self.d = deps

    def run(self, project_id: str, accepts: Callable[[Project, str], bool] | None = None) -> bool:
        """Work on one project as far as it can go now (only the steps `accepts`, when given: a
        queue's worker runs the stages routed to its queue). False if another worker holds it."""
        with self.d.locks.hold(project_id) as got:
            if not got:
                return False
            p = self.d.store.get(project_id)
            if p is None:
                return True
            if self.d.shared and p.template:
                fresh_cache(p, self.d.store.paths(p))
            if lifecycle.is_running(p.state):
                # We hold the lock, so whoever left it running is gone.
                p = self._commit(p, lambda q: lifecycle.crash_resumed(q, self.d.max_crash_resumes))
                log.warning("step resumed after a crash project=%s record=%s crashes=%d state=%s",
                            p.id, p.record_id, p.crash_resumes, p.state.value)
            while not self.d.stopping.is_set():
                if not lifecycle.is_final(p.state) and self.d.store.cancel_requested(p.id):
                    self._commit(p, lifecycle.step_cancelled)
                    log.info("project cancelled project=%s record=%s", p.id, p.record_id)
                    break
                step = lifecycle.next_step(p, self.d.clock())
                if step is None or (accepts is not None and not accepts(p, step)) or (p := self._attempt(p, step)) is None:
                    break
            return True

    def _commit(self, p: Project, transition: lifecycle.Transition, segments: tuple[Segment, ...] = ()) -> Project:
        return self.d.life.commit(p.id, transition, segments)

    def _checkpoint(self, p: Project) -> None:
        """A safe point inside a step: honour 取消 and shutdown here, never mid-write."""
        if self.d.store.cancel_requested(p.id):
            raise Cancelled("已取消")
        if self.d.stopping.is_set():
            raise Stopping()

    def _attempt(self, p: Project, step: str) -> Project | None:
        """Run one step; the project as it stands after success, None when the run stops here."""
        pct, text = PROGRESS[step]
        p = self._commit(p, lambda q: lifecycle.step_started(q, pct, text))
        run = self.d.store.start_step(p.id, step, self.d.host)
        log.info("step started project=%s record=%s step=%s attempt=%d", p.id, p.record_id, step, run.attempt)
        started = time.monotonic()
        try:
            self._checkpoint(p)
            p = getattr(self, f"_{step}")(p)
        except Cancelled:
            self._commit(p, lifecycle.step_cancelled)
            log.info("project cancelled project=%s record=%s", p.id, p.record_id)
            return None
        except Stopping:
            self._commit(p, lifecycle.step_interrupted)
            seconds = self._observe(step, "interrupted", started)
            log.info("step interrupted project=%s record=%s step=%s seconds=%.1f", p.id, p.record_id, step, seconds)
            return None
        except Exception as e:
            err = e if isinstance(e, SheetReelError) else None
            if err is None:
                log.exception("step crashed project=%s record=%s step=%s", p.id, p.record_id, step)
                err = SheetReelError(f"内部错误，请联系工程师查看日志：{type(e).__name__}: {str(e)[:200]}")
            p = self._commit(p, lambda q: lifecycle.step_failed(q, err, self.d.clock(), self.d.retry, self.d.outage_retry))
            seconds = self._observe(step, "failed", started)
            log.warning("step failed project=%s record=%s step=%s state=%s seconds=%.1f error=%s",
                        p.id, p.record_id, step, p.state.value, seconds, err)
            return None
        seconds = self._observe(step, "done", started)
        if step != "segments":  # shots are timed one by one, as they finish
            self._timed(p, step, seconds)
        log.info("step done project=%s record=%s step=%s state=%s seconds=%.1f", p.id, p.record_id, step,
                 p.state.value, seconds)
        return p

    def _observe(self, step: str, outcome: str, started: float) -> float:
        """The step's seconds, counted in the metrics; the log line says the same number."""
        seconds = time.monotonic() - started
        self.d.metrics.step_seconds.labels(step=step, outcome=outcome).observe(seconds)
        return seconds

    # -- stages: each ends with its success, committed with what it made ----------------------

    def _storyboard(self, p: Project) -> Project:
        paths = self.d.store.paths(p)
        paths.make_dirs()
        template = self.d.templates.get(p.template)
        # Refused before any work. Several hosts: the stages run where their queues are served,
        # so what this host lacks says nothing.
        if not self.d.shared and (blocking := [r.without for r in self._unmet(template) if r.essential]):
            raise Permanent("；".join(blocking))
        self._opening_image(p)
        backend = template.storyboard_backend or self.d.storyboard_backend
        if backend == "llm" and template.llm_images:
            backend = "llm-images"
        board = self._storyboarder(backend).write(template, p.scene, p.shot_count or template.shot_count, paths.opening_image)
        atomic.write_text(paths.storyboard, board.model_dump_json(indent=2))
        self._share(paths.storyboard)
        board_json = board.model_dump_json()

        def made(q: Project) -> lifecycle.Change:
            q.storyboard_json = board_json
            return lifecycle.step_succeeded(q, 10, "分镜完成")

        p = self._commit(p, made)
        project_id, record_id = p.id, p.record_id

        def ahead() -> None:
            # No lock is held: all it writes is named by what it was made from.
            mixed = premix.make(board, template, self.d.speech, self.d.transcriber,
                                [paths.segment(s.index) for s in board.shots], paths.final_dir, self.d.loudness)
            self._share(mixed.audio(paths.final_dir), premix.record_path(paths.final_dir, mixed.key))
            log.info("soundtrack premixed project=%s record=%s source=%s", project_id, record_id, mixed.source)

        self.d.ahead.start(project_id, SOUNDTRACK, ahead)
        self._preview(p, PLAN_PICTURES, lifecycle.plan_drawn, lambda: preview.plan_previews(
            board, template, paths.opening_image, paths.plan_sheet, paths.animatic, paths.preview),
            paths.plan_sheet, paths.animatic)
        return p

    def _opening_image(self, p: Project) -> None:
        """The row's image in the project folder (again, if `cleanup` removed the inputs; from the
        object store, when another host fetched it)."""
        paths = self.d.store.paths(p)
        if self.d.shared:
            self.d.publisher.pull(paths.opening_image)
        if paths.opening_image.is_file():
            return
        fetch_opening_image(p, paths, self.d.fetch_image)
        if self.d.shared:
            self.d.publisher.push(paths.opening_image)

    def _segments(self, p: Project) -> Project:
        board = Storyboard.model_validate_json(p.storyboard_json)
        template = self.d.templates.get(p.template)
        paths = self.d.store.paths(p)
        paths.make_dirs()
        self._opening_image(p)
        total = len(board.shots)
        sources = plan_sources(p.id, total, template.ai_ratio)
        known = {s.index: s for s in self.d.store.segments(p.id)}
        finished = [s for s in known.values() if s.state == SegmentState.done]
        if self.d.shared:  # shots another host finished: their files, so none is made twice
            for k in (s.index for s in finished):
                self.d.publisher.pull(*_shot_files(paths, k))
        # Clips already in this video, from earlier runs too: a restart or a redone shot must
        # not bring one of them back.
        used = {s.clip for s in finished if s.clip}
        by_source = {source: _SlotGuard(self._generator(template, source).for_project(p.id, used), self.d.gpu_slots,
                                        self.d.metrics)
                     for source in set(sources)}
        journals: dict[int, _TaskJournal] = {}
        shot_started: dict[int, float] = {}

        def journal_for(k: int) -> _TaskJournal:
            if k not in journals:
                journals[k] = _TaskJournal(self, p, k, sources[k], by_source[sources[k]].name,
                                           known[k].task if k in known else None)
            return journals[k]

        def on_start(k: int) -> None:
            self._checkpoint(p)
            shot_started[k] = time.monotonic()
            seg = journal_for(k).segment  # carries a provider task saved by an earlier run
            self._commit(p, lambda q: lifecycle.step_progress(q, 10 + 75 * k // total, f"生成第{k + 1}/{total}段"), (seg,))

        def on_done(res: SegmentResult) -> None:
            url = self.d.publisher.put(paths.segment(res.index))
            self._share(*_shot_files(paths, res.index)[1:])  # the frames the next shot chains from
            if self.d.shared and not paths.seed_frame(res.index).is_file():
                self.d.publisher.forget(paths.seed_frame(res.index))  # an older take's correction
            task = journal_for(res.index).task
            cost = self._cost(RemoteTask.model_validate_json(task)) if task else None
            seg = Segment(project_id=p.id, index=res.index, state=SegmentState.done, source=res.source,
                          backend=res.backend, duration=res.duration, url=url, drift=res.drift, clip=res.clip,
                          task=task, cost=cost, media=res.probed.model_dump_json() if res.probed else None)
            pct, text = 10 + 75 * (res.index + 1) // total, f"完成第{res.index + 1}/{total}段"

            def made(q: Project) -> lifecycle.Change:
                if cost is not None:
                    q.cost = round((q.cost or 0.0) + cost, 4)
                return lifecycle.step_progress(q, pct, text, made=True)

            self._commit(p, made, (seg,))
            took = time.monotonic() - shot_started[res.index] if res.index in shot_started else None
            if took is not None:
                self.d.metrics.shot_seconds.labels(backend=res.backend).observe(took)
                self._record("shot", res.backend, res.duration or 0.0, took)
            # seconds= is time taken, as on the step lines; length= the clip's own duration.
            log.info("shot done project=%s record=%s shot=%d backend=%s seconds=%s length=%.1f", p.id, p.record_id,
                     res.index, res.backend, f"{took:.1f}" if took is not None else "-", res.duration or 0)

        generate_segments(board, paths, template, sources, lambda k, source: by_source[source],
                          {s.index for s in finished}, on_start, on_done, seed=TAKE_SEED_STRIDE * p.takes,
                          journal_for=journal_for)
        p = self._commit(p, lambda q: lifecycle.step_succeeded(q, 85, "视频段完成"))
        frames = [(paths.first_frame(s.index), paths.last_frame(s.index)) for s in board.shots]
        self._preview(p, SHOT_PICTURES, lifecycle.shots_drawn,
                      lambda: preview.shots_sheet(board, template, frames, paths.shots_sheet, paths.preview),
                      paths.shots_sheet)
        return p

    def _compose(self, p: Project) -> Project:
        board = Storyboard.model_validate_json(p.storyboard_json)
        template = self.d.templates.get(p.template)
        paths = self.d.store.paths(p)
        paths.make_dirs()
        if self.d.shared:
            self.d.publisher.pull(*(paths.segment(s.index) for s in board.shots))
        without = [r for r in self._unmet(template) if not r.essential]
        for r in without:
            log.warning("made without project=%s template=%s need=%s", p.id, template.id, r.need)
        segments = [paths.segment(s.index) for s in board.shots]
        known = {paths.segment(s.index): _probed(s) for s in self.d.store.segments(p.id)}
        result = self._compose_premixed(p, board, template, segments, known)
        if result is None:
            sound = final_cut.soundtrack(board, template, self.d.speech, self.d.transcriber, paths.final_dir)
            self._checkpoint(p)
            spec = final_cut.compose_spec(board, template, segments, sound, final_cut.music_bed(template))
            result = in_background(lambda: compose.compose(spec, paths.final_video, paths.final_dir, cover=paths.cover,
                                                           known=known, loudness=self.d.loudness))
        final_url, cover_url = self.d.publisher.put(paths.final_video), self.d.publisher.put(paths.cover)

        def made(q: Project) -> lifecycle.Change:
            q.final_duration, q.final_url, q.cover_url = result.duration, final_url, cover_url
            return lifecycle.step_succeeded(q, 100, "已完成", notice="；".join(r.without for r in without) or None)

        return self._commit(p, made)

    def _compose_premixed(self, p: Project, board: Storyboard, template: TemplateConfig, segments: list[Path],
                          known: dict[Path, ffmpeg.ProbedFile | None]) -> compose.ComposeResult | None:
        """The video with the soundtrack mixed ahead for exactly this storyboard and template;
        None when there is none (compose then mixes it)."""
        self.d.ahead.claim(p.id, SOUNDTRACK)
        paths = self.d.store.paths(p)
        key = premix.premix_key(board, template, self.d.speech, self.d.transcriber)
        if self.d.shared:
            self.d.publisher.pull(premix.audio_path(paths.final_dir, key), premix.record_path(paths.final_dir, key))
        ready = premix.find(key, paths.final_dir)
        if ready is None:
            return None
        srt = None
        if ready.srt is not None:
            atomic.write_text(paths.subtitles, ready.srt)
            srt = paths.subtitles
        spec = final_cut.compose_spec(board, template, segments, final_cut.Soundtrack(srt=srt, source=ready.source), None)
        try:
            return in_background(lambda: compose.compose(spec, paths.final_video, paths.final_dir, cover=paths.cover,
                                                          known=known, premixed=ready))
        except compose.PremixUnfit as e:
            log.info("premixed soundtrack not used project=%s record=%s why=%s", p.id, p.record_id, e)
            return None

    # -- helpers --------------------------------------------------------------------------------

    def _unmet(self, template: TemplateConfig) -> list[Requirement]:
        have = capabilities(self.d.storyboarders, self.d.generators, self.d.speech is not None,
                            self.d.transcriber is not None)
        return unmet(template, have, self.d.storyboard_backend, self.d.segment_backend)

    def _preview(self, p: Project, what: str, drawn: lifecycle.Transition, draw: Callable[[], None],
                 *files: Path) -> None:
        """A picture for the row, drawn as work ahead once its stage has committed (the next stage
        does not wait for it): worth a try, never worth failing the video for."""
        if self.d.shows_previews is not None and not self.d.shows_previews(p):
            return
        project_id, record_id = p.id, p.record_id

        def ahead() -> None:
            try:
                draw()
            except (SheetReelError, OSError) as e:
                log.warning("preview skipped project=%s record=%s error=%s", project_id, record_id, e)
                return
            self._share(*files)
            self.d.life.commit(project_id, drawn)

        self.d.ahead.start(project_id, what, ahead, nice=PICTURES_NICE)

    def _timed(self, p: Project, step: str, seconds: float) -> None:
        """A finished storyboard or compose, per second of the video it planned or made."""
        try:
            template = self.d.templates.get(p.template)
            board = Storyboard.model_validate_json(p.storyboard_json or "")
        except (SheetReelError, ValueError):
            return
        if step == "storyboard":
            self._record(step, template.storyboard_backend or self.d.storyboard_backend, board.total_duration, seconds)
        else:
            self._record(step, COMPOSER, p.final_duration or board.total_duration, seconds)

    def _record(self, work: str, backend: str, media_seconds: float, seconds: float) -> None:
        if self.d.timings is None or media_seconds <= 0:
            return
        try:
            self.d.timings.add(Timing(work=work, backend=backend, host=self.d.host, media_seconds=media_seconds,
                                      wall_seconds=seconds, finished_at=self.d.clock()))
        except Exception as e:  # noqa: BLE001 - history for estimates; the video is what matters
            log.warning("timing not recorded work=%s error=%s", work, e)

    def _share(self, *files: Path) -> None:
        if self.d.shared:
            self.d.publisher.push(*files)

    def _storyboarder(self, name: str) -> Storyboarder:
        try:
            return self.d.storyboarders[name]
        except KeyError:
            raise BadInput(f"分镜后端“{name}”未配置：可选 {', '.join(self.d.storyboarders)}") from None

    def _cost(self, task: RemoteTask) -> float | None:
        price = self.d.prices.get(task.model, self.d.prices.get(task.provider))
        return round(price * task.seconds, 4) if price is not None and task.seconds is not None else None

    def _generator(self, template: TemplateConfig, source: SegmentSource) -> SegmentGenerator:
        if source == SegmentSource.stock:
            if "stock" not in self.d.generators:
                raise Permanent(f"模板“{template.id}”要求部分镜头使用实拍素材（ai_ratio={template.ai_ratio:g}），"
                                "但没有配置素材库：请设置 STOCK_LIBRARY_DIR")
            return self.d.generators["stock"]
        name = template.segment_backend or self.d.segment_backend
        try:
            return self.d.generators[name]
        except KeyError:
            raise BadInput(f"视频段后端“{name}”未配置：可选 {', '.join(self.d.generators)}") from None


def _shot_files(paths, k: int) -> tuple[Path, ...]:
    return paths.segment(k), paths.first_frame(k), paths.last_frame(k), paths.seed_frame(k)


def _probed(segment: Segment) -> ffmpeg.ProbedFile | None:
    """The facts the segments stage recorded of the segment's file; None for a row from before
    they were kept, or one that does not hold them (compose then probes the file itself)."""
    if not segment.media:
        return None
    try:
        return ffmpeg.ProbedFile.model_validate_json(segment.media)
    except ValueError:
        return None


class _TaskJournal:
    """A shot's provider task, kept on its segment (DB and meta.json) by a commit of its own."""

    def __init__(self, runner: ProjectRunner, project: Project, index: int, source: SegmentSource, backend: str,
                 task: str | None):
        self.runner, self.project, self.index, self.source, self.backend = runner, project, index, source, backend
        self.task = task  # RemoteTask as JSON, as the segment row holds it

    @property
    def segment(self) -> Segment:
        """The shot's segment while it is made (a fresh row object for each commit)."""
        return Segment(project_id=self.project.id, index=self.index, state=SegmentState.generating, source=self.source,
                       backend=self.backend, task=self.task)

    def saved(self) -> RemoteTask | None:
        if not self.task:
            return None
        try:
            return RemoteTask.model_validate_json(self.task)
        except ValueError:  # an unreadable record (a hand-edited meta.json) cannot be resumed
            log.warning("provider task unreadable project=%s shot=%d", self.project.id, self.index + 1)
            return None

    def save(self, task: RemoteTask | None) -> None:
        self.task = task.model_dump_json() if task else None
        if task is not None and task.id and task.seconds is not None:  # the provider's video is in
            waited = (self.runner.d.clock() - task.submitted_at).total_seconds()
            self.runner.d.metrics.provider_wait.labels(provider=task.provider).observe(max(waited, 0.0))
        self.runner._commit(self.project, lambda q: lifecycle.task_saved(q), (self.segment,))

    def checkpoint(self) -> None:
        self.runner._checkpoint(self.project)


class _SlotGuard:
    """Holds a GPU slot for exactly the duration of one generation call, for GPU backends."""

    def __init__(self, generator: SegmentGenerator, slots: threading.Semaphore, metrics: Metrics):
        self.inner, self.slots, self.name, self.metrics = generator, slots, generator.name, metrics
        self.moves_over_origin = generator.moves_over_origin

    def generate(self, req: SegmentRequest) -> str | None:
        if not self.inner.uses_gpu:
            return self.inner.generate(req)
        with self.slots:
            started = time.monotonic()
            try:
                return self.inner.generate(req)
            finally:
                self.metrics.gpu_busy.inc(time.monotonic() - started)
