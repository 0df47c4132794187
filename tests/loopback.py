"""The shared skeleton of the test fakes: a stdlib HTTP server on 127.0.0.1 in a daemon thread,
used as a context manager so it always stops."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass
class Scripted:
    """One reply a fake gives: status, JSON body, extra headers."""

    status: int = 200
    body: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackServer:
    def _listen(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.fake = self  # type: ignore[attr-defined]  (handlers reach their fake through it)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def read_json(handler: BaseHTTPRequestHandler) -> dict:
    """The request's JSON body, or {} when it is empty or not JSON (the fake decides what that means)."""
    length = int(handler.headers.get("content-length") or 0)
    try:
        return json.loads(handler.rfile.read(length) or b"{}")
    except ValueError:
        return {}


def lower_headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    return {k.lower(): v for k, v in handler.headers.items()}


def send(handler: BaseHTTPRequestHandler, scripted: Scripted, raw: bytes | None = None,
         content_type: str = "") -> None:
    """Write `scripted` as the response: `raw` bytes when given, else its body as JSON."""
    payload = raw if raw is not None else json.dumps(scripted.body, ensure_ascii=False).encode("utf-8")
    handler.send_response(scripted.status)
    handler.send_header("content-type", content_type or "application/json")
    handler.send_header("content-length", str(len(payload)))
    for name, value in scripted.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)
