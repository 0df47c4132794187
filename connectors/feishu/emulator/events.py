"""Events over the long connection (FEISHU_API.md §6.1–6.3): the endpoint `lark.ws.Client` asks
for, the WebSocket it then holds (protobuf `pbbp2.Frame`s), and a
`drive.file.bitable_record_changed_v1` push for every record change in a subscribed base.

Like Feishu, each event goes to one connected client (cluster delivery, no broadcast) and an
event nobody is connected for is dropped: pollers must never depend on events alone.
"""
from __future__ import annotations

import hmac
import json
import logging
import queue
import random
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lark_oapi.ws.pb.pbbp2_pb2 import Frame
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.sync.server import Server, ServerConnection, serve

from .ids import new_hex_id, new_id, new_numeric_id
from .wire import Reply, Request, json_reply

log = logging.getLogger(__name__)

CONTROL, DATA = 0, 1
SERVICE_ID = 33554678
RECORD_CHANGED = "drive.file.bitable_record_changed_v1"
# What Feishu hands out; the client pings this often and waits this long between reconnects.
CLIENT_CONFIG = {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 120}
# As the token endpoint answers a wrong secret. Any code but 1 and 1000040343 (retried) is fatal for the SDK.
_SECRET_INVALID = 10014


def _device(path: str) -> str:
    return (parse_qs(urlsplit(path).query).get("device_id") or [""])[0]


def _header(frame: Frame, key: str) -> str | None:
    return next((h.value for h in frame.headers if h.key == key), None)


def _frame(method: int, headers: dict[str, str], payload: bytes = b"") -> bytes:
    frame = Frame(SeqID=0, LogID=0, service=SERVICE_ID, method=method, payload=payload)
    for key, value in headers.items():
        frame.headers.add(key=key, value=value)
    return frame.SerializeToString()


class EventHub:
    """The long-connection side of one fake tenant. Started on the first endpoint request."""

    def __init__(self, app_id: str, app_secret: str, client_config: dict[str, int] | None = None) -> None:
        self.app_id, self._secret = app_id, app_secret
        self.client_config = dict(client_config or CLIENT_CONFIG)
        self.subscriptions: set[str] = set()  # app tokens
        self.acks: dict[str, int] = {}  # message_id -> the code the client answered
        self._devices: set[str] = set()
        self._conns: dict[str, ServerConnection] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._server: Server | None = None
        self._threads: list[threading.Thread] = []
        self._address = ""

    # --- what the HTTP side calls ------------------------------------------------
    def endpoint(self, req: Request) -> Reply:
        """POST /callback/ws/endpoint: the connection URL for these credentials."""
        try:
            body = json.loads(req.body or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict) or body.get("AppID") != self.app_id or not hmac.compare_digest(
                str(body.get("AppSecret") or ""), self._secret):
            return json_reply({"code": _SECRET_INVALID, "msg": "app id or secret invalid", "data": None})
        device = new_numeric_id(19)
        with self._lock:
            self._devices.add(device)
        url = f"ws://{self._start()}/ws/v2?fpid=493&aid=552564&device_id={device}&service_id={SERVICE_ID}"
        return json_reply({"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": self.client_config}})

    def subscribe(self, app_token: str) -> None:
        with self._lock:
            self.subscriptions.add(app_token)

    def subscribed(self, app_token: str) -> bool:
        with self._lock:
            return app_token in self.subscriptions

    def record_changed(self, app_token: str, table_id: str, revision: int, actions: list[dict[str, Any]]) -> None:
        """Queue one event for a change to records of a subscribed base (never blocks the caller)."""
        if not self.subscribed(app_token) or not actions:
            return
        now = time.time()
        self._queue.put({
            "schema": "2.0",
            "header": {"event_id": new_hex_id("", 32), "token": "", "create_time": str(int(now * 1000)),
                       "event_type": RECORD_CHANGED, "tenant_key": "emulator", "app_id": self.app_id},
            "event": {"file_type": "bitable", "file_token": app_token, "table_id": table_id, "revision": revision,
                      "operator_id": {"open_id": "ou_emulator", "union_id": "on_emulator", "user_id": "emulator"},
                      "action_list": actions, "subscriber_id_list": [], "update_time": int(now)},
        })

    def connected(self) -> int:
        with self._lock:
            return len(self._conns)

    def disconnect_all(self) -> None:
        """Drop every client, as a network blip would (the SDK reconnects by itself)."""
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            conn.close()

    def stop(self) -> None:
        if self._server is None:
            return
        self._queue.put(None)
        self.disconnect_all()
        self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None

    # --- the WebSocket side ---------------------------------------------------------
    def _start(self) -> str:
        with self._lock:
            if self._server is None:
                self._server = serve(self._serve, "127.0.0.1", 0, process_request=self._handshake,
                                     compression=None, ping_interval=None)
                host, port = self._server.socket.getsockname()[:2]
                self._address = f"{host}:{port}"
                self._threads = [threading.Thread(target=self._server.serve_forever, name="emulator-ws", daemon=True),
                                 threading.Thread(target=self._deliver, name="emulator-events", daemon=True)]
                for thread in self._threads:
                    thread.start()
            return self._address

    def _handshake(self, conn: ServerConnection, request: WsRequest) -> WsResponse | None:
        with self._lock:
            known = _device(request.path) in self._devices
        if known:
            return None
        # Feishu refuses with its own headers, which the SDK turns into an exception.
        response = conn.respond(403, "unknown device\n")
        response.headers = Headers({**dict(response.headers), "handshake-status": "403",
                                    "handshake-msg": "unknown device", "handshake-autherrcode": "0"})
        return response

    def _serve(self, conn: ServerConnection) -> None:
        device = _device(conn.request.path)
        with self._lock:
            self._conns[device] = conn
        try:
            for message in conn:
                if isinstance(message, bytes):
                    self._received(conn, message)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                if self._conns.get(device) is conn:
                    del self._conns[device]

    def _received(self, conn: ServerConnection, message: bytes) -> None:
        frame = Frame()
        frame.ParseFromString(message)
        kind = _header(frame, "type")
        if frame.method == CONTROL and kind == "ping":
            conn.send(_frame(CONTROL, {"type": "pong"}, json.dumps(self.client_config).encode()))
        elif frame.method == DATA:
            # The client answers a push with the same frame carrying {"code": 200} (500: its handler failed).
            try:
                code = int(json.loads(frame.payload).get("code", 0))
            except (ValueError, AttributeError):
                code = 0
            with self._lock:
                self.acks[_header(frame, "message_id") or ""] = code

    def _deliver(self) -> None:
        while (event := self._queue.get()) is not None:
            with self._lock:
                conns = list(self._conns.values())
            if not conns:
                continue
            message_id = new_id("", 20)
            frame = _frame(DATA, {"type": "event", "message_id": message_id, "sum": "1", "seq": "0",
                                  "trace_id": new_hex_id("", 16)}, json.dumps(event, ensure_ascii=False).encode())
            try:
                random.choice(conns).send(frame)
            except ConnectionClosed:
                log.info("event dropped: the connection closed message_id=%s", message_id)
