"""HTTP handlers for Bitable tables, fields and records (FEISHU_API §2).

Each handler reads a `Request` whose path params were filled by the router and
returns the `data` object of the success envelope; errors are raised.
"""
from __future__ import annotations

import json
from typing import Any

from . import records as rec
from .errors import INVALID_FIELD_NAMES, INVALID_FILTER, ApiError, bad_body
from .model import Record, Table
from .state import State
from .values import render_record
from .wire import Request

WRONG_JSON = 1254000
BATCH_GET_LIMIT = 100
BATCH_DELETE_LIMIT = 500
FIELDS_PAGE_MAX = 100


def _body(req: Request) -> dict[str, Any]:
    body = req.json(WRONG_JSON)
    if not isinstance(body, dict):
        raise bad_body("body must be a JSON object")
    return body


def _table(state: State, req: Request) -> Table:
    return state.table(req.params["app_token"], req.params["table_id"])


def _render(
    state: State,
    req: Request,
    table: Table,
    records: list[Record],
    names: frozenset[str] | None = None,
    automatic: bool = False,
    text_as_array: bool = True,
) -> list[dict[str, Any]]:
    # Attachment URLs point at the Host the client used to reach us.
    ctx = state.render_ctx(table, req.base_url, text_as_array)
    return [render_record(table, r, ctx, names, automatic) for r in records]


def list_tables(state: State, req: Request) -> dict[str, Any]:
    size, offset = rec.page_params(req, maximum=FIELDS_PAGE_MAX)
    with state.lock:
        tables = list(state.app(req.params["app_token"]).tables.values())
        window, meta = rec.page_window(len(tables), size, offset)
        items = [{"table_id": t.table_id, "name": t.name, "revision": t.rev} for t in tables[window]]
    return {**meta, "items": items}


def list_fields(state: State, req: Request) -> dict[str, Any]:
    size, offset = rec.page_params(req, maximum=FIELDS_PAGE_MAX)
    with state.lock:
        fields = _table(state, req).fields
        window, meta = rec.page_window(len(fields), size, offset)
        items = [f.to_wire() for f in fields[window]]
    return {**meta, "items": items}


def create_field(state: State, req: Request) -> dict[str, Any]:
    body = _body(req)
    with state.lock:
        field = state.add_field(
            _table(state, req),
            body.get("field_name"),
            body.get("type"),
            body.get("property"),
            _description(body.get("description")),
            body.get("ui_type"),
        )
        return {"field": field.to_wire()}


def update_field(state: State, req: Request) -> dict[str, Any]:
    body = _body(req)
    with state.lock:
        field = state.update_field(_table(state, req), req.params["field_id"], body.get("field_name"), body.get("type"),
                                   body.get("property"))
        return {"field": field.to_wire()}


def _description(raw: Any) -> str:
    if isinstance(raw, dict):
        raw = raw.get("text")
    return raw if isinstance(raw, str) else ""


def search(state: State, req: Request) -> dict[str, Any]:
    size, offset = rec.page_params(req)
    body = _body(req)
    with state.lock:
        table = _table(state, req)
        names = rec.field_names(table, body.get("field_names"))
        rows = rec.query(state, table, body.get("filter"), body.get("sort"))
        window, meta = rec.page_window(len(rows), size, offset)
        items = _render(state, req, table, rows[window], names=names, automatic=bool(body.get("automatic_fields")))
    return {**meta, "items": items}


def _legacy_field_names(req: Request) -> Any:
    raw = req.q("field_names")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ApiError(INVALID_FIELD_NAMES, "InvalidFieldNames: field_names must be a JSON array string") from None


def list_records(state: State, req: Request) -> dict[str, Any]:
    size, offset = rec.page_params(req)
    if req.q("filter"):
        # Formula filters are a language of their own; the emulator supports search's filter only.
        raise ApiError(INVALID_FILTER, "InvalidFilter: formula filters are not emulated; use records/search")
    with state.lock:
        table = _table(state, req)
        names = rec.field_names(table, _legacy_field_names(req))
        rows = rec.query(state, table, None, rec.legacy_sort(req.q("sort")))
        window, meta = rec.page_window(len(rows), size, offset)
        items = _render(
            state, req, table, rows[window], names=names,
            automatic=req.q_bool("automatic_fields"), text_as_array=req.q_bool("text_field_as_array"),
        )
    return {**meta, "items": items}


