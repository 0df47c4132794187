"""A total deadline for an HTTP exchange. httpx's timeouts bound each phase and each read, so a
server that sends one byte every few seconds keeps a request alive forever; this transport also
bounds the whole exchange, from sending the request to the last byte of the body.

Past the deadline it raises httpx.ReadTimeout, so each client's existing timeout handling (ours,
the openai SDK's) turns it into the usual "timed out, will retry" error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx


class DeadlineTransport(httpx.BaseTransport):
    def __init__(self, seconds: float, inner: httpx.BaseTransport | None = None):
        self.seconds = seconds
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.seconds
        response = self.inner.handle_request(request)
        _check(deadline, self.seconds, request)
        response.stream = _Bounded(response.stream, deadline, self.seconds, request)
        return response

    def close(self) -> None:
        self.inner.close()


class _Bounded(httpx.SyncByteStream):
    def __init__(self, stream, deadline: float, seconds: float, request: httpx.Request):
        self.stream, self.deadline, self.seconds, self.request = stream, deadline, seconds, request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            _check(self.deadline, self.seconds, self.request)  # at most one read timeout late
            yield chunk

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close:
            close()


def _check(deadline: float, seconds: float, request: httpx.Request) -> None:
    if time.monotonic() > deadline:
        raise httpx.ReadTimeout(f"no complete answer within {seconds:g} s", request=request)


def client(seconds: float, **kwargs) -> httpx.Client:
    """An httpx client whose every exchange ends within `seconds` (plus at most one read timeout)."""
    return httpx.Client(transport=DeadlineTransport(seconds), **kwargs)


T = TypeVar("T")


def within(seconds: float, call: Callable[[], T], late: Callable[[], Exception]) -> T:
    """`call()`'s result, or `late()` raised once `seconds` pass.

    For SDKs that only take a per-read timeout and no transport (lark-oapi and oss2 over
    requests): the call runs on a daemon thread, so a server that never finishes answering holds
    that thread until its own read timeout fires, not the worker or the project lock.
    """
    outcome: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the caller as it is
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name="sheetreel-call", daemon=True).start()
    if not done.wait(seconds):
        raise late()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
