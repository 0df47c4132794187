"""The tables one service serves. Without SHEETREEL_CONNECTIONS, the one table of the settings;
with it, each `[[table]]` of that TOML file (one per account or channel), each with its own column
names, default template and chat, over the settings every table shares (one Feishu app: its
FEISHU_APP_ID / FEISHU_APP_SECRET, added to each base).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from storage.errors import BadInput
from sync.columns import Columns
from sync.settings import Settings


class TableEntry(BaseModel):
    """One `[[table]]` of the connections file; what it leaves out comes from the settings."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key must not be silently ignored

    name: str = Field(min_length=1)
    app_token: str = Field(min_length=1)
    table_id: str = Field(min_length=1)
    default_template: str | None = None
    chat_id: str | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    sheet_url: str | None = None
    columns: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Connection:
    name: str
    settings: Settings  # the whole configuration, with this table's values in it

    @property
    def table_id(self) -> str:
        return self.settings.feishu_table_id


def load_connections(settings: Settings) -> list[Connection]:
    path = settings.connections_file
    if path is None:
        return [Connection(settings.feishu_table_id or "default", settings)]
    entries = read_entries(path)
    return [Connection(e.name, _apply(settings, e, path)) for e in entries]


def read_entries(path: Path) -> list[TableEntry]:
    where = f"SHEETREEL_CONNECTIONS ({path})"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BadInput(f"{where} cannot be read: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{where} is not valid TOML: {e}") from None
    unknown = set(raw) - {"table"}
    if unknown or not isinstance(raw.get("table"), list) or not raw["table"]:
        raise BadInput(f"{where} must hold one or more [[table]] sections (and nothing else)")
    entries = []
    for i, item in enumerate(raw["table"], start=1):
        try:
            entries.append(TableEntry.model_validate(item))
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise BadInput(f"{where}: table {i}: {field}: {first['msg']}") from None
    for key in ("name", "table_id"):
        seen = [getattr(e, key) for e in entries]
        if dupes := sorted({v for v in seen if seen.count(v) > 1}):
            raise BadInput(f"{where}: two tables with the {key} {', '.join(dupes)}")
    return entries


def _apply(settings: Settings, e: TableEntry, path: Path) -> Settings:
    try:
        columns = Columns.model_validate({**settings.columns.model_dump(), **e.columns})
    except ValidationError as err:
        first = err.errors()[0]
        raise BadInput(f"SHEETREEL_CONNECTIONS ({path}): table {e.name}: columns."
                       f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    update: dict[str, Any] = {"feishu_app_token": e.app_token, "feishu_table_id": e.table_id, "columns": columns,
                              "connections_file": None}
    optional = {"default_template": e.default_template, "feishu_chat_id": e.chat_id, "feishu_webhook_url": e.webhook_url,
                "feishu_webhook_secret": e.webhook_secret, "feishu_sheet_url": e.sheet_url}
    update |= {k: v for k, v in optional.items() if v is not None}
    return settings.model_copy(update=update)
