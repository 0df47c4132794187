"""Shared fixtures: a clean environment, a running emulator with a full table, a wired App."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from lark_oapi.core.token.manager import TokenManager

from connectors.feishu.emulator import Emulator
from sync.app import App, make_table
from sync.columns import Columns
from sync.settings import Settings

# The same examples every run, so main cannot go red on a draw; HYPOTHESIS_PROFILE=explore for new ones.
hypothesis_settings.register_profile("suite", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

# A PostgreSQL server the suite may create databases on (read before clean_environ runs), e.g.
# postgresql://sheetreel:sheetreel@127.0.0.1:5432/postgres. Tests marked `databases` run on
# SQLite and on it; without it they skip on Postgres, unless SHEETREEL_TEST_POSTGRES_REQUIRED
# is set (CI), where a missing server is a failure rather than a silent skip.
POSTGRES_ADMIN_URL = os.environ.get("SHEETREEL_TEST_POSTGRES", "")
POSTGRES_REQUIRED = bool(os.environ.get("SHEETREEL_TEST_POSTGRES_REQUIRED"))
TEST_TEMPLATES = Path(__file__).parent / "templates"
ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "sync" / "demo_assets"
APP_ID, SECRET = "cli_test", "test-secret"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch, tmp_path):
    """Settings must come from what a test passes, never from the developer's shell or .env."""
    for key in list(os.environ):
        if key.startswith(("FEISHU_", "SHEETREEL_", "STORYBOARD_", "SEGMENT_", "POLL_", "FLUSH_", "OSS_", "ASR_", "LLM_", "TTS_", "OUTBOX_",
                           "VIDEO_", "DASHSCOPE_", "WAN_", "ARK_", "SEEDANCE_", "KLING_", "DIFFUSERS_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    # lark-oapi caches tenant tokens process-wide; a token from an earlier test's emulator is stale.
    getattr(TokenManager.cache, "cache", {}).clear()


def pytest_configure(config):
    config.addinivalue_line("markers", "databases: run the test on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc):
    if "database_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("databases"):
        metafunc.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def database_url(request):
    """SHEETREEL_DATABASE_URL for the test: "" (SQLite in the data dir) or a fresh Postgres database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield ""
        return
    if not POSTGRES_ADMIN_URL:
        if POSTGRES_REQUIRED:
            pytest.fail("SHEETREEL_TEST_POSTGRES_REQUIRED is set but SHEETREEL_TEST_POSTGRES is not")
        pytest.skip("set SHEETREEL_TEST_POSTGRES=postgresql://user:password@127.0.0.1:5432/postgres to run on PostgreSQL")
    import psycopg

    name = f"sheetreel_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table_schema(overrides: dict[str, int] | None = None) -> list[tuple]:
    schema = [(name, ftype) + ((({"options": [{"name": o} for o in opts]}),) if opts else ())
              for name, ftype, opts in Columns().schema(["tiny", "pet-eating"])]
    if overrides:
        schema = [(n, overrides.get(n, t), *rest) for n, t, *rest in schema]
    return schema


class Sheet:
    """An emulated base with one table, plus the settings that point SheetReel at it."""

    def __init__(self, emu: Emulator, data_dir: Path, overrides: dict[str, int] | None = None, database_url: str = "",
                 **settings):
        self.emu = emu
        # Advanced permissions on: every download must prove its table, as such bases demand.
        self.app_token = emu.create_app(name="test", advanced_permissions=True)
        self.table_id = emu.create_table(self.app_token, name="videos", fields=table_schema(overrides))
        defaults = {"SHEETREEL_ALLOW_PRIVATE_URLS": True, "SHEETREEL_RETRY_BASE_SECONDS": 0,
                    "SHEETREEL_TEMPLATES_DIR": TEST_TEMPLATES, "SHEETREEL_DATABASE_URL": database_url}
        self.settings = Settings(
            FEISHU_APP_ID=APP_ID,
            FEISHU_APP_SECRET=SECRET,
            FEISHU_APP_TOKEN=self.app_token,
            FEISHU_TABLE_ID=self.table_id,
            FEISHU_BASE_URL=emu.url,
            SHEETREEL_DATA_DIR=data_dir,
            SHEETREEL_DEFAULT_TEMPLATE="tiny",
            **(defaults | settings),
        )
        self.cols = self.settings.columns

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a `sheetreel` process needs to work on this sheet as the test does."""
        s = self.settings
        values = {
            "FEISHU_APP_ID": s.feishu_app_id, "FEISHU_APP_SECRET": s.feishu_app_secret.get_secret_value(),
            "FEISHU_APP_TOKEN": s.feishu_app_token, "FEISHU_TABLE_ID": s.feishu_table_id,
            "FEISHU_BASE_URL": s.feishu_base_url, "SHEETREEL_DATA_DIR": str(s.data_dir),
            "SHEETREEL_TEMPLATES_DIR": str(s.templates_dir), "SHEETREEL_DEFAULT_TEMPLATE": s.default_template,
            "SHEETREEL_ALLOW_PRIVATE_URLS": "true", "SHEETREEL_RETRY_BASE_SECONDS": str(s.retry_base_seconds),
        }
        if s.database_url:
            values["SHEETREEL_DATABASE_URL"] = s.database_url
        return values | extra

    def use_env(self, monkeypatch, **extra: str) -> None:
        """Point in-process CLI calls (main([...])) at this sheet."""
        for key, value in self.env(**extra).items():
            monkeypatch.setenv(key, value)

    def add_rows(self, rows: list[dict]) -> list[str]:
        return self.emu.add_records(self.app_token, self.table_id, rows)

    def image_cell(self, name: str = "sample_2.jpg") -> list[dict]:
        token = self.emu.upload_media(self.app_token, name, (ASSETS / name).read_bytes(), "image/jpeg")
        return [{"file_token": token}]

    def row(self, record_id: str) -> dict:
        return self.emu.get_record(self.app_token, self.table_id, record_id)

    def app(self) -> App:
        return App(self.settings, make_table(self.settings))

    @property
    def run_log(self) -> Path:
        """Where a started service's stderr goes: a file, as a pipe nobody reads would fill and stall it."""
        return self.settings.data_dir.parent / "run.log"

    def start_run(self, **extra: str) -> subprocess.Popen:
        """`sheetreel run` on this sheet as a process of its own, polling and flushing briskly."""
        env = {**os.environ, **self.env(**{"POLL_INTERVAL_SECONDS": "0.3", "FLUSH_INTERVAL_SECONDS": "0.2", **extra})}
        return subprocess.Popen([sys.executable, "-m", "sync.cli", "run"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=self.run_log.open("ab"))


def wait_for(condition, timeout: float = 60) -> None:
    """Poll a condition a user could observe until it holds; generous timeouts for a loaded CI."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def record_starts(shims: Path, monkeypatch) -> Path:
    """ffmpeg and ffprobe ahead on PATH that note each start ("<nice value> <program> <arguments>"
    a line, in the returned file), then run the real ones."""
    shims.mkdir(exist_ok=True)
    log = shims / "starts.log"
    log.write_text("")
    for program in ("ffmpeg", "ffprobe"):
        real = shutil.which(program)
        assert real, f"{program} is not installed"
        shim = shims / program
        shim.write_text(f'#!/bin/sh\necho "$(nice) {program} $*" >> "{log}"\nexec "{real}" "$@"\n')
        shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    return log


def stream_info(video: Path) -> dict:
    """The first video stream as ffprobe sees it, frames counted by decoding."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,pix_fmt,width,height,nb_read_frames", "-of", "json", str(video)],
        capture_output=True, check=True,
    )
    return json.loads(done.stdout)["streams"][0]


@pytest.fixture
def emulator():
    with Emulator(app_id=APP_ID, app_secret=SECRET) as emu:
        emu.start()
        yield emu


@pytest.fixture
def sheet(emulator, tmp_path, database_url) -> Sheet:
    return Sheet(emulator, tmp_path / "data", database_url=database_url)


@pytest.fixture
def file_server(tmp_path):
    """A loopback web server for image URLs: files under ./www, everything else 404."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def trickle():
    """A loopback server that answers 200 and then sends a byte every 0.2 s (a header line every
    0.5 s for PUT) until the test ends: each read is quick, the whole answer never comes."""
    release = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def _drip(self, piece: bytes, every: float) -> None:
            while not release.is_set():
                try:
                    self.wfile.write(piece)
                    self.wfile.flush()
                except OSError:
                    return
                release.wait(every)

        def _answer(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg" if self.path.endswith(".jpg") else "application/json")
            self.end_headers()
            self._drip(b" ", 0.2)

        def do_PUT(self):  # headers that never end: the status line alone does not finish a PUT
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._drip(b"X-Pad: 1\r\n", 0.5)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()
