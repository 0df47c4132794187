"""The emulator's whole world behind one lock: bases, media, messages, hooks.

Every handler and every `Emulator` helper takes `State.lock` for the duration of
one logical operation, which is what makes a batch write all-or-nothing and a
search a consistent snapshot. `on_change` is called after each mutation so the
owner can persist (or not) without this module knowing about files.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import mimetypes
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import model as m
from .blobs import BlobStore
from .errors import BASE_NOT_FOUND, DRIVE_PARAMS, FIELD_ID_NOT_FOUND, FIELD_NAME_DUPLICATED, TABLE_NOT_FOUND, ApiError, bad_body
from .events import EventHub
from .ids import MsClock, new_id
from .values import RenderContext, WriteContext, new_option, render

FieldSpec = tuple[str, int] | tuple[str, int, dict[str, Any] | None]
DEFAULT_MIME = "application/octet-stream"


def _default_property(field_type: int) -> dict[str, Any] | None:
    if field_type == m.NUMBER:
        return {"formatter": "0"}
    if field_type in m.DATE_TYPES:
        return {"date_formatter": "yyyy/MM/dd", "auto_fill": False}
    if field_type in m.SELECT_TYPES:
        return {"options": []}
    return None


def _normalise_property(field_type: int, given: Any) -> dict[str, Any] | None:
    if given is None:
        return _default_property(field_type)
    if not isinstance(given, dict):
        raise bad_body("property must be an object")
    prop = copy.deepcopy(given)
    if field_type in m.SELECT_TYPES:
        # Clients may send bare {"name"} options; Feishu fills id and color in.
        options = prop.get("options") or []
        if not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in options):
            raise bad_body("select options need a name")
        prop["options"] = [{**new_option(o["name"], i), **o} for i, o in enumerate(options)]
    return prop


class State:
    def __init__(
        self,
        app_id: str,
        app_secret: str,
        clock: MsClock,
        blobs: BlobStore,
        block_size: int,
        batch_limit: int,
    ) -> None:
        self.lock = threading.RLock()
        self.app_id = app_id
        self.app_secret = app_secret
        self.clock = clock
        self.blobs = blobs
        self.block_size = block_size
        self.batch_limit = batch_limit
        self.apps: dict[str, m.App] = {}
        self.media: dict[str, m.Media] = {}
        self.uploads: dict[str, m.UploadSession] = {}
        self.messages: list[dict[str, Any]] = []
        self.images: dict[str, int] = {}  # IM image key -> size; the bytes live in `blobs`
        # Every record update as the client sent it (record id, fields), for checks that a row was
        # written once per change; kept in memory only, not in the saved state.
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.hooks: dict[str, str | None] = {}
        self.on_change: Callable[[], None] = lambda: None
        self.events = EventHub(app_id, app_secret)
        self.public_url = "http://127.0.0.1"  # attachment URLs inside pushed events
        # Tokens derive from the credentials, so a restarted emulator accepts the
        # token the SDK cached from the previous run (it never refreshes on 99991663).
        self._key = hashlib.sha256(f"{app_id}\n{app_secret}".encode()).digest()

    # --- credentials -------------------------------------------------------
    def _mac(self, purpose: str) -> str:
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).hexdigest()

    def tenant_token(self) -> str:
        return "t-" + self._mac("tenant")[:40]

    def app_access_token(self) -> str:
        return "a-" + self._mac("app")[:40]

    def token_valid(self, token: str) -> bool:
        return any(hmac.compare_digest(token, t) for t in (self.tenant_token(), self.app_access_token()))

    def sign(self, value: str) -> str:
        return self._mac("tmp:" + value)[:32]

    # --- bases ---------------------------------------------------------------
    def create_app(self, name: str, app_token: str | None = None, advanced_permissions: bool = False) -> str:
        """Idempotent for a given token, so a demo can re-seed a persisted state."""
        with self.lock:
            token = app_token or new_id("bascn", 22)
            if token in self.apps:
                return token
            self.apps[token] = m.App(token, name, advanced_permissions=advanced_permissions)
            self.on_change()
            return token

    def app(self, app_token: str) -> m.App:
        app = self.apps.get(app_token)
        if app is None:
            raise ApiError(BASE_NOT_FOUND, f"BaseTokenNotFound: {app_token}")
        return app

    def table(self, app_token: str, table_id: str) -> m.Table:
        table = self.app(app_token).tables.get(table_id)
        if table is None:
            raise ApiError(TABLE_NOT_FOUND, f"TableIdNotFound: {table_id}")
        return table

    def create_table(self, app_token: str, name: str, fields: Sequence[FieldSpec]) -> str:
        with self.lock:
            app = self.app(app_token)
            table = m.Table(new_id("tbl", 13), name)
            for spec in fields or [("多行文本", m.TEXT)]:
                prop = spec[2] if len(spec) > 2 else None
                self.add_field(table, spec[0], spec[1], prop)
            app.tables[table.table_id] = table
            self.on_change()
            return table.table_id

    def add_field(
        self,
        table: m.Table,
        name: Any,
        field_type: Any,
        prop: Any = None,
        description: str = "",
        ui_type: str | None = None,
    ) -> m.Field:
        if not isinstance(name, str) or not name.strip():
            raise bad_body("field_name is required")
        if isinstance(field_type, bool) or field_type not in m.UI_TYPES:
            raise bad_body(f"field type {field_type!r} is not supported by the emulator")
        if table.field_by_name(name) is not None:
            raise ApiError(FIELD_NAME_DUPLICATED, f"FieldNameDuplicated: {name}")
        field = m.Field(
            field_id=new_id("fld", 10),
            name=name,
            type=int(field_type),  # callers may pass an IntEnum
            ui_type=ui_type or m.UI_TYPES[field_type],
            is_primary=not table.fields,
            property=_normalise_property(field_type, prop),
            description=description or "",
        )
        table.fields.append(field)
        table.rev += 1
        self.on_change()
        return field

    def update_field(self, table: m.Table, field_id: str, name: Any, field_type: Any, prop: Any = None) -> m.Field:
        """PUT a field: its name and property replaced; select options named as before keep their ids."""
        field = next((f for f in table.fields if f.field_id == field_id), None)
        if field is None:
            raise ApiError(FIELD_ID_NOT_FOUND, f"FieldIdNotFound: {field_id}", 404)
        if not isinstance(name, str) or not name.strip():
            raise bad_body("field_name is required")
        if field_type != field.type:
            raise bad_body("changing a field's type is not supported by the emulator")
        other = table.field_by_name(name)
        if other is not None and other is not field:
            raise ApiError(FIELD_NAME_DUPLICATED, f"FieldNameDuplicated: {name}")
        if field_type in m.SELECT_TYPES and isinstance(prop, dict):
            known = {o["name"]: o for o in (field.property or {}).get("options", [])}
            prop = {**prop, "options": [{**known.get(o.get("name"), {}), **o} if isinstance(o, dict) else o
                                        for o in prop.get("options") or []]}
        field.name, field.property = name, _normalise_property(field.type, prop)
        table.rev += 1
        self.on_change()
        return field

    def record_changed(self, table: m.Table, record_id: str, action: str, before: dict[str, Any],
                       after: dict[str, Any]) -> None:
        """Tell the event hub (§6.3: values keyed by field id, each a JSON string of the read value)."""
        app_token = next((a.app_token for a in self.apps.values() if a.tables.get(table.table_id) is table), None)
        if app_token is None or not self.events.subscribed(app_token):
            return  # every write comes through here: render nothing nobody asked for
        ctx = self.render_ctx(table, self.public_url)
        by_id = {f.field_id: f for f in table.fields}

        def values(cells: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"field_id": fid, "field_value": json.dumps(render(by_id[fid], v, ctx), ensure_ascii=False)}
                    for fid, v in cells.items() if fid in by_id and v is not None]

        action_item = {"record_id": record_id, "action": action, "before_value": values(before),
                       "after_value": values(after)}
        self.events.record_changed(app_token, table.table_id, table.rev, [action_item])

    # --- media ---------------------------------------------------------------
    def add_media(self, name: str, data: bytes, mime: str | None, parent_type: str, parent_node: str) -> m.Media:
        token = new_id("boxcn", 22)
        guessed = mimetypes.guess_type(name)[0]
        mime = mime or guessed or DEFAULT_MIME
        media = m.Media(token, name, len(data), mime, parent_type, parent_node, self.clock.tick())
        self.blobs.put(token, data)  # bytes first: metadata must never point at nothing
        with self.lock:
            self.media[token] = media
            self.on_change()
        return media

    def media_bytes(self, token: str) -> tuple[m.Media, bytes]:
        with self.lock:
            media = self.media.get(token)
        data = self.blobs.get(token) if media else None
        if media is None or data is None:
            raise ApiError(DRIVE_PARAMS, f"file {token} not found", 404)
        return media, data

    def add_image(self, data: bytes) -> str:
        key = "img_v3_" + new_id("", 26)
        self.blobs.put(key, data)
        with self.lock:
            self.images[key] = len(data)
            self.on_change()
        return key

    # --- contexts ------------------------------------------------------------
    def write_ctx(self, app_token: str) -> WriteContext:
        return WriteContext(app_token, self.media)

    def render_ctx(self, table: m.Table, base_url: str, text_as_array: bool = True) -> RenderContext:
        return RenderContext(base_url, table.table_id, table.rev, self.media, text_as_array)

    # --- persistence ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "clock_ms": self.clock.last,
                "apps": [a.to_json() for a in self.apps.values()],
                "media": [vars(md).copy() for md in self.media.values()],
                "messages": copy.deepcopy(self.messages),
                "hooks": dict(self.hooks),
                "images": dict(self.images),
            }

    def restore(self, raw: dict[str, Any]) -> None:
        with self.lock:
            self.apps = {a["app_token"]: m.App.from_json(a) for a in raw.get("apps", [])}
            self.media = {md["file_token"]: m.Media(**md) for md in raw.get("media", [])}
            self.messages = list(raw.get("messages", []))
            self.hooks = dict(raw.get("hooks", {}))
            self.images = dict(raw.get("images", {}))
            self.clock.advance_floor(int(raw.get("clock_ms", 0)))
