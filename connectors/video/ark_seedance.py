"""Volcengine Ark Seedance image-to-video through the Ark SDK (`content_generation.tasks`).

The shot's first frame goes as the `first_frame` image (inline, as a data URL), an optional end
frame as `last_frame`, and `return_last_frame=true` makes Ark hand back the clip's last frame at
full quality: the next shot chains from that, not from a frame decoded out of the H.264.

The Ark client retries POSTs on timeouts and 5xx by itself, so submits go through a client with
`max_retries=0` (a second POST would start, and bill, a second video); reads use one that retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from connectors import deadline
from connectors.video.remote import Job, ProviderError, TaskState, TaskStatus, data_url, fetch_files, moderation
from storage.errors import AuthFailed, BadInput, Permanent, RateLimited, SheetReelError, Transient, Unavailable

_MODERATION = ("Sensitive", "RiskDetection")


class ArkSeedance:
    name = "seedance"
    supports_end_frame = True
    can_find = False  # its tasks carry no key of ours: matching prompts could adopt another shot's

    def __init__(self, api_key: str, model: str = "doubao-seedance-1-0-pro-250528", *,
                 base_url: str = "https://ark.cn-beijing.volces.com/api/v3", resolution: str = "720p",
                 durations: Sequence[int] = (5, 10), timeout: float = 60.0):
        from volcenginesdkarkruntime import Ark

        self.api_key, self.model, self.base_url = api_key, model, base_url.rstrip("/")
        self.resolution, self.durations = resolution, tuple(durations)
        self._submitter = Ark(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=timeout,
                              http_client=deadline.client(timeout))
        self._reader = Ark(base_url=self.base_url, api_key=api_key, max_retries=2, timeout=timeout,
                           http_client=deadline.client(timeout))

    def submit(self, job: Job) -> str:
        content: list[dict[str, Any]] = [
            {"type": "text", "text": job.prompt},
            {"type": "image_url", "image_url": {"url": data_url(job.image)}, "role": "first_frame"},
        ]
        if job.end_image is not None:
            content.append({"type": "image_url", "image_url": {"url": data_url(job.end_image)}, "role": "last_frame"})
        try:
            task = self._submitter.content_generation.tasks.create(
                model=self.model, content=content, return_last_frame=True, duration=job.seconds,
                resolution=self.resolution, ratio="adaptive", seed=job.seed % 2**31, watermark=False)
        except Exception as e:
            error, created = self._error(e, job.shot)
            raise ProviderError(error, created=created) from e
        if not getattr(task, "id", None):
            raise ProviderError(Permanent(f"{self._where()}返回的任务没有 id"), created=True)
        return str(task.id)

    def status(self, task_id: str) -> TaskStatus:
        try:
            task = self._reader.content_generation.tasks.get(task_id=task_id)
        except Exception as e:
            raise ProviderError(self._error(e, None)[0]) from e
        state = str(task.status or "")
        if state == "succeeded":
            content = task.content
            return TaskStatus(TaskState.done, video_url=getattr(content, "video_url", None),
                              last_frame_url=getattr(content, "last_frame_url", None),
                              seconds=float(task.duration) if task.duration else None)
        if state in ("failed", "cancelled", "expired"):
            code = str(getattr(task.error, "code", None) or state)
            message = " ".join(str(getattr(task.error, "message", None) or state).split())[:200]
            if any(m in code for m in _MODERATION):
                return TaskStatus(TaskState.failed, refused=f"{code}: {message}")
            return TaskStatus(TaskState.failed, error=Permanent(f"{self._where()}生成失败：{message} ({code}, task {task_id})"))
        return TaskStatus(TaskState.waiting)

    def fetch(self, task_id: str, status: TaskStatus, video: Path, last_frame: Path) -> bool:
        return fetch_files(status, video, last_frame, what=self._where())

    def _error(self, err: Exception, shot: int | None) -> tuple[SheetReelError, bool]:
        """Our error for an SDK exception, and whether a submit may have created a task anyway."""
        from volcenginesdkarkruntime._exceptions import (
            ArkAPIConnectionError,
            ArkAPIResponseValidationError,
            ArkAPIStatusError,
            ArkAPITimeoutError,
        )

        where = self._where()
        if isinstance(err, ArkAPITimeoutError):
            return Unavailable(f"{where}响应超时，稍后自动重试 (timeout)"), True
        if isinstance(err, ArkAPIConnectionError):
            refused = isinstance(err.__cause__, httpx.ConnectError)
            return Unavailable(f"{where}无法连接，稍后自动重试 (connection error)"), not refused
        if isinstance(err, ArkAPIStatusError):
            status, code = err.status_code, str(getattr(err, "code", None) or "")
            message = " ".join(str(getattr(err, "message", "") or "").split())[:200].replace(self.api_key, "***")
            if shot is not None and any(m in code for m in _MODERATION):
                return moderation(shot, where, f"{code}: {message}"), False
            if status == 429:
                return RateLimited(f"{where}请求过于频繁或超出配额，稍后自动重试 ({code})"), False
            if status in (401, 403):
                return AuthFailed(f"{where}鉴权失败或账户欠费：请检查 ARK_API_KEY 与模型开通情况 ({code})"), False
            if status >= 500 or status == 408:
                return Unavailable(f"{where}服务端出错（HTTP {status}），稍后自动重试"), True
            if status == 404:
                return Permanent(f"{where}不存在或未开通：请检查 SEEDANCE_MODEL ({code})"), False
            return BadInput(f"{where}拒绝了这一段的输入：{message} ({code})"), False
        if isinstance(err, ArkAPIResponseValidationError):
            return Transient(f"{where}返回了无法解析的内容，稍后自动重试"), True
        return Transient(f"{where}调用失败：{type(err).__name__}"), True

    def _where(self) -> str:
        return f"火山方舟 Seedance（模型 {self.model}）"

