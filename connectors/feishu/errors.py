"""Feishu codes and transport failures -> storage.errors, decided once, here."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from storage.errors import AuthFailed, NotFound, Permanent, RateLimited, SheetReelError, Transient, Unavailable

# Codes the platform documents as "slow down / try again" (FEISHU_API.md §5.2, §7).
TRANSIENT_CODES = {1254290, 1254291, 1254607, 1255040, 1061045, 230020, 1254036, 1254112, 11232, 1254002}
TRANSIENT_CODES |= set(range(1255001, 1255006))
AUTH_CODES = {99991661, 99991663, 99991664, 99991671, 99991672, 10014, 10003, 1254302, 1254304, 1061004}
TOKEN_INVALID_CODES = {99991663, 99991664, 99991671}
NOT_FOUND_CODES = {1254040, 1254041, 1254042, 1254043, 1254044, 1061044}
HINTS = {
    1254045: "表格里缺少这一列（或应用无权写入）：运行 sheetreel init --create 补齐列",
    1254303: "附件不属于这个多维表格",
    1061043: "文件超过单次上传上限",
    1254104: "单次写入的记录过多",
}


def from_response(what: str, code: int, msg: str, http_status: int | None, headers: dict) -> SheetReelError:
    detail = f"{what}: code={code} msg={msg}"
    if http_status == 429 or code == 99991400:
        lower = {k.lower(): v for k, v in (headers or {}).items()}
        reset = lower.get("x-ogw-ratelimit-reset")
        return RateLimited(f"飞书限流，稍后自动重试 ({detail})", retry_after=float(reset) if reset else None)
    if code in TRANSIENT_CODES or (http_status or 0) >= 500:
        return Unavailable(f"飞书暂时不可用，稍后自动重试 ({detail})")
    if code in AUTH_CODES:
        return AuthFailed(f"飞书认证或权限失败，请检查 FEISHU_APP_ID/FEISHU_APP_SECRET 和应用对多维表格的权限 ({detail})")
    if code in NOT_FOUND_CODES:
        return NotFound(f"飞书找不到对象，请检查 FEISHU_APP_TOKEN/FEISHU_TABLE_ID 或记录是否已删除 ({detail})")
    hint = HINTS.get(code)
    return Permanent(f"{hint} ({detail})" if hint else f"飞书拒绝了请求 ({detail})")


def from_exception(what: str, exc: Exception) -> SheetReelError | None:
    """Map a raised vendor/transport exception, or None if it is not one we know."""
    if isinstance(exc, json.JSONDecodeError):
        return Transient(f"飞书返回了无法解析的响应，稍后自动重试 ({what})")
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        return Unavailable(f"连接飞书超时或失败，稍后自动重试 ({what}: {type(exc).__name__})")
    if type(exc).__name__ == "ObtainAccessTokenException":
        return AuthFailed(f"获取飞书 tenant_access_token 失败，请检查 FEISHU_APP_ID/FEISHU_APP_SECRET ({exc})")
    return None


T = TypeVar("T")


def observed(observe: Callable[[str, str], None] | None, kind: str, run: Callable[[], T]) -> T:
    """`run()`, telling `observe` (for the metrics) the call's kind and "ok" or the error's Feishu
    code (or its type, for a failure that never reached Feishu)."""
    try:
        result = run()
    except Exception as e:
        if observe:
            observe(kind, str(getattr(e, "feishu_code", None) or type(e).__name__))
        raise
    if observe:
        observe(kind, "ok")
    return result


def call(what: str, send: Callable[[], T], on_token_invalid: Callable[[], None] | None = None) -> T:
    """Run one SDK call; raise our error type for a transport failure or a non-zero code."""
    try:
        resp: Any = send()
    except SheetReelError:
        raise
    except Exception as e:
        mapped = from_exception(what, e)
        if mapped is None:
            raise
        raise mapped from e
    if not resp.success():
        if resp.code in TOKEN_INVALID_CODES and on_token_invalid:
            on_token_invalid()
        raw = getattr(resp, "raw", None)
        error = from_response(what, resp.code, resp.msg, getattr(raw, "status_code", None), getattr(raw, "headers", {}) or {})
        error.feishu_code = resp.code  # type: ignore[attr-defined]  # the metrics count errors by it
        raise error
    return resp
