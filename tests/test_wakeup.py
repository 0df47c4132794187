"""Instant wake-up: with FEISHU_EVENTS on, `sheetreel run` holds lark-oapi's long connection to
the emulator, and a row added or edited in the sheet is polled at once, not a poll interval later.
SheetReel's own writes fire events too and must not set off polls."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from connectors.feishu.lark_client import LarkBitable, make_lark_client
from connectors.feishu.lark_events import LarkRecordEvents
from sync.columns import Columns
from sync.rows import text_of
from sync.wakeup import listen_for_edits

from conftest import APP_ID, SECRET, Sheet, wait_for

HOUR = "3600"  # a poll interval no test outlives: only an event can explain a poll


@contextmanager
def running(sheet: Sheet, **env: str) -> Iterator[subprocess.Popen]:
    proc = sheet.start_run(POLL_INTERVAL_SECONDS=HOUR, FEISHU_EVENTS="1", **env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def searches(sheet: Sheet) -> int:
    return sheet.emu.calls["records.search"]


def settled(sheet: Sheet) -> int:
    """The search count once it has stopped moving for a while (the poll in flight is over)."""
    last = -1
    while True:
        now = searches(sheet)
        if now == last:
            return now
        last = now
        time.sleep(1.0)


def seconds_until_polled(sheet: Sheet, change) -> float:
    before = settled(sheet)
    start = time.monotonic()
    change()
    wait_for(lambda: searches(sheet) > before, timeout=60)
    return time.monotonic() - start


def test_a_new_row_and_an_edit_are_polled_within_a_second_and_own_writes_wake_nothing(sheet):
    # The SDK waits up to ReconnectNonce seconds before its first reconnect: none here.
    sheet.emu.events.client_config.update(ReconnectNonce=0, ReconnectInterval=1)
    cols = sheet.cols
    with running(sheet):
        wait_for(lambda: sheet.emu.events.connected() == 1 and searches(sheet) >= 1, timeout=120)
        assert sheet.app_token in sheet.emu.events.subscriptions

        records: list[str] = []
        added = seconds_until_polled(sheet, lambda: records.extend(sheet.add_rows([{
            cols.title: "唤醒", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 2,
            cols.mode: "分步"}])))
        [record] = records
        wait_for(lambda: text_of(sheet.row(record)["fields"].get(cols.status)) == "分镜完成", timeout=240)
        print(f"row added -> polled in {added:.3f} s")
        assert added < 1.0

        base = settled(sheet)
        edited = seconds_until_polled(sheet, lambda: sheet.emu.set_cells(
            sheet.app_token, sheet.table_id, record, {cols.action: "继续"}))
        print(f"row edited -> polled in {edited:.3f} s")
        assert edited < 1.0
        wait_for(lambda: text_of(sheet.row(record)["fields"].get(cols.status)) == "视频段完成", timeout=240)
        # Making the shots wrote 状态, 进度 and the segment links several times, each an event as
        # well; none of them set off a poll (one more may follow a wake that came mid-poll).
        assert settled(sheet) - base <= 2

        # A dropped connection comes back by itself, and events flow again.
        sheet.emu.events.disconnect_all()
        wait_for(lambda: sheet.emu.events.connected() == 1, timeout=60)
        later = seconds_until_polled(sheet, lambda: sheet.add_rows([{cols.title: "又一行", cols.template: "tiny"}]))
        assert later < 1.0
        assert all(code == 200 for code in sheet.emu.events.acks.values())
    log = sheet.run_log.read_text()
    assert "record events on" in log and "Traceback" not in log


def test_a_base_that_cannot_be_subscribed_leaves_polling_alone(emulator, caplog):
    client = make_lark_client(APP_ID, SECRET, emulator.url)
    app = emulator.create_app("other")
    table = emulator.create_table(app, "t", [("标题", 1)])
    events = LarkRecordEvents(client, APP_ID, SECRET, emulator.url, ["bascnNotThere"])
    with caplog.at_level(logging.WARNING):
        started = listen_for_edits(events, [(LarkBitable(client, app, table), Columns())], threading.Event().set)
    assert started is None
    assert "record events off (polling only)" in caplog.text and "manage permission" in caplog.text
    assert emulator.events.connected() == 0


def test_a_refused_long_connection_is_logged_and_leaves_no_thread(emulator, caplog):
    client = make_lark_client(APP_ID, SECRET, emulator.url)
    app = emulator.create_app("refused")
    events = LarkRecordEvents(client, APP_ID, "wrong-secret", emulator.url, [app])
    with caplog.at_level(logging.WARNING):
        events.start(lambda change: None)
        wait_for(lambda: "record events off" in caplog.text, timeout=60)
    events.close()
    assert emulator.events.connected() == 0
    assert not any(t.name == "feishu-events" for t in threading.enumerate())
