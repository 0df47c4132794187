"""Several hosts: one gateway and N workers, each its own process with its own data dir, sharing
only PostgreSQL and the object store (a shared folder here), against the emulated table."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import make_engine
from storage.models import ProjectState, SegmentState
from storage.stores import Stores
from sync.rows import text_of

from conftest import ASSETS, Sheet, wait_for

ROOT = Path(__file__).resolve().parent.parent
WAIT = 360
on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


class Fleet:
    """Hosts as processes: `gateway`, `w1`, `w2`, ... each with a data dir and a log of its own."""

    def __init__(self, sheet: Sheet, root: Path):
        self.sheet, self.root = sheet, root
        self.procs: dict[str, subprocess.Popen] = {}
        self.store_dir = root / "store"
        self.extra: dict[str, str] = {}  # more settings for every host

    def env(self, host: str) -> dict[str, str]:
        return {**os.environ, **self.sheet.env(
            SHEETREEL_DATA_DIR=str(self.root / host), SHEETREEL_STORE_DIR=str(self.store_dir),
            FEISHU_CHAT_ID="oc_team", FEISHU_SHEET_URL="https://x.feishu.cn/base/app", POLL_INTERVAL_SECONDS="0.3", FLUSH_INTERVAL_SECONDS="0.2",
            SHEETREEL_STALLED_SECONDS="5", SHEETREEL_WORKERS="2", SHEETREEL_MAX_CRASH_RESUMES="20", **self.extra)}

    def start(self, host: str, *command: str) -> subprocess.Popen:
        log = open(self.root / f"{host}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "sync.cli", "-v", *command], env=self.env(host), cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs[host] = proc
        return proc

    def gateway(self) -> None:
        self.start("gateway", "gateway")

    def worker(self, host: str, queues: str = "cpu") -> None:
        self.start(host, "worker", "--queues", queues)

    def kill(self, host: str) -> None:
        self.procs[host].send_signal(signal.SIGKILL)
        self.procs[host].wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))


@pytest.fixture
def fleet(emulator, tmp_path, database_url):
    sheet = Sheet(emulator, tmp_path / "test", database_url=database_url, FEISHU_CHAT_ID="oc_team")
    f = Fleet(sheet, tmp_path)
    yield f
    f.stop_all()


def add_rows(sheet: Sheet, n: int, shots: int = 3) -> list[str]:
    cols = sheet.cols
    return sheet.add_rows([{cols.title: f"行{i}", cols.image: sheet.image_cell(), cols.template: "tiny",
                            cols.shot_count: shots} for i in range(n)])


def states(sheet: Sheet, rids: list[str]) -> list[str]:
    return [text_of(sheet.row(r)["fields"].get(sheet.cols.status)) for r in rids]


def all_done(fleet: Fleet, rids: list[str]) -> bool:
    """Every row shows 已完成 and was announced; a row that failed ends the wait at once."""
    now = states(fleet.sheet, rids)
    if ProjectState.failed.label in now:
        errors = [text_of(fleet.sheet.row(r)["fields"].get(fleet.sheet.cols.error)) for r in rids]
        raise AssertionError(f"a row failed: {errors}\n{fleet.logs()[-4000:]}")
    return now == [ProjectState.completed.label] * len(rids) and len(announced(fleet.sheet)) == len(rids)


def announced(sheet: Sheet) -> Counter:
    """How often each row's outcome reached the chat."""
    found = Counter()
    for m in sheet.emu.messages:
        if m["kind"] == "im":
            found.update(set(re.findall(r"record=(\w+)", str(m["content"]))))  # the text and the button name it
    return found


def repeated_writes(sheet: Sheet) -> list[str]:
    """Rows that were sent the same write twice in a row (delivered by two flushers). 更新时间 is
    stamped when a change is committed, so it tells one write delivered twice from a row that
    changed and changed back (a killed worker's shot redone: 生成第2/4段 again, the change between
    merged away in the outbox)."""
    last, repeated = {}, []
    for rid, cells in sheet.emu.writes:
        if last.get(rid) == cells:
            repeated.append(rid)
        last[rid] = cells
    return repeated


def active_jobs(stores: Stores) -> int:
    with stores.projects.session() as s:
        return s.execute(text("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")).scalar()


def open_stores(fleet: Fleet) -> Stores:
    return Stores.open(make_engine(fleet.sheet.settings.db_url), fleet.root / "test")


