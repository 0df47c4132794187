"""What `sheetreel once`/`run` say while they work: one key=value line per step by default, the
same as JSON objects with --log-format json, the libraries' own lines only with -v."""

from __future__ import annotations

import json
import logging
import re

import pytest

from sync.cli import build_parser, main

from conftest import Sheet


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("sync", "pipeline", "connectors", "storage", "alembic"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def one_row(sheet: Sheet, monkeypatch) -> str:
    sheet.use_env(monkeypatch)
    cols = sheet.cols
    [record] = sheet.add_rows([{cols.title: "日志", cols.image: sheet.image_cell(), cols.template: "tiny",
                                cols.shot_count: 1}])
    return record


def test_once_logs_each_step_with_its_project_record_and_seconds(sheet, monkeypatch, capsys):
    record = one_row(sheet, monkeypatch)
    assert main(["once"]) == 0
    lines = capsys.readouterr().err.splitlines()
    done = [line for line in lines if "step done" in line]
    assert [line.split(" step=")[1].split()[0] for line in done] == ["storyboard", "segments", "compose"]
    assert all(f"record={record}" in line and " seconds=" in line and "level=INFO" in line for line in done)
    # A shot's line says how long it took and, apart, how long the clip is (tiny: 1 s shots).
    [shot] = [line for line in lines if "shot done" in line]
    assert re.search(r" seconds=\d+\.\d length=1\.0$", shot), shot
    # Quiet libraries: no HTTP request lines, no scheduler ticks.
    assert not [line for line in lines if "logger=httpx" in line or "apscheduler" in line or "HTTP Request" in line]


def test_json_lines_carry_the_fields_and_v_is_accepted_after_the_command(sheet, monkeypatch, capsys):
    record = one_row(sheet, monkeypatch)
    assert main(["once", "-v", "--log-format", "json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    done = [e for e in events if e["event"] == "step done"]
    assert {e["step"] for e in done} == {"storyboard", "segments", "compose"}
    assert all(e["record"] == record and float(e["seconds"]) >= 0 and e["level"] == "info" for e in done)
    assert any(e["level"] == "debug" or not e["logger"].startswith(("sync", "pipeline")) for e in events)  # -v


def test_the_log_options_go_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-v", "status"]).verbose is True
    assert parser.parse_args(["status", "-v"]).verbose is True
    assert parser.parse_args(["status"]).verbose is False
    assert parser.parse_args(["worker", "--queues", "cpu", "--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["run", "--log-format", "xml"])
    assert e.value.code == 2
