"""Cloud image-to-video: one driver for every provider's submit -> poll -> download.

A provider task is paid work, so every submission is journalled on the segment (DB and
meta.json): the intent before the request goes out, the task id as soon as the answer is in.
A resumed step polls the saved task instead of submitting again. When the answer to a submit
was lost (a timeout or 5xx after the request was sent) nobody knows whether a task exists: a
provider that can look tasks up by our own key (Kling's external_task_id) finds it; for the
others the shot stops with a sentence asking the operator to check the console and pick
重做第N段, because a blind resubmit could bill the same shot twice.

What each provider adds is small (`VideoProvider`): build its request, read its task, fetch its
files, and translate its errors into our tree (`ProviderError` says whether a failed submit
certainly created nothing).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
from PIL import Image, ImageOps

from connectors import ffmpeg
from connectors.deadline import client as deadline_client
from connectors.video.protocol import RemoteTask, SegmentRequest, SharedGenerator, TaskJournal
from storage.errors import BadInput, MediaError, Permanent, SheetReelError, Unavailable
from storage.retry import RetryPolicy

log = logging.getLogger(__name__)

MAX_VIDEO_BYTES = 500 * 1024 * 1024
_CHUNK = 1 << 20


class _Memory:
    """The journal of a request that came without one (a bench, a contract test)."""

    def __init__(self) -> None:
        self.task: RemoteTask | None = None

    def saved(self) -> RemoteTask | None:
        return self.task

    def save(self, task: RemoteTask | None) -> None:
        self.task = task

    def checkpoint(self) -> None:
        pass


@dataclass(frozen=True)
class Job:
    """What a provider is asked to make for one shot."""

    key: str
    shot: int  # counted from 0
    prompt: str
    image: Path  # the first frame, a JPEG of the output's aspect
    end_image: Path | None
    seconds: int  # one of the provider's durations
    width: int
    height: int
    seed: int


class TaskState(str, enum.Enum):
    waiting = "waiting"
    done = "done"
    failed = "failed"


@dataclass(frozen=True)
class TaskStatus:
    state: TaskState
    video_url: str | None = None
    last_frame_url: str | None = None
    seconds: float | None = None
    error: SheetReelError | None = None  # why it failed (state failed)
    refused: str | None = None  # failed by content moderation: the provider's code and words


class ProviderError(Exception):
    """A provider call failed. `error` is ours to raise; `created` says whether a submit may have
    made a task anyway (True: the answer was lost; False: the provider certainly refused it)."""

    def __init__(self, error: SheetReelError, created: bool = False):
        super().__init__(str(error))
        self.error, self.created = error, created


class VideoProvider(Protocol):
    name: str
    model: str
    durations: Sequence[int]
    supports_end_frame: bool
    # Can look a task up by our key (`find(job) -> id | None`, None meaning it has none, so a
    # submit whose answer was lost may be sent again). Others stop such a shot for the operator.
    can_find: bool

    def submit(self, job: Job) -> str:
        """Start the task and return its id; raise ProviderError."""
        ...

    def status(self, task_id: str) -> TaskStatus:
        """The task as it stands; raise ProviderError (a retryable one for a passing failure)."""
        ...

    def fetch(self, task_id: str, status: TaskStatus, video: Path, last_frame: Path) -> bool:
        """Write the finished video; True when the provider's own last frame was written too."""
        ...


