"""The vertical slice end to end: rows in the emulated sheet become videos, and the rows show it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from connectors import ffmpeg
from connectors.feishu.lark_client import LarkBitable
from connectors.feishu.protocol import FieldType
from storage.models import ProjectState, StepRun
from sync.app import make_stores, make_table
from sync.rows import text_of

from conftest import ASSETS, Sheet

pytestmark = pytest.mark.databases  # every test here on SQLite and on PostgreSQL


def good_row(sheet: Sheet, title: str, **extra) -> dict:
    cols = sheet.cols
    return {cols.title: title, cols.image: sheet.image_cell(), cols.scene: "小猫吃饭", cols.template: "tiny", **extra}


def assert_final_video(path: Path, duration: float, width: int, height: int) -> None:
    info = ffmpeg.probe(path)
    assert (info.video_streams, info.audio_streams) == (1, 1)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert (info.width, info.height) == (width, height)
    assert abs(info.duration - duration) <= 0.2
    assert mean_volume_db(path) > -40, "the music bed is missing or silent"


def mean_volume_db(path: Path) -> float:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(path), "-af", "volumedetect", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    return float(out.split("mean_volume:")[1].split("dB")[0])


def assert_row_shows_completed(sheet: Sheet, table: LarkBitable, record_id: str, project, store) -> None:
    """Read the row back through lark-oapi, the way the user's sheet would show it."""
    cols = sheet.cols
    (record,) = [r for r in table.search() if r.record_id == record_id]
    cells = record.fields
    paths = store.paths(project)
    assert text_of(cells[cols.status]) == "已完成"
    assert text_of(cells[cols.progress]).startswith("100")
    assert text_of(cells[cols.project_id]) == project.id
    for n in range(1, project.shot_count + 1):
        assert cells[cols.segment(n)]["link"].endswith(f"seg_{n - 1:02d}.mp4")
    assert cells[cols.final_url]["link"] == project.final_url
    assert cols.error not in cells
    for column, local in ((cols.final_video, paths.final_video), (cols.cover, paths.cover)):
        (attachment,) = cells[column]
        assert table.download_media(attachment["file_token"]) == local.read_bytes()


def test_rows_become_videos_and_rows_show_them(sheet):
    cols = sheet.cols
    attached, longer = sheet.add_rows([good_row(sheet, "两段"), good_row(sheet, "三段", **{cols.shot_count: 3})])
    app = sheet.app()
    app.once()

    table = make_table(sheet.settings)
    for record_id, shots in ((attached, 2), (longer, 3)):
        project = app.store.by_record(sheet.table_id, record_id)
        assert project.state == ProjectState.completed, project.error
        assert project.shot_count == shots
        assert_final_video(app.store.paths(project).final_video, shots * 1.0, 180, 320)
        assert_row_shows_completed(sheet, table, record_id, project, app.store)


BAD_ROWS = {
    "no image": ({"首帧图片": None}, "首帧图片为空"),
    "image url 404": ({"首帧图片": {"text": "x", "link": "{base}/missing.jpg"}}, "HTTP 404"),
    "url is not an image": ({"首帧图片": {"text": "x", "link": "{base}/page.html"}}, "不是图片"),
    "unknown template": ({"模板": "no-such-template"}, "模板“no-such-template”不存在"),
    "template with ../": ({"模板": "../etc"}, "不合法"),
    "shot count 0": ({"段数": "0"}, "段数“0”无效"),
    "shot count -1": ({"段数": "-1"}, "段数“-1”无效"),
    "shot count 999": ({"段数": "999"}, "段数“999”无效"),
    "shot count abc": ({"段数": "abc"}, "段数“abc”无效"),
    "date with ../": ({"发布日期": "../2026-01-01"}, "发布日期“../2026-01-01”无效"),
    "date with /": ({"发布日期": "/etc/passwd"}, "发布日期“/etc/passwd”无效"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS), ids=list(BAD_ROWS))
