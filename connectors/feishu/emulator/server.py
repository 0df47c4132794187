"""HTTP plumbing: the dispatcher (counting, faults, write conflicts, auth) and the
stdlib ThreadingHTTPServer that feeds it.

The order in `Dispatcher._run` mirrors the real gateway: count the call, then
gateway faults (outage, latency, 429, 502) before auth or business logic.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .auth import check_bearer
from .errors import RATE_LIMITED, TOO_MANY_REQUESTS, WRITE_CONFLICT, ApiError
from .faults import FaultInjector, FaultPlan
from .routes import Route, build_routes, match
from .state import State
from .wire import Reply, Request, error_reply, json_reply, non_json_reply, ok

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024


class Dispatcher:
    def __init__(self, state: State, routes: list[Route] | None = None) -> None:
        self.state = state
        self._routes = routes if routes is not None else build_routes()
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._injector = FaultInjector(FaultPlan(), self._record_fault)
        self._busy_tables: set[tuple[str, str]] = set()

    # --- observability -------------------------------------------------------
    @property
    def faults(self) -> FaultPlan:
        return self._injector.plan

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        # A fresh injector: the seed and the outage window start over with the plan.
        self._injector = FaultInjector(plan, self._record_fault)

    def calls(self) -> Counter[str]:
        with self._lock:
            return Counter(self._calls)

    def faults_injected(self) -> Counter[str]:
        with self._lock:
            return Counter(self._injected)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()
            self._injected.clear()

    def _record_fault(self, kind: str) -> None:
        with self._lock:
            self._injected[kind] += 1

    # --- dispatch --------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        try:
            admin = self._admin(req)
            if admin is not None:
                return admin
            found = match(self._routes, req.method, req.path)
            if found is None:
                return json_reply({"code": 404, "msg": f"404 page not found: {req.method} {req.path}", "data": {}}, 404)
            route, req.params = found
            return self._run(route, req)
        except Exception as exc:  # a bug in the emulator must not look like a dropped connection
            log.exception("emulator failed on %s %s", req.method, req.path)
            return json_reply({"code": 1255001, "msg": f"emulator internal error: {exc!r}", "data": {}}, 500)

    def _run(self, route: Route, req: Request) -> Reply:
        if route.endpoint:
            with self._lock:
                self._calls[route.endpoint] += 1
        with self._table_slot(route, req.params) as free:
            fault = self._injector.decide(route.endpoint) if route.endpoint else None
            if fault is not None:
                return self._fault_reply(fault)
            if not free:
                return error_reply(ApiError(WRITE_CONFLICT, "Write conflict: another write to this table is running"))
            try:
                if route.auth:
                    check_bearer(self.state, req)
                result = route.handler(self.state, req)
            except ApiError as err:
                return error_reply(err)
        return result if isinstance(result, Reply) else ok(result)

    @contextmanager
    def _table_slot(self, route: Route, params: dict[str, str]) -> Iterator[bool]:
        """Yield False when another write to the same table is still running."""
        if not route.table_write:
            yield True
            return
        key = (params["app_token"], params["table_id"])
        with self._lock:
            free = key not in self._busy_tables
            self._busy_tables.add(key)
        try:
            yield free
        finally:
            if free:
                with self._lock:
                    self._busy_tables.discard(key)

    def _fault_reply(self, kind: str) -> Reply:
        plan = self._injector.plan
        if kind == "rate_limit":
            headers = [
                ("x-ogw-ratelimit-limit", str(plan.limit_header)),
                ("x-ogw-ratelimit-reset", str(plan.reset_seconds)),
            ]
            return error_reply(ApiError(RATE_LIMITED, "request trigger frequency limit", 429), headers)
        if kind == "too_many":
            return error_reply(ApiError(TOO_MANY_REQUESTS, "TooManyRequest: request too fast, retry later"))
        if kind == "write_conflict":
            return error_reply(ApiError(WRITE_CONFLICT, "Write conflict"))
        if kind == "outage":
            return non_json_reply(503, "Service Unavailable")
        return non_json_reply(502, "Bad Gateway")

    # --- admin routes (no auth, not counted) -------------------------------------
    def _admin(self, req: Request) -> Reply | None:
        if not req.path.startswith("/_emulator/") or req.path.startswith("/_emulator/tmp/"):
            return None
        key = (req.method, req.path)
        if key == ("GET", "/_emulator/calls"):
            return json_reply(dict(self.calls()))
        if key == ("GET", "/_emulator/faults_injected"):
            return json_reply(dict(self.faults_injected()))
        if key == ("GET", "/_emulator/messages"):
            with self.state.lock:
                return json_reply({"messages": json.loads(json.dumps(self.state.messages))})
        if key == ("POST", "/_emulator/reset_calls"):
            self.reset_calls()
            return json_reply({"ok": True})
        if key == ("POST", "/_emulator/faults"):
            return self._set_faults(req.body)
        return json_reply({"error": f"unknown admin route {req.method} {req.path}"}, 404)

    def _set_faults(self, body: bytes) -> Reply:
        try:
            raw: Any = json.loads(body or b"{}")
            self.faults = FaultPlan.from_json(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            return json_reply({"error": f"bad FaultPlan: {exc}"}, 400)
        return json_reply({"ok": True})


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        if ":" in address[0]:  # "::1": the SDK accepts plain http on IPv6 loopback too
            self.address_family = socket.AF_INET6
        super().__init__(address, _HttpHandler)


class _HttpHandler(BaseHTTPRequestHandler):
    server: EmulatorHTTPServer
    # One request per connection, so no keep-alive thread outlives stop().
    protocol_version = "HTTP/1.0"
    server_version = "FeishuEmulator/1.0"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self._send(json_reply({"code": 9499, "msg": f"Bad Request: {exc}", "data": {}}, 400))
            return
        url = urlsplit(self.path)
        headers: Mapping[str, str] = self.headers  # type: ignore[assignment]  # Message has a case-insensitive get
        req = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True), headers, body)
        self._send(self.server.dispatcher.handle(req))

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():  # trailers
                    pass
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()
            if len(out) > MAX_BODY:
                raise ValueError("body too large")

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired during injected latency)

    def log_message(self, format: str, *args: Any) -> None:  # stdlib's signature
        log.debug("%s - %s", self.address_string(), format % args)
