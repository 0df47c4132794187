"""HTTP handlers for drive media: single and chunked upload, download, tmp URLs (§3)."""
from __future__ import annotations

import hmac
import json
import math
import zlib
from typing import Any
from urllib.parse import quote

from .errors import DRIVE_FORBIDDEN, DRIVE_PARAMS, DRIVE_PARENT_MISSING, DRIVE_TOO_LARGE, ApiError
from .ids import new_numeric_id
from .model import Media, UploadSession
from .multipart import MultipartError, Part, parse_form
from .state import State
from .wire import Reply, Request, json_reply

MAX_UPLOAD_ALL = 20 * 1024 * 1024
MAX_TMP_TOKENS = 5
TMP_ROUTE = "/_emulator/tmp/"


def _params_error(msg: str, status: int = 400) -> ApiError:
    return ApiError(DRIVE_PARAMS, f"params error: {msg}", status)


def _form(req: Request) -> dict[str, Part]:
    try:
        return parse_form(req.headers.get("Content-Type") or "", req.body)
    except (MultipartError, UnicodeDecodeError) as exc:
        raise _params_error(str(exc)) from None


def _text(form: dict[str, Part], name: str, required: bool = True) -> str:
    part = form.get(name)
    value = part.text().strip() if part else ""
    if required and not value:
        raise _params_error(f"{name} is required")
    return value


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _params_error(f"{name} must be an integer") from None


def _check_checksum(checksum: str, data: bytes) -> None:
    # The SDK sends an empty checksum part when none was set: that means "don't check".
    if checksum and checksum != str(zlib.adler32(data)):
        raise _params_error("checksum mismatch")


def _check_parent(state: State, parent_node: str) -> None:
    with state.lock:
        if parent_node not in state.apps:
            raise ApiError(DRIVE_PARENT_MISSING, f"parent node not exist: {parent_node}", 400)


def upload_all(state: State, req: Request) -> dict[str, Any]:
    form = _form(req)
    name, parent_type, parent_node = (_text(form, k) for k in ("file_name", "parent_type", "parent_node"))
    size = _int(_text(form, "size"), "size")
    if size > MAX_UPLOAD_ALL:
        raise ApiError(DRIVE_TOO_LARGE, "file size beyond limit", 400)
    if "file" not in form:
        raise _params_error("file is required")
    data = form["file"].data
    if size != len(data):
        raise _params_error(f"size {size} does not match the {len(data)} bytes sent")
    _check_parent(state, parent_node)
    _check_checksum(_text(form, "checksum", required=False), data)
    media = state.add_media(name, data, None, parent_type, parent_node)
    return {"file_token": media.file_token}


def upload_prepare(state: State, req: Request) -> dict[str, Any]:
    body = req.json(DRIVE_PARAMS)
    if not isinstance(body, dict) or not body.get("file_name") or not body.get("parent_type"):
        raise _params_error("file_name and parent_type are required")
    size = _int(body.get("size"), "size")
    if size <= 0:
        raise _params_error("size must be positive")
    _check_parent(state, str(body.get("parent_node") or ""))
    session = UploadSession(
        upload_id=new_numeric_id(),
        file_name=str(body["file_name"]),
        parent_type=str(body["parent_type"]),
        parent_node=str(body["parent_node"]),
        size=size,
        block_num=math.ceil(size / state.block_size),
    )
    with state.lock:
        state.uploads[session.upload_id] = session
    return {"upload_id": session.upload_id, "block_size": state.block_size, "block_num": session.block_num}


def _session(state: State, upload_id: Any) -> UploadSession:
    with state.lock:
        session = state.uploads.get(str(upload_id))
    if session is None:
        raise _params_error(f"unknown upload_id {upload_id!r}")
    return session


def _expected_block(state: State, session: UploadSession, seq: int) -> int:
    if seq < session.block_num - 1:
        return state.block_size
    return session.size - state.block_size * (session.block_num - 1)


