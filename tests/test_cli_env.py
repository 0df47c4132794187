"""The shell around the CLI: variables other programs export, a bad setting, a closed pipe."""

from __future__ import annotations

import io

import pytest

from sync.cli import main
from sync.settings import Settings


def test_the_terminal_width_in_COLUMNS_is_not_a_setting(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COLUMNS", "80")  # `watch sheetreel status` exports it
    main(["status", "--data-dir", str(tmp_path)])
    assert "invalid setting" not in capsys.readouterr().err
    monkeypatch.setenv("SHEETREEL_COLUMNS", '{"status": "Status", "segment_pattern": "Seg {n}"}')
    cols = Settings().columns
    assert (cols.status, cols.segment(3), cols.progress) == ("Status", "Seg 3", "进度")


@pytest.mark.parametrize("columns, said", [
    ('{"segment_pattern": "Seg {x}"}', "must hold {n} once"),
    ('{"segment_pattern": "Seg"}', "must hold {n} once"),
    ('{"segment_pattern": "Seg {n"}', "is not a pattern"),
    ('{"status": "标题"}', "one column name for two uses: 标题"),  # status written over the user's titles
    ('{"final_url": "段2视频"}', "one column name for two uses: 段2视频"),
])
def test_a_column_override_that_cannot_work_is_refused_at_start(columns, said, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SHEETREEL_COLUMNS", columns)
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: invalid setting: SHEETREEL_COLUMNS:") and said in err and "Traceback" not in err


def test_an_unknown_time_zone_is_one_line_and_a_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SHEETREEL_TIMEZONE", "Mars/Olympus_Mons")
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown time zone 'Mars/Olympus_Mons'" in err
    assert len(err.strip().splitlines()) == 2  # Error: … / Hint: …


@pytest.mark.parametrize("name, value", [("SEGMENT_BACKEND", "difusers"), ("STORYBOARD_BACKEND", "gpt")])
def test_a_misspelt_backend_stops_at_start_with_the_choices(name, value, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(name, value)
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: invalid setting: {name}:") and ("'diffusers'" in err or "'llm'" in err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2


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


def test_a_damaged_demo_sheet_is_a_failed_check_and_one_line_elsewhere(tmp_path, capsys):
    from sync.demo import run_demo

    demo = tmp_path / "demo"
    run_demo(demo, rows=1, shots=1)
    capsys.readouterr()
    (demo / "emulator" / "demo_table.json").write_text('{"app_token": "x"')  # cut short
    assert main(["health", "--data-dir", str(demo)]) == 1
    out = capsys.readouterr().out
    assert "FAIL sheet: the demo's emulated sheet in" in out and "is damaged" in out and "ok   db" in out
    (demo / "emulator" / "demo_table.json").write_text('{"app_token": "x", "table_id": "y", "extra": 1}')
    (demo / "emulator" / "state.json").write_text('{"version": ')
    assert main(["verify-consistency", "--data-dir", str(demo)]) == 1
    err = capsys.readouterr().err
    assert "is damaged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 2


def test_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    import pytest

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"sheetreel {version('sheetreel')}"


@pytest.mark.parametrize("argv, said", [
    (["inspect-db", "--state", "bogus"], "argument --state: unknown state 'bogus'"),
    (["status", "--date", "2026-13-01"], "argument --date: not a date: '2026-13-01'"),
    (["reset-stuck", "--minutes", "-5"], "argument --minutes: not a number from 0 to 1000000: '-5'"),
    (["cleanup", "--days", "soon"], "argument --days: not a number from 0 to 1000000: 'soon'"),
    (["cleanup", "--days", "1e10"], "argument --days: not a number from 0 to 1000000: '1e10'"),
    (["inspect-db", "--stuck-minutes", "inf"], "argument --stuck-minutes: not a number from 0 to 1000000: 'inf'"),
    (["health", "--min-free-gb", "nan"], "argument --min-free-gb: not a number from 0 to 1000000: 'nan'"),
    (["demo", "--rows", "0"], "argument --rows: not a whole number from 1 to 50: '0'"),
    (["demo", "--shots", "three"], "argument --shots: not a whole number from 1 to 20: 'three'"),
])
def test_a_bad_argument_is_a_usage_error_with_exit_2(argv, said, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--data-dir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not (tmp_path / "sheetreel.db").exists()


def test_an_argument_that_is_not_utf8_is_a_usage_error(tmp_path, capsys):
    assert main(["status", "--data-dir", str(tmp_path), b"\xff".decode("utf-8", "surrogateescape")]) == 2
    assert "an argument is not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("env, argv, said", [
    ({"SHEETREEL_QUEUES": "{bad"}, ["status"], 'invalid setting: error parsing value for field "queues"'),
    ({"SHEETREEL_DATABASE_URL": "postgresql://u:p@[::1/db"}, ["status"], "is not a database URL"),
    ({"SHEETREEL_DATABASE_URL": "sqlite:////proc/nope/x.db"}, ["status"], "cannot make the folder of /proc/nope/x.db"),
    ({}, ["demo", "--data-dir", "{file}"], "File exists: {file}"),
])
def test_an_unusable_setting_or_path_is_one_line_and_a_hint(env, argv, said, monkeypatch, tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([a.format(file=file) for a in argv]) == 1
    err = capsys.readouterr().err
    assert said.format(file=file) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2 and "p@" not in err  # Error: … / Hint: …, never the password


def test_a_dotenv_that_is_not_utf8_is_one_line_and_a_hint(monkeypatch, tmp_path, capsys):
    (tmp_path / ".env").write_bytes(b"SHEETREEL_DATA_DIR=\xff\n")
    monkeypatch.chdir(tmp_path)
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: .env cannot be read: it is not UTF-8 text") and "Traceback" not in err


def test_a_metrics_port_in_use_is_one_line_and_a_hint():
    import socket

    from sync.cli_support import CliError
    from sync.metrics import Metrics, serving

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CliError, match=f"cannot serve /metrics on 127.0.0.1:{port}: Address already in use"):
            with serving(Metrics(), "127.0.0.1", port):
                pass


def test_a_template_with_a_misspelt_key_is_refused_naming_the_key(tmp_path):
    from pipeline.templates import TemplateLibrary
    from storage.errors import Permanent

    for name, extra in (("typo", "shot_cont = 3\n"), ("table", "[subtitle]\nmode = \"burn\"\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "template.toml").write_text(f'name = "x"\n{extra}', encoding="utf-8")
    with pytest.raises(Permanent, match="shot_cont: Extra inputs are not permitted"):
        TemplateLibrary(tmp_path).get("typo")
    with pytest.raises(Permanent, match="subtitle: Extra inputs are not permitted"):
        TemplateLibrary(tmp_path).get("table")


def test_health_and_migrate_on_an_empty_dir_create_no_database(tmp_path, capsys):
    assert main(["health", "--data-dir", str(tmp_path)]) == 1
    assert main(["migrate-local-to-db", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no project folders in" in err and "Traceback" not in err
    assert not (tmp_path / "sheetreel.db").exists()


def test_status_does_not_import_the_feishu_sdk(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from sync.cli import main; main(['status', '--data-dir', sys.argv[1]]); "
            "print('lark_oapi' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr
