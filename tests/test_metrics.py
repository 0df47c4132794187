"""/metrics and /healthz: the counters move while rows are made, the gauges are the database's,
and `sheetreel run` serves them where SHEETREEL_METRICS_PORT says; Ctrl-C stops it gently, twice at once."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from sync.metrics import serving
from sync.rows import text_of

from conftest import Sheet, wait_for


def value(text: str, name: str, **labels: str) -> float:
    """One sample of a scrape (0 when absent: a counter that never moved is not printed)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()) and (want or not m.group(1)):
            return float(m.group(2))
    return 0.0


def rows(sheet: Sheet, count: int, shots: int = 2) -> list[str]:
    cols = sheet.cols
    return sheet.add_rows([{cols.title: f"指标{i}", cols.image: sheet.image_cell(), cols.template: "tiny",
                            cols.shot_count: shots} for i in range(count)])


def test_the_counters_move_while_rows_are_made_and_the_gauges_match_the_sheet(sheet):
    rows(sheet, 2)
    sheet.settings = sheet.settings.model_copy(update={"feishu_chat_id": "oc_team"})
    app = sheet.app()
    with serving(app.metrics, "127.0.0.1", 0) as server, httpx.Client(timeout=30) as http:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        before = http.get(f"{base}/metrics").text
        assert value(before, "sheetreel_projects", state="completed") == 0
        worker = threading.Thread(target=app.once)
        worker.start()

        def scrape() -> str:
            return http.get(f"{base}/metrics").text

        # While it works: the storyboards are counted before the run ends.
        wait_for(lambda: value(scrape(), "sheetreel_step_seconds_count", step="storyboard", outcome="done") >= 1,
                 timeout=120)
        worker.join(300)
        after = scrape()
        health = http.get(f"{base}/healthz")
        assert http.get(f"{base}/nothing").status_code == 404

    assert value(after, "sheetreel_projects", state="completed") == 2
    for step in ("storyboard", "segments", "compose"):
        assert value(after, "sheetreel_step_seconds_count", step=step, outcome="done") == 2
    assert value(after, "sheetreel_shot_seconds_count", backend="kenburns") == 4
    assert value(after, "sheetreel_feishu_calls_total", api="search records", result="ok") > \
        value(before, "sheetreel_feishu_calls_total", api="search records", result="ok")
    # Each upload and download is counted by its kind: file names and tokens would make a new
    # series per video, which a Prometheus server keeps for good.
    assert value(after, "sheetreel_feishu_calls_total", api="upload", result="ok") >= 2  # each final.mp4
    assert value(after, "sheetreel_feishu_calls_total", api="download", result="ok") >= 1  # the opening image
    assert value(after, "sheetreel_feishu_calls_total", api="update records", result="ok") >= 1
    apis = set(re.findall(r'sheetreel_feishu_calls_total\{api="([^"]*)"', after))
    # The chat's calls too, through the same client.
    assert value(after, "sheetreel_feishu_calls_total", api="send message", result="ok") == 2
    assert apis <= {"list fields", "search records", "update records", "upload", "download", "create records",
                    "send message", "upload image"}, apis
    assert value(after, "sheetreel_outbox_pending") == 0 and value(after, "sheetreel_outbox_oldest_seconds") == 0
    assert health.status_code == 200 and health.json() == {"status": "ok", "pending_writes": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(sheet: Sheet, port: int) -> Iterator[subprocess.Popen]:
    """`sheetreel run` serving metrics on `port`; killed if the test leaves it running."""
    proc = sheet.start_run(SHEETREEL_METRICS_PORT=str(port))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_serves_metrics_and_a_first_ctrl_c_finishes_the_steps(sheet):
    [record] = rows(sheet, 1)
    port, log = free_port(), sheet.run_log
    with running(sheet, port) as proc:
        wait_for(lambda: text_of(sheet.row(record)["fields"].get(sheet.cols.status)) == "已完成", timeout=240)
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert value(scraped, "sheetreel_projects", state="completed") == 1
        assert json.loads(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).text)["status"] == "ok"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
    assert "finishing the current steps safely" in log.read_text()


def test_a_second_ctrl_c_quits_at_once_and_the_step_resumes_later(sheet):
    [record] = rows(sheet, 1, shots=12)
    log = sheet.run_log
    with running(sheet, free_port()) as proc:
        wait_for(lambda: "step=segments" in log.read_text(), timeout=240)
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "Ctrl-C again" in log.read_text(), timeout=60)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    assert "quitting now" in log.read_text()
    app = sheet.app()  # the next start picks the row up where it was
    assert app.once(timeout=600)
    assert text_of(sheet.row(record)["fields"][sheet.cols.status]) == "已完成"
