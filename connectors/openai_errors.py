"""openai SDK exceptions become our error tree here, once, for every OpenAI-compatible connector.

    RateLimitError (429)                              -> RateLimited (retry_after from headers)
    APITimeoutError, APIConnectionError, 5xx, 408/409 -> Unavailable (never uses up a step's attempts)
    APIResponseValidationError (a broken body)        -> Transient
    AuthenticationError, PermissionDeniedError        -> AuthFailed
    BadRequestError, NotFoundError, other 4xx          -> Permanent (names the model and base URL)

The API key never appears in a message: vendors sometimes echo part of it back, so any text we
take from the response is scrubbed before it reaches the sheet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime

import openai

from storage.errors import AuthFailed, Permanent, RateLimited, SheetReelError, Transient, Unavailable

# Timeouts and conflicts on the vendor side clear up by themselves.
_TRANSIENT_STATUS = (408, 409)
_DETAIL_CHARS = 200


@contextmanager
def translated(service: str, *, model: str, base_url: str, api_key: str) -> Iterator[None]:
    """Run the body; an openai exception leaves it as one of ours, raised `from` the original."""
    try:
        yield
    except openai.OpenAIError as e:
        raise translate(e, service=service, model=model, base_url=base_url, api_key=api_key) from e


def translate(err: openai.OpenAIError, *, service: str, model: str, base_url: str, api_key: str) -> SheetReelError:
    where = f"{service}（模型 {model}，地址 {base_url}）"
    detail = _scrub(_detail(err), api_key)
    if isinstance(err, openai.RateLimitError):
        return RateLimited(f"{where}请求过于频繁，稍后自动重试 (rate limited)", retry_after(err.response.headers))
    if isinstance(err, openai.APITimeoutError):
        return Unavailable(f"{where}响应超时，稍后自动重试 (timeout)")
    if isinstance(err, openai.APIConnectionError):
        return Unavailable(f"{where}无法连接，稍后自动重试 (connection error)")
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return AuthFailed(f"{where}鉴权失败：请检查 API key 与权限 (HTTP {err.status_code})")
    if isinstance(err, openai.APIStatusError):
        return _status_error(err, where, detail)
    if isinstance(err, openai.APIResponseValidationError):
        return Transient(f"{where}返回了无法解析的内容，稍后自动重试 (bad response body)")
    return Transient(f"{where}调用失败，稍后自动重试 ({type(err).__name__}: {detail})")


def retry_after(headers) -> float | None:
    """Seconds to wait, from `retry-after-ms`, `retry-after` seconds, or an HTTP date."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000)
    raw = headers.get("retry-after")
    seconds = _number(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time()) if raw else None
    except (TypeError, ValueError):
        return None


def _status_error(err: openai.APIStatusError, where: str, detail: str) -> SheetReelError:
    status = err.status_code
    if status >= 500 or status in _TRANSIENT_STATUS:
        return Unavailable(f"{where}服务端出错（HTTP {status}），稍后自动重试")
    if isinstance(err, openai.NotFoundError):
        return Permanent(f"{where}不存在：请检查模型名称和服务地址 (HTTP 404: {detail})")
    return Permanent(f"{where}拒绝了请求（HTTP {status}）：{detail}")


def _detail(err: openai.OpenAIError) -> str:
    text = getattr(err, "message", None) or str(err)
    return " ".join(str(text).split())[:_DETAIL_CHARS]


def _scrub(text: str, api_key: str) -> str:
    return text.replace(api_key, "***") if api_key else text


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
