"""Chat messages: one per completed or failed event, through the IM bot or a signed webhook."""

from __future__ import annotations

from storage.models import ProjectState

from conftest import Sheet


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
    assert project.final_url in done["content"]["elements"][0]["text"]["content"]
    assert f"record={good}" in done["content"]["elements"][0]["text"]["content"]
    assert "首帧图片为空" in failed["content"]["elements"][0]["text"]["content"]
    assert app.store.by_record(sheet.table_id, bad).state == ProjectState.failed
    assert all(n.sent_at for n in app.stores.notes.of_project(project.id))


def test_webhook_messages_are_signed_and_rate_limits_are_retried(emulator, tmp_path):
    emulator.add_webhook("hook1", secret="s3cret")
    sheet = Sheet(emulator, tmp_path / "d", FEISHU_WEBHOOK_URL=f"{emulator.url}/open-apis/bot/v2/hook/hook1",
                  FEISHU_WEBHOOK_SECRET="s3cret", OUTBOX_BACKOFF_BASE_SECONDS=0)
    cols = sheet.cols
    sheet.add_rows([{cols.title: "一", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    from connectors.feishu.emulator import FaultPlan

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
