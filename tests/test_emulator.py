"""The Feishu emulator, driven through the real lark-oapi SDK wherever the SDK has a call.

Fidelity matters more than coverage of emulator internals: each test asks
"would the production SDK see what Feishu sends?".
"""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lark_oapi as lark
import pytest
from lark_oapi.api.bitable.v1 import (
    AppTableField,
    AppTableFieldProperty,
    AppTableFieldPropertyOption,
    AppTableRecord,
    BatchCreateAppTableRecordRequest,
    BatchCreateAppTableRecordRequestBody,
    BatchGetAppTableRecordRequest,
    BatchGetAppTableRecordRequestBody,
    BatchUpdateAppTableRecordRequest,
    BatchUpdateAppTableRecordRequestBody,
    ChildrenFilter,
    Condition,
    CreateAppTableFieldRequest,
    FilterInfo,
    ListAppTableFieldRequest,
    ListAppTableRecordRequest,
    SearchAppTableRecordRequest,
    SearchAppTableRecordRequestBody,
    Sort,
)
from lark_oapi.api.drive.v1 import (
    BatchGetTmpDownloadUrlMediaRequest,
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
from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody
from lark_oapi.core.exception import ObtainAccessTokenException
from lark_oapi.core.token.manager import TokenManager

from connectors.feishu.emulator import ApiError, Emulator, FaultPlan, webhook_sign

APP_ID = "cli_emulator_test"
SECRET = "s3cret"
DAY_MS = 86_400_000
# 2024-03-01 10:00 in Asia/Shanghai (02:00 UTC)
MARCH_1_10AM = 1709258400000

FIELDS = [
    ("名称", 1),
    ("数量", 2),
    ("状态", 3, {"options": [{"name": "待处理"}, {"name": "已完成"}]}),
    ("标签", 4),
    ("日期", 5),
    ("完成", 7),
    ("链接", 15),
    ("附件", 17),
    ("创建时间", 1001),
    ("修改时间", 1002),
]


def forget_tokens(app_id: str = APP_ID) -> None:
    """lark-oapi caches tenant tokens process-wide in TokenManager.cache (a LocalCache
    whose `.cache` dict is keyed "self_tenant_token:<app_id>"); drop ours."""
    store = getattr(TokenManager.cache, "cache", {})
    for kind in ("self_tenant_token", "self_app_token"):
        store.pop(f"{kind}:{app_id}", None)


def make_client(url: str, secret: str = SECRET) -> lark.Client:
    return lark.Client.builder().app_id(APP_ID).app_secret(secret).domain(url).timeout(10).build()


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(app_id=APP_ID, app_secret=SECRET, block_size=1024, batch_limit=5) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> lark.Client:
    return make_client(emu.url)


@pytest.fixture
def base(emu: Emulator) -> tuple[str, str]:
    app = emu.create_app("test base")
    return app, emu.create_table(app, "videos", FIELDS)


def raw_call(client: lark.Client, method: lark.HttpMethod, uri: str, body: Any = None, **paths: str) -> dict[str, Any]:
    """A plain-dict request (keeps JSON null), parsed reply."""
    builder = (
        lark.BaseRequest.builder().http_method(method).uri(uri).paths(paths)
        .token_types({lark.AccessTokenType.TENANT})
    )
    if body is not None:
        builder = builder.headers({"Content-Type": "application/json; charset=utf-8"}).body(body)
    resp = client.request(builder.build())
    return json.loads(resp.raw.content)


RECORDS_URI = "/open-apis/bitable/v1/apps/:app_token/tables/:table_id/records"


def batch_create(client: lark.Client, app: str, table: str, rows: list[dict[str, Any]]) -> list[AppTableRecord]:
    body = BatchCreateAppTableRecordRequestBody.builder().records(
        [AppTableRecord.builder().fields(r).build() for r in rows]
    ).build()
    req = BatchCreateAppTableRecordRequest.builder().app_token(app).table_id(table).request_body(body).build()
    resp = client.bitable.v1.app_table_record.batch_create(req)
    assert resp.success(), resp.msg
    return resp.data.records


def search(client: lark.Client, app: str, table: str, *, page_size: int = 20, page_token: str | None = None,
           **body: Any) -> Any:
    builder = SearchAppTableRecordRequest.builder().app_token(app).table_id(table).page_size(page_size)
    if page_token:
        builder = builder.page_token(page_token)
    return client.bitable.v1.app_table_record.search(
        builder.request_body(SearchAppTableRecordRequestBody(body)).build()
    )


def cond(field: str, op: str, value: list[str]) -> Condition:
    return Condition.builder().field_name(field).operator(op).value(value).build()


def names_matching(client: lark.Client, app: str, table: str, conjunction: str, conditions: list[Condition],
                   children: list[ChildrenFilter] | None = None) -> list[str]:
    """Typed FilterInfo on the wire; returns the matching names in name order."""
    flt = FilterInfo.builder().conjunction(conjunction).conditions(conditions)
    if children:
        flt = flt.children(children)
    body = SearchAppTableRecordRequestBody.builder().filter(flt.build()) \
        .sort([Sort.builder().field_name("名称").desc(False).build()]).build()
    req = SearchAppTableRecordRequest.builder().app_token(app).table_id(table).request_body(body).build()
    resp = client.bitable.v1.app_table_record.search(req)
    assert resp.success(), resp.msg
    return [item.fields["名称"][0]["text"] for item in resp.data.items or []]


SAMPLE_ROWS = [
    {"名称": "alpha", "数量": 5, "状态": "待处理", "日期": MARCH_1_10AM, "完成": True},
    {"名称": "beta", "数量": 23.4, "状态": "已完成", "标签": ["猫", "狗"], "日期": MARCH_1_10AM + DAY_MS},
    {"名称": "gamma cat", "数量": 50, "标签": ["猫"]},
    {"名称": "delta", "状态": "待处理", "链接": {"text": "site", "link": "https://example.com"}},
    {"名称": "epsilon cat", "数量": 1},
    {"名称": "zeta", "数量": 100, "状态": "新的"},
]


# --- auth ---------------------------------------------------------------------------
def test_token_endpoint_and_bearer_checks(emu: Emulator) -> None:
    # The SDK sends the token body as JSON with no Content-Type.
    resp = httpx.post(f"{emu.url}/open-apis/auth/v3/tenant_access_token/internal",
                      content=json.dumps({"app_id": APP_ID, "app_secret": SECRET}))
    body = resp.json()
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    assert "x-tt-logid" in resp.headers
    assert body["code"] == 0 and body["expire"] == 7200 and body["tenant_access_token"].startswith("t-")

    fields_url = f"{emu.url}/open-apis/bitable/v1/apps/x/tables/y/fields"
    assert httpx.get(fields_url).json()["code"] == 99991661
    bad = httpx.get(fields_url, headers={"Authorization": "Bearer t-nope"})
    assert (bad.status_code, bad.json()["code"]) == (400, 99991663)

    forget_tokens()
    with pytest.raises(ObtainAccessTokenException) as err:
        make_client(emu.url, secret="wrong").bitable.v1.app_table_field.list(
            ListAppTableFieldRequest.builder().app_token("x").table_id("y").build())
    assert "10014" in str(err.value)
    forget_tokens()


# --- fields -------------------------------------------------------------------------
def test_create_and_list_fields(emu: Emulator, client: lark.Client) -> None:
    app = emu.create_app("fields")
    table = emu.create_table(app, "t", [("名称", 1)])
    prop = AppTableFieldProperty.builder().options([AppTableFieldPropertyOption.builder().name("开").build()]).build()
    field = AppTableField.builder().field_name("状态").type(3).property(prop).build()
    resp = client.bitable.v1.app_table_field.create(
        CreateAppTableFieldRequest.builder().app_token(app).table_id(table).request_body(field).build())
    assert resp.success(), resp.msg
    assert resp.data.field.field_id.startswith("fld")
    assert resp.data.field.property.options[0].id.startswith("opt")

    dup = client.bitable.v1.app_table_field.create(
        CreateAppTableFieldRequest.builder().app_token(app).table_id(table).request_body(field).build())
    assert dup.code == 1254014

    listed = client.bitable.v1.app_table_field.list(
        ListAppTableFieldRequest.builder().app_token(app).table_id(table).page_size(1).build())
    assert listed.success() and listed.data.total == 2 and listed.data.has_more
    assert listed.data.items[0].is_primary and listed.data.items[0].ui_type == "Text"
    page2 = client.bitable.v1.app_table_field.list(
        ListAppTableFieldRequest.builder().app_token(app).table_id(table).page_token(listed.data.page_token).build())
    assert [f.field_name for f in page2.data.items] == ["状态"] and not page2.data.has_more
    assert page2.data.page_token is None


def test_select_options_are_replaced_through_the_sdk_keeping_the_ids_of_kept_options(emu: Emulator,
                                                                                     client: lark.Client) -> None:
    from connectors.feishu.lark_client import LarkBitable

    app = emu.create_app("options")
    table = emu.create_table(app, "t", [("名称", 1), ("模板", 3, {"options": [{"name": "a"}, {"name": "b"}]})])
    bitable = LarkBitable(client, app, table)
    before = {o["name"]: o["id"] for o in emu._state.table(app, table).field_by_name("模板").property["options"]}
    field = next(f for f in bitable.list_fields() if f.name == "模板")

    updated = bitable.set_options(field, ["a", "c"])
    assert updated.options == ["a", "c"] and updated.field_id == field.field_id
    after = {o["name"]: o["id"] for o in emu._state.table(app, table).field_by_name("模板").property["options"]}
    assert after["a"] == before["a"] and after["c"].startswith("opt") and "b" not in after
    assert [f.options for f in bitable.list_fields() if f.name == "模板"] == [["a", "c"]]

    gone = field.model_copy(update={"field_id": "fldMissing"})
    with pytest.raises(Exception, match="1254046"):
        bitable.set_options(gone, ["a"])


# --- records: search, filters, sort, paging ------------------------------------------
def test_search_filters(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    emu.add_records(app, table, SAMPLE_ROWS[:5])
    batch_create(client, app, table, SAMPLE_ROWS[5:])
    match = lambda conj, conds, children=None: names_matching(client, app, table, conj, conds, children)  # noqa: E731

    assert match("and", [cond("状态", "is", ["待处理"])]) == ["alpha", "delta"]
    assert match("and", [cond("状态", "isEmpty", [])]) == ["epsilon cat", "gamma cat"]
    assert match("and", [cond("名称", "contains", ["cat"])]) == ["epsilon cat", "gamma cat"]
    assert match("and", [cond("数量", "isGreater", ["23.4"])]) == ["gamma cat", "zeta"]
    assert match("and", [cond("标签", "contains", ["狗"])]) == ["beta"]
    assert match("and", [cond("完成", "is", ["true"])]) == ["alpha"]
    assert match("and", [cond("链接", "isNotEmpty", [])]) == ["delta"]
    # Date filters compare whole days in Asia/Shanghai.
    exact = str(MARCH_1_10AM + 13 * 3600 * 1000)  # 23:00 the same Shanghai day
    assert match("and", [cond("日期", "is", ["ExactDate", exact])]) == ["alpha"]
    assert match("and", [cond("日期", "isGreater", ["ExactDate", exact])]) == ["beta"]
    assert len(match("and", [cond("创建时间", "is", ["Today"])])) == 6
    assert match("and", [cond("修改时间", "is", ["Yesterday"])]) == []
    # or + one level of children
    children = [ChildrenFilter.builder().conjunction("and").conditions(
        [cond("数量", "isLess", ["10"]), cond("名称", "contains", ["cat"])]).build()]
    assert match("or", [cond("状态", "is", ["新的"])], children) == ["epsilon cat", "zeta"]

    missing_value = search(client, app, table, filter={"conjunction": "and", "conditions": [
        {"field_name": "状态", "operator": "isEmpty"}]})
    assert missing_value.code == 1254018
    unknown = search(client, app, table, filter={"conjunction": "and", "conditions": [
        {"field_name": "nope", "operator": "is", "value": ["x"]}]})
    assert unknown.code == 1254045


def test_search_sort_paging_and_read_format(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    emu.add_records(app, table, SAMPLE_ROWS)
    seen, token, totals = [], None, []
    for _ in range(3):
        resp = search(client, app, table, page_size=2, page_token=token,
                      sort=[{"field_name": "数量", "desc": True}], automatic_fields=True)
        assert resp.success(), resp.msg
        totals.append(resp.data.total)
        seen += resp.data.items
        token = resp.data.page_token
    assert token is None and not resp.data.has_more and totals == [6, 6, 6]
    # Numbers descending, the empty cell last.
    assert [r.fields["名称"][0]["text"] for r in seen] == ["zeta", "gamma cat", "beta", "alpha", "epsilon cat", "delta"]
    assert seen[0].created_time and seen[0].created_by.name == "Emulator"
    beta = seen[2].fields
    assert beta["名称"] == [{"type": "text", "text": "beta"}]
    assert beta["标签"] == ["猫", "狗"] and beta["状态"] == "已完成" and beta["日期"] == MARCH_1_10AM + DAY_MS
    assert "完成" not in beta and "附件" not in beta  # empty cells are absent
    assert isinstance(beta["创建时间"], int)

    bad = search(client, app, table, page_size=0)
    assert (bad.code, bad.raw.status_code) == (1254011, 400)

    # Legacy list: plain strings unless text_field_as_array=True; booleans sent as "True".
    def listed(as_array: bool) -> Any:
        req = ListAppTableRecordRequest.builder().app_token(app).table_id(table).text_field_as_array(as_array) \
            .field_names(json.dumps(["名称"])).automatic_fields(True).page_size(500).build()
        return client.bitable.v1.app_table_record.list(req).data.items
    assert listed(False)[0].fields == {"名称": "alpha"}
    assert listed(True)[0].fields == {"名称": [{"type": "text", "text": "alpha"}]}
    assert listed(True)[0].last_modified_time


# --- records: writes ----------------------------------------------------------------
def test_batch_update_clear_and_modified_time(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    [rid] = emu.add_records(app, table, [{"名称": "one", "数量": 1, "状态": "待处理"}])
    before = emu.get_record(app, table, rid)["last_modified_time"]
    body = BatchUpdateAppTableRecordRequestBody.builder().records(
        [AppTableRecord.builder().record_id(rid).fields({"数量": 2, "状态": "全新"}).build()]).build()
    resp = client.bitable.v1.app_table_record.batch_update(
        BatchUpdateAppTableRecordRequest.builder().app_token(app).table_id(table).request_body(body).build())
    assert resp.success(), resp.msg
    assert resp.data.records[0].fields["数量"] == 2
    after = emu.get_record(app, table, rid)
    assert after["last_modified_time"] > before
    # The unknown option was created on the field.
    fields = client.bitable.v1.app_table_field.list(
        ListAppTableFieldRequest.builder().app_token(app).table_id(table).build()).data.items
    status = next(f for f in fields if f.field_name == "状态")
    assert [o.name for o in status.property.options] == ["待处理", "已完成", "全新"]

    cleared = raw_call(client, lark.HttpMethod.PUT, RECORDS_URI + "/:record_id",
                       {"fields": {"数量": None, "状态": None}}, app_token=app, table_id=table, record_id=rid)
    assert cleared["code"] == 0
    assert set(emu.get_record(app, table, rid)["fields"]) == {"名称", "创建时间", "修改时间"}

    emu.set_cells(app, table, rid, {"名称": "edited in UI"})
    assert emu.get_record(app, table, rid)["last_modified_time"] > after["last_modified_time"]
    got = client.bitable.v1.app_table_record.batch_get(
        BatchGetAppTableRecordRequest.builder().app_token(app).table_id(table).request_body(
            BatchGetAppTableRecordRequestBody.builder().record_ids([rid, "recMissing"]).build()).build())
    assert got.data.records[0].fields["名称"][0]["text"] == "edited in UI"
    assert got.data.absent_record_ids == ["recMissing"]


def test_write_errors_change_nothing(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    [rid] = emu.add_records(app, table, [{"名称": "keep", "数量": 1}])

    def update(records: list[dict[str, Any]]) -> dict[str, Any]:
        return raw_call(client, lark.HttpMethod.POST, RECORDS_URI + "/batch_update", {"records": records},
                        app_token=app, table_id=table)
    assert update([{"record_id": rid, "fields": {"nope": 1}}])["code"] == 1254045
    ghost = {"record_id": "recGhost", "fields": {}}
    assert update([{"record_id": rid, "fields": {"数量": 9}}, ghost])["code"] == 1254043
    assert update([{"record_id": rid, "fields": {"数量": "9"}}])["code"] == 1254061
    assert update([{"record_id": rid, "fields": {"日期": "2024-01-01"}}])["code"] == 1254064
    assert update([{"record_id": rid, "fields": {"链接": "https://x"}}])["code"] == 1254068
    assert update([{"record_id": rid, "fields": {"附件": [{"file_token": "boxcnNotHere"}]}}])["code"] == 1254303
    assert update([{"record_id": rid, "fields": {"修改时间": 1}}])["code"] == 1254045
    assert update([{"record_id": rid, "fields": {}}] * 6)["code"] == 1254104  # batch_limit=5 here
    assert emu.get_record(app, table, rid)["fields"]["数量"] == 1

    with pytest.raises(ApiError) as err:
        emu.add_records(app, table, [{"数量": True}])
    assert err.value.code == 1254061


def test_batch_update_null_clear_and_deletes(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    ids = emu.add_records(app, table, [{"名称": f"r{i}", "数量": i, "标签": ["a"], "完成": True} for i in range(4)])
    # The typed SDK strips None; a plain dict body keeps JSON null, which clears the cell.
    reply = raw_call(client, lark.HttpMethod.POST, RECORDS_URI + "/batch_update",
                     {"records": [{"record_id": ids[0], "fields": {"数量": None, "标签": [], "完成": False}}]},
                     app_token=app, table_id=table)
    assert reply["code"] == 0 and set(reply["data"]["records"][0]["fields"]) == {"名称", "创建时间", "修改时间"}

    deleted = raw_call(client, lark.HttpMethod.POST, RECORDS_URI + "/batch_delete", {"records": ids[1:3]},
                       app_token=app, table_id=table)
    assert [r["deleted"] for r in deleted["data"]["records"]] == [True, True]
    one = raw_call(client, lark.HttpMethod.DELETE, RECORDS_URI + "/:record_id", app_token=app, table_id=table,
                   record_id=ids[3])
    assert one["data"] == {"deleted": True, "record_id": ids[3]}
    assert [r["record_id"] for r in emu.records(app, table)] == [ids[0]]
    emu.delete_record(app, table, ids[0])
    assert search(client, app, table).data.total == 0


def test_async_sdk_paths(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    """The a* methods use httpx: compact JSON, lower-case headers, filename="upload" parts."""
    app, table = base
    emu.add_records(app, table, SAMPLE_ROWS[:3])
    data = b"async bytes \x00\x01"

    async def run() -> tuple[Any, Any]:
        req = SearchAppTableRecordRequest.builder().app_token(app).table_id(table).page_size(2) \
            .request_body(SearchAppTableRecordRequestBody.builder().automatic_fields(True).build()).build()
        found = await client.bitable.v1.app_table_record.asearch(req)
        body = UploadAllMediaRequestBody.builder().file_name("a.bin").parent_type("bitable_file") \
            .parent_node(app).size(len(data)).file(io.BytesIO(data)).build()
        uploaded = await client.drive.v1.media.aupload_all(UploadAllMediaRequest.builder().request_body(body).build())
        return found, uploaded

    found, uploaded = asyncio.run(run())
    assert found.success() and found.data.has_more and len(found.data.items) == 2
    assert uploaded.success(), uploaded.msg
    assert emu.media_bytes(uploaded.data.file_token) == data


# --- drive media ----------------------------------------------------------------------
def upload_all(client: lark.Client, app: str, name: str, data: bytes, checksum: str | None = None) -> Any:
    builder = UploadAllMediaRequestBody.builder().file_name(name).parent_type("bitable_file") \
        .parent_node(app).size(len(data)).file(io.BytesIO(data))
    if checksum is not None:
        builder = builder.checksum(checksum)
    return client.drive.v1.media.upload_all(UploadAllMediaRequest.builder().request_body(builder.build()).build())


def test_upload_attach_download_and_tmp_url(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    data = bytes(range(256)) * 40 + b"\r\n--tail"
    resp = upload_all(client, app, "成片.mp4", data, checksum=str(zlib.adler32(data)))
    assert resp.success(), resp.msg
    token = resp.data.file_token
    assert upload_all(client, app, "x.bin", data, checksum="123").code == 1061002
    assert upload_all(client, "bascnNoSuchBase", "x.bin", data).code == 1061044

    [created] = batch_create(client, app, table, [{"名称": "with file", "附件": [{"file_token": token}]}])
    [attachment] = created.fields["附件"]
    assert attachment["name"] == "成片.mp4" and attachment["size"] == len(data)
    assert attachment["type"] == "video/mp4"
    assert attachment["url"].startswith(f"{emu.url}/open-apis/drive/v1/medias/{token}/download?extra=")

    other_app = emu.create_app("other")
    foreign = emu.upload_media(other_app, "a.txt", b"a")
    bad = raw_call(client, lark.HttpMethod.POST, RECORDS_URI, {"fields": {"附件": [{"file_token": foreign}]}},
                   app_token=app, table_id=table)
    assert bad["code"] == 1254303

    down = client.drive.v1.media.download(DownloadMediaRequest.builder().file_token(token).build())
    assert down.success() and down.file.read() == data and down.file_name == "成片.mp4"
    missing = client.drive.v1.media.download(DownloadMediaRequest.builder().file_token("boxcnGone").build())
    assert (missing.code, missing.raw.status_code) == (1061002, 404)

    tmp = client.drive.v1.media.batch_get_tmp_download_url(
        BatchGetTmpDownloadUrlMediaRequest.builder().file_tokens([token, foreign]).build())
    assert tmp.success(), tmp.msg
    urls = {u.file_token: u.tmp_download_url for u in tmp.data.tmp_download_urls}
    assert httpx.get(urls[token]).content == data  # no Authorization header needed
    assert httpx.get(urls[token] + "x").status_code == 403
    assert emu.media_bytes(token) == data


def test_chunked_upload(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, _ = base
    data = bytes(i % 251 for i in range(2500))  # block_size=1024 -> 3 blocks
    info = MediaUploadInfo.builder().file_name("big.bin").parent_type("bitable_file").parent_node(app) \
        .size(len(data)).build()
    prep = client.drive.v1.media.upload_prepare(UploadPrepareMediaRequest.builder().request_body(info).build())
    assert prep.success(), prep.msg
    assert (prep.data.block_size, prep.data.block_num) == (1024, 3)

    def finish() -> Any:
        body = UploadFinishMediaRequestBody.builder().upload_id(prep.data.upload_id).block_num(3).build()
        return client.drive.v1.media.upload_finish(UploadFinishMediaRequest.builder().request_body(body).build())

    for seq in range(3):
        if seq == 2:
            assert finish().code == 1061002  # a block is still missing
        chunk = data[seq * 1024:(seq + 1) * 1024]
        body = UploadPartMediaRequestBody.builder().upload_id(prep.data.upload_id).seq(seq).size(len(chunk)) \
            .checksum(str(zlib.adler32(chunk))).file(io.BytesIO(chunk)).build()
        part = client.drive.v1.media.upload_part(UploadPartMediaRequest.builder().request_body(body).build())
        assert part.success(), part.msg
    done = finish()
    assert done.success(), done.msg
    assert emu.media_bytes(done.data.file_token) == data


# --- IM and webhooks --------------------------------------------------------------------
def test_im_message_and_uuid_dedupe(emu: Emulator, client: lark.Client) -> None:
    def send(uuid: str) -> Any:
        body = CreateMessageRequestBody.builder().receive_id("oc_group").msg_type("text") \
            .content(json.dumps({"text": "done"})).uuid(uuid).build()
        return client.im.v1.message.create(
            CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body).build())
    first, again, other = send("u-1"), send("u-1"), send("u-2")
    assert first.success() and first.data.message_id.startswith("om_")
    assert again.data.message_id == first.data.message_id
    assert other.data.message_id != first.data.message_id
    assert isinstance(first.data.create_time, str) and first.data.chat_id == "oc_group"
    assert [(m["kind"], m["receive_id"], m["content"], m["uuid"]) for m in emu.messages] == [
        ("im", "oc_group", {"text": "done"}, "u-1"), ("im", "oc_group", {"text": "done"}, "u-2")]


def test_card_images_are_uploaded_first_and_checked_when_the_card_is_sent(emu: Emulator, client: lark.Client) -> None:
    from lark_oapi.api.im.v1 import CreateImageRequest, CreateImageRequestBody

    def upload(data: bytes, kind: str = "message") -> Any:
        body = CreateImageRequestBody.builder().image_type(kind).image(io.BytesIO(data)).build()
        return client.im.v1.image.create(CreateImageRequest.builder().request_body(body).build())

    def card(elements: list[dict]) -> Any:
        content = {"schema": "2.0", "header": {"title": {"tag": "plain_text", "content": "t"}},
                   "body": {"elements": elements}}
        body = CreateMessageRequestBody.builder().receive_id("oc_group").msg_type("interactive") \
            .content(json.dumps(content)).build()
        return client.im.v1.message.create(
            CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body).build())

    jpeg = b"\xff\xd8\xff\xe0" + b"\0" * 64
    done = upload(jpeg)
    assert done.success() and done.data.image_key.startswith("img_") and emu.image_bytes(done.data.image_key) == jpeg
    assert upload(b"not a picture").code == 234011
    assert upload(jpeg, kind="sticker").code == 234001
    assert card([{"tag": "img", "img_key": done.data.image_key}]).success()
    refused = card([{"tag": "img", "img_key": "img_v3_forged"}])
    assert refused.code == 230099 and "img_key" in refused.msg
    assert len(emu.messages) == 1


def test_webhook_signature(emu: Emulator) -> None:
    emu.add_webhook("open-hook")
    emu.add_webhook("signed-hook", secret="demo")
    now = int(time.time())
    post = lambda hook, body: httpx.post(f"{emu.url}/open-apis/bot/v2/hook/{hook}", json=body).json()  # noqa: E731
    text = {"msg_type": "text", "content": {"text": "hi"}}
    assert post("open-hook", text)["StatusCode"] == 0
    assert post("signed-hook", {**text, "timestamp": str(now), "sign": webhook_sign("demo", now)})["code"] == 0
    assert post("signed-hook", {**text, "timestamp": str(now), "sign": "bad"})["code"] == 19021
    stale = now - 7200
    assert post("signed-hook", {**text, "timestamp": str(stale), "sign": webhook_sign("demo", stale)})["code"] == 19021
    assert post("unknown-hook", text)["code"] == 19001
    assert webhook_sign("demo", 1599360473) == "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
    assert [(m["kind"], m["hook_id"]) for m in emu.messages] == [("webhook", "open-hook"), ("webhook", "signed-hook")]
    assert emu.calls["bot.webhook"] == 5


# --- faults -----------------------------------------------------------------------------
def test_rate_limit_and_business_throttles(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    emu.faults = FaultPlan(rate_limit=1.0, reset_seconds=3, endpoints=frozenset({"records.search"}))
    resp = search(client, app, table)
    assert (resp.code, resp.raw.status_code) == (99991400, 429)
    assert resp.raw.headers["x-ogw-ratelimit-reset"] == "3" and "x-ogw-ratelimit-limit" in resp.raw.headers

    emu.faults = FaultPlan(too_many=1.0)
    assert search(client, app, table).code == 1254290
    emu.faults = FaultPlan(write_conflict=1.0)
    assert search(client, app, table).success()  # write_conflict only hits writes
    assert raw_call(client, lark.HttpMethod.POST, RECORDS_URI, {"fields": {}}, app_token=app, table_id=table)[
        "code"] == 1254291
    emu.faults = FaultPlan()
    assert emu.calls["records.search"] == 3 and emu.calls["records.create"] == 1
    assert emu.faults_injected == {"rate_limit": 1, "too_many": 1, "write_conflict": 1}
    emu.reset_calls()
    assert not emu.calls


def test_server_error_outage_and_latency(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    emu.faults = FaultPlan(server_error=1.0)
    with pytest.raises(json.JSONDecodeError):
        search(client, app, table)

    emu.faults = FaultPlan(outage=(1, 3), endpoints=frozenset({"records.search"}))
    statuses = []
    for _ in range(4):
        try:
            statuses.append(search(client, app, table).raw.status_code)
        except json.JSONDecodeError:
            statuses.append(503)
    assert statuses == [200, 503, 503, 200]
    assert emu.faults_injected["outage"] == 2

    emu.faults = FaultPlan(latency=0.2)
    started = time.monotonic()
    assert search(client, app, table).success()
    assert time.monotonic() - started >= 0.2
    assert emu.calls["records.search"] == 6


def test_concurrent_writes_to_one_table_conflict(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    emu.faults = FaultPlan(latency=0.3, endpoints=frozenset({"records.create"}))
    codes: list[int] = []

    def write() -> None:
        codes.append(raw_call(client, lark.HttpMethod.POST, RECORDS_URI, {"fields": {"名称": "x"}},
                              app_token=app, table_id=table)["code"])
    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(codes) == [0, 1254291]
    assert len(emu.records(app, table)) == 1


def test_admin_routes(emu: Emulator, client: lark.Client, base: tuple[str, str]) -> None:
    app, table = base
    assert httpx.post(f"{emu.url}/_emulator/faults", json={"too_many": 1, "endpoints": ["records.search"]}).json()["ok"]
    assert search(client, app, table).code == 1254290
    assert httpx.get(f"{emu.url}/_emulator/calls").json()["records.search"] == 1
    assert httpx.post(f"{emu.url}/_emulator/faults", json={"bogus": 1}).status_code == 400
    httpx.post(f"{emu.url}/_emulator/faults", json={})
    httpx.post(f"{emu.url}/_emulator/reset_calls")
    assert httpx.get(f"{emu.url}/_emulator/calls").json() == {}
    assert search(client, app, table).success()


# --- persistence --------------------------------------------------------------------------
def test_persistence_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "emu.json"
    with Emulator(app_id=APP_ID, app_secret=SECRET, state_path=state) as first:
        app = first.create_app("persisted", app_token="bascnPersisted")
        table = first.create_table(app, "videos", FIELDS)
        token = first.upload_media(app, "cover.jpg", b"\xff\xd8jpeg")
        client = make_client(first.url)
        [created] = batch_create(client, app, table, [{"名称": "kept", "状态": "新", "附件": [{"file_token": token}]}])
        first.add_webhook("hook", "s")
    assert state.exists() and (tmp_path / "emu_media" / token).exists()

    with Emulator(app_id=APP_ID, app_secret=SECRET, state_path=state) as second:
        # Same credentials -> same token, so the SDK's cached token keeps working.
        client = make_client(second.url)
        resp = search(client, app, table)
        assert resp.success(), resp.msg
        [item] = resp.data.items
        assert item.record_id == created.record_id and item.fields["状态"] == "新"
        assert item.fields["附件"][0]["url"].startswith(second.url)
        down = client.drive.v1.media.download(DownloadMediaRequest.builder().file_token(token).build())
        assert down.file.read() == b"\xff\xd8jpeg"
        second.add_records(app, table, [{"名称": "newer"}])
        times = [r["last_modified_time"] for r in second.records(app, table)]
        assert len(times) == 2 and times[0] < times[1]  # the clock never goes back after a reload


def test_module_entry_point_serves_and_saves_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "demo.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "connectors.feishu.emulator", "--port", "0", "--state", str(state),
         "--app-id", APP_ID, "--app-secret", SECRET, "--create-app", "bascnFromCli"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        assert httpx.get(f"{url}/_emulator/calls").json() == {}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert json.loads(state.read_text())["apps"][0]["app_token"] == "bascnFromCli"


def test_a_base_with_advanced_permissions_serves_attachments_only_to_downloads_naming_the_table(emu):
    from connectors.feishu.lark_client import LarkBitable, make_lark_client
    from storage.errors import AuthFailed, Permanent

    app_token = emu.create_app(name="locked", advanced_permissions=True)
    table_id = emu.create_table(app_token, name="t", fields=[("图", 17)])
    token = emu.upload_media(app_token, "a.jpg", b"\xff\xd8jpeg", "image/jpeg")
    client = make_lark_client(APP_ID, SECRET, emu.url, 10)
    assert LarkBitable(client, app_token, table_id).download_media(token) == b"\xff\xd8jpeg"

    # What a client without the extra meets (the SDK call as it was before).
    from lark_oapi.api.drive.v1 import DownloadMediaRequest

    resp = client.drive.v1.media.download(DownloadMediaRequest.builder().file_token(token).build())
    assert not resp.success() and resp.raw.status_code == 403
    # Naming another base's table does not help either.
    other = emu.create_table(emu.create_app(name="other"), name="x", fields=[("图", 17)])
    with pytest.raises((AuthFailed, Permanent)):
        LarkBitable(client, app_token, other).download_media(token)
