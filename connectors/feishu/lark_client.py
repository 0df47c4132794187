"""BitableClient over the official lark-oapi SDK. The only module that imports lark_oapi for tables."""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lark_oapi as lark
from lark_oapi.api.bitable.v1 import (
    AppTableField,
    AppTableRecord,
    BatchCreateAppTableRecordRequest,
    BatchCreateAppTableRecordRequestBody,
    CreateAppTableFieldRequest,
    ListAppTableFieldRequest,
    SearchAppTableRecordRequest,
    SearchAppTableRecordRequestBody,
    UpdateAppTableFieldRequest,
)
from lark_oapi.api.drive.v1 import (
    DownloadMediaRequest,
    MediaUploadInfo,
    UploadAllMediaRequest,
    UploadAllMediaRequestBody,
    UploadFinishMediaRequest,
    UploadFinishMediaRequestBody,
    UploadPartMediaRequest,
    UploadPartMediaRequestBody,
    UploadPrepareMediaRequest,
)
from lark_oapi.core.token.manager import TokenManager

from connectors import deadline
from connectors.feishu import errors
from connectors.feishu.protocol import FieldInfo, Record
from storage.errors import Unavailable

T = TypeVar("T")

SINGLE_UPLOAD_LIMIT = 20 * 1024 * 1024  # upload_all refuses more (1061043); larger files go in parts


def make_lark_client(app_id: str, app_secret: str, base_url: str, timeout: float = 30) -> lark.Client:
    return (
        lark.Client.builder()
        .app_id(app_id)
        .app_secret(app_secret)
        .domain(base_url.rstrip("/"))
        .timeout(timeout)
        .log_level(lark.LogLevel.ERROR)
        .build()
    )