def test_bad_row_fails_with_a_clear_error_and_others_complete(case, emulator, tmp_path, file_server):
    www, base = file_server
    (www / "page.html").write_text("<html>not an image</html>")
    (www / "cat.jpg").write_bytes((ASSETS / "sample_1.jpg").read_bytes())
    # Images as links, count and date as text: the loosest sheet a user can make, so any input fits.
    overrides = {"首帧图片": FieldType.url, "段数": FieldType.text, "发布日期": FieldType.text}
    sheet = Sheet(emulator, tmp_path / "data", overrides=overrides)
    cells, expected = BAD_ROWS[case]
    link = {sheet.cols.image: {"text": "猫", "link": f"{base}/cat.jpg"}}
    bad_cells = {k: (v if not isinstance(v, dict) else {**v, "link": v["link"].format(base=base)}) for k, v in cells.items()}
    bad = {k: v for k, v in good_row(sheet, "坏行", **{**link, **bad_cells}).items() if v is not None}
    good, broken = sheet.add_rows([good_row(sheet, "好行", **link), bad])
    app = sheet.app()
    app.once()

    assert app.store.by_record(sheet.table_id, good).state == ProjectState.completed
    project = app.store.by_record(sheet.table_id, broken)
    assert project.state == ProjectState.failed
    row = sheet.row(broken)["fields"]
    assert text_of(row["状态"]) == "失败"
    assert expected in text_of(row["错误信息"])
    # Nothing was written outside the data dir, whatever the row said.
    assert not (tmp_path / "etc").exists() and not (tmp_path / "data" / "etc").exists()


def test_polling_twice_creates_nothing_twice_and_regenerates_nothing(sheet):
    sheet.add_rows([good_row(sheet, "一"), good_row(sheet, "二")])
    sheet.app().once()
    store = make_stores(sheet.settings).projects
    before = {p.id: _mtimes(store.paths(p).root) for p in store.projects()}
    steps_before = _step_count(store)

    sheet.app().once()

    after = {p.id: _mtimes(store.paths(p).root) for p in store.projects()}
    assert len(after) == 2
    assert {pid: {k: v for k, v in m.items() if k != "meta.json"} for pid, m in after.items()} == {
        pid: {k: v for k, v in m.items() if k != "meta.json"} for pid, m in before.items()
    }
    assert _step_count(store) == steps_before


def test_two_pollers_at_once_never_work_on_the_same_project(sheet):
    sheet.add_rows([good_row(sheet, f"行{i}") for i in range(4)])
    env = {**os.environ, **sheet.env()}
    procs = [
        subprocess.Popen([sys.executable, "-m", "sync.cli", "once"], env=env, cwd=Path(__file__).parent.parent,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    store = make_stores(sheet.settings).projects
    projects = store.projects()
    assert len(projects) == 4
    with store.session() as s:
        runs = s.exec(select(StepRun)).all()
    # Each step ran exactly once per project, whichever process ran it.
    assert sorted((r.project_id, r.step) for r in runs) == sorted(
        (p.id, step) for p in projects for step in ("storyboard", "segments", "compose")
    )
    assert all(p.state == ProjectState.completed for p in projects)


def test_db_is_rebuilt_from_meta_json(sheet):
    sheet.add_rows([good_row(sheet, "一"), good_row(sheet, "二", 模板="missing")])
    sheet.app().once()
    store = make_stores(sheet.settings).projects
    before = {p.id: (p.state, p.final_url, len(store.segments(p.id)), len(store.steps(p.id))) for p in store.projects()}
    # The database is lost (the file deleted; on PostgreSQL every table dropped).
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    store.engine.dispose()
    if store.engine.dialect.name == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            (sheet.settings.data_dir / f"sheetreel.db{suffix}").unlink(missing_ok=True)

    fresh = make_stores(sheet.settings).projects
    assert fresh.projects() == []
    assert sorted(fresh.rebuild_from_meta()) == sorted(before)
    after = {p.id: (p.state, p.final_url, len(fresh.segments(p.id)), len(fresh.steps(p.id))) for p in fresh.projects()}
    assert after == before
    assert fresh.rebuild_from_meta() == []  # idempotent


def _mtimes(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def _step_count(store) -> int:
    with store.session() as s:
        return len(s.exec(select(StepRun)).all())


