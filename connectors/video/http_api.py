"""A remote asynchronous image-to-video API: submit a job, poll it, download the clip, conform it.

The wire protocol (JSON over HTTPS, bearer auth):

    POST {base}/v1/videos         {model, prompt, image (data URL), duration, width, height, seed}
                                  -> {"id": ..., "status": "queued"}
    GET  {base}/v1/videos/{id}    -> {"status": "queued" | "running" | "succeeded" | "failed",
                                      "video_url": ... (on success), "error": ... (on failure)}

HTTP errors become our tree here, once:

    429                       -> retried after Retry-After; then RateLimited
    5xx, timeouts, no connection -> retried with backoff; then Transient
    401, 403                  -> AuthFailed
    400, 422                  -> BadInput (with the server's message)
    other 4xx, job failed     -> Permanent (with the server's message)
    job still running at `timeout` -> Transient

Retries sleep through the injected `sleep` and time runs on the injected `clock`, so tests
drive time instead of waiting. The API key is sent only to the API's own origin and is
scrubbed from every message we pass on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from connectors import ffmpeg
from connectors.deadline import client as deadline_client
from connectors.openai_errors import retry_after
from connectors.video.protocol import SegmentRequest, SharedGenerator
from storage.errors import (
    AuthFailed,
    BadInput,
    MediaError,
    Permanent,
    RateLimited,
    SheetReelError,
    Transient,
    Unavailable,
)
from storage.retry import RetryPolicy

log = logging.getLogger(__name__)

IMAGE_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
MAX_VIDEO_BYTES = 500 * 1024 * 1024
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
_DETAIL_CHARS = 300
_CHUNK = 1 << 20


class HttpVideoGenerator(SharedGenerator):
    name = "http"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        poll_interval: float = 5.0,
        timeout: float = 600.0,
        request_timeout: float = 30.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = MAX_VIDEO_BYTES,
    ):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.retry = RetryPolicy(attempts=max_retries + 1, base=BACKOFF_BASE, cap=BACKOFF_CAP)
        self.sleep = sleep
        self.clock = clock
        self.max_bytes = max_bytes

    def generate(self, req: SegmentRequest) -> None:
        image_url = _data_url(req.image)
        deadline = self.clock() + self.timeout
        req.out.parent.mkdir(parents=True, exist_ok=True)
        # Each exchange (the video download too) ends within the job's own deadline.
        with deadline_client(self.timeout, timeout=self.request_timeout, follow_redirects=True) as client:
            job_id = self._submit(client, req, image_url)
            video_url = self._wait(client, job_id, deadline)
            with tempfile.TemporaryDirectory(dir=req.out.parent, prefix=f".{req.out.stem}.") as tmp:
                download = Path(tmp) / "remote.mp4"
                self._download(client, video_url, download)
                _conform(download, req)

    # ---- the three calls -------------------------------------------------------------------

    def _submit(self, client: httpx.Client, req: SegmentRequest, image_url: str) -> str:
        body = {
            "model": self.model, "prompt": req.shot.prompt, "image": image_url,
            "duration": req.shot.duration, "width": req.width, "height": req.height, "seed": req.seed,
        }
        # A retried POST whose first attempt did reach the server must not start (and bill) a second job.
        key = hashlib.sha256(f"{req.out}|{req.seed}|{req.shot.prompt}|{image_url}".encode()).hexdigest()[:32]
        resp = self._call(client, "POST", f"{self.base_url}/v1/videos", json=body, headers={"Idempotency-Key": key})
        job_id = str(self._json(resp).get("id") or "")
        if not job_id:
            raise Transient(f"{self._where()}返回的任务没有 id，稍后自动重试 (no job id in response)")
        log.info("video job %s submitted for shot %d", job_id, req.shot.index + 1)
        return job_id

    def _wait(self, client: httpx.Client, job_id: str, deadline: float) -> str:
        while True:
            job = self._json(self._call(client, "GET", f"{self.base_url}/v1/videos/{quote(job_id, safe='')}"))
            status = str(job.get("status") or "")
            if status == "succeeded":
                if not job.get("video_url"):
                    raise Permanent(f"{self._where()}任务 {job_id} 成功但没有视频地址 (no video_url)")
                return str(httpx.URL(self.base_url + "/").join(str(job["video_url"])))
            if status in ("failed", "cancelled", "canceled"):
                reason = self._scrub(str(job.get("error") or status))
                raise Permanent(f"{self._where()}生成失败：{reason} (video job {job_id} {status})")
            if self.clock() + self.poll_interval > deadline:
                raise Transient(f"{self._where()}任务 {job_id} 超过 {self.timeout:g} 秒仍未完成，稍后自动重试 (timeout)")
            self.sleep(self.poll_interval)

    def _download(self, client: httpx.Client, url: str, dest: Path) -> None:
        resp = self._call(client, "GET", url, stream=True)
        try:
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_bytes:
                raise Permanent(self._too_big())
            total = 0
            with open(dest, "wb") as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise Permanent(self._too_big())
                    f.write(chunk)
        except httpx.TransportError as e:
            raise Transient(f"{self._where()}视频下载中断，稍后自动重试 ({type(e).__name__})") from e
        finally:
            resp.close()

    # ---- one request, with bounded retries ---------------------------------------------------

    def _call(self, client: httpx.Client, method: str, url: str, *, stream: bool = False, **kw: Any) -> httpx.Response:
        headers = self._headers(url, kw.pop("headers", {}))
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                request = client.build_request(method, url, headers=headers, **kw)
                resp = client.send(request, stream=stream)
            except httpx.TimeoutException as e:
                if last:
                    raise Unavailable(f"{self._where()}响应超时，稍后自动重试 (timeout)") from e
                self.sleep(self.retry.delay(attempt + 1))
                continue
            except httpx.TransportError as e:
                if last:
                    raise Unavailable(f"{self._where()}无法连接，稍后自动重试 ({type(e).__name__})") from e
                self.sleep(self.retry.delay(attempt + 1))
                continue
            if resp.is_success:
                return resp
            wait = self._failure(resp, last)  # raises when this status is final
            self.sleep(self.retry.delay(attempt + 1, wait))
        raise AssertionError("unreachable")  # the last attempt always returns or raises

    def _failure(self, resp: httpx.Response, last: bool) -> float | None:
        """Raise for a final error; for a retryable one, return the server's wait (or None)."""
        status = resp.status_code
        if not resp.is_stream_consumed:
            resp.read()
        resp.close()
        if status == 429:
            wait = retry_after(resp.headers)
            if last:
                raise RateLimited(f"{self._where()}请求过于频繁，稍后自动重试 (rate limited)", wait)
            return wait
        if status >= 500 or status == 408:
            if last:
                raise Unavailable(f"{self._where()}服务端出错（HTTP {status}），稍后自动重试")
            return None
        raise self._final_error(status, self._message(resp))

    def _final_error(self, status: int, detail: str) -> SheetReelError:
        if status in (401, 403):
            return AuthFailed(f"{self._where()}鉴权失败：请检查 VIDEO_API_KEY 与权限 (HTTP {status})")
        if status in (400, 422):
            return BadInput(f"{self._where()}拒绝了这一段的输入：{detail} (HTTP {status})")
        return Permanent(f"{self._where()}拒绝了请求（HTTP {status}）：{detail}")

    # ---- small helpers -----------------------------------------------------------------------

    def _headers(self, url: str, extra: dict[str, str]) -> dict[str, str]:
        # Signed download links often live on a CDN: our key goes to our API's origin only.
        same_origin = httpx.URL(url).netloc == httpx.URL(self.base_url).netloc
        auth = {"Authorization": f"Bearer {self.api_key}"} if same_origin else {}
        return {**auth, **extra}

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError as e:
            raise Transient(f"{self._where()}返回了无法解析的内容，稍后自动重试 (bad response body)") from e
        if not isinstance(data, dict):
            raise Transient(f"{self._where()}返回了无法解析的内容，稍后自动重试 (bad response body)")
        return data

    def _message(self, resp: httpx.Response) -> str:
        try:
            data = resp.json()
            err = data.get("error", data) if isinstance(data, dict) else data
            text = err.get("message", err) if isinstance(err, dict) else err
        except ValueError:
            text = resp.text
        return self._scrub(" ".join(str(text).split()))[:_DETAIL_CHARS]

    def _scrub(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def _where(self) -> str:
        return f"视频生成服务（模型 {self.model}，地址 {self.base_url}）"

    def _too_big(self) -> str:
        return f"{self._where()}返回的视频超过 {self.max_bytes // (1024 * 1024)} MB 上限 (video too large)"


def _data_url(image: Path) -> str:
    """The start image inline, after proving it decodes (a broken frame must not cost a remote job)."""
    ffmpeg.check_image(image)
    mime = IMAGE_MIME.get(image.suffix.lower(), "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode('ascii')}"


def _conform(download: Path, req: SegmentRequest) -> None:
    """Natural speed at the output rate; a clip shorter than the shot holds its last frame."""
    if os.path.getsize(download) == 0:
        raise MediaError("the remote video is empty")
    graph = f"setpts=PTS-STARTPTS,fps={req.fps},{ffmpeg.conform_filter(req.width, req.height)},tpad=stop=-1:stop_mode=clone"
    ffmpeg.run_to(
        req.out,
        lambda tmp: [
            ffmpeg.FFMPEG, "-i", str(download), "-map", "0:v:0", "-vf", graph,
            "-frames:v", str(req.frame_count), *ffmpeg.encode_args(req.fps), str(tmp),
        ],
        what=f"conforming the remote video for shot {req.shot.index + 1}",
    )
