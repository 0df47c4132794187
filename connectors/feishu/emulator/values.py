"""Cell values: validate what clients write, render what they read (FEISHU_API §2.3).

Writes are checked strictly, with the per-type conversion error codes, because
the point of the emulator is to fail where Feishu would fail.  A JSON null, an
empty string, an empty list or an unticked checkbox clears a cell; cleared
cells are absent on read.
"""
from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from . import model as m
from .errors import ATTACHMENT_NOT_IN_BASE, FIELD_NAME_NOT_FOUND, ApiError

# The fixed identity the emulator reports as creator/modifier of every record.
EMULATOR_PERSON = {
    "id": "ou_emulator0000000000000000000000",
    "name": "Emulator",
    "en_name": "Emulator",
    "email": "emulator@example.invalid",
    "avatar_url": "",
}
_OPTION_COLORS = 55


@dataclass(frozen=True)
class WriteContext:
    app_token: str
    media: Mapping[str, m.Media]


@dataclass(frozen=True)
class RenderContext:
    base_url: str
    table_id: str
    rev: int
    media: Mapping[str, m.Media]
    text_as_array: bool = True


def _conv_error(code: int, kind: str, field: m.Field, value: Any) -> ApiError:
    return ApiError(code, f"{kind}FieldConvFail: field {field.name!r} got {json.dumps(value, ensure_ascii=False)[:80]}")


def _text(field: m.Field, value: Any, _: WriteContext) -> Any:
    if not isinstance(value, str):
        raise _conv_error(1254060, "Text", field, value)
    return value or None


def _number(field: m.Field, value: Any, _: WriteContext) -> Any:
    # bool is an int subclass in Python but not a number to Feishu.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _conv_error(1254061, "Number", field, value)
    return value


def _single(field: m.Field, value: Any, _: WriteContext) -> Any:
    if not isinstance(value, str):
        raise _conv_error(1254062, "SingleSelect", field, value)
    return value or None


def _multi(field: m.Field, value: Any, _: WriteContext) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _conv_error(1254063, "MultiSelect", field, value)
    return list(dict.fromkeys(value)) or None


def _datetime(field: m.Field, value: Any, _: WriteContext) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _conv_error(1254064, "Datetime", field, value)
    return value


def _checkbox(field: m.Field, value: Any, _: WriteContext) -> Any:
    if not isinstance(value, bool):
        raise _conv_error(1254065, "Checkbox", field, value)
    return value or None  # an unticked box is an empty cell: absent on read


def _url(field: m.Field, value: Any, _: WriteContext) -> Any:
    if not isinstance(value, dict) or not isinstance(value.get("link", ""), str):
        raise _conv_error(1254068, "URL", field, value)
    text = value.get("text")
    link = value.get("link") or ""
    if text is not None and not isinstance(text, str):
        raise _conv_error(1254068, "URL", field, value)
    if not link and not text:
        return None
    return {"text": text or link, "link": link}


def _attachment(field: m.Field, value: Any, ctx: WriteContext) -> Any:
    well_formed = isinstance(value, list) and all(
        isinstance(v, dict) and isinstance(v.get("file_token"), str) for v in value
    )
    if not well_formed:
        raise _conv_error(1254069, "Attach", field, value)
    tokens = [v["file_token"] for v in value]
    for token in tokens:
        media = ctx.media.get(token)
        if media is None or media.parent_node != ctx.app_token:
            raise ApiError(ATTACHMENT_NOT_IN_BASE, f"attachment {token} does not belong to this base")
    return tokens or None


_WRITERS: dict[int, Callable[[m.Field, Any, WriteContext], Any]] = {
    m.TEXT: _text,
    m.NUMBER: _number,
    m.SINGLE_SELECT: _single,
    m.MULTI_SELECT: _multi,
    m.DATETIME: _datetime,
    m.CHECKBOX: _checkbox,
    m.URL: _url,
    m.ATTACHMENT: _attachment,
}


def to_cell(field: m.Field, value: Any, ctx: WriteContext) -> Any:
    """Validate one written value; returns the stored form, or None to clear."""
    if field.type in m.COMPUTED_TYPES:
        # Feishu's 1254045 text covers "no permission to write it".
        raise ApiError(FIELD_NAME_NOT_FOUND, f"field {field.name!r} is read-only")
    if value is None:
        return None
    return _WRITERS[field.type](field, value, ctx)


def register_options(field: m.Field, stored: Any) -> None:
    """Writing an unknown select option creates it, as the Feishu UI and API do."""
    if field.type not in m.SELECT_TYPES or stored is None:
        return
    names = [stored] if isinstance(stored, str) else stored
    prop = field.property if field.property is not None else {}
    options = prop.setdefault("options", [])
    known = {o["name"] for o in options}
    for name in names:
        if name not in known:
            options.append(new_option(name, len(options)))
            known.add(name)
    field.property = prop


def new_option(name: str, index: int) -> dict[str, Any]:
    return {"name": name, "id": "opt" + secrets.token_hex(4), "color": index % _OPTION_COLORS}


def stored_value(field: m.Field, record: m.Record) -> Any:
    if field.type == m.CREATED_TIME:
        return record.created_ms
    if field.type == m.MODIFIED_TIME:
        return record.modified_ms
    return record.cells.get(field.field_id)


def _attachment_wire(token: str, ctx: RenderContext) -> dict[str, Any] | None:
    media = ctx.media.get(token)
    if media is None:
        return None
    extra = quote(json.dumps({"bitablePerm": {"tableId": ctx.table_id, "rev": ctx.rev}}, separators=(",", ":")))
    base = f"{ctx.base_url}/open-apis/drive/v1/medias"
    return {
        "file_token": token,
        "name": media.name,
        "size": media.size,
        "type": media.mime,
        "url": f"{base}/{token}/download?extra={extra}",
        "tmp_url": f"{base}/batch_get_tmp_download_url?file_tokens={token}&extra={extra}",
    }


def render(field: m.Field, stored: Any, ctx: RenderContext) -> Any:
    if field.type == m.TEXT:
        return [{"type": "text", "text": stored}] if ctx.text_as_array else stored
    if field.type == m.ATTACHMENT:
        items = [_attachment_wire(t, ctx) for t in stored]
        return [i for i in items if i is not None]
    if isinstance(stored, (list, dict)):
        return json.loads(json.dumps(stored))  # callers must not alias our state
    return stored


def render_record(
    table: m.Table,
    record: m.Record,
    ctx: RenderContext,
    names: frozenset[str] | None = None,
    automatic: bool = False,
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in table.fields:
        if names is not None and field.name not in names:
            continue
        stored = stored_value(field, record)
        if stored is not None:
            fields[field.name] = render(field, stored, ctx)
    out: dict[str, Any] = {"record_id": record.record_id, "fields": fields}
    if automatic:
        out.update(
            created_by=dict(EMULATOR_PERSON),
            created_time=record.created_ms,
            last_modified_by=dict(EMULATOR_PERSON),
            last_modified_time=record.modified_ms,
        )
    return out
