"""IM message send (as the app bot) and custom-bot webhooks (FEISHU_API §4).

Both only record what arrived in `State.messages`; tests and the demo read that
list to check what a chat group would have seen.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from .errors import ApiError
from .ids import new_hex_id
from .multipart import MultipartError, parse_form
from .state import State
from .wire import Reply, Request, json_reply

INVALID_PARAM = 230001
CARD_INVALID = 230099
IMAGE_PARAMS, IMAGE_TOO_LARGE, IMAGE_UNKNOWN_FORMAT = 234001, 234006, 234011
IMAGE_LIMIT = 10 * 1024 * 1024
IMAGE_TYPES = frozenset({"message", "avatar"})
# How an image file starts, for the formats the IM image API takes.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00")
CONTENT_TOO_LONG = 230025
RECEIVE_ID_TYPES = frozenset({"chat_id", "open_id", "union_id", "user_id", "email"})
MSG_TYPES = frozenset({
    "text", "post", "image", "file", "audio", "media", "sticker", "interactive", "share_chat", "share_user", "system",
})
TEXT_LIMIT = 150 * 1024
RICH_LIMIT = 30 * 1024  # post and card bodies
UUID_WINDOW_MS = 3600 * 1000
HOOK_BODY_LIMIT = 20 * 1024
SIGN_WINDOW_S = 3600


def _invalid(msg: str, code: int = INVALID_PARAM) -> ApiError:
    return ApiError(code, msg, 400)


def _parse_message(req: Request) -> tuple[str, str, str, Any, str | None]:
    id_type = req.q("receive_id_type")
    if id_type not in RECEIVE_ID_TYPES:
        raise _invalid(f"invalid receive_id_type {id_type!r}")
    body = req.json(INVALID_PARAM)
    if not isinstance(body, dict):
        raise _invalid("body must be an object")
    receive_id, msg_type, content, uuid = (body.get(k) for k in ("receive_id", "msg_type", "content", "uuid"))
    if not isinstance(receive_id, str) or not receive_id:
        raise _invalid("invalid receive_id", 230034)
    if msg_type not in MSG_TYPES:
        raise _invalid(f"invalid msg_type {msg_type!r}")
    if not isinstance(content, str):
        raise _invalid("content must be a JSON-encoded string")
    limit = TEXT_LIMIT if msg_type == "text" else RICH_LIMIT
    if len(content.encode()) > limit:
        raise _invalid("message content is too long", CONTENT_TOO_LONG)
    try:
        decoded = json.loads(content)
    except json.JSONDecodeError:
        raise _invalid("content is not valid JSON") from None
    if uuid is not None and (not isinstance(uuid, str) or len(uuid) > 50):
        raise _invalid("uuid must be a string of at most 50 characters")
    return id_type, receive_id, msg_type, decoded, uuid or None


def _chat_id(id_type: str, receive_id: str) -> str:
    if id_type == "chat_id":
        return receive_id
    return "oc_" + hashlib.sha256(receive_id.encode()).hexdigest()[:32]  # the p2p chat with that user


def _message_data(state: State, entry: dict[str, Any]) -> dict[str, Any]:
    created = str(entry["create_time"])
    return {
        "message_id": entry["message_id"],
        "root_id": "",
        "parent_id": "",
        "msg_type": entry["msg_type"],
        "create_time": created,
        "update_time": created,
        "deleted": False,
        "updated": False,
        "chat_id": _chat_id(entry["receive_id_type"], entry["receive_id"]),
        "sender": {"id": state.app_id, "id_type": "app_id", "sender_type": "app", "tenant_key": "emulator"},
        "body": {"content": json.dumps(entry["content"], ensure_ascii=False)},
        "mentions": [],
        "upper_message_id": "",
    }


def _is_image(data: bytes) -> bool:
    return data.startswith(IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def upload_image(state: State, req: Request) -> dict[str, Any]:
    """`POST /im/v1/images`: an image for messages and cards, answered with its image_key."""
    try:
        form = parse_form(req.headers.get("Content-Type") or "", req.body)
    except (MultipartError, UnicodeDecodeError) as exc:
        raise ApiError(IMAGE_PARAMS, f"Invalid request param: {exc}", 400) from None
    kind = form["image_type"].text().strip() if "image_type" in form else ""
    if kind not in IMAGE_TYPES or "image" not in form:
        raise ApiError(IMAGE_PARAMS, "Invalid request param: image_type (message|avatar) and image are required", 400)
    data = form["image"].data
    if len(data) > IMAGE_LIMIT:
        raise ApiError(IMAGE_TOO_LARGE, "The file size exceed the max value.", 400)
    if not data or not _is_image(data):
        raise ApiError(IMAGE_UNKNOWN_FORMAT, "Can't regonnize the image format.", 400)
    return {"image_key": state.add_image(data)}


def _image_keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "img_key"] + [x for v in node.values() for x in _image_keys(v)]
    if isinstance(node, list):
        return [x for v in node for x in _image_keys(v)]
    return []


def _check_card(state: State, card: Any) -> None:
    """What Feishu refuses when it renders a card: a 2.0 card without a body, and image keys it never issued."""
    if not isinstance(card, dict):
        raise _invalid("Failed to create card content, ext=ErrCode: 200621; ErrMsg: parse card json err", CARD_INVALID)
    if card.get("schema") == "2.0" and (not isinstance(card.get("body"), dict) or "elements" in card):
        raise _invalid("Failed to create card content, ext=ErrCode: 200621; ErrMsg: card 2.0 needs body.elements",
                       CARD_INVALID)
    with state.lock:
        unknown = [k for k in _image_keys(card) if k not in state.images]
    if unknown:
        raise _invalid(f"Failed to create card content, ext=ErrCode: 11310; ErrMsg: img_key {unknown[0]} invalid",
                       CARD_INVALID)


def create_message(state: State, req: Request) -> dict[str, Any]:
    id_type, receive_id, msg_type, content, uuid = _parse_message(req)
    if msg_type == "interactive":
        _check_card(state, content)
    with state.lock:
        now = state.clock.tick()
        if uuid:
            # Same uuid within an hour: Feishu answers with the first message, sends nothing new.
            for entry in state.messages:
                recent = now - entry["create_time"] < UUID_WINDOW_MS
                if entry.get("kind") == "im" and entry.get("uuid") == uuid and recent:
                    return _message_data(state, entry)
        entry = {
            "kind": "im",
            "receive_id": receive_id,
            "receive_id_type": id_type,
            "msg_type": msg_type,
            "content": content,
            "uuid": uuid,
            "message_id": new_hex_id("om_", 32),
            "create_time": now,
        }
        state.messages.append(entry)
        state.on_change()
        return _message_data(state, entry)


def webhook_sign(secret: str, timestamp: int | str) -> str:
    """HMAC-SHA256 keyed by "timestamp\\nsecret" over an empty message, base64."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def _hook_error(code: int, msg: str, status: int = 200) -> Reply:
    return json_reply({"code": code, "msg": msg, "data": {}}, status)


