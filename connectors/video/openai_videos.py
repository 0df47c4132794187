"""The OpenAI videos API (`client.videos`: Sora 2, and the gateways serving Veo, Kling or Seedance
on the same `/v1/videos` shape): the shot's first frame as `input_reference`, `seconds`, `size`;
poll with `retrieve`, fetch with `download_content`.

The reference image must have exactly the requested size, so the frame is covered to the size
nearest the template's aspect. The SDK's own retries are off for the submit (a retried POST whose
first try did reach the server would start, and bill, a second video); reads retry as usual.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
import openai

from connectors import deadline
from connectors.openai_errors import translate
from connectors.video.remote import (
    MAX_VIDEO_BYTES,
    Job,
    ProviderError,
    TaskState,
    TaskStatus,
    as_frame,
    moderation,
)
from storage.errors import Permanent, SheetReelError, Unavailable

SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
DURATIONS = (4, 8, 12)
_MODERATION = ("moderation", "content_policy", "safety", "sensitive")


class OpenAIVideos:
    name = "openai"
    supports_end_frame = False
    can_find = False  # its tasks carry no key of ours: matching prompts could adopt another shot's

    def __init__(self, base_url: str, api_key: str, model: str = "sora-2", *, sizes: Sequence[str] = SIZES,
                 durations: Sequence[int] = DURATIONS, timeout: float = 60.0, max_bytes: int = MAX_VIDEO_BYTES):
        self.base_url, self.api_key, self.model = base_url, api_key, model
        self.sizes = [_size(s) for s in sizes]
        self.durations = tuple(durations)
        self.max_bytes = max_bytes
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=timeout,
                                     http_client=deadline.client(max(timeout, 600.0)))

    def submit(self, job: Job) -> str:
        width, height = self._size(job.width, job.height)
        with tempfile.TemporaryDirectory() as tmp:
            frame = as_frame(job.image, Path(tmp) / "reference.jpg", width, height)
            try:
                video = self._client.with_options(max_retries=0).videos.create(
                    model=self.model, prompt=job.prompt, seconds=str(job.seconds), size=f"{width}x{height}",
                    input_reference=("reference.jpg", frame.read_bytes(), "image/jpeg"),
                )
            except openai.OpenAIError as e:
                raise ProviderError(self._error(e, job.shot), created=_may_have_created(e)) from e
        if not video.id:
            raise ProviderError(Permanent(f"{self._where()}返回的任务没有 id (no video id)"), created=True)
        return video.id

    def status(self, task_id: str) -> TaskStatus:
        try:
            video = self._client.videos.retrieve(task_id)
        except openai.OpenAIError as e:
            raise ProviderError(self._error(e, None)) from e
        if video.status == "completed":
            return TaskStatus(TaskState.done, seconds=_seconds(video.seconds))
        if video.status == "failed":
            code = (video.error.code if video.error else None) or "failed"
            message = (video.error.message if video.error else None) or code
            if any(m in code.lower() for m in _MODERATION):
                return TaskStatus(TaskState.failed, refused=f"{code}: {self._scrub(message)}")
            return TaskStatus(TaskState.failed, error=Permanent(
                f"{self._where()}生成失败：{self._scrub(message)} (video {task_id} {code})"))
        return TaskStatus(TaskState.waiting)

    def fetch(self, task_id: str, status: TaskStatus, video: Path, last_frame: Path) -> bool:
        total = 0
        try:
            with self._client.videos.with_streaming_response.download_content(task_id, variant="video") as resp, \
                    open(video, "wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise Permanent(f"{self._where()}返回的视频超过 {self.max_bytes >> 20} MB 上限 (too large)")
                    f.write(chunk)
        except openai.OpenAIError as e:
            raise self._error(e, None) from e
        except httpx.HTTPError as e:
            raise Unavailable(f"{self._where()}视频下载中断，稍后自动重试 ({type(e).__name__})") from e
        return False

    # ---- helpers ------------------------------------------------------------------------------

    def _size(self, width: int, height: int) -> tuple[int, int]:
        """The allowed size nearest the output's aspect; the smaller one of equals (cheaper)."""
        aspect = width / height
        return min(self.sizes, key=lambda s: (round(abs(s[0] / s[1] - aspect), 3), s[0] * s[1]))

    def _error(self, err: openai.OpenAIError, shot: int | None) -> SheetReelError:
        if isinstance(err, openai.APIStatusError) and shot is not None:
            code = _code(err)
            if any(m in code for m in _MODERATION):
                return moderation(shot, self._where(), code)
        return translate(err, service="视频生成服务", model=self.model, base_url=self.base_url, api_key=self.api_key)

    def _scrub(self, text: str) -> str:
        text = text.replace(self.api_key, "***") if self.api_key else text
        return " ".join(text.split())[:200]

    def _where(self) -> str:
        return f"视频生成服务（模型 {self.model}，地址 {self.base_url}）"


def _may_have_created(err: openai.OpenAIError) -> bool:
    """Whether a failed create may still have started a video (so it must not be sent again)."""
    if isinstance(err, openai.APIStatusError):
        return err.status_code >= 500
    if isinstance(err, openai.APIConnectionError):  # the timeout too
        # Refused before anything was sent is the one connection failure known to be harmless.
        return not isinstance(err.__cause__, httpx.ConnectError)
    return True


def _code(err: openai.APIStatusError) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    inner = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    return str(inner.get("code") or inner.get("type") or "").lower()


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def _seconds(raw: object) -> float | None:
    try:
        return float(str(raw))
    except ValueError:
        return None

