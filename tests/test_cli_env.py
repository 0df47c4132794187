"""The shell around the CLI: variables other programs export, a bad setting, a closed pipe."""

from __future__ import annotations

import io

from sync.cli import main
from sync.settings import Settings


def test_the_terminal_width_in_COLUMNS_is_not_a_setting(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COLUMNS", "80")  # `watch sheetreel status` exports it
    main(["status", "--data-dir", str(tmp_path)])
    assert "invalid setting" not in capsys.readouterr().err
    monkeypatch.setenv("SHEETREEL_COLUMNS", '{"status": "Status", "segment_pattern": "Seg {n}"}')
    cols = Settings().columns
    assert (cols.status, cols.segment(3), cols.progress) == ("Status", "Seg 3", "进度")


def test_an_unknown_time_zone_is_one_line_and_a_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SHEETREEL_TIMEZONE", "Mars/Olympus_Mons")
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown time zone 'Mars/Olympus_Mons'" in err
    assert len(err.strip().splitlines()) == 2  # Error: … / Hint: …


class ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        return self._fd


def test_a_reader_that_stops_early_is_not_an_error(monkeypatch, tmp_path):
    import os

    from sync.demo import run_demo

    run_demo(tmp_path / "demo", rows=1, shots=1)
    read, write = os.pipe()
    pipe = ClosedPipe()
    pipe._fd = os.dup(1)  # what the handler points at devnull; the test's own stdout is restored below
    saved = os.dup(1)
    monkeypatch.setattr("sys.stdout", pipe)
    try:
        assert main(["status", "--data-dir", str(tmp_path / "demo"), "--json"]) == 0
    finally:
        os.dup2(saved, 1)
        for fd in (read, write, saved, pipe._fd):
            os.close(fd)


def test_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    import pytest

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"sheetreel {version('sheetreel')}"
