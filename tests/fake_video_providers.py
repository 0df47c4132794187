"""Local video providers for tests, each speaking its vendor's documented wire format:

    OpenAI videos   POST /v1/videos (multipart), GET /v1/videos/{id}, GET /v1/videos/{id}/content
    DashScope Wan   POST /api/v1/services/aigc/{video-generation|image2video}/video-synthesis
                    (X-DashScope-Async), GET /api/v1/tasks/{id}
    Ark Seedance    POST /api/v3/contents/generations/tasks, GET .../tasks/{id}
    Kling           POST /v1/videos/image2video (JWT HS256 bearer), GET .../image2video/{id or
                    external_task_id}

One server serves all four (tasks are the provider's own; ids differ per provider). Each task
finishes after `polls_before_done` reads with a real MP4 made by ffmpeg's lavfi test source, of
the requested seconds. Tests script failures per route (`script("submit", ...)`), make a submit
create its task and then lose the answer (`lose_next_submit`), and read what was asked
(`submits`). Loopback only, port 0; use it as a context manager.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt

from loopback import LoopbackServer, Scripted, lower_headers, send

OPENAI_KEY = "sk-fake-openai-video"
DASHSCOPE_KEY = "sk-fake-dashscope"
ARK_KEY = "ark-fake-key"
KLING_ACCESS, KLING_SECRET = "kling-ak", "kling-sk-fake-secret-of-32-bytes-or-more"


@dataclass
class Task:
    provider: str
    id: str
    params: dict  # what the submit asked for, normalised: prompt, seconds, image (bytes), end_image, key
    polls_left: int
    seconds: int
    refused: bool = False
    fetched: bool = False


@dataclass
class Submit:
    provider: str
    path: str
    headers: dict[str, str]
    params: dict
    unfinished: list[str]  # prompts of this provider's earlier tasks not yet downloaded


@dataclass
class _State:
    tasks: dict[str, Task] = field(default_factory=dict)
    submits: list[Submit] = field(default_factory=list)
    scripts: dict[str, deque] = field(default_factory=dict)


class FakeVideoProviders(LoopbackServer):
    def __init__(self, polls_before_done: int = 1, video_size: tuple[int, int] = (192, 336), fps: int = 8,
                 refuse_prompts: tuple[str, ...] = ("blocked",)):
        self.polls_before_done = polls_before_done
        self.video_size, self.fps = video_size, fps
        self.refuse_prompts = refuse_prompts  # a prompt containing one fails moderation at generation
        self._state = _State()
        self._lose = 0
        self._lock = threading.Lock()
        self._videos: dict[int, bytes] = {}
        self._listen(_Handler)

    # ---- for tests -------------------------------------------------------------------------

    def script(self, route: str, *replies: Scripted) -> None:
        """Queue replies for `submit`, `poll` or `download` (any provider); then behave normally."""
        with self._lock:
            self._state.scripts.setdefault(route, deque()).extend(replies)

    def lose_next_submit(self, count: int = 1) -> None:
        """The next submits create their task but answer 500 (as if the answer were lost)."""
        with self._lock:
            self._lose += count

    def submits(self, provider: str | None = None) -> list[Submit]:
        with self._lock:
            return [s for s in self._state.submits if provider is None or s.provider == provider]

    def tasks(self, provider: str | None = None) -> list[Task]:
        with self._lock:
            return [t for t in self._state.tasks.values() if provider is None or t.provider == provider]

    # ---- shared by the handlers --------------------------------------------------------------

    def scripted(self, route: str) -> Scripted | None:
        with self._lock:
            queue = self._state.scripts.get(route)
            return queue.popleft() if queue else None

    def create(self, provider: str, path: str, headers: dict, params: dict) -> tuple[Task, bool]:
        """A new task (or, for a reused key, None); True when its answer is to be lost."""
        with self._lock:
            unfinished = [t.params.get("prompt", "") for t in self._state.tasks.values()
                          if t.provider == provider and not t.fetched]
            self._state.submits.append(Submit(provider, path, headers, params, unfinished))
            task = Task(provider, f"{provider[:2]}-task-{len(self._state.tasks) + 1}", params, self.polls_before_done,
                        int(params.get("seconds") or 5),
                        refused=any(w in str(params.get("prompt", "")) for w in self.refuse_prompts))
            self._state.tasks[task.id] = task
            lost = self._lose > 0
            self._lose -= 1 if lost else 0
        return task, lost

    def find(self, provider: str, ident: str) -> Task | None:
        with self._lock:
            task = self._state.tasks.get(ident)
            if task is None:
                task = next((t for t in self._state.tasks.values()
                             if t.provider == provider and t.params.get("key") == ident), None)
            return task if task is not None and task.provider == provider else None

    def advance(self, task: Task) -> str:
        """One read of the task: "waiting", "refused" or "done"."""
        with self._lock:
            if task.polls_left > 0:
                task.polls_left -= 1
                return "waiting"
        return "refused" if task.refused else "done"

    def video_of(self, task: Task) -> bytes:
        with self._lock:
            task.fetched = True
        return self.video(task.seconds)

    def video(self, seconds: int) -> bytes:
        with self._lock:
            cached = self._videos.get(seconds)
        if cached is None:
            cached = lavfi_video(seconds, self.video_size, self.fps)
            with self._lock:
                self._videos[seconds] = cached
        return cached

    def last_frame(self) -> bytes:
        return lavfi_frame(self.video_size)


def lavfi_video(seconds: float, size: tuple[int, int], fps: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="fake-provider-") as tmp:
        out = Path(tmp) / "clip.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc2=s={size[0]}x{size[1]}:r={fps}:d={seconds}", "-pix_fmt", "yuv420p", str(out)],
                       check=True)
        return out.read_bytes()


def lavfi_frame(size: tuple[int, int]) -> bytes:
    """A flat magenta frame: a test can tell the provider's last frame from a decoded one."""
    with tempfile.TemporaryDirectory(prefix="fake-provider-") as tmp:
        out = Path(tmp) / "last.png"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        f"color=c=0xff00ff:s={size[0]}x{size[1]}", "-frames:v", "1", str(out)], check=True)
        return out.read_bytes()


