"""What a person at a terminal sees: `sheetreel demo` in a pseudo-terminal draws a live table of
its rows (titles, the sheet's labels, a bar); piped, the same run prints plain lines."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_in_terminal(argv: list[str], timeout: float = 600, env: dict[str, str] | None = None,
                    then_stop_when: str | None = None) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal and return its exit code and everything it drew. With
    `then_stop_when`, a service is sent SIGINT (Ctrl-C) once that text has been drawn."""
    primary, secondary = pty.openpty()
    env = {**os.environ, **(env or {}), "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=secondary, stdout=secondary, stderr=secondary, cwd=ROOT, env=env)
    os.close(secondary)
    out, deadline, stopped = b"", time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if then_stop_when and not stopped and then_stop_when in out.decode("utf-8", "replace"):
            proc.send_signal(signal.SIGINT)
            stopped = True
    os.close(primary)
    if proc.poll() is None:
        proc.kill()
    return proc.wait(60), out.decode("utf-8", "replace")


def test_demo_in_a_terminal_draws_a_live_table_of_its_rows(tmp_path):
    code, screen = run_in_terminal([sys.executable, "-m", "sync.cli", "demo", "--data-dir", str(tmp_path / "d"),
                                    "--rows", "2", "--shots", "1"])
    assert code == 0, screen[-3000:]
    assert "状态" in screen and "步骤" in screen  # the table's header
    assert "橘猫吃鱼" in screen and "柯基吃西瓜" in screen and "已完成" in screen  # titles, labels
    assert "100%" in screen and "━" in screen  # a full bar
    assert "\x1b[" in screen  # redrawn in place, not appended


def test_demo_piped_prints_plain_lines(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sync.cli", "demo", "--data-dir", str(tmp_path / "d"),
                           "--rows", "1", "--shots", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout
    assert any(line.endswith("已完成 100% 已完成") for line in proc.stdout.splitlines())


def test_the_status_table_shows_titles_labels_one_link_and_stays_aligned_with_chinese():
    from sync.report import format_table, width

    base = {"project_id": "p", "record_id": "recA", "state": "completed", "label": "已完成", "progress": 100, "shots": 2,
            "duration": 10.0, "final_path": "/data/final.mp4", "final_url": "https://cdn/v.mp4", "error": None, "cost": None}
    rows = [base, {**base, "record_id": "recB", "title": "柯基吃西瓜", "label": "失败", "final_url": None,
                   "final_path": None, "error": "首帧图片无法解码"}, {**base, "title": "cat"}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["行", "状态", "镜头", "时长", "成片", "/", "错误"]
    assert lines[1].startswith("recA") and "https://cdn/v.mp4" in lines[1] and "/data/final.mp4" not in lines[1]
    assert lines[2].startswith("柯基吃西瓜") and lines[2].endswith("首帧图片无法解码")
    # The 状态 column starts at the same display column on every line.
    starts = [width(line[: line.index(label)]) for line, label in zip(lines, ["状态", "已完成", "失败", "已完成"])]
    assert len(set(starts)) == 1, starts


class Terminal:
    """A stream that says it is a terminal, and keeps what was drawn."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self.buffer.write(text)

    def flush(self) -> None:
        pass


def test_once_in_a_terminal_draws_the_rows_it_works_on(sheet):
    from sync.progress import watching

    cols = sheet.cols
    sheet.add_rows([{cols.title: "终端里的一行", cols.image: sheet.image_cell(), cols.template: "tiny",
                     cols.shot_count: 1}])
    app, screen = sheet.app(), Terminal()
    with watching(app.store, screen):
        assert app.once()
    drawn = screen.buffer.getvalue()
    assert "终端里的一行" in drawn and "已完成" in drawn and "100%" in drawn


def test_run_in_a_terminal_draws_the_rows_it_works_on_until_stopped(sheet):
    cols = sheet.cols
    sheet.add_rows([{cols.title: "服务里的一行", cols.image: sheet.image_cell(), cols.template: "tiny",
                     cols.shot_count: 1}])
    code, screen = run_in_terminal([sys.executable, "-m", "sync.cli", "run"],
                                   env=sheet.env(POLL_INTERVAL_SECONDS="0.3", FLUSH_INTERVAL_SECONDS="0.2"),
                                   then_stop_when="100%")
    assert code == 0, screen[-3000:]
    assert "状态" in screen and "步骤" in screen and "服务里的一行" in screen and "已完成" in screen
    assert "\x1b[" in screen  # redrawn in place
    assert "finishing the current steps safely" in screen  # the Ctrl-C it was sent


def test_run_shows_the_rows_in_work_and_only_the_newest_that_ended():
    from datetime import UTC, datetime, timedelta

    from storage.models import Project, ProjectState
    from sync.progress import watching

    later = datetime.now(UTC) + timedelta(minutes=1)
    rows = [Project(id=f"p{i}", table_id="t", record_id=f"r{i}", title=f"已结束{i}", state=ProjectState.completed,
                    updated_at=later + timedelta(seconds=i)) for i in range(3)]
    rows.append(Project(id="p9", table_id="t", record_id="r9", title="还在做", state=ProjectState.generating,
                        updated_at=later))

    class Store:
        def projects(self, updated_since):
            return [p for p in rows if p.updated_at >= updated_since]

    screen = Terminal()
    with watching(Store(), screen, finished_kept=1):
        pass
    drawn = screen.buffer.getvalue()
    assert "还在做" in drawn and "已结束2" in drawn
    assert "已结束0" not in drawn and "已结束1" not in drawn