def upload_part(state: State, req: Request) -> dict[str, Any]:
    form = _form(req)
    session = _session(state, _text(form, "upload_id"))
    seq = _int(_text(form, "seq"), "seq")
    size = _int(_text(form, "size"), "size")
    if not 0 <= seq < session.block_num:
        raise _params_error(f"seq {seq} outside 0..{session.block_num - 1}")
    data = form["file"].data if "file" in form else b""
    if size != len(data) or size != _expected_block(state, session, seq):  # only the last block may be short
        expected = _expected_block(state, session, seq)
        raise _params_error(f"block {seq} has {len(data)} bytes (size={size}), expected {expected}")
    _check_checksum(_text(form, "checksum", required=False), data)
    with state.lock:
        session.parts[seq] = data
    return {}


def upload_finish(state: State, req: Request) -> dict[str, Any]:
    body = req.json(DRIVE_PARAMS)
    if not isinstance(body, dict):
        raise _params_error("body must be an object")
    session = _session(state, body.get("upload_id"))
    if _int(body.get("block_num"), "block_num") != session.block_num:
        raise _params_error(f"block_num must be {session.block_num}")
    missing = [i for i in range(session.block_num) if i not in session.parts]
    if missing:
        raise _params_error(f"blocks not uploaded: {missing}")
    data = b"".join(session.parts[i] for i in range(session.block_num))
    if len(data) != session.size:
        raise _params_error(f"uploaded {len(data)} bytes, prepared {session.size}")
    media = state.add_media(session.file_name, data, None, session.parent_type, session.parent_node)
    with state.lock:
        state.uploads.pop(session.upload_id, None)
    return {"file_token": media.file_token}


def content_disposition(name: str) -> str:
    """ASCII names go in filename=; others also get an RFC 5987 filename*."""
    safe = all(32 <= ord(c) < 127 and c not in '";\\' for c in name)
    if safe:
        return f'attachment; filename="{name}"'
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '";\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _file_reply(media: Media, data: bytes) -> Reply:
    return Reply(200, data, [("Content-Type", media.mime), ("Content-Disposition", content_disposition(media.name))])


def download(state: State, req: Request) -> Reply:
    media, data = state.media_bytes(req.params["file_token"])
    _check_bitable_perm(state, media, req.q("extra"))
    return _file_reply(media, data)


def _check_bitable_perm(state: State, media: Media, extra: str | None) -> None:
    """A base with advanced permissions serves its attachments only to a request that names the
    table (`extra={"bitablePerm":{"tableId":…}}`, FEISHU_API §3.4); without it: HTTP 403."""
    with state.lock:
        app = state.apps.get(media.parent_node)
        if app is None or not app.advanced_permissions:
            return
        tables = set(app.tables)
    try:
        perm = json.loads(extra or "")["bitablePerm"]
        table_id = perm["tableId"]
    except (ValueError, KeyError, TypeError):
        table_id = None
    if table_id not in tables:
        raise ApiError(DRIVE_FORBIDDEN, "forbidden: this base has advanced permissions; "
                       "pass extra={\"bitablePerm\":{\"tableId\":...}}", 403)


def tmp_urls(state: State, req: Request) -> dict[str, Any]:
    tokens = req.q_all("file_tokens")
    if not 1 <= len(tokens) <= MAX_TMP_TOKENS:
        raise _params_error(f"file_tokens must have 1..{MAX_TMP_TOKENS} items")
    with state.lock:
        unknown = [t for t in tokens if t not in state.media]
    if unknown:
        raise _params_error(f"unknown file_tokens {unknown}")
    urls = [
        {"file_token": t, "tmp_download_url": f"{req.base_url}{TMP_ROUTE}{t}?sig={state.sign(t)}"}
        for t in tokens
    ]
    return {"tmp_download_urls": urls}


def tmp_download(state: State, req: Request) -> Reply:
    """The pre-signed URL: no Bearer token, the signature is the credential."""
    token = req.params["file_token"]
    if not hmac.compare_digest(req.q("sig") or "", state.sign(token)):
        return json_reply({"code": 1061004, "msg": "forbidden: bad signature", "data": {}}, 403)
    media, data = state.media_bytes(token)
    return _file_reply(media, data)


def subscribe(state: State, req: Request) -> dict[str, Any]:
    """POST /drive/v1/files/:token/subscribe?file_type=bitable: record-change events for that base."""
    if req.q("file_type") != "bitable":
        raise ApiError(DRIVE_PARAMS, "file_type must be bitable for record events", 400)
    with state.lock:
        state.app(req.params["file_token"])
    state.events.subscribe(req.params["file_token"])
    return {}
