"""Request/reply values passed between the HTTP layer and the route handlers.

Handlers never touch sockets: they read a `Request` and return data (wrapped in
the success envelope) or a `Reply` (raw bytes, e.g. a download), which keeps
them testable and keeps header casing decided in one place.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError
from .ids import new_log_id

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
_TRUE_WORDS = frozenset({"true", "1", "yes"})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # case-insensitive lookups (email.message.Message)
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def q_all(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def q_bool(self, name: str) -> bool:
        # The SDK sends str(bool): "True"/"False".
        return (self.q(name) or "").strip().lower() in _TRUE_WORDS

    def json(self, error_code: int, status: int = 400) -> Any:
        """Parse the body as JSON whatever the Content-Type (the token call sends none)."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ApiError(error_code, "invalid JSON body", status) from None

    @property
    def base_url(self) -> str:
        # URLs we hand out must point back at whatever address the client used.
        return "http://" + (self.headers.get("Host") or "127.0.0.1")


@dataclass
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(payload: Mapping[str, Any], status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    # Exact casing matters: the sync SDK looks these two up case-sensitively.
    base = [("Content-Type", JSON_CONTENT_TYPE), ("X-Tt-Logid", new_log_id())]
    return Reply(status, body, base + list(headers or []))


def ok(data: Mapping[str, Any] | None = None) -> Reply:
    return json_reply({"code": 0, "msg": "success", "data": dict(data or {})})


def error_reply(err: ApiError, headers: list[tuple[str, str]] | None = None) -> Reply:
    payload = {"code": err.code, "msg": err.msg, "data": {}, "error": {"log_id": new_log_id()}}
    return json_reply(payload, err.status, headers)


def non_json_reply(status: int, text: str) -> Reply:
    # Gateways answer 502/503 with an HTML page; the typed SDK cannot parse it.
    html = f"<html><head><title>{status}</title></head><body><h1>{status} {text}</h1></body></html>"
    return Reply(status, html.encode(), [("Content-Type", "text/html")])
