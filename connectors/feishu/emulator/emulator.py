"""`Emulator`: the public face: a server thread plus helpers that act like a user
in the Feishu UI (seeding rows, editing cells) and let tests look inside.
"""
from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import records as rec
from .blobs import BlobStore, DirBlobs, MemoryBlobs
from .errors import DRIVE_PARENT_MISSING, ApiError
from .events import EventHub
from .faults import FaultPlan
from .ids import MsClock
from .model import Table
from .persist import StateWriter, load_state, media_dir_for
from .server import Dispatcher, EmulatorHTTPServer
from .state import FieldSpec, State
from .values import render_record

_UNSTARTED_URL = "http://127.0.0.1"  # used for attachment URLs before start()


class Emulator:
    """One fake Feishu tenant: a single self-built app (app_id/app_secret) and its bases.

    `state_path` makes it durable (JSON file + `<stem>_media/`); `block_size` is what
    upload_prepare hands out; `batch_limit` caps batch_create/batch_update.
    """

    def __init__(
        self,
        app_id: str = "cli_demo",
        app_secret: str = "demo-secret",
        state_path: Path | str | None = None,
        block_size: int = 4 * 1024 * 1024,
        batch_limit: int = 1000,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state_path = Path(state_path) if state_path is not None else None
        blobs: BlobStore = DirBlobs(media_dir_for(self._state_path)) if self._state_path else MemoryBlobs()
        self._state = State(app_id, app_secret, MsClock(clock), blobs, block_size, batch_limit)
        self._writer: StateWriter | None = None
        if self._state_path is not None:
            saved = load_state(self._state_path)
            if saved is not None:
                self._state.restore(saved)
            self._writer = StateWriter(self._state_path, self._state.snapshot)
            self._state.on_change = self._writer.mark_dirty
        self._dispatcher = Dispatcher(self._state)
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url = ""

    # --- lifecycle -----------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            return self._url
        self._server = EmulatorHTTPServer((host, port), self._dispatcher)
        bound_host, bound_port = self._server.server_address[:2]
        host_text = str(bound_host)
        shown = f"[{host_text}]" if ":" in host_text else host_text
        self._url = f"http://{shown}:{bound_port}"
        self._state.public_url = self._url
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="feishu-emulator", daemon=True
        )
        self._thread.start()
        return self._url

    def stop(self) -> None:
        self._state.events.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None
        self.save()

    def save(self) -> None:
        """Write pending state now (stop() does this too)."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._url

    @property
    def events(self) -> EventHub:
        """The long-connection side: subscriptions, connected clients, the acks they sent."""
        return self._state.events

    # --- seeding and UI-like edits ------------------------------------------------
    def create_app(self, name: str = "SheetReel demo", app_token: str | None = None,
                   advanced_permissions: bool = False) -> str:
        return self._state.create_app(name, app_token, advanced_permissions)

    def create_table(self, app_token: str, name: str, fields: Sequence[FieldSpec] = ()) -> str:
        return self._state.create_table(app_token, name, fields)

    def find_table(self, app_token: str, name: str) -> str | None:
        """The id of the first table called `name`, for find-or-create seeding."""
        with self._state.lock:
            tables = self._state.app(app_token).tables.values()
            return next((t.table_id for t in tables if t.name == name), None)

    def add_field(
        self, app_token: str, table_id: str, name: str, field_type: int, prop: dict[str, Any] | None = None
    ) -> str:
        with self._state.lock:
            return self._state.add_field(self._state.table(app_token, table_id), name, field_type, prop).field_id

    def add_records(self, app_token: str, table_id: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        state = self._state
        with state.lock:
            table = state.table(app_token, table_id)
            prepared = [rec.prepare_cells(state, app_token, table, dict(row)) for row in rows]
            ids = [rec.insert(state, table, cells).record_id for cells in prepared]
            state.on_change()
            return ids

    def set_cells(self, app_token: str, table_id: str, record_id: str, values: Mapping[str, Any]) -> None:
        state = self._state
        with state.lock:
            table = state.table(app_token, table_id)
            record = rec.find(table, record_id)
            if rec.apply(state, table, record, rec.prepare_cells(state, app_token, table, dict(values))):
                state.on_change()

    def delete_record(self, app_token: str, table_id: str, record_id: str) -> None:
        with self._state.lock:
            table = self._state.table(app_token, table_id)
            rec.remove(self._state, table, [rec.find(table, record_id).record_id])
            self._state.on_change()

    def upload_media(self, app_token: str, name: str, data: bytes, mime: str | None = None) -> str:
        if app_token not in self._state.apps:
            raise ApiError(DRIVE_PARENT_MISSING, f"parent node not exist: {app_token}", 400)
        return self._state.add_media(name, data, mime, "bitable_file", app_token).file_token

    # --- inspection ------------------------------------------------------------
    def _read(self, table: Table, record_id: str) -> dict[str, Any]:
        ctx = self._state.render_ctx(table, self._url or _UNSTARTED_URL)
        record = rec.find(table, record_id)
        out = render_record(table, record, ctx)
        out.update(created_time=record.created_ms, last_modified_time=record.modified_ms)
        return out

    def get_record(self, app_token: str, table_id: str, record_id: str) -> dict[str, Any]:
        with self._state.lock:
            return self._read(self._state.table(app_token, table_id), record_id)

    def records(self, app_token: str, table_id: str) -> list[dict[str, Any]]:
        with self._state.lock:
            table = self._state.table(app_token, table_id)
            return [self._read(table, record_id) for record_id in table.records]

    def media_bytes(self, file_token: str) -> bytes:
        return self._state.media_bytes(file_token)[1]

    def image_bytes(self, image_key: str) -> bytes:
        """An image uploaded for messages (`POST /im/v1/images`), as a chat member would see it."""
        data = self._state.blobs.get(image_key) if image_key in self._state.images else None
        if data is None:
            raise KeyError(image_key)
        return data

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return copy.deepcopy(self._state.messages)

    @property
    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        """Every record update received, in order: (record id, the fields as sent)."""
        with self._state.lock:
            return copy.deepcopy(self._state.writes)

    def add_webhook(self, hook_id: str, secret: str | None = None) -> None:
        with self._state.lock:
            self._state.hooks[hook_id] = secret
            self._state.on_change()

    # --- calls and faults ---------------------------------------------------------
    @property
    def calls(self) -> Counter[str]:
        return self._dispatcher.calls()

    def reset_calls(self) -> None:
        self._dispatcher.reset_calls()

    @property
    def faults(self) -> FaultPlan:
        return self._dispatcher.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self._dispatcher.faults = plan

    @property
    def faults_injected(self) -> Counter[str]:
        return self._dispatcher.faults_injected()
