"""A local asynchronous image-to-video API for tests: submit, poll, download -- real MP4s.

It speaks the wire protocol HttpVideoGenerator expects (see connectors/video/http_api.py), so
the tests exercise the real connector: request building, retries, error translation and the
download. Each job's video is made by ffmpeg's lavfi test source. Failures are scripted per
route: queue replies with `script("submit" | "poll" | "download", ...)`; once a queue is empty
the server behaves normally. Loopback only, port 0; use it as a context manager.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from loopback import LoopbackServer, Scripted, lower_headers, read_json, send


def error_reply(status: int, message: str = "fake error", retry_after: str | None = None) -> Scripted:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Scripted(status, {"error": {"message": message, "code": status}}, headers)


@dataclass
class Recorded:
    method: str
    path: str
    body: dict
    headers: dict[str, str]


@dataclass
class Job:
    id: str
    body: dict
    polls_left: int
    video: bytes


class FakeVideoAPI(LoopbackServer):
    def __init__(
        self,
        api_key: str = "vk-fake-test-key",
        polls_before_done: int = 1,
        video_size: tuple[int, int] = (256, 144),
        video_fps: int = 25,
        video_seconds: float | None = None,
        job_error: str | None = None,
        relative_video_url: bool = False,
    ):
        self.api_key = api_key
        self.polls_before_done = polls_before_done
        self.video_size = video_size
        self.video_fps = video_fps
        self.video_seconds = video_seconds  # None: as long as the request asked for
        self.job_error = job_error
        self.relative_video_url = relative_video_url
        self.requests: list[Recorded] = []
        self.jobs: dict[str, Job] = {}
        self._by_key: dict[str, str] = {}
        self._scripts: dict[str, deque[Scripted]] = {"submit": deque(), "poll": deque(), "download": deque()}
        self._lock = threading.Lock()
        self._listen(_Handler)

    @property
    def url(self) -> str:
        return self.origin

    def script(self, route: str, *replies: Scripted) -> None:
        with self._lock:
            self._scripts[route].extend(replies)

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # -- called by the handler ---------------------------------------------------------------

    def handle(self, method: str, path: str, body: dict, headers: dict[str, str]) -> tuple[Scripted, bytes | None]:
        with self._lock:
            self.requests.append(Recorded(method, path, body, headers))
        route = self._route(method, path)
        if route is None:
            return error_reply(404, f"fake: no route {method} {path}"), None
        if route != "download" and headers.get("authorization") != f"Bearer {self.api_key}":
            # Real vendors echo (part of) the key back; the connector must not pass it on.
            given = headers.get("authorization", "").removeprefix("Bearer ")
            return error_reply(401, f"Incorrect API key provided: {given}"), None
        with self._lock:
            scripted = self._scripts[route].popleft() if self._scripts[route] else None
        if scripted is not None:
            return scripted, None
        if route == "submit":
            return self._submit(body, headers.get("idempotency-key", "")), None
        job = self.jobs.get(path.rsplit("/", 1)[-1].removesuffix(".mp4"))
        if job is None:
            return error_reply(404, "no such job"), None
        return (Scripted(), job.video) if route == "download" else (self._poll(job), None)

    @staticmethod
    def _route(method: str, path: str) -> str | None:
        if method == "POST" and path == "/v1/videos":
            return "submit"
        if method == "GET" and path.startswith("/v1/videos/"):
            return "poll"
        if method == "GET" and path.startswith("/files/"):
            return "download"
        return None

    def _submit(self, body: dict, idempotency_key: str) -> Scripted:
        with self._lock:
            known = self._by_key.get(idempotency_key) if idempotency_key else None
        if known:
            return Scripted(body={"id": known, "status": "queued"})
        seconds = self.video_seconds if self.video_seconds is not None else float(body.get("duration", 1))
        job = Job(f"job_{len(self.jobs) + 1}", body, self.polls_before_done, lavfi_video(seconds, self.video_size, self.video_fps))
        with self._lock:
            self.jobs[job.id] = job
            if idempotency_key:
                self._by_key[idempotency_key] = job.id
        return Scripted(body={"id": job.id, "status": "queued"})

    def _poll(self, job: Job) -> Scripted:
        with self._lock:
            if job.polls_left > 0:
                job.polls_left -= 1
                return Scripted(body={"id": job.id, "status": "running"})
        if self.job_error is not None:
            return Scripted(body={"id": job.id, "status": "failed", "error": self.job_error})
        link = f"/files/{job.id}.mp4"
        return Scripted(body={"id": job.id, "status": "succeeded",
                              "video_url": link if self.relative_video_url else self.url + link})


def lavfi_video(seconds: float, size: tuple[int, int], fps: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="fake-video-") as tmp:
        out = Path(tmp) / "clip.mp4"
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi",
                "-i", f"testsrc2=s={size[0]}x{size[1]}:r={fps}:d={seconds}",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)]
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        return out.read_bytes()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self._reply(*self._fake().handle("POST", self.path, read_json(self), lower_headers(self)))

    def do_GET(self) -> None:
        self._reply(*self._fake().handle("GET", self.path, {}, lower_headers(self)))

    def _fake(self) -> FakeVideoAPI:
        return self.server.fake  # type: ignore[attr-defined]

    def _reply(self, scripted: Scripted, raw: bytes | None) -> None:
        send(self, scripted, raw, "video/mp4" if raw is not None else "")

    def log_message(self, *args) -> None:
        pass
