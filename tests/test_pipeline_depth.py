"""The deep pipeline end to end through the App: LLM storyboard, AI + stock shots, narration,
burned subtitles, logo and transitions, against local OpenAI-compatible and sheet servers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from connectors import ffmpeg
from storage.models import ProjectState, SegmentSource
from sync.rows import text_of

import tiny_funasr
from conftest import TEST_TEMPLATES, Sheet
from fake_openai import FakeOpenAI, chat_json


def make_stock_library(root: Path) -> Path:
    for tag, source in (("landscape", "mandelbrot=s=320x180"), ("landscape", "life=s=320x180:mold=10"), ("animal", "testsrc2=s=320x180")):
        folder = root / tag
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{len(list(folder.iterdir()))}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"{source}:r=12", "-t", "2", "-pix_fmt", "yuv420p", str(out)],
                       check=True)
    return root


def story_done(sheet: Sheet, template: str = "tiny-story", scene: str = "山谷"):
    """One row, run to completion: (app, record id, project)."""
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.scene: scene, cols.template: template}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed, project.error
    return app, rid, project


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def test_llm_story_with_stock_shots_narration_subtitles_logo_and_transitions(emulator, tmp_path, fake):
    board = {"shots": [
        {"index": i, "prompt": f"镜头{i + 1}", "duration": 1.0, "camera": "zoom_in",
         "narration": line, "stock_tags": ["landscape"]}
        for i, line in enumerate(["清晨的山谷。", "溪水流过。", "夕阳西下。"])
    ]}
    fake.queue_chat(chat_json(board))
    sheet = Sheet(emulator, tmp_path / "d", STORYBOARD_BACKEND="llm", LLM_BASE_URL=fake.url, LLM_API_KEY=fake.api_key,
                  TTS_BASE_URL=fake.url, TTS_API_KEY=fake.api_key, STOCK_LIBRARY_DIR=make_stock_library(tmp_path / "stock"))
    cols = sheet.cols
    app, rid, project = story_done(sheet)
    segments = app.store.segments(project.id)
    assert segments[0].source == SegmentSource.ai and SegmentSource.stock in {s.source for s in segments}
    assert all(s.drift is not None for s in segments if s.source == SegmentSource.ai)
    paths = app.store.paths(project)
    info = ffmpeg.probe(paths.final_video)
    assert (info.width, info.height, info.video_codec, info.audio_codec) == (320, 180, "h264", "aac")
    assert abs(info.duration - (3 * 1.0 - 2 * 0.25)) <= 0.2

    srt = paths.subtitles.read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:00,000 --> ") and "清晨的山谷。" in srt and "夕阳西下。" in srt
    assert len(fake.chat_requests()) == 1 and len(fake.speech_requests()) == 3
    meta = json.loads(paths.meta.read_text())
    assert {s["source"] for s in meta["segments"]} == {"ai", "stock"}

    row = sheet.row(rid)["fields"]
    assert text_of(row[cols.status]) == "已完成"
    labels = [row[cols.segment(n)]["text"] for n in (1, 2, 3)]
    assert labels[0].endswith("AI") and any(label.endswith("实拍素材") for label in labels)
    assert text_of(row[cols.storyboard]).startswith("1. [zoom_in 1s] 镜头1\n旁白：清晨的山谷。")


def test_a_stock_template_without_a_library_is_refused_before_any_work_saying_which_setting_to_set(sheet: Sheet):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny-story"}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.failed and project.last_good == ProjectState.pending
    row = sheet.row(rid)["fields"]
    assert text_of(row[cols.error]).startswith("模板“tiny-story”要求部分镜头使用实拍素材（ai_ratio=0.5），"
                                               "但没有配置素材库：请设置 STOCK_LIBRARY_DIR")
    assert cols.storyboard not in row and project.storyboard_json is None


def test_stock_clips_are_remembered_and_a_redone_shot_is_a_new_take(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d", STOCK_LIBRARY_DIR=make_stock_library(tmp_path / "stock"))
    cols = sheet.cols
    app, rid, project = story_done(sheet)
    # No TTS here: the narrated template is made without its narration, and the row says so.
    assert text_of(sheet.row(rid)["fields"][cols.error]) == "未配置配音（TTS_BASE_URL）：成片没有旁白和字幕"
    stock = [s for s in app.store.segments(project.id) if s.source == SegmentSource.stock]
    assert [s.index for s in stock] == [1, 2]  # tiny-story: ai_ratio 0.5 of 3 shots, shot 1 always AI
    clips = [s.clip for s in stock]
    assert all(clips) and len(set(clips)) == 2
    meta = json.loads(app.store.paths(project).meta.read_text())
    assert [s["clip"] for s in meta["segments"]] == [None, *clips]
    before = app.store.paths(project).segment(2).stat().st_mtime_ns

    # A new process (fresh generators) redoes shot 3: shot 2 keeps its clip, and shot 3 is
    # made again as take 1 and still never repeats shot 2's clip. (Its picture may equal take
    # 0's: the same clip at a window that lands on the same frame, 1 in 12 with these 2 s clips.)
    app = sheet.app()
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.action: "重做第3段"})
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed and project.takes == 1
    after = {s.index: s.clip for s in app.store.segments(project.id)}
    assert after[1] == clips[0] and after[2] and after[2] != clips[0]
    assert app.store.paths(project).segment(2).stat().st_mtime_ns != before


def test_a_voiceover_template_gets_subtitles_from_funasr(emulator, tmp_path):
    """The real FunASR (tiny random models, CPU) transcribes a template's recorded voiceover;
    its cues become the SRT burned into the film."""
    pytest.importorskip("funasr", reason="the FunASR path needs funasr (the gpu or test extra)")
    models = tiny_funasr.build(tmp_path / "funasr")
    folder = tmp_path / "templates" / "voiced"
    folder.mkdir(parents=True)
    (folder / "template.toml").write_text(
        (TEST_TEMPLATES / "tiny" / "template.toml").read_text(encoding="utf-8")
        + 'voiceover = "voice.wav"\n\n[subtitles]\nmode = "burn"\n', encoding="utf-8")
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=220:d=1.8", "-ar", "16000",
                    str(folder / "voice.wav")], check=True)
    sheet = Sheet(emulator, tmp_path / "d", SHEETREEL_TEMPLATES_DIR=tmp_path / "templates", ASR_MODEL_DIR=models["asr"],
                  ASR_VAD_MODEL_DIR=models["vad"], ASR_PUNC_MODEL_DIR=models["punc"], ASR_DEVICE="cpu")
    app, _, project = story_done(sheet, "voiced", "公园")
    paths = app.store.paths(project)
    srt = paths.subtitles.read_text(encoding="utf-8")
    first, stamps, text = srt.split("\n")[:3]
    assert first == "1" and stamps.endswith("--> 00:00:01,800") and text.endswith("。")
    info = ffmpeg.probe(paths.final_video)
    assert info.audio_codec == "aac" and abs(info.duration - 2.0) <= 0.2
