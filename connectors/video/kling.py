"""Kling image-to-video over its HTTP API (there is no official Python SDK): a JWT (HS256, the
access key as issuer, signed with the secret key, valid 30 minutes) as the bearer token;
POST /v1/videos/image2video with the first frame as raw base64 `image` and an optional
`image_tail`; GET /v1/videos/image2video/{id} until `succeed`.

Every submit carries our key as `external_task_id`, and Kling can be asked for a task by it: a
submit whose answer was lost is looked up, and only submitted again when Kling has no such task.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from connectors.deadline import client as deadline_client
from connectors.video.remote import Job, ProviderError, TaskState, TaskStatus, fetch_files, moderation
from storage.errors import AuthFailed, BadInput, Permanent, RateLimited, SheetReelError, Transient, Unavailable

_TOKEN_SECONDS = 1800
_PATH = "/v1/videos/image2video"


class Kling:
    name = "kling"
    supports_end_frame = True
    can_find = True

    def __init__(self, access_key: str, secret_key: str, model: str = "kling-v2-1", *,
                 base_url: str = "https://api-beijing.klingai.com", mode: str = "std",
                 durations: Sequence[int] = (5, 10), timeout: float = 60.0,
                 clock: Callable[[], float] = time.time):
        self.access_key, self.secret_key, self.model = access_key, secret_key, model
        self.base_url, self.mode, self.durations = base_url.rstrip("/"), mode, tuple(durations)
        self.timeout, self.clock = timeout, clock

    def submit(self, job: Job) -> str:
        body: dict[str, Any] = {
            "model_name": self.model, "prompt": job.prompt, "image": _b64(job.image), "mode": self.mode,
            "duration": str(job.seconds), "external_task_id": job.key,
        }
        if job.end_image is not None:
            body["image_tail"] = _b64(job.end_image)
        data = self._call("POST", _PATH, json=body, shot=job.shot)
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not task_id:
            raise ProviderError(Permanent(f"{self._where()}返回的任务没有 task_id"), created=True)
        return str(task_id)

    def status(self, task_id: str) -> TaskStatus:
        data = self._call("GET", f"{_PATH}/{quote(task_id, safe='')}")
        state = str(data.get("task_status") or "")
        if state == "succeed":
            videos = (data.get("task_result") or {}).get("videos") or [{}]
            seconds = _number(videos[0].get("duration"))
            return TaskStatus(TaskState.done, video_url=videos[0].get("url") or None, seconds=seconds)
        if state == "failed":
            message = " ".join(str(data.get("task_status_msg") or "failed").split())[:200]
            if "risk" in message.lower() or "审核" in message or "safety" in message.lower():
                return TaskStatus(TaskState.failed, refused=message)
            return TaskStatus(TaskState.failed, error=Permanent(f"{self._where()}生成失败：{message} (task {task_id})"))
        return TaskStatus(TaskState.waiting)

    def fetch(self, task_id: str, status: TaskStatus, video: Path, last_frame: Path) -> bool:
        return fetch_files(status, video, last_frame, what=self._where())

    def find(self, job: Job) -> str | None:
        try:
            data = self._call("GET", f"{_PATH}/{quote(job.key, safe='')}")
        except ProviderError as e:
            if isinstance(e.error, NotFoundError):
                return None
            raise
        return str(data.get("task_id") or "") or None

    # ---- one request ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, shot: int | None = None, **kw: Any) -> dict:
        submit = method == "POST"
        try:
            with deadline_client(self.timeout, timeout=self.timeout) as client:
                resp = client.request(method, self.base_url + path, headers={"Authorization": f"Bearer {self._token()}"}, **kw)
        except httpx.ConnectError as e:
            raise ProviderError(Unavailable(f"{self._where()}无法连接，稍后自动重试 ({type(e).__name__})")) from e
        except httpx.HTTPError as e:
            what = "响应超时" if isinstance(e, httpx.TimeoutException) else "连接中断"
            raise ProviderError(Unavailable(f"{self._where()}{what}，稍后自动重试 ({type(e).__name__})"), created=submit) from e
        try:
            answer = resp.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        code = answer.get("code")
        if resp.status_code == 200 and code == 0:
            data = answer.get("data")
            return data if isinstance(data, dict) else {}
        error = self._error(resp.status_code, code, str(answer.get("message") or resp.reason_phrase), shot)
        raise ProviderError(error, created=submit and isinstance(error, Unavailable) and not isinstance(error, RateLimited))

    def _error(self, status: int, code: Any, message: str, shot: int | None) -> SheetReelError:
        message = " ".join(message.split())[:200]
        where, tag = self._where(), f"(HTTP {status}, code {code})"
        if code == 1301 or code == 1300:
            if shot is not None:
                return moderation(shot, where, f"{code}: {message}")
            return BadInput(f"{where}的内容审核拒绝了请求：{message} {tag}")
        if code in (1302, 1303):
            return RateLimited(f"{where}请求过于频繁或并发任务已满，稍后自动重试 {tag}")
        if code in (1000, 1001, 1002, 1003, 1004) or status == 401:
            return AuthFailed(f"{where}鉴权失败：请检查 KLING_ACCESS_KEY / KLING_SECRET_KEY {tag}")
        if code in (1100, 1101, 1102, 1103, 1304) or status == 403:
            return AuthFailed(f"{where}账户不可用（欠费、资源包用尽或无权限）：{message} {tag}")
        if code == 1203 or status == 404:
            return NotFoundError(f"{where}找不到：{message} {tag}")
        if status >= 500 or (isinstance(code, int) and code >= 5000):
            return Unavailable(f"{where}服务端出错，稍后自动重试 {tag}")
        if status == 429:
            return RateLimited(f"{where}请求过于频繁，稍后自动重试 {tag}")
        if status == 400:
            return BadInput(f"{where}拒绝了这一段的输入：{message} {tag}")
        return Transient(f"{where}返回了意外的答复：{message} {tag}")

    def _token(self) -> str:
        now = int(self.clock())
        return jwt.encode({"iss": self.access_key, "exp": now + _TOKEN_SECONDS, "nbf": now - 5}, self.secret_key,
                          algorithm="HS256", headers={"typ": "JWT"})

    def _where(self) -> str:
        return f"可灵（模型 {self.model}）"


class NotFoundError(Permanent):
    pass


def _b64(image: Path) -> str:
    return base64.b64encode(image.read_bytes()).decode("ascii")


def _number(raw: object) -> float | None:
    try:
        return float(str(raw))
    except ValueError:
        return None