def get_record(state: State, req: Request) -> dict[str, Any]:
    with state.lock:
        table = _table(state, req)
        record = rec.find(table, req.params["record_id"])
        [item] = _render(
            state, req, table, [record],
            automatic=req.q_bool("automatic_fields"), text_as_array=req.q_bool("text_field_as_array"),
        )
    return {"record": item}


def create_record(state: State, req: Request) -> dict[str, Any]:
    body = _body(req)
    with state.lock:
        table = _table(state, req)
        cells = rec.prepare_cells(state, req.params["app_token"], table, body.get("fields", {}))
        record = rec.insert(state, table, cells)
        state.on_change()
        [item] = _render(state, req, table, [record])
    return {"record": item}


def update_record(state: State, req: Request) -> dict[str, Any]:
    body = _body(req)
    with state.lock:
        table = _table(state, req)
        record = rec.find(table, req.params["record_id"])
        cells = rec.prepare_cells(state, req.params["app_token"], table, body.get("fields", {}))
        state.writes.append((record.record_id, body.get("fields", {})))
        if rec.apply(state, table, record, cells):
            state.on_change()
        [item] = _render(state, req, table, [record])
    return {"record": item}


def batch_create(state: State, req: Request) -> dict[str, Any]:
    items = rec.check_batch(_body(req).get("records"), state.batch_limit, "records")
    with state.lock:
        table = _table(state, req)
        prepared = [rec.prepare_cells(state, req.params["app_token"], table, _fields_of(i)) for i in items]
        created = [rec.insert(state, table, cells) for cells in prepared]
        state.on_change()
        return {"records": _render(state, req, table, created)}


def batch_update(state: State, req: Request) -> dict[str, Any]:
    items = rec.check_batch(_body(req).get("records"), state.batch_limit, "records")
    with state.lock:
        table = _table(state, req)
        targets = [rec.find(table, i.get("record_id") if isinstance(i, dict) else None) for i in items]
        prepared = [rec.prepare_cells(state, req.params["app_token"], table, _fields_of(i)) for i in items]
        state.writes.extend((r.record_id, _fields_of(i)) for r, i in zip(targets, items, strict=True))
        changed = [rec.apply(state, table, r, cells) for r, cells in zip(targets, prepared, strict=True)]
        if any(changed):
            state.on_change()
        return {"records": _render(state, req, table, targets)}


def _fields_of(item: Any) -> Any:
    if not isinstance(item, dict):
        raise bad_body("each record must be an object with fields")
    return item.get("fields", {})


def batch_get(state: State, req: Request) -> dict[str, Any]:
    body = _body(req)
    ids = rec.check_batch(body.get("record_ids"), BATCH_GET_LIMIT, "record_ids")
    with state.lock:
        table = _table(state, req)
        found = [table.records[i] for i in ids if isinstance(i, str) and i in table.records]
        absent = [i for i in ids if not (isinstance(i, str) and i in table.records)]
        items = _render(state, req, table, found, automatic=bool(body.get("automatic_fields")))
    return {"records": items, "forbidden_record_ids": [], "absent_record_ids": absent}


def batch_delete(state: State, req: Request) -> dict[str, Any]:
    ids = rec.check_batch(_body(req).get("records"), BATCH_DELETE_LIMIT, "records")
    with state.lock:
        table = _table(state, req)
        for record_id in ids:
            rec.find(table, record_id)
        rec.remove(state, table, ids)
        state.on_change()
    return {"records": [{"deleted": True, "record_id": i} for i in ids]}


def delete_record(state: State, req: Request) -> dict[str, Any]:
    with state.lock:
        table = _table(state, req)
        record = rec.find(table, req.params["record_id"])
        rec.remove(state, table, [record.record_id])
        state.on_change()
    return {"deleted": True, "record_id": record.record_id}
