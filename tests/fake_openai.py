"""A local OpenAI-compatible server for tests: scripted chat replies, real audio for speech.

It speaks the wire format the official `openai` client expects, so tests exercise our real
connectors (request building, error translation) rather than a mock of our own assumptions.
Loopback only, port 0; use it as a context manager so it always stops.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from loopback import LoopbackServer, Scripted, lower_headers, read_json, send

SECONDS_PER_CHAR = 0.05
MIN_SECONDS = 0.3
SAMPLE_RATE = 24000


@dataclass
class Recorded:
    path: str
    body: dict
    headers: dict[str, str]
    audio_seconds: float | None = None  # what /audio/speech generated for this request


def chat_reply(content: str | None, finish_reason: str = "stop") -> Scripted:
    return Scripted(body={
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })


def chat_json(obj: object) -> Scripted:
    return chat_reply(json.dumps(obj, ensure_ascii=False))


def error_reply(status: int, message: str = "fake error", retry_after: str | None = None) -> Scripted:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Scripted(status, {"error": {"message": message, "type": "fake_error", "code": str(status)}}, headers)


class FakeOpenAI(LoopbackServer):
    def __init__(self, api_key: str = "sk-fake-test-key", seconds_per_char: float = SECONDS_PER_CHAR):
        self.api_key = api_key
        self.seconds_per_char = seconds_per_char
        self.requests: list[Recorded] = []
        self._queues: dict[str, deque[Scripted]] = {"chat": deque(), "speech": deque()}
        self._lock = threading.Lock()
        self._listen(_Handler)

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    def queue_chat(self, *replies: Scripted) -> None:
        with self._lock:
            self._queues["chat"].extend(replies)

    def queue_speech(self, *replies: Scripted) -> None:
        """Scripted speech replies (errors) come first; after them, real audio is generated."""
        with self._lock:
            self._queues["speech"].extend(replies)

    def chat_requests(self) -> list[dict]:
        return [r.body for r in self.requests if r.path.endswith("/chat/completions")]

    def speech_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/audio/speech")]

    # -- called by the handler ---------------------------------------------------------------

    def handle(self, path: str, body: dict, headers: dict[str, str]) -> tuple[Scripted, bytes | None, str]:
        record = Recorded(path, body, headers)
        with self._lock:
            self.requests.append(record)
        if headers.get("authorization") != f"Bearer {self.api_key}":
            # Real vendors echo (part of) the key; the connector must not pass it on.
            given = headers.get("authorization", "").removeprefix("Bearer ")
            return error_reply(401, f"Incorrect API key provided: {given}"), None, ""
        if path == "/v1/chat/completions":
            return self._next("chat") or error_reply(500, "fake: no scripted chat reply left"), None, ""
        if path == "/v1/audio/speech":
            if scripted := self._next("speech"):
                return scripted, None, ""
            return self._speech(body, record)
        if path == "/v1/models":  # GET: what `sheetreel health` asks to see the endpoint and key work
            return Scripted(body={"object": "list", "data": [{"id": "fake-chat", "object": "model"}]}), None, ""
        return error_reply(404, f"fake: no route {path}"), None, ""

    def _next(self, queue: str) -> Scripted | None:
        with self._lock:
            return self._queues[queue].popleft() if self._queues[queue] else None

    def _speech(self, body: dict, record: Recorded) -> tuple[Scripted, bytes, str]:
        speed = float(body.get("speed", 1.0))
        seconds = max(MIN_SECONDS, round(len(body.get("input", "")) * self.seconds_per_char / speed, 3))
        fmt = body.get("response_format", "mp3")
        record.audio_seconds = seconds
        return Scripted(), tone(seconds, fmt), "audio/mpeg" if fmt == "mp3" else "audio/wav"


def tone(seconds: float, fmt: str = "mp3") -> bytes:
    """A sine tone of exactly `seconds`. Encoded to a file, not a pipe, so the MP3 carries the
    LAME header (encoder delay and padding) and decodes to exactly that length."""
    with tempfile.TemporaryDirectory(prefix="fake-openai-") as tmp:
        out = Path(tmp) / f"speech.{'mp3' if fmt == 'mp3' else 'wav'}"
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi",
                "-i", f"sine=frequency=440:sample_rate={SAMPLE_RATE}:duration={seconds}", str(out)]
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        return out.read_bytes()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        scripted, raw, ctype = self.server.fake.handle(self.path, read_json(self), lower_headers(self))  # type: ignore[attr-defined]
        send(self, scripted, raw, ctype)

    def do_GET(self) -> None:
        scripted, raw, ctype = self.server.fake.handle(self.path, {}, lower_headers(self))  # type: ignore[attr-defined]
        send(self, scripted, raw, ctype)

    def log_message(self, *args) -> None:
        pass
