"""The 预览 and 分镜预览 cells: pictures of the plan before any shot is made, then of the shots."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from connectors import ffmpeg
from pipeline.preview import BACKGROUND
from storage.models import ProjectState

from conftest import Sheet, table_schema, wait_for

BACKGROUND_RGB = np.array([int(BACKGROUND[2 + 2 * i: 4 + 2 * i], 16) for i in range(3)])


def pixels(image: Path) -> np.ndarray:
    info = ffmpeg.probe(image)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(image), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(info.height, info.width, 3).astype(int)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def tiles(image: Path) -> list[tuple[int, int]]:
    """(width, height) of each picture on a contact sheet, found as the regions between the
    background-coloured gaps, left to right, top to bottom; empty slots are not counted."""
    rgb = pixels(image)
    background = np.abs(rgb - BACKGROUND_RGB).max(axis=2) <= 12  # JPEG's error
    found = []
    for top, bottom in runs(~background.all(axis=1)):
        for left, right in runs(~background[top:bottom].all(axis=0)):
            found.append((right - left, bottom - top))
    return found


def download(sheet: Sheet, cell: list[dict], to: Path) -> Path:
    (item,) = cell
    to.write_bytes(sheet.emu.media_bytes(item["file_token"]))
    return to


def test_step_mode_shows_the_plan_then_the_shots_as_contact_sheets(sheet: Sheet, tmp_path):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: "预览", cols.image: sheet.image_cell(), cols.scene: "小狗", cols.template: "tiny",
                              cols.mode: "分步", cols.shot_count: 3}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.storyboard_ready
    row = sheet.row(rid)["fields"]

    plan = tiles(download(sheet, row[cols.preview], tmp_path / "plan.jpg"))
    assert len(plan) == 3  # one per planned shot, in the template's 9:16
    assert all(abs(w / h - 180 / 320) < 0.03 for w, h in plan)
    animatic = download(sheet, row[cols.animatic], tmp_path / "animatic.mp4")
    info = ffmpeg.probe(animatic)
    assert info.video_codec == "h264" and abs(info.duration - 3.0) < 0.3  # the planned 3 × 1 s
    assert (info.width, info.height) == (270, 480)  # low resolution, the template's aspect
    assert not list(Path(sheet.settings.data_dir).rglob("seg_00.mp4"))  # no shot made yet

    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.action: "继续"})
    app.once()
    assert app.store.by_record(sheet.table_id, rid).state == ProjectState.segments_ready
    row = sheet.row(rid)["fields"]
    shots = tiles(download(sheet, row[cols.preview], tmp_path / "shots.jpg"))
    assert len(shots) == 6  # each shot's first and last frame
    assert all(abs(w / h - 180 / 320) < 0.03 for w, h in shots)
    assert len(row[cols.animatic]) == 1  # the plan's animatic stays


def test_a_table_without_the_preview_columns_still_makes_the_video_and_no_previews(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "data")
    bare = [f for f in table_schema() if f[0] not in ("预览", "分镜预览")]
    sheet.table_id = emulator.create_table(sheet.app_token, name="bare", fields=bare)
    sheet.settings = sheet.settings.model_copy(update={"feishu_table_id": sheet.table_id})
    (rid,) = sheet.add_rows([{"标题": "无预览", "首帧图片": sheet.image_cell(), "场景描述": "小猫", "模板": "tiny"}])
    app = sheet.app()
    app.once()
    row = sheet.row(rid)["fields"]
    assert row["状态"] == "已完成" and "错误信息" not in row
    # Nobody would see them: the ffmpeg work is not done.
    paths = app.store.paths(app.store.by_record(sheet.table_id, rid))
    assert paths.final_video.is_file() and not paths.plan_sheet.exists() and not paths.shots_sheet.exists()


def test_a_preview_that_cannot_be_drawn_leaves_the_row_alone(sheet: Sheet, monkeypatch, caplog):
    """A font or filter that fails here must not cost the operator the video."""
    monkeypatch.setattr("pipeline.preview.ANIMATIC_FPS", 0)  # ffmpeg refuses a zero frame rate
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: "坏预览", cols.image: sheet.image_cell(), cols.scene: "小狗", cols.template: "tiny"}])
    app = sheet.app()
    app.once()
    row = sheet.row(rid)["fields"]
    assert row["状态"] == "已完成" and "错误信息" not in row
    assert len(tiles_of_row(sheet, row[cols.preview])) == 4  # the shots' sheet still drew
    assert cols.animatic not in row
    assert "preview skipped" in caplog.text and "storyboard preview failed" in caplog.text


def tiles_of_row(sheet: Sheet, cell: list[dict]) -> list[tuple[int, int]]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return tiles(download(sheet, cell, Path(d) / "p.jpg"))


def test_the_shots_do_not_wait_for_the_plans_pictures_and_a_late_plan_keeps_out_of_the_shots_way(
        sheet: Sheet, monkeypatch, tmp_path):
    """Pictures are drawn after their stage commits: the GPU's work never waits for an animatic."""
    import threading

    from pipeline import preview

    release, real = threading.Event(), preview.plan_previews

    def slow_plan(*args, **kwargs) -> None:
        assert release.wait(120), "the test never let the plan's pictures be drawn"
        real(*args, **kwargs)

    monkeypatch.setattr(preview, "plan_previews", slow_plan)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: "不等预览", cols.image: sheet.image_cell(), cols.scene: "小狗", cols.template: "tiny",
                              cols.shot_count: 2}])
    app = sheet.app()
    once = threading.Thread(target=app.once)
    once.start()
    try:
        # The whole video is made while the plan's pictures are still being drawn.
        wait_for(lambda: app.store.by_record(sheet.table_id, rid) is not None
                 and app.store.by_record(sheet.table_id, rid).state == ProjectState.completed, timeout=120)
    finally:
        release.set()
        once.join(120)
    row = sheet.row(rid)["fields"]
    assert row[cols.status] == "已完成"
    # The plan's animatic came in late, and its contact sheet did not replace the shots' in 预览.
    animatic = ffmpeg.probe(download(sheet, row[cols.animatic], tmp_path / "animatic.mp4"))
    assert abs(animatic.duration - 2.0) < 0.3
    assert len(tiles(download(sheet, row[cols.preview], tmp_path / "preview.jpg"))) == 4  # 2 shots x first, last