class LarkBitable:
    def __init__(self, client: lark.Client, app_token: str, table_id: str, chunk_threshold: int = SINGLE_UPLOAD_LIMIT,
                 deadline_seconds: float = 300, observe: Callable[[str, str], None] | None = None):
        self.client = client
        # Told of every call: (what, "ok" or the error's Feishu code / kind), for the metrics.
        self.observe = observe
        self.app_token = app_token
        self.table_id = table_id
        self.chunk_threshold = chunk_threshold
        # The SDK bounds each read only; a whole call (an upload of a 20 MB part included) ends within this.
        self.deadline_seconds = deadline_seconds

    # -- the one place vendor failures are translated ------------------------------------------

    def _call(self, what: str, send: Callable[[], T]) -> T:
        """`what` names the call in error messages ("upload final.mp4"); the metrics count it by
        its kind alone ("upload"), so file names and tokens never become label values."""

        def late() -> Exception:
            return Unavailable(f"飞书在 {self.deadline_seconds:g} 秒内没有答完，稍后自动重试 ({what})")

        return errors.observed(self.observe, call_kind(what), lambda: errors.call(
            what, lambda: deadline.within(self.deadline_seconds, send, late), on_token_invalid=self._forget_token))

    def _forget_token(self) -> None:
        # The SDK never refreshes a token the server rejected (FEISHU_API.md §1.3); drop it so the
        # next call fetches a fresh one.
        cache = getattr(TokenManager.cache, "cache", None)
        if isinstance(cache, dict):
            cache.pop(f"self_tenant_token:{self.client._config.app_id}", None)

    # -- fields ----------------------------------------------------------------------------------

    def list_fields(self) -> list[FieldInfo]:
        return [_field_info(f) for f in self._fields()]

    def _fields(self) -> list[Any]:
        out, page_token = [], None
        while True:
            b = ListAppTableFieldRequest.builder().app_token(self.app_token).table_id(self.table_id).page_size(100)
            if page_token:
                b = b.page_token(page_token)
            data = self._call("list fields", lambda: self.client.bitable.v1.app_table_field.list(b.build())).data
            out += data.items or []
            if not data.has_more:
                return out
            page_token = data.page_token

    def create_field(self, name: str, type: int, options: list[str] | None = None) -> FieldInfo:
        spec: dict[str, Any] = {"field_name": name, "type": type}
        if options:
            spec["property"] = {"options": [{"name": o} for o in options]}
        req = (
            CreateAppTableFieldRequest.builder()
            .app_token(self.app_token)
            .table_id(self.table_id)
            .request_body(AppTableField(spec))
            .build()
        )
        resp = self._call(f"create field {name}", lambda: self.client.bitable.v1.app_table_field.create(req))
        return _field_info(resp.data.field)

    def set_options(self, field: FieldInfo, options: list[str]) -> FieldInfo:
        """A select field's options, replaced (Feishu clears the cells of an option left out). Kept
        options go back with their ids and colours, so the cells that use them stay as they are."""
        current = {o.name: o for f in self._fields() if f.field_id == field.field_id
                   for o in ((f.property.options if f.property else None) or [])}
        sent = [{"name": n, **({"id": current[n].id, "color": current[n].color} if n in current else {})}
                for n in options]
        spec = {"field_name": field.name, "type": field.type, "property": {"options": sent}}
        req = (
            UpdateAppTableFieldRequest.builder()
            .app_token(self.app_token)
            .table_id(self.table_id)
            .field_id(field.field_id)
            .request_body(AppTableField(spec))
            .build()
        )
        resp = self._call(f"update field {field.name}", lambda: self.client.bitable.v1.app_table_field.update(req))
        return _field_info(resp.data.field)

    # -- records ---------------------------------------------------------------------------------

    def search(
        self,
        filter: dict | None = None,
        sort: list[dict] | None = None,
        field_names: list[str] | None = None,
        page_size: int = 500,
    ) -> Iterator[Record]:
        body: dict[str, Any] = {"automatic_fields": True}
        if filter:
            body["filter"] = filter
        if sort:
            body["sort"] = sort
        if field_names:
            body["field_names"] = field_names
        page_token = None
        while True:
            b = (
                SearchAppTableRecordRequest.builder()
                .app_token(self.app_token)
                .table_id(self.table_id)
                .page_size(page_size)
                .request_body(SearchAppTableRecordRequestBody(body))
            )
            if page_token:
                b = b.page_token(page_token)
            req = b.build()
            data = self._call("search records", lambda: self.client.bitable.v1.app_table_record.search(req)).data
            for item in data.items or []:
                yield Record(record_id=item.record_id, fields=item.fields or {}, last_modified_time=item.last_modified_time)
            if not data.has_more:
                return
            page_token = data.page_token

    def batch_create(self, rows: list[dict[str, Any]]) -> list[str]:
        records = [AppTableRecord.builder().fields(r).build() for r in rows]
        req = (
            BatchCreateAppTableRecordRequest.builder()
            .app_token(self.app_token)
            .table_id(self.table_id)
            .request_body(BatchCreateAppTableRecordRequestBody.builder().records(records).build())
            .build()
        )
        resp = self._call("create records", lambda: self.client.bitable.v1.app_table_record.batch_create(req))
        return [r.record_id for r in resp.data.records or []]

    def batch_update(self, updates: list[tuple[str, dict[str, Any]]]) -> None:
        # A raw request, because the typed models strip None and a cell is cleared only by a real
        # JSON null (FEISHU_API.md §2.6).
        body = {"records": [{"record_id": rid, "fields": fields} for rid, fields in updates]}
        req = (
            lark.BaseRequest.builder()
            .http_method(lark.HttpMethod.POST)
            .uri("/open-apis/bitable/v1/apps/:app_token/tables/:table_id/records/batch_update")
            .paths({"app_token": self.app_token, "table_id": self.table_id})
            .token_types({lark.AccessTokenType.TENANT})
            .headers({"Content-Type": "application/json; charset=utf-8"})
            .body(body)
            .build()
        )
        self._call(f"update records ({len(updates)})", lambda: _parsed(self.client.request(req)))

    # -- attachments -----------------------------------------------------------------------------

    def upload_attachment(self, path: Path, image: bool = False) -> str:
        path = Path(path)
        size = path.stat().st_size
        parent_type = "bitable_image" if image else "bitable_file"
        if size > self.chunk_threshold:
            return self._upload_in_parts(path, size, parent_type)
        data = path.read_bytes()
        body = (
            UploadAllMediaRequestBody.builder()
            .file_name(path.name)
            .parent_type(parent_type)
            .parent_node(self.app_token)
            .size(size)
            .checksum(str(zlib.adler32(data)))
            .file(io.BytesIO(data))
            .build()
        )
        req = UploadAllMediaRequest.builder().request_body(body).build()
        return self._call(f"upload {path.name}", lambda: self.client.drive.v1.media.upload_all(req)).data.file_token

    def _upload_in_parts(self, path: Path, size: int, parent_type: str) -> str:
        info = MediaUploadInfo.builder().file_name(path.name).parent_type(parent_type).parent_node(self.app_token).size(size).build()
        prep_req = UploadPrepareMediaRequest.builder().request_body(info).build()
        prep = self._call(f"prepare upload {path.name}", lambda: self.client.drive.v1.media.upload_prepare(prep_req)).data
        with path.open("rb") as f:
            for seq in range(prep.block_num):
                block = f.read(prep.block_size)
                part = (
                    UploadPartMediaRequestBody.builder()
                    .upload_id(prep.upload_id)
                    .seq(seq)
                    .size(len(block))
                    .checksum(str(zlib.adler32(block)))
                    .file(io.BytesIO(block))
                    .build()
                )
                part_req = UploadPartMediaRequest.builder().request_body(part).build()
                self._call(f"upload part {seq} of {path.name}", lambda: self.client.drive.v1.media.upload_part(part_req))
        fin = UploadFinishMediaRequestBody.builder().upload_id(prep.upload_id).block_num(prep.block_num).build()
        fin_req = UploadFinishMediaRequest.builder().request_body(fin).build()
        return self._call(f"finish upload {path.name}", lambda: self.client.drive.v1.media.upload_finish(fin_req)).data.file_token

    def download_media(self, file_token: str) -> bytes:
        # Bases with advanced permissions serve an attachment only to a download that names its
        # table; elsewhere the extra is ignored.
        extra = json.dumps({"bitablePerm": {"tableId": self.table_id}}, separators=(",", ":"))
        req = DownloadMediaRequest.builder().file_token(file_token).extra(extra).build()
        resp = self._call(f"download {file_token}", lambda: self.client.drive.v1.media.download(req))
        return resp.file.read()


# The fixed words each call's text starts with; what follows them varies (names, tokens, counts).
CALL_KINDS = ("list fields", "create field", "update field", "search records", "create records", "update records",
              "prepare upload", "upload part", "finish upload", "upload", "download")


def call_kind(what: str) -> str:
    return next((kind for kind in CALL_KINDS if what == kind or what.startswith(kind + " ")), "other")


def _field_info(f: Any) -> FieldInfo:
    options = [o.name for o in (f.property.options or [])] if f.property and f.property.options else []
    return FieldInfo(field_id=f.field_id, name=f.field_name, type=f.type, options=options)


def _parsed(resp: lark.BaseResponse) -> lark.BaseResponse:
    """Raw responses only parse JSON for JSON content types; a 5xx HTML page must not look like success."""
    status = resp.raw.status_code if resp.raw else 0
    if status >= 500 or (status >= 400 and resp.code is None):
        raise json.JSONDecodeError(f"HTTP {status} without a JSON body", "", 0)
    return resp
