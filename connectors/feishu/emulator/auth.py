"""Token endpoints and the Bearer check every other /open-apis route goes through (§1)."""
from __future__ import annotations

import hmac

from .errors import TOKEN_INVALID, TOKEN_MISSING, ApiError
from .state import State
from .wire import Reply, Request, json_reply

INVALID_PARAM = 10003
SECRET_INVALID = 10014
# ≥ 30 min so the SDK caches the token (it subtracts 10 min from expire).
EXPIRE_S = 7200
_HINT = "Please make a request with token attached."


def _check_credentials(state: State, req: Request) -> None:
    body = req.json(INVALID_PARAM)  # the SDK sends JSON without a Content-Type
    if not isinstance(body, dict) or body.get("app_id") != state.app_id:
        raise ApiError(INVALID_PARAM, "invalid param: app_id", 400)
    if not hmac.compare_digest(str(body.get("app_secret") or ""), state.app_secret):
        raise ApiError(SECRET_INVALID, "app secret invalid", 400)


def tenant_token(state: State, req: Request) -> Reply:
    _check_credentials(state, req)
    # Token endpoints put the token at the top level, not under "data".
    return json_reply({"code": 0, "msg": "ok", "tenant_access_token": state.tenant_token(), "expire": EXPIRE_S})


def app_token(state: State, req: Request) -> Reply:
    _check_credentials(state, req)
    return json_reply({
        "code": 0,
        "msg": "ok",
        "app_access_token": state.app_access_token(),
        "tenant_access_token": state.tenant_token(),
        "expire": EXPIRE_S,
    })


def check_bearer(state: State, req: Request) -> None:
    header = (req.headers.get("Authorization") or "").strip()
    scheme, _, token = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not token.strip():
        raise ApiError(TOKEN_MISSING, f"Missing access token for authorization. {_HINT}", 400)
    if not state.token_valid(token.strip()):
        raise ApiError(TOKEN_INVALID, f"Invalid access token for authorization. {_HINT}", 400)