class SubmitSpacing:
    """At most `per_minute` submits to one provider, spread evenly, across this host's workers."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.gap = 60.0 / per_minute if per_minute else 0.0
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            turn = max(now, self._next)
            self._next = turn + self.gap
        if turn > now:
            self.sleep(turn - now)


class RemoteGenerator(SharedGenerator):
    """A segment backend over one provider: slots, spacing, the journal, polling, the conform."""

    def __init__(
        self,
        provider: VideoProvider,
        *,
        concurrency: int = 2,
        submits_per_minute: float | None = None,
        poll_interval: float = 5.0,
        timeout: float = 1800.0,
        poll_retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.provider = provider
        self.name = provider.name
        self.slots = threading.BoundedSemaphore(concurrency)
        self.spacing = SubmitSpacing(submits_per_minute, clock, sleep)
        self.poll_interval, self.timeout = poll_interval, timeout
        self.poll_retry = poll_retry or RetryPolicy(attempts=4, base=2.0, cap=30.0)
        self.clock, self.sleep, self.now = clock, sleep, now

    def generate(self, req: SegmentRequest) -> None:
        journal = req.journal or _Memory()
        req.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=req.out.parent, prefix=f".{req.out.stem}.") as tmp:
            job = self._job(req, Path(tmp))
            with self.slots:
                task = self._task(job, journal)
                status = self._wait(job, task, journal)
                video = Path(tmp) / "remote.mp4"
                own_last = self.provider.fetch(task.id or "", status, video, Path(tmp) / "last.png")
                conform(video, req)
            if own_last and req.last_frame is not None:
                # The provider's full-quality last frame seeds the next shot, not a re-decoded one.
                as_frame(Path(tmp) / "last.png", req.last_frame, req.width, req.height)
        seconds = status.seconds if status.seconds is not None else float(job.seconds)
        journal.save(task.model_copy(update={"seconds": seconds}))
        log.info("provider task done provider=%s task=%s shot=%d seconds=%g", self.name, task.id, job.shot + 1, seconds)

    # ---- the journal: submit once, resume always ------------------------------------------------

    def _task(self, job: Job, journal: TaskJournal) -> RemoteTask:
        saved = journal.saved()
        if saved is not None and saved.key == job.key and saved.provider == self.name:
            if saved.id:
                log.info("provider task resumed provider=%s task=%s shot=%d", self.name, saved.id, job.shot + 1)
                return saved
            if not self._can_find:
                raise Permanent(lost_submit(job.shot, self.name, saved.submitted_at))
            found = self.provider.find(job)  # type: ignore[attr-defined]
            if found is not None:
                task = saved.model_copy(update={"id": found})
                journal.save(task)
                log.info("provider task found after a lost answer provider=%s task=%s", self.name, found)
                return task
            log.info("provider has no task for a lost submit, submitting provider=%s shot=%d", self.name, job.shot + 1)
        intent = RemoteTask(provider=self.name, model=self.provider.model, key=job.key, submitted_at=self.now())
        journal.save(intent)  # before the request: a crash from here on must not resubmit blindly
        self.spacing.wait()
        try:
            task_id = self.provider.submit(job)
        except ProviderError as e:
            if not e.created:
                journal.save(None)  # certainly refused: the next attempt may submit again
                raise e.error from e
            log.warning("provider submit answer lost provider=%s shot=%d error=%s", self.name, job.shot + 1, e.error)
            if self._can_find:  # looked up by our key on the next attempt
                raise Unavailable(f"第{job.shot + 1}段提交给 {self.name} 后没有收到答复，稍后按任务编号查询 ({e.error})") from e
            raise Permanent(lost_submit(job.shot, self.name, intent.submitted_at)) from e
        task = intent.model_copy(update={"id": task_id})
        journal.save(task)
        log.info("provider task submitted provider=%s task=%s shot=%d seconds=%d", self.name, task_id, job.shot + 1, job.seconds)
        return task

    @property
    def _can_find(self) -> bool:
        return bool(getattr(self.provider, "can_find", False))

    def _wait(self, job: Job, task: RemoteTask, journal: TaskJournal) -> TaskStatus:
        deadline = self.clock() + self.timeout
        failures = 0
        while True:
            journal.checkpoint()
            try:
                status = self.provider.status(task.id or "")
                failures = 0
            except ProviderError as e:
                failures += 1
                if not e.error.retryable or failures >= self.poll_retry.attempts:
                    raise e.error from e
                self.sleep(self.poll_retry.delay(failures, getattr(e.error, "retry_after", None)))
                continue
            if status.state == TaskState.done:
                return status
            if status.state == TaskState.failed:
                journal.save(None)  # the provider is done with it: a retry submits afresh
                if status.refused is not None:
                    raise moderation(job.shot, self.name, status.refused)
                raise status.error or Permanent(f"{self.provider.name} 的生成任务失败 (task {task.id})")
            if self.clock() + self.poll_interval > deadline:
                # Polled again on the next attempt; the provider is slow, the project is fine.
                raise Unavailable(f"第{job.shot + 1}段的生成任务（{self.name} {task.id}）超过 {self.timeout:g} 秒仍未完成，稍后继续等待")
            self.sleep(self.poll_interval)

    def _job(self, req: SegmentRequest, tmp: Path) -> Job:
        durations = sorted(self.provider.durations)
        seconds = next((d for d in durations if d >= req.shot.duration - 1e-6), durations[-1])
        image = as_frame(req.image, tmp / "first.jpg", req.width, req.height)
        end = as_frame(req.end_image, tmp / "end.jpg", req.width, req.height) if (
            req.end_image is not None and self.provider.supports_end_frame) else None
        key = hashlib.sha256(
            f"{self.name}|{self.provider.model}|{req.out.resolve()}|{req.seed}|{seconds}|{req.shot.prompt}".encode()
        ).hexdigest()[:32]
        return Job(key=key, shot=req.shot.index, prompt=req.shot.prompt, image=image, end_image=end, seconds=seconds,
                   width=req.width, height=req.height, seed=req.seed)


def lost_submit(shot: int, provider: str, at: datetime) -> str:
    return (f"第{shot + 1}段已于 {at:%Y-%m-%d %H:%M} UTC 提交给 {provider}，但没有收到答复，无法确定任务是否已创建；"
            f"为避免重复计费不会自动重新提交：请在服务商控制台确认，需要重新生成时在「操作」列填写「重做第{shot + 1}段」"
            " (submit answer lost)")


def moderation(shot: int, provider: str, detail: str) -> BadInput:
    return BadInput(f"第{shot + 1}段未通过 {provider} 的内容审核：请修改「分镜脚本」中第{shot + 1}段的描述（或更换首帧图片）后重试"
                    f" ({detail[:200]})")


def as_frame(src: Path, dest: Path, width: int, height: int) -> Path:
    """`src` covered to width x height, as a clean JPEG/PNG (what every provider accepts)."""
    try:
        with Image.open(src) as im:
            im.load()
            frame = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (width, height), Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"首帧图片无法解码，没有提交生成任务 ({src.name}: {type(e).__name__})") from e
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        frame.save(tmp, format="PNG" if dest.suffix.lower() == ".png" else "JPEG", quality=95)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def data_url(image: Path) -> str:
    """An image inline, as the providers that take base64 want it."""
    mime = "image/png" if image.suffix.lower() == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode('ascii')}"


def download(url: str, dest: Path, *, what: str, deadline: float = 600.0, max_bytes: int = MAX_VIDEO_BYTES,
             headers: dict[str, str] | None = None) -> None:
    """Stream a provider's file to `dest` within `deadline` seconds and `max_bytes`: Unavailable for a
    dropped connection or 5xx (the task is polled and fetched again), Permanent for an expired link."""
    too_big = Permanent(f"{what}超过 {max_bytes >> 20} MB 上限 (too large)")
    try:
        with deadline_client(deadline, timeout=60.0, follow_redirects=True) as client, \
                client.stream("GET", url, headers=headers or {}) as resp:
            if resp.status_code in (403, 404, 410):
                raise Permanent(f"{what}的下载链接已失效（HTTP {resp.status_code}）：请在「操作」列填写「重做第N段」重新生成")
            if resp.status_code >= 400:
                raise Unavailable(f"{what}下载失败（HTTP {resp.status_code}），稍后自动重试")
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise too_big
            total = 0
            with open(dest, "wb") as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise too_big
                    f.write(chunk)
    except httpx.HTTPError as e:
        raise Unavailable(f"{what}下载中断，稍后自动重试 ({type(e).__name__})") from e


def fetch_files(status: TaskStatus, video: Path, last_frame: Path, *, what: str) -> bool:
    """`fetch` for a provider whose finished task gives download links."""
    if not status.video_url:
        raise Permanent(f"{what}任务成功但没有视频地址 (no video url)")
    download(status.video_url, video, what=f"{what}的视频")
    if status.last_frame_url:
        download(status.last_frame_url, last_frame, what=f"{what}的尾帧", max_bytes=50 << 20)
        return True
    return False


def conform(download: Path, req: SegmentRequest) -> None:
    """Natural speed at the output rate; a clip shorter than the shot holds its last frame."""
    if not download.is_file() or os.path.getsize(download) == 0:
        raise MediaError("服务商返回的视频为空 (empty remote video)")
    graph = f"setpts=PTS-STARTPTS,fps={req.fps},{ffmpeg.conform_filter(req.width, req.height)},tpad=stop=-1:stop_mode=clone"
    ffmpeg.run_to(
        req.out,
        lambda tmp: [
            ffmpeg.FFMPEG, "-i", str(download), "-map", "0:v:0", "-vf", graph,
            "-frames:v", str(req.frame_count), *ffmpeg.encode_args(req.fps), str(tmp),
        ],
        what=f"conforming the remote video for shot {req.shot.index + 1}",
    )
