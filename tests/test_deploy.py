"""The deployment files say what the CLI accepts, and the scale-out roles refuse what cannot work."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from sync.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def test_every_compose_service_runs_a_command_the_cli_accepts():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "gateway", "worker-cpu", "worker-gpu"} <= set(services)
    for name in ("gateway", "worker-cpu", "worker-gpu"):
        service = services[name]
        build_parser().parse_args(service["command"])
        assert service["environment"]["SHEETREEL_DATABASE_URL"].startswith("postgresql://")
        assert "store:/srv/sheetreel/store" in service["volumes"]
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


@pytest.mark.parametrize("unit", sorted(p.name for p in (ROOT / "scripts" / "systemd").glob("*.service")))
def test_every_systemd_unit_starts_a_command_the_cli_accepts(unit):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(ROOT / "scripts" / "systemd" / unit)
    service = parser["Service"]
    argv = shlex.split(service["ExecStart"].replace("%I", "gpu:wan"))
    assert argv[0].endswith("/sheetreel")
    build_parser().parse_args(argv[1:])
    assert service["EnvironmentFile"] and service["WorkingDirectory"]
    # Longer than the longest shot, so SIGTERM lets the running step reach its safe point.
    assert service["TimeoutStopSec"].endswith("min")


def test_the_roles_need_postgres_and_say_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHEETREEL_DATA_DIR", str(tmp_path))
    assert main(["worker", "--queues", "cpu"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Error: the gateway and worker roles need PostgreSQL as the one database of every host"
    assert err[1].startswith("Hint: set SHEETREEL_DATABASE_URL=postgresql://")
    with pytest.raises(SystemExit) as e:
        main(["worker", "--queues", "gpu wan!"])
    assert e.value.code == 2


def test_env_example_lists_every_setting_as_the_settings_class_has_it():
    from scripts.env_example import render
    from sync.settings import Settings

    shipped = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert shipped == render(), "run: python scripts/env_example.py > .env.example"
    listed = {line[2:].split("=", 1)[0] for line in shipped.splitlines() if line.startswith("# ") and "=" in line
              and line[2:].split("=", 1)[0].isupper()}
    assert listed == {f.alias for f in Settings.model_fields.values()}