@on_postgres
def test_a_gateway_and_two_workers_on_their_own_hosts_finish_every_row_once(fleet):
    sheet = fleet.sheet
    rids = add_rows(sheet, 4)
    fleet.gateway()
    fleet.worker("w1")
    fleet.worker("w2")
    wait_for(lambda: all_done(fleet, rids), WAIT)

    stores = open_stores(fleet)
    projects = stores.projects.projects()
    assert [p.state for p in projects] == [ProjectState.completed] * 4
    for p in projects:
        assert [s.state for s in stores.projects.segments(p.id)] == [SegmentState.done] * 3
        assert (fleet.store_dir / Path(*stores.projects.paths(p).final_video.relative_to(fleet.root / "test" / "projects").parts)).is_file()
        assert sheet.row(p.record_id)["fields"].get(sheet.cols.final_video)  # the MP4 as an attachment
    assert announced(sheet) == Counter({r: 1 for r in rids})
    assert sheet.emu.writes and repeated_writes(sheet) == []
    # The work was shared, and the gateway ran none of it.
    logs = fleet.logs()
    assert "step started" in logs and "step started" not in (fleet.root / "gateway.log").read_text()
    wait_for(lambda: active_jobs(stores) == 0, WAIT)  # every job ended (the last just after its commit)


@on_postgres
def test_workers_killed_mid_stage_hand_their_projects_on_and_nothing_is_done_twice(fleet):
    sheet = fleet.sheet
    rids = add_rows(sheet, 12, shots=4)
    fleet.gateway()
    for host in ("w1", "w2", "w3"):
        fleet.worker(host)
    stores = open_stores(fleet)
    rng = random.Random(11)
    done = ProjectState.completed.label
    kills = 0
    for _ in range(4):  # kill a random worker mid-work, bring it back, four times
        wait_for(lambda: any(p.state in (ProjectState.storyboarding, ProjectState.generating, ProjectState.composing)
                             for p in stores.projects.projects()) or states(sheet, rids) == [done] * 12, WAIT)
        if states(sheet, rids) == [done] * 12:
            break
        host = rng.choice(["w1", "w2", "w3"])
        fleet.kill(host)
        kills += 1
        fleet.worker(host)
    wait_for(lambda: all_done(fleet, rids), WAIT)

    assert kills >= 1
    assert [p.state for p in stores.projects.projects()] == [ProjectState.completed] * 12
    assert announced(sheet) == Counter({r: 1 for r in rids})
    assert repeated_writes(sheet) == []
    shots = Counter(re.findall(r"shot done project=(\S+) record=\S+ shot=(\d+)", fleet.logs()))
    assert shots and max(shots.values()) == 1, [k for k, n in shots.items() if n > 1]
    # DB, the meta.json and files in the store, and the sheet agree, seen from a host that did none of it.
    fleet.stop_all()
    check = subprocess.run([sys.executable, "-m", "sync.cli", "verify-consistency"], env=fleet.env("checker"), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "12 projects checked, 0 differences" in check.stdout, check.stdout + check.stderr


@on_postgres
def test_several_tables_in_scale_out_mode_each_row_written_in_its_tables_names(fleet, tmp_path):
    from test_connections import RENAMED, renamed_schema, table_section

    sheet, emu = fleet.sheet, fleet.sheet.emu
    other_app = emu.create_app("账号B", advanced_permissions=True)
    # B has nowhere to show previews: the workers learn it from the gateway, through the database.
    other = emu.create_table(other_app, "短片", [f for f in renamed_schema() if f[0] not in ("预览", "分镜预览")])
    (tmp_path / "connections.toml").write_text(
        table_section(name="A", app_token=sheet.app_token, table_id=sheet.table_id, default_template="tiny")
        + table_section(RENAMED, name="B", app_token=other_app, table_id=other, default_template="tiny", chat_id="oc_b"),
        encoding="utf-8")
    fleet.extra = {"SHEETREEL_CONNECTIONS": str(tmp_path / "connections.toml")}
    mine = add_rows(sheet, 2, shots=2)
    token = emu.upload_media(other_app, "b.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")
    theirs = emu.add_records(other_app, other, [{"视频标题": f"乙{i}", "首图": [{"file_token": token}], "段数": 2}
                                                for i in range(2)])
    fleet.gateway()
    fleet.worker("w1")
    fleet.worker("w2")

    def done() -> bool:
        ours = states(sheet, mine)
        other_rows = [text_of(emu.get_record(other_app, other, r)["fields"].get("处理状态")) for r in theirs]
        if ProjectState.failed.label in ours + other_rows:
            raise AssertionError(fleet.logs()[-4000:])
        return ours + other_rows == [ProjectState.completed.label] * 4

    wait_for(done, WAIT)
    for r in theirs:
        fields = emu.get_record(other_app, other, r)["fields"]
        assert "状态" not in fields and fields.get("成片") and text_of(fields["视频链接"])
    # The pictures are drawn after their stage, and reach the row a moment after its status.
    wait_for(lambda: all(sheet.row(r)["fields"].get(sheet.cols.preview) for r in mine), WAIT)
    for p in open_stores(fleet).projects.projects():
        drawn = [f.name for f in fleet.root.rglob(f"{p.id}/preview/*")]
        assert bool(drawn) == (p.table_id == sheet.table_id), (p.table_id, drawn)
    # Each table's outcomes in its own chat (A's is FEISHU_CHAT_ID, shared by the hosts).
    wait_for(lambda: Counter(m["receive_id"] for m in emu.messages if m["kind"] == "im") == {"oc_team": 2, "oc_b": 2},
             WAIT)
    assert "Traceback" not in fleet.logs()
