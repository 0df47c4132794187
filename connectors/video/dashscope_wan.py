"""Alibaba Bailian / DashScope Wan image-to-video through the `dashscope` SDK (VideoSynthesis):
`async_call` submits, the tasks API is read once per poll, the video comes from `video_url`.

wan2.x i2v models take the first frame as `img_url`; first+last-frame models (a "kf2v" name,
which the SDK sends to the image2video service) take `first_frame_url` and `last_frame_url`.
Frames go inline as data URLs: a local path would make the SDK upload it to DashScope's OSS
through a global endpoint. The base URL is passed per call (`base_address`), never set globally.

The SDK sends a request again, once, on any connection error, including a connection the
server dropped after reading a submit; for a paid submit that could start a second video, so
the submit's session turns connection errors into `_NotResent`, which the SDK does not retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from connectors.video.remote import Job, ProviderError, TaskState, TaskStatus, data_url, fetch_files, moderation
from storage.errors import AuthFailed, BadInput, Permanent, RateLimited, SheetReelError, Unavailable

_MODERATION = ("DataInspection", "IPInfringement", "Sensitive")


class _NotResent(Exception):
    def __init__(self, error: requests.RequestException, sent: bool):
        super().__init__(str(error))
        self.error, self.sent = error, sent


class _SubmitSession(requests.Session):
    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().request(*args, **kwargs)
        except requests.RequestException as e:
            raise _NotResent(e, sent=not _refused(e)) from e


def _refused(err: requests.RequestException) -> bool:
    """Whether the request never left this host (so it cannot have started a task)."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return isinstance(err, requests.ConnectionError) and isinstance(reason, NewConnectionError)


class DashScopeWan:
    name = "wan"
    can_find = False  # its tasks carry no key of ours: matching prompts could adopt another shot's

    def __init__(self, api_key: str, model: str = "wan2.5-i2v-preview", *,
                 base_url: str = "https://dashscope.aliyuncs.com/api/v1", resolution: str = "720P",
                 durations: Sequence[int] = (5,), request_timeout: float = 60.0):
        self.api_key, self.model, self.base_url = api_key, model, base_url.rstrip("/")
        self.resolution, self.durations, self.request_timeout = resolution, tuple(durations), request_timeout
        self.supports_end_frame = "kf2v" in model

    def submit(self, job: Job) -> str:
        from dashscope import VideoSynthesis

        frames: dict[str, str] = {"img_url": data_url(job.image)}
        if self.supports_end_frame:
            if job.end_image is None:
                raise ProviderError(Permanent(
                    f"模型 {self.model} 需要首帧和尾帧：请在模板中设置 end_frame，或改用 i2v 模型 (no last frame)"))
            frames = {"first_frame_url": frames["img_url"], "last_frame_url": data_url(job.end_image)}
        try:
            with _SubmitSession() as session:
                resp = VideoSynthesis.async_call(
                    model=self.model, prompt=job.prompt, duration=job.seconds, resolution=self.resolution,
                    seed=job.seed % 2**31, api_key=self.api_key, base_address=self.base_url,
                    request_timeout=self.request_timeout, session=session, **frames)
        except _NotResent as e:
            what = "响应超时" if isinstance(e.error, requests.Timeout) else "连接中断"
            raise ProviderError(Unavailable(f"{self._where()}{what}，稍后自动重试 ({type(e.error).__name__})"),
                                created=e.sent) from e
        if resp.status_code != 200:
            raise ProviderError(self._error(resp.status_code, resp.code, resp.message, job.shot),
                                created=resp.status_code >= 500)
        task_id = (resp.output or {}).get("task_id")
        if not task_id:
            raise ProviderError(Permanent(f"{self._where()}返回的任务没有 task_id"), created=True)
        return str(task_id)

    def status(self, task_id: str) -> TaskStatus:
        from dashscope.api_entities.dashscope_response import VideoSynthesisResponse
        from dashscope.client.base_api import BaseAsyncApi

        try:
            # VideoSynthesis.fetch drops base_address; the tasks API is the same for every service.
            raw = BaseAsyncApi.fetch(task_id, api_key=self.api_key, base_address=self.base_url)
        except requests.RequestException as e:
            raise ProviderError(Unavailable(f"{self._where()}无法连接，稍后自动重试 ({type(e).__name__})")) from e
        resp = VideoSynthesisResponse.from_api_response(raw)
        if resp.status_code != 200:
            raise ProviderError(self._error(resp.status_code, resp.code, resp.message, None))
        out = resp.output or {}
        state = str(out.get("task_status") or "")
        if state == "SUCCEEDED":
            usage = resp.usage or {}
            seconds = usage.get("video_duration") if isinstance(usage, dict) else getattr(usage, "video_duration", None)
            return TaskStatus(TaskState.done, video_url=out.get("video_url") or None,
                              seconds=float(seconds) if seconds else None)
        if state in ("FAILED", "CANCELED"):
            code, message = str(out.get("code") or state), str(out.get("message") or state)
            if any(m in code for m in _MODERATION):
                return TaskStatus(TaskState.failed, refused=f"{code}: {message[:200]}")
            return TaskStatus(TaskState.failed, error=Permanent(f"{self._where()}生成失败：{message[:200]} ({code}, task {task_id})"))
        if state == "UNKNOWN":  # expired (kept 24 h) or never existed
            return TaskStatus(TaskState.failed, error=Permanent(
                f"{self._where()}找不到任务 {task_id}（任务只保留 24 小时）：请在「操作」列填写「重做第N段」重新生成"))
        return TaskStatus(TaskState.waiting)

    def fetch(self, task_id: str, status: TaskStatus, video: Path, last_frame: Path) -> bool:
        return fetch_files(status, video, last_frame, what=self._where())

    def _error(self, status: int, code: str | None, message: str | None, shot: int | None) -> SheetReelError:
        code, message = str(code or ""), " ".join(str(message or "").split())[:200]
        if shot is not None and any(m in code for m in _MODERATION):
            return moderation(shot, self._where(), f"{code}: {message}")
        if status == 429 or code.startswith("Throttling"):
            return RateLimited(f"{self._where()}请求过于频繁，稍后自动重试 ({code})")
        if status in (401, 403) or code.startswith(("InvalidApiKey", "AccessDenied")):
            return AuthFailed(f"{self._where()}鉴权失败：请检查 DASHSCOPE_API_KEY 与模型开通情况 ({code})")
        if code == "Arrearage":
            return AuthFailed(f"{self._where()}账户欠费，请充值后重试 ({code})")
        if status >= 500 or status == 408:
            return Unavailable(f"{self._where()}服务端出错（HTTP {status}），稍后自动重试")
        if status == 400:
            return BadInput(f"{self._where()}拒绝了这一段的输入：{message} ({code})")
        return Permanent(f"{self._where()}拒绝了请求（HTTP {status}）：{message} ({code})")

    def _where(self) -> str:
        return f"通义万相（模型 {self.model}）"

