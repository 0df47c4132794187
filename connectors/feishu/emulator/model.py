"""The in-memory shape of a base: apps, tables, fields, records, media.

Cells are keyed by field_id (as Feishu stores them) and hold a compact
"stored" value; `values.py` converts between wire formats and stored values.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

TEXT = 1
NUMBER = 2
SINGLE_SELECT = 3
MULTI_SELECT = 4
DATETIME = 5
CHECKBOX = 7
URL = 15
ATTACHMENT = 17
CREATED_TIME = 1001
MODIFIED_TIME = 1002

UI_TYPES: dict[int, str] = {
    TEXT: "Text",
    NUMBER: "Number",
    SINGLE_SELECT: "SingleSelect",
    MULTI_SELECT: "MultiSelect",
    DATETIME: "DateTime",
    CHECKBOX: "Checkbox",
    URL: "Url",
    ATTACHMENT: "Attachment",
    CREATED_TIME: "CreatedTime",
    MODIFIED_TIME: "ModifiedTime",
}
COMPUTED_TYPES = frozenset({CREATED_TIME, MODIFIED_TIME})
DATE_TYPES = frozenset({DATETIME, CREATED_TIME, MODIFIED_TIME})
SELECT_TYPES = frozenset({SINGLE_SELECT, MULTI_SELECT})


@dataclass
class Field:
    field_id: str
    name: str
    type: int
    ui_type: str
    is_primary: bool = False
    property: dict[str, Any] | None = None
    description: str = ""

    def option_names(self) -> list[str]:
        return [o["name"] for o in (self.property or {}).get("options", [])]

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "field_id": self.field_id,
            "field_name": self.name,
            "type": self.type,
            "ui_type": self.ui_type,
            "is_primary": self.is_primary,
            "is_hidden": False,
            "property": copy.deepcopy(self.property),  # serialised after the lock is released
        }
        if self.description:
            # An object, not a string: the SDK's AppTableField model cannot parse a bare string.
            out["description"] = {"disable_sync": True, "text": self.description}
        return out


@dataclass
class Record:
    record_id: str
    cells: dict[str, Any]
    created_ms: int
    modified_ms: int


@dataclass
class Table:
    table_id: str
    name: str
    fields: list[Field] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)
    rev: int = 1

    def field_by_name(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "table_id": self.table_id,
            "name": self.name,
            "rev": self.rev,
            "fields": [asdict(f) for f in self.fields],
            "records": [asdict(r) for r in self.records.values()],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Table:
        records = [Record(**r) for r in raw["records"]]
        return cls(
            table_id=raw["table_id"],
            name=raw["name"],
            rev=raw.get("rev", 1),
            fields=[Field(**f) for f in raw["fields"]],
            records={r.record_id: r for r in records},
        )


@dataclass
class App:
    app_token: str
    name: str
    tables: dict[str, Table] = field(default_factory=dict)
    # 高级权限: attachment downloads must name the table they come from (`extra` bitablePerm).
    advanced_permissions: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "app_token": self.app_token,
            "name": self.name,
            "tables": [t.to_json() for t in self.tables.values()],
            "advanced_permissions": self.advanced_permissions,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> App:
        tables = [Table.from_json(t) for t in raw["tables"]]
        return cls(raw["app_token"], raw["name"], {t.table_id: t for t in tables},
                   bool(raw.get("advanced_permissions", False)))


@dataclass
class Media:
    file_token: str
    name: str
    size: int
    mime: str
    parent_type: str
    parent_node: str
    created_ms: int


@dataclass
class UploadSession:
    """A chunked upload between upload_prepare and upload_finish (not persisted)."""

    upload_id: str
    file_name: str
    parent_type: str
    parent_node: str
    size: int
    block_num: int
    parts: dict[int, bytes] = field(default_factory=dict)