def _signature_ok(secret: str, body: dict[str, Any], now_s: float) -> bool:
    timestamp, sign = body.get("timestamp"), body.get("sign")
    try:
        fresh = abs(now_s - int(timestamp)) <= SIGN_WINDOW_S  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return fresh and isinstance(sign, str) and hmac.compare_digest(sign, webhook_sign(secret, str(timestamp)))


def _hook_content(body: dict[str, Any]) -> Any:
    content = body.get("card") if body.get("msg_type") == "interactive" and "card" in body else body.get("content")
    if isinstance(content, str):  # some senders string-encode cards; keep what a reader would see
        try:
            return json.loads(content)
        except json.JSONDecodeError:
            return content
    return content


def webhook(state: State, req: Request) -> Reply:
    hook_id = req.params["hook_id"]
    with state.lock:
        known, secret = hook_id in state.hooks, state.hooks.get(hook_id)
    if not known:
        return _hook_error(19001, "param invalid: incoming webhook access token invalid")
    if len(req.body) > HOOK_BODY_LIMIT:
        return _hook_error(9499, "Bad Request: body exceeds 20 KB", 400)
    try:
        body = json.loads(req.body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("msg_type"), str):
        return _hook_error(9499, "Bad Request", 400)
    if secret and not _signature_ok(secret, body, state.clock.now_s()):
        return _hook_error(19021, "sign match fail or timestamp is not within one hour from current time")
    with state.lock:
        state.messages.append({
            "kind": "webhook",
            "hook_id": hook_id,
            "msg_type": body["msg_type"],
            "content": _hook_content(body),
            "uuid": None,
            "create_time": state.clock.tick(),
        })
        state.on_change()
    # The last three keys are the legacy shape custom-bot clients still check.
    return json_reply({
        "code": 0, "msg": "success", "data": {}, "Extra": None, "StatusCode": 0, "StatusMessage": "success",
    })
