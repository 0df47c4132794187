"""Record operations shared by the HTTP handlers and the `Emulator` helpers.

Writes happen in two phases, validate everything then apply, so a batch with
one bad cell or one unknown record id changes nothing (as on Feishu).
Callers hold `State.lock` around both phases.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from . import model as m
from .errors import (
    BAD_PAGE_SIZE,
    GENERIC_FAIL,
    INVALID_FIELD_NAMES,
    INVALID_SORT,
    TOO_MANY_RECORDS,
    ApiError,
    bad_body,
    field_not_found,
    record_not_found,
)
from .filters import compile_filter, sort_records
from .ids import new_id
from .state import State
from .values import register_options, to_cell
from .wire import Request

Cells = dict[str, Any]  # field_id -> stored value, None meaning "clear"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 500


def prepare_cells(state: State, app_token: str, table: m.Table, fields_in: Any) -> Cells:
    """Validate a write-format `fields` object; raises before anything changes."""
    if not isinstance(fields_in, dict):
        raise bad_body("fields must be an object")
    ctx = state.write_ctx(app_token)
    cells: Cells = {}
    for name, value in fields_in.items():
        field = table.field_by_name(name)
        if field is None:
            raise field_not_found(name)
        cells[field.field_id] = to_cell(field, value, ctx)
    return cells


def _register(table: m.Table, cells: Cells) -> None:
    by_id = {f.field_id: f for f in table.fields}
    for field_id, stored in cells.items():
        register_options(by_id[field_id], stored)


def insert(state: State, table: m.Table, cells: Cells) -> m.Record:
    _register(table, cells)
    now = state.clock.tick()
    kept = {k: v for k, v in cells.items() if v is not None}
    record = m.Record(new_id("rec", 11), kept, now, now)
    table.records[record.record_id] = record
    table.rev += 1
    state.record_changed(table, record.record_id, "record_added", {}, kept)
    return record


def apply(state: State, table: m.Table, record: m.Record, cells: Cells) -> bool:
    """Merge cells into a record; only a real change bumps last_modified_time."""
    _register(table, cells)
    updated = dict(record.cells)
    for field_id, stored in cells.items():
        if stored is None:
            updated.pop(field_id, None)
        else:
            updated[field_id] = stored
    if updated == record.cells:
        return False
    changed = {k for k in updated.keys() | record.cells.keys() if updated.get(k) != record.cells.get(k)}
    before = {k: record.cells.get(k) for k in changed}
    record.cells = updated
    record.modified_ms = state.clock.tick()
    table.rev += 1
    state.record_changed(table, record.record_id, "record_edited", before, {k: updated.get(k) for k in changed})
    return True


def remove(state: State, table: m.Table, record_ids: list[str]) -> None:
    """Delete records that exist (callers check with `find` first)."""
    for record_id in record_ids:
        record = table.records.pop(record_id, None)
        if record is not None:
            state.record_changed(table, record_id, "record_deleted", record.cells, {})
    table.rev += 1


def find(table: m.Table, record_id: Any) -> m.Record:
    record = table.records.get(record_id) if isinstance(record_id, str) else None
    if record is None:
        raise record_not_found(str(record_id))
    return record


def check_batch(items: Any, limit: int, what: str) -> list[Any]:
    if not isinstance(items, list) or not items:
        raise bad_body(f"{what} must be a non-empty list")
    if len(items) > limit:
        raise ApiError(TOO_MANY_RECORDS, f"RecordAddOnceExceedLimit: at most {limit} {what} per call")
    return items


def query(state: State, table: m.Table, filter_spec: Any, sort_spec: Any) -> list[m.Record]:
    matches = compile_filter(filter_spec, table, state.clock.now_s())
    return sort_records([r for r in table.records.values() if matches(r)], sort_spec, table)


def field_names(table: m.Table, names: Any) -> frozenset[str] | None:
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ApiError(INVALID_FIELD_NAMES, "InvalidFieldNames: field_names must be a list of strings")
    for name in names:
        if table.field_by_name(name) is None:
            raise field_not_found(name)
    return frozenset(names)


# --- paging ----------------------------------------------------------------
def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"off:{offset}".encode()).decode().rstrip("=")


def _decode_offset(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if text.startswith("off:"):
            return max(int(text[4:]), 0)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(GENERIC_FAIL, f"invalid page_token {token!r}")


def page_params(req: Request, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> tuple[int, int]:
    raw = req.q("page_size")
    try:
        size = default if raw in (None, "") else int(raw)
    except ValueError:
        raise ApiError(BAD_PAGE_SIZE, "page_size must be an integer", 400) from None
    if size <= 0:
        raise ApiError(BAD_PAGE_SIZE, "page_size must be greater than 0", 400)
    token = req.q("page_token")
    return min(size, maximum), (_decode_offset(token) if token else 0)


def page_window(total: int, size: int, offset: int) -> tuple[slice, dict[str, Any]]:
    """The slice to render plus has_more/page_token/total (token only when more)."""
    end = offset + size
    meta: dict[str, Any] = {"has_more": end < total, "total": total}
    if end < total:
        meta["page_token"] = _encode_offset(end)
    return slice(offset, end), meta


def legacy_sort(raw: str | None) -> list[dict[str, Any]] | None:
    """The list endpoint's sort is a JSON-array string like '["Created DESC"]'."""
    if not raw:
        return None
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        raise ApiError(INVALID_SORT, "InvalidSort: sort must be a JSON array string") from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ApiError(INVALID_SORT, "InvalidSort: sort must be a JSON array of strings")
    out = []
    for item in items:
        name, _, direction = item.rpartition(" ")
        if direction.upper() in ("ASC", "DESC") and name:
            out.append({"field_name": name, "desc": direction.upper() == "DESC"})
        else:
            out.append({"field_name": item, "desc": False})
    return out
