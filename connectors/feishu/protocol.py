"""The Bitable boundary: what the rest of SheetReel may ask of a Feishu table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel


class FieldType:
    """Bitable field type numbers (FEISHU_API.md §2.3)."""

    text = 1
    number = 2
    single_select = 3
    multi_select = 4
    datetime = 5
    checkbox = 7
    url = 15
    attachment = 17
    created_time = 1001
    modified_time = 1002


class FieldInfo(BaseModel):
    field_id: str
    name: str
    type: int
    options: list[str] = []


class Record(BaseModel):
    record_id: str
    fields: dict[str, Any]
    last_modified_time: int | None = None


class BitableClient(Protocol):
    """One table of one base. Every method raises storage.errors types, never vendor errors."""

    app_token: str
    table_id: str

    def list_fields(self) -> list[FieldInfo]: ...

    def create_field(self, name: str, type: int, options: list[str] | None = None) -> FieldInfo: ...

    def set_options(self, field: FieldInfo, options: list[str]) -> FieldInfo: ...

    def search(
        self,
        filter: dict | None = None,
        sort: list[dict] | None = None,
        field_names: list[str] | None = None,
        page_size: int = 500,
    ) -> Iterator[Record]: ...

    def batch_create(self, rows: list[dict[str, Any]]) -> list[str]: ...

    def batch_update(self, updates: list[tuple[str, dict[str, Any]]]) -> None: ...

    def upload_attachment(self, path: Path, image: bool = False) -> str: ...

    def download_media(self, file_token: str) -> bytes: ...


class Card(BaseModel):
    """One chat announcement."""

    title: str
    markdown: str
    failed: bool = False
    image: Path | None = None  # shown at the top when the sender can upload it (the app bot)
    link: str = ""  # behind the card's button


class Messenger(Protocol):
    """Sends a chat message; `dedupe_key` makes a resend of the same event a no-op."""

    def send_card(self, card: Card, dedupe_key: str) -> None: ...


class RecordChange(BaseModel):
    """One row added, edited or deleted, as an event announced it (its values are not trusted or
    needed: the poll that follows reads the row)."""

    app_token: str
    table_id: str
    record_id: str
    action: str  # record_added | record_edited | record_deleted
    field_ids: frozenset[str] = frozenset()


class RecordEvents(Protocol):
    """Pushes record changes of some bases to `on_change` from a background thread until closed.
    Best effort: an event may be late, lost or repeated, so it only ever wakes a poll."""

    def subscribe(self) -> None:
        """Ask Feishu for the bases' record events (`start` does it too); raises when refused."""
        ...

    def start(self, on_change: Callable[[RecordChange], None]) -> None: ...

    def close(self) -> None: ...
