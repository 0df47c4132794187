"""Chat messages: one per completed or failed event, through the IM bot or a signed webhook."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.feishu.emulator import FaultPlan
from storage.models import ProjectState
from sync import redact
from sync.app import App, make_table
from sync.messages import row_link

from conftest import Sheet

pytestmark = pytest.mark.databases  # every test here on SQLite and on PostgreSQL


def test_bot_announces_each_completion_and_failure_once(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d", FEISHU_CHAT_ID="oc_team", FEISHU_SHEET_URL="https://x.feishu.cn/base/app")
    cols = sheet.cols
    good, bad = sheet.add_rows([
        {cols.title: "好视频", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1},
        {cols.title: "坏视频", cols.template: "tiny"},
    ])
    app = sheet.app()
    app.once()
    app.once()  # a second pass (or a restart) must not announce anything again
    sheet.app().once()

    messages = [m for m in emulator.messages if m["kind"] == "im"]
    assert len(messages) == 2
    by_title = {m["content"]["header"]["title"]["content"]: m for m in messages}
    done = next(m for t, m in by_title.items() if "好视频" in t)
    failed = next(m for t, m in by_title.items() if "坏视频" in t)
    project = app.store.by_record(sheet.table_id, good)
    assert done["content"]["schema"] == "2.0" and done["content"]["header"]["template"] == "green"
    (cover,) = parts(done, "img")  # the cover, uploaded through the IM image API
    (cell,) = sheet.row(good)["fields"][cols.cover]
    assert emulator.image_bytes(cover["img_key"]) == emulator.media_bytes(cell["file_token"])
    assert project.final_url in parts(done, "markdown")[0]["content"]
    assert f"record={good}" in button_link(done)
    assert not parts(failed, "img") and failed["content"]["header"]["template"] == "red"
    assert "首帧图片为空" in parts(failed, "markdown")[0]["content"]
    assert f"record={bad}" in button_link(failed)
    assert app.store.by_record(sheet.table_id, bad).state == ProjectState.failed
    assert all(n.sent_at for n in app.stores.notes.of_project(project.id))


def parts(message: dict, tag: str) -> list[dict]:
    return [e for e in message["content"]["body"]["elements"] if e["tag"] == tag]


def button_link(message: dict) -> str:
    (button,) = parts(message, "button")
    (behaviour,) = button["behaviors"]
    assert behaviour["type"] == "open_url"
    return behaviour["default_url"]


def test_webhook_messages_are_signed_and_rate_limits_are_retried(emulator, tmp_path):
    emulator.add_webhook("hook1", secret="s3cret")
    sheet = Sheet(emulator, tmp_path / "d", FEISHU_WEBHOOK_URL=f"{emulator.url}/open-apis/bot/v2/hook/hook1",
                  FEISHU_WEBHOOK_SECRET="s3cret", OUTBOX_BACKOFF_BASE_SECONDS=0)
    cols = sheet.cols
    sheet.add_rows([{cols.title: "一", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    emulator.faults = FaultPlan(outage=(0, 2), endpoints=frozenset({"bot.webhook"}))
    app.once()
    for _ in range(3):
        app.flush()
    hooks = [m for m in emulator.messages if m["kind"] == "webhook"]
    assert len(hooks) == 1 and "一" in hooks[0]["content"]["header"]["title"]["content"]


def test_a_wrong_webhook_secret_is_reported_not_retried_forever(emulator, tmp_path):
    emulator.add_webhook("hook2", secret="right")
    sheet = Sheet(emulator, tmp_path / "d", FEISHU_WEBHOOK_URL=f"{emulator.url}/open-apis/bot/v2/hook/hook2",
                  FEISHU_WEBHOOK_SECRET="wrong", OUTBOX_BACKOFF_BASE_SECONDS=0)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    app.once()
    for _ in range(8):
        app.flush()
    project = app.store.by_record(sheet.table_id, rid)
    (note,) = app.stores.notes.of_project(project.id)
    assert note.sent_at is None and note.attempts == 5 and "签名校验失败" in note.last_error
    assert emulator.calls["bot.webhook"] == 5


def test_a_chat_turned_on_later_gets_no_backlog_only_what_finishes_from_then_on(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d")
    cols = sheet.cols
    row = {cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}
    sheet.add_rows([dict(row, **{cols.title: f"旧{i}"}) for i in range(3)])
    sheet.app().once()  # weeks of use without a chat: the messages are owed but nobody listens

    sheet.settings = sheet.settings.model_copy(update={"feishu_chat_id": "oc_new"})
    app = sheet.app()
    app.once()
    app.flush()
    assert not [m for m in emulator.messages if m["kind"] == "im"]
    sheet.add_rows([dict(row, **{cols.title: "新"})])
    app.once()
    titles = [m["content"]["header"]["title"]["content"] for m in emulator.messages if m["kind"] == "im"]
    assert len(titles) == 1 and "新" in titles[0]
    old = [n for p in app.store.projects() if p.title.startswith("旧") for n in app.stores.notes.of_project(p.id)]
    assert len(old) == 3 and all(n.skipped and n.sent_at is None for n in old)


def test_messages_owed_longer_than_the_backlog_window_are_not_sent_late(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d", FEISHU_CHAT_ID="oc_team", FEISHU_CHAT_BACKLOG_HOURS=1)
    cols = sheet.cols
    sheet.add_rows([{cols.title: "晚", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    emulator.faults = FaultPlan(outage=(0, 10**6), endpoints=frozenset({"im.message.create"}))  # the bot is down
    app = sheet.app()
    app.once()
    emulator.faults = FaultPlan()
    later = sheet.settings.model_copy()
    app2 = App(later, make_table(later), clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    app2.flush()
    assert not [m for m in emulator.messages if m["kind"] == "im"]
    (note,) = app2.stores.notes.due() or [None]
    assert note is None


@pytest.mark.parametrize("url", [
    "https://x.feishu.cn/base/bascnAbc",
    "https://x.feishu.cn/base/bascnAbc?table=tblOld&view=vewOld",
    "https://x.feishu.cn/base/bascnAbc?from=share&table=tbl1#frag",
])
def test_row_links_are_built_from_a_url_copied_with_or_without_a_table(url):
    link = urlsplit(row_link(url, "tbl1", "rec9"))
    query = parse_qs(link.query)
    assert link.path == "/base/bascnAbc" and query["table"] == ["tbl1"] and query["record"] == ["rec9"]
    assert "view" not in query and not link.fragment


def test_the_webhook_url_never_reaches_a_log_line(emulator, tmp_path):
    emulator.add_webhook("hook-secret-id-123")
    sheet = Sheet(emulator, tmp_path / "d", FEISHU_WEBHOOK_URL=f"{emulator.url}/open-apis/bot/v2/hook/hook-secret-id-123")
    cols = sheet.cols
    sheet.add_rows([{cols.title: "日志", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)  # `sheetreel -v` and more
    try:
        redact.install(root)
        sheet.app().once()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert [m for m in emulator.messages if m["kind"] == "webhook"]
    assert "/bot/v2/hook/***" in out.getvalue()  # the request was logged, without its credential
    assert "hook-secret-id-123" not in out.getvalue()
