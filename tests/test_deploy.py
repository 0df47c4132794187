"""The deployment files say what the CLI accepts, and the scale-out roles refuse what cannot work."""

from __future__ import annotations

import configparser
import fnmatch
import json
import shlex
import subprocess
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


def dockerfile(name: str) -> dict[str, str]:
    """Each instruction's arguments, the last one of each kind (as Docker applies them)."""
    lines = (ROOT / name).read_text().replace("\\\n", " ").splitlines()
    instructions = (line.strip().partition(" ") for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return {keyword.upper(): rest.strip() for keyword, _, rest in instructions}


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_each_image_runs_a_command_the_cli_accepts_as_a_user_not_root(name):
    found = dockerfile(name)
    assert json.loads(found["ENTRYPOINT"]) == ["sheetreel"]
    build_parser().parse_args(json.loads(found["CMD"]))
    assert found["USER"] not in ("root", "0")


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (its last matching line wins;
    a pattern that matches a folder matches everything in it)."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            candidates += ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
            pattern = pattern[3:]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            result = not negated
    return result


def test_the_build_context_holds_the_package_and_leaves_out_venvs_data_and_secrets():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needed = [p for p in tracked if p in ("pyproject.toml", "README.md", "LICENSE")
              or p.split("/")[0] in ("connectors", "pipeline", "sync", "storage", "templates", "scripts")]
    assert len(needed) > 100 and not [p for p in needed if ignored(p, patterns)]
    for unwanted in (".venv/bin/python", ".venv-high/lib/x.py", ".git/config", ".env", ".env.local", "data/sheetreel.db",
                     "sync/__pycache__/cli.cpython-311.pyc", "tests/test_demo.py", "models/wan/config.json"):
        assert ignored(unwanted, patterns), unwanted
    assert not ignored(".env.example", patterns)
