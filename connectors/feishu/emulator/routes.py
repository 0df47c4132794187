"""The route table: method + path template -> endpoint name, handler, policy.

`endpoint` is the name used by `Emulator.calls` and by `FaultPlan.endpoints`;
routes without one (emulator-only helpers) are neither counted nor faulted.
`table_write` marks the calls Feishu refuses to run concurrently on one table.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from . import auth, bitable, drive, messaging
from .state import State
from .wire import Reply, Request

Handler = Callable[[State, Request], Reply | Mapping[str, Any]]

_TABLES = "/open-apis/bitable/v1/apps/{app_token}/tables"
_TABLE = _TABLES + "/{table_id}"
_MEDIAS = "/open-apis/drive/v1/medias"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str | None
    handler: Handler
    auth: bool = True
    table_write: bool = False


def _route(method: str, template: str, endpoint: str | None, handler: Handler, **policy: bool) -> Route:
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"
    return Route(method, re.compile(regex), endpoint, handler, **policy)


def build_routes() -> list[Route]:
    """Order matters: fixed segments (records/search) come before {record_id}."""
    write = {"table_write": True}
    return [
        _route("POST", "/open-apis/auth/v3/tenant_access_token/internal", "token", auth.tenant_token, auth=False),
        _route("POST", "/open-apis/auth/v3/app_access_token/internal", "token", auth.app_token, auth=False),
        _route("GET", _TABLES, "tables.list", bitable.list_tables),
        _route("GET", _TABLE + "/fields", "fields.list", bitable.list_fields),
        _route("POST", _TABLE + "/fields", "fields.create", bitable.create_field, **write),
        _route("PUT", _TABLE + "/fields/{field_id}", "fields.update", bitable.update_field, **write),
        _route("POST", _TABLE + "/records/search", "records.search", bitable.search),
        _route("POST", _TABLE + "/records/batch_create", "records.batch_create", bitable.batch_create, **write),
        _route("POST", _TABLE + "/records/batch_update", "records.batch_update", bitable.batch_update, **write),
        _route("POST", _TABLE + "/records/batch_get", "records.batch_get", bitable.batch_get),
        _route("POST", _TABLE + "/records/batch_delete", "records.batch_delete", bitable.batch_delete, **write),
        _route("GET", _TABLE + "/records", "records.list", bitable.list_records),
        _route("POST", _TABLE + "/records", "records.create", bitable.create_record, **write),
        _route("GET", _TABLE + "/records/{record_id}", "records.get", bitable.get_record),
        _route("PUT", _TABLE + "/records/{record_id}", "records.update", bitable.update_record, **write),
        _route("DELETE", _TABLE + "/records/{record_id}", "records.delete", bitable.delete_record, **write),
        _route("POST", _MEDIAS + "/upload_all", "media.upload_all", drive.upload_all),
        _route("POST", _MEDIAS + "/upload_prepare", "media.upload_prepare", drive.upload_prepare),
        _route("POST", _MEDIAS + "/upload_part", "media.upload_part", drive.upload_part),
        _route("POST", _MEDIAS + "/upload_finish", "media.upload_finish", drive.upload_finish),
        _route("GET", _MEDIAS + "/batch_get_tmp_download_url", "media.tmp_url", drive.tmp_urls),
        _route("GET", _MEDIAS + "/{file_token}/download", "media.download", drive.download),
        _route("POST", "/open-apis/drive/v1/files/{file_token}/subscribe", "drive.file.subscribe", drive.subscribe),
        _route("POST", "/callback/ws/endpoint", "ws.endpoint", lambda state, req: state.events.endpoint(req),
               auth=False),
        _route("POST", "/open-apis/im/v1/messages", "im.message.create", messaging.create_message),
        _route("POST", "/open-apis/im/v1/images", "im.image.create", messaging.upload_image),
        _route("POST", "/open-apis/bot/v2/hook/{hook_id}", "bot.webhook", messaging.webhook, auth=False),
        _route("GET", drive.TMP_ROUTE + "{file_token}", None, drive.tmp_download, auth=False),
    ]


def match(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        found = route.pattern.match(path)
        if found and route.method == method:
            # The SDK URL-quotes path params (quote(v, safe="")).
            return route, {k: unquote(v) for k, v in found.groupdict().items()}
    return None