def _data_url_bytes(value: str) -> bytes:
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    return base64.b64decode(value)


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-video-providers/1"

    def log_message(self, *args) -> None:  # quiet
        pass

    @property
    def fake(self) -> FakeVideoProviders:
        return self.server.fake  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def do_POST(self) -> None:
        path, headers, raw = urlsplit(self.path).path, lower_headers(self), self._body()
        if path == "/v1/videos":
            return self._openai_submit(headers, raw)
        if path.startswith("/api/v1/services/aigc/") and path.endswith("/video-synthesis"):
            return self._dashscope_submit(path, headers, raw)
        if path == "/api/v3/contents/generations/tasks":
            return self._ark_submit(headers, raw)
        if path == "/v1/videos/image2video":
            return self._kling_submit(headers, raw)
        send(self, Scripted(404, {"error": {"message": f"no route POST {path}"}}))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path, headers = parts.path, lower_headers(self)
        if path.startswith("/v1/videos/image2video/"):
            return self._kling_get(headers, path.rsplit("/", 1)[1])
        if path == "/v1/videos/image2video" and "external_task_id" in parse_qs(parts.query):
            return self._kling_get(headers, parse_qs(parts.query)["external_task_id"][0])
        if path.startswith("/v1/videos/") and path.endswith("/content"):
            return self._openai_content(headers, path.split("/")[3])
        if path.startswith("/v1/videos/"):
            return self._openai_get(headers, path.rsplit("/", 1)[1])
        if path.startswith("/api/v1/tasks/"):
            return self._dashscope_get(headers, path.rsplit("/", 1)[1])
        if path.startswith("/api/v3/contents/generations/tasks/"):
            return self._ark_get(headers, path.rsplit("/", 1)[1])
        if path.startswith("/files/"):
            return self._file(path)
        send(self, Scripted(404, {"error": {"message": f"no route GET {path}"}}))

    # ---- shared ------------------------------------------------------------------------------

    def _scripted(self, route: str) -> bool:
        reply = self.fake.scripted(route)
        if reply is None:
            return False
        if reply.status == 0:  # drop the connection without an answer
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        send(self, reply)
        return True

    def _file(self, path: str) -> None:
        if self._scripted("download"):
            return
        name = path.rsplit("/", 1)[1]
        if name.startswith("last-"):
            return send(self, Scripted(), raw=self.fake.last_frame(), content_type="image/png")
        task = self.fake.find(name.split(".")[0].split("_")[0], name.split(".")[0].split("_", 1)[1])
        if task is None:
            return send(self, Scripted(404, {"message": "expired"}))
        send(self, Scripted(), raw=self.fake.video_of(task), content_type="video/mp4")

    def _link(self, task: Task) -> str:
        return f"{self.server_origin}/files/{task.provider}_{task.id}.mp4"

    @property
    def server_origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # ---- OpenAI ------------------------------------------------------------------------------

    def _openai_auth(self, headers: dict) -> bool:
        if headers.get("authorization") == f"Bearer {OPENAI_KEY}":
            return True
        send(self, Scripted(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                            "code": "invalid_api_key"}}))
        return False

    def _openai_video(self, task: Task, status: str) -> dict:
        body = {"id": task.id, "object": "video", "model": task.params["model"], "status": status,
                "progress": 100 if status == "completed" else 0, "created_at": int(time.time()),
                "seconds": str(task.seconds), "size": task.params["size"], "prompt": task.params["prompt"]}
        if status == "failed":
            body["error"] = {"code": "moderation_blocked", "message": "Your request was blocked by our moderation system."}
        return body

    def _openai_submit(self, headers: dict, raw: bytes) -> None:
        if not self._openai_auth(headers) or self._scripted("submit"):
            return
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + headers.get("content-type", "").encode() + b"\r\n\r\n" + raw)
        form: dict = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            form[name] = part.get_payload(decode=True) if part.get_filename() else part.get_content().strip()
        if not isinstance(form.get("input_reference"), bytes):
            return send(self, Scripted(400, {"error": {"message": "input_reference must be a file", "code": "invalid_value"}}))
        params = {"model": form.get("model"), "prompt": form.get("prompt"), "seconds": form.get("seconds"),
                  "size": form.get("size"), "image": form["input_reference"]}
        task, lost = self.fake.create("openai", "/v1/videos", headers, params)
        if lost:
            return send(self, Scripted(500, {"error": {"message": "The server had an error", "type": "server_error"}}))
        send(self, Scripted(200, self._openai_video(task, "queued")))

    def _openai_get(self, headers: dict, ident: str) -> None:
        if not self._openai_auth(headers) or self._scripted("poll"):
            return
        task = self.fake.find("openai", ident)
        if task is None:
            return send(self, Scripted(404, {"error": {"message": "Video not found", "code": "not_found"}}))
        state = self.fake.advance(task)
        status = {"waiting": "in_progress", "refused": "failed", "done": "completed"}[state]
        send(self, Scripted(200, self._openai_video(task, status)))

    def _openai_content(self, headers: dict, ident: str) -> None:
        if not self._openai_auth(headers) or self._scripted("download"):
            return
        task = self.fake.find("openai", ident)
        if task is None:
            return send(self, Scripted(404, {"error": {"message": "Video not found"}}))
        send(self, Scripted(), raw=self.fake.video_of(task), content_type="video/mp4")

    # ---- DashScope ---------------------------------------------------------------------------

    def _dashscope_auth(self, headers: dict) -> bool:
        if headers.get("authorization") == f"Bearer {DASHSCOPE_KEY}":
            return True
        send(self, Scripted(401, {"request_id": "r", "code": "InvalidApiKey", "message": "Invalid API-key provided."}))
        return False

    def _dashscope_submit(self, path: str, headers: dict, raw: bytes) -> None:
        if not self._dashscope_auth(headers) or self._scripted("submit"):
            return
        if headers.get("x-dashscope-async") != "enable":
            return send(self, Scripted(400, {"request_id": "r", "code": "InvalidParameter",
                                             "message": "current user api does not support synchronous calls"}))
        body = json.loads(raw or b"{}")
        inp, par, model = body.get("input", {}), body.get("parameters", {}), str(body.get("model", ""))
        kf2v = "kf2v" in model
        if kf2v != path.endswith("/image2video/video-synthesis"):
            return send(self, Scripted(400, {"request_id": "r", "code": "InvalidParameter", "message": "wrong service for model"}))
        first = inp.get("first_frame_url") if kf2v else inp.get("img_url")
        if not first:
            return send(self, Scripted(400, {"request_id": "r", "code": "InvalidParameter", "message": "image is required"}))
        params = {"model": model, "prompt": inp.get("prompt", ""), "seconds": par.get("duration", 5),
                  "image": _data_url_bytes(first), "end_image": inp.get("last_frame_url"),
                  "resolution": par.get("resolution"), "seed": par.get("seed")}
        task, lost = self.fake.create("wan", path, headers, params)
        if lost:
            return send(self, Scripted(500, {"request_id": "r", "code": "InternalError", "message": "Internal server error"}))
        send(self, Scripted(200, {"request_id": "r", "output": {"task_id": task.id, "task_status": "PENDING"}}))

    def _dashscope_get(self, headers: dict, ident: str) -> None:
        if not self._dashscope_auth(headers) or self._scripted("poll"):
            return
        task = self.fake.find("wan", ident)
        if task is None:
            return send(self, Scripted(200, {"request_id": "r", "output": {"task_id": ident, "task_status": "UNKNOWN"}}))
        state = self.fake.advance(task)
        out: dict = {"task_id": task.id, "submit_time": "2026-12-02 10:00:00.000"}
        body: dict = {"request_id": "r", "output": out}
        if state == "waiting":
            out["task_status"] = "RUNNING"
        elif state == "refused":
            out.update(task_status="FAILED", code="DataInspectionFailed",
                       message="Output data may contain inappropriate content.")
        else:
            out.update(task_status="SUCCEEDED", video_url=self._link(task), orig_prompt=task.params["prompt"])
            body["usage"] = {"video_duration": task.seconds, "video_count": 1, "SR": 720}
        send(self, Scripted(200, body))

    # ---- Ark ---------------------------------------------------------------------------------

    def _ark_auth(self, headers: dict) -> bool:
        if headers.get("authorization") == f"Bearer {ARK_KEY}":
            return True
        send(self, Scripted(401, {"error": {"code": "AuthenticationError", "message": "the API key is invalid",
                                            "type": "Unauthorized"}}))
        return False

    def _ark_submit(self, headers: dict, raw: bytes) -> None:
        if not self._ark_auth(headers) or self._scripted("submit"):
            return
        body = json.loads(raw or b"{}")
        content = body.get("content") or []
        text = next((c.get("text", "") for c in content if c.get("type") == "text"), "")
        images = {c.get("role") or "first_frame": c["image_url"]["url"] for c in content if c.get("type") == "image_url"}
        if "first_frame" not in images:
            return send(self, Scripted(400, {"error": {"code": "MissingParameter", "message": "first frame is required"}}))
        params = {"model": body.get("model"), "prompt": text, "seconds": body.get("duration") or 5,
                  "image": _data_url_bytes(images["first_frame"]), "end_image": images.get("last_frame"),
                  "return_last_frame": body.get("return_last_frame"), "seed": body.get("seed"),
                  "resolution": body.get("resolution"), "ratio": body.get("ratio")}
        task, lost = self.fake.create("seedance", "/api/v3/contents/generations/tasks", headers, params)
        if lost:
            return send(self, Scripted(500, {"error": {"code": "InternalServiceError", "message": "internal error"}}))
        send(self, Scripted(200, {"id": task.id}))

    def _ark_get(self, headers: dict, ident: str) -> None:
        if not self._ark_auth(headers) or self._scripted("poll"):
            return
        task = self.fake.find("seedance", ident)
        if task is None:
            return send(self, Scripted(404, {"error": {"code": "ResourceNotFound", "message": "task not found"}}))
        state = self.fake.advance(task)
        body: dict = {"id": task.id, "model": task.params["model"], "created_at": int(time.time()),
                      "updated_at": int(time.time())}
        if state == "waiting":
            body["status"] = "running"
        elif state == "refused":
            body.update(status="failed", error={"code": "OutputVideoSensitiveContentDetected",
                                                "message": "The output video may contain sensitive information."})
        else:
            content = {"video_url": self._link(task)}
            if task.params.get("return_last_frame"):
                content["last_frame_url"] = f"{self.server_origin}/files/last-{task.id}.png"
            body.update(status="succeeded", content=content, duration=task.seconds, seed=task.params.get("seed") or 0,
                        usage={"completion_tokens": 108900, "total_tokens": 108900})
        send(self, Scripted(200, body))

    # ---- Kling -------------------------------------------------------------------------------

    def _kling_auth(self, headers: dict) -> bool:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, KLING_SECRET, algorithms=["HS256"], options={"require": ["exp", "nbf", "iss"]})
            if claims["iss"] == KLING_ACCESS:
                return True
        except jwt.PyJWTError:
            pass
        send(self, Scripted(401, {"code": 1002, "message": "Authorization is invalid", "request_id": "r"}))
        return False

    def _kling_task(self, task: Task, status: str) -> dict:
        data: dict = {"task_id": task.id, "task_status": status, "created_at": int(time.time() * 1000),
                      "updated_at": int(time.time() * 1000), "task_info": {"external_task_id": task.params.get("key")}}
        if status == "failed":
            data["task_status_msg"] = "Failure to pass the risk control system"
        if status == "succeed":
            data["task_result"] = {"videos": [{"id": f"v-{task.id}", "url": self._link(task), "duration": str(task.seconds)}]}
            data["final_unit_deduction"] = "1"
        return {"code": 0, "message": "SUCCEED", "request_id": "r", "data": data}

    def _kling_submit(self, headers: dict, raw: bytes) -> None:
        if not self._kling_auth(headers) or self._scripted("submit"):
            return
        body = json.loads(raw or b"{}")
        if not body.get("image") or str(body["image"]).startswith("data:"):
            return send(self, Scripted(400, {"code": 1201, "message": "image must be raw base64 or a URL", "request_id": "r"}))
        key = body.get("external_task_id")
        if key and self.fake.find("kling", key) is not None:
            return send(self, Scripted(400, {"code": 1201, "message": "external_task_id already exists", "request_id": "r"}))
        params = {"model": body.get("model_name"), "prompt": body.get("prompt", ""), "seconds": int(body.get("duration", 5)),
                  "image": base64.b64decode(body["image"]), "end_image": body.get("image_tail"), "key": key,
                  "mode": body.get("mode")}
        task, lost = self.fake.create("kling", "/v1/videos/image2video", headers, params)
        if lost:
            return send(self, Scripted(500, {"code": 5000, "message": "Server internal error", "request_id": "r"}))
        send(self, Scripted(200, self._kling_task(task, "submitted")))

    def _kling_get(self, headers: dict, ident: str) -> None:
        if not self._kling_auth(headers) or self._scripted("poll"):
            return
        task = self.fake.find("kling", ident)
        if task is None:
            return send(self, Scripted(404, {"code": 1203, "message": "task not found", "request_id": "r"}))
        state = self.fake.advance(task)
        send(self, Scripted(200, self._kling_task(task, {"waiting": "processing", "refused": "failed", "done": "succeed"}[state])))
