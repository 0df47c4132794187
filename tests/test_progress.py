"""What a person at a terminal sees: `sheetreel demo` in a pseudo-terminal draws a live table of
its rows (titles, the sheet's labels, a bar); piped, the same run prints plain lines."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_in_terminal(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=secondary, stdout=secondary, stderr=secondary, cwd=ROOT, env=env)
    os.close(secondary)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
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
