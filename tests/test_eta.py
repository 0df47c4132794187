"""进度's time estimate: absent without history, then close to the time the work really takes."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from sync.cli import main
from sync.rows import text_of

from conftest import Sheet

LEFT = re.compile(r" · 约(\d+)(秒|分钟)$")


def watch(sheet: Sheet, rid: str, stop: threading.Event) -> list[tuple[float, str, str]]:
    """(when, 进度, 状态) each time the row changes, as someone looking at the sheet would see it."""
    seen: list[tuple[float, str, str]] = []

    def look() -> None:
        while not stop.is_set():
            cells = sheet.row(rid)["fields"]
            now = (text_of(cells.get(sheet.cols.progress)), text_of(cells.get(sheet.cols.status)))
            if not seen or seen[-1][1:] != now:
                seen.append((time.monotonic(), *now))
            stop.wait(0.02)

    threading.Thread(target=look, daemon=True).start()
    return seen


def add_row(sheet: Sheet, title: str) -> str:
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: title, cols.image: sheet.image_cell(), cols.scene: "窗边的猫",
                              cols.template: "photo-chain"}])
    return rid


def run_watched(sheet: Sheet, app, rid: str) -> list[tuple[float, str, str]]:
    stop = threading.Event()
    seen = watch(sheet, rid, stop)
    try:
        app.once()
        time.sleep(0.1)  # the watcher's last look
    finally:
        stop.set()
    assert seen[-1][2] == "已完成"
    return seen


def test_the_estimate_appears_once_there_is_history_and_is_within_30_percent(sheet: Sheet, monkeypatch, capsys):
    # One row at a time, as the estimate assumes; three of history, so one cold start (the first
    # ffmpeg font lookup on a fresh machine) does not decide the median.
    sheet.settings = sheet.settings.model_copy(update={"flush_interval_seconds": 0.05, "workers": 1})
    app = sheet.app()
    history = [add_row(sheet, f"历史{i}") for i in range(3)]
    first = run_watched(sheet, app, history[0])
    assert not [p for _, p, _ in first if LEFT.search(p)]  # nothing measured when it started: no guess

    seen = run_watched(sheet, app, add_row(sheet, "新的一条"))
    estimates = [(t, p) for t, p, _ in seen if LEFT.search(p)]
    assert estimates, seen
    shown_at, text = estimates[0]
    amount, unit = LEFT.search(text).groups()
    predicted = int(amount) * (60 if unit == "分钟" else 1)
    actual = seen[-1][0] - shown_at
    assert abs(predicted - actual) <= max(0.3 * actual, 1.0), (predicted, actual, seen)
    assert not LEFT.search(seen[-1][1])  # finished: no time left to show

    waiting = add_row(sheet, "排队中")
    app.poller.poll()  # known, not started
    sheet.use_env(monkeypatch)
    assert main(["status", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    left = {r["record_id"]: r["left_seconds"] for r in listed}
    assert left.pop(waiting) == pytest.approx(actual, rel=0.5) and set(left.values()) == {None}
    assert main(["status"]) == 0
    assert re.search(r"排队中 .* 0% 排队中 · 约\d+秒", capsys.readouterr().out)
