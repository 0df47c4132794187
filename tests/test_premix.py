"""The soundtrack is mixed while the shots are made, and compose copies it in: narration is spoken
once, before the GPU is done, and the compose after the last shot only muxes. A premix made from
another storyboard, template or length is never used. Checked on what users get: the MP4's audio
packets, its length and loudness, its subtitles, and the requests the TTS service saw."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from test_actions import act, cells
from test_compose import ffprobe_lines, integrated_lufs, make_segment
from test_pipeline_depth import make_stock_library
from test_recorded_probes import starts

from connectors import ffmpeg
from connectors.tts import OpenAISpeech
from pipeline import final_cut, premix
from pipeline.compose import PremixUnfit, compose
from pipeline.templates import TemplateLibrary
from storage.models import ProjectState
from storage.storyboard import Shot, Storyboard
from sync.app import App, make_table
from sync.background import PICTURES_NICE, Ahead
from sync.rows import text_of

from conftest import TEST_TEMPLATES, Sheet, record_starts
from fake_openai import FakeOpenAI

LINES = ["清晨的山谷。", "溪水流过。", "夕阳西下。"]
on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def audio_md5(media: Path) -> str:
    """The digest of the audio packets as stored: equal only for a track copied bit for bit."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(media), "-map", "0:a:0", "-c", "copy", "-f", "md5", "-"],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def spoken(fake: FakeOpenAI) -> list[str]:
    return [r.body["input"] for r in fake.speech_requests()]


def narrated_board() -> Storyboard:
    return Storyboard(shots=[Shot(index=i, prompt=f"镜头{i + 1}", duration=1.0, narration=line) for i, line in enumerate(LINES)])


def narrated_sheet(emulator, root: Path, fake: FakeOpenAI, **settings) -> Sheet:
    return Sheet(emulator, root / "host-a", TTS_BASE_URL=fake.url, TTS_API_KEY=fake.api_key,
                 STOCK_LIBRARY_DIR=make_stock_library(root / "stock"), **settings)


def test_compose_copies_a_premixed_soundtrack_in_and_measures_nothing(tmp_path, monkeypatch, fake):
    template = TemplateLibrary(TEST_TEMPLATES).get("tiny-story")  # transitions, logo, burned subtitles
    speech = OpenAISpeech(fake.url, fake.api_key, model="tts-1", timeout=5)
    segments = [make_segment(tmp_path / f"seg{i}.mp4", src) for i, src in enumerate(["testsrc2", "smptebars", "rgbtestsrc"])]
    board, ahead = narrated_board(), tmp_path / "ahead"
    made = premix.make(board, template, speech, None, segments, ahead)
    assert spoken(fake) == LINES and made.source == "tts" and "夕阳西下。" in made.srt
    assert premix.find(premix.premix_key(board, template, speech, None), ahead) == made

    known = {seg: ffmpeg.probe_file(seg) for seg in segments}
    log = record_starts(tmp_path / "bin", monkeypatch)
    srt = ahead / "subtitles.srt"
    srt.write_text(made.srt, encoding="utf-8")
    spec = final_cut.compose_spec(board, template, segments, final_cut.Soundtrack(srt=srt, source=made.source), None)
    result = compose(spec, ahead / "final.mp4", ahead, known=known, premixed=made)
    # The video, its cover and the check of the written file: no loudness pass, nothing spoken again.
    assert (starts(log, "ffmpeg"), starts(log, "ffprobe"), len(spoken(fake))) == (2, 1, 3)
    assert audio_md5(result.video) == audio_md5(made.audio(ahead))

    # Mixed in the compose run, as before: the same length and loudness.
    inline_dir = tmp_path / "inline"
    sound = final_cut.soundtrack(board, template, speech, None, inline_dir)
    inline = compose(final_cut.compose_spec(board, template, segments, sound, None), inline_dir / "final.mp4", inline_dir,
                     known=known)
    info, inline_info = ffmpeg.probe(result.video), ffmpeg.probe(inline.video)
    assert abs(info.duration - inline_info.duration) < 0.01 and abs(info.duration - spec.total_duration) < 0.05
    assert abs(integrated_lufs(result.video) - integrated_lufs(inline.video)) < 0.5


def test_a_premix_is_refused_by_a_video_of_another_length(tmp_path):
    template = TemplateLibrary(TEST_TEMPLATES).get("tiny")  # 180x320 at 12 fps, no transitions: stream copy
    board = Storyboard(shots=[Shot(index=i, prompt="x", duration=1.0) for i in range(2)])
    planned = [tmp_path / f"seg{i}.mp4" for i in range(2)]
    made = premix.make(board, template, None, None, planned, tmp_path)
    assert made.duration == 2.0 and made.source == "none"
    # Segments that came back longer than planned: copied as they are, the video lasts 3 s.
    longer = [make_segment(tmp_path / f"long{i}.mp4", "testsrc2", seconds=1.5, size=(180, 320)) for i in range(2)]
    spec = final_cut.compose_spec(board, template, longer, final_cut.Soundtrack(), None)
    with pytest.raises(PremixUnfit, match="3.000 s"):
        compose(spec, tmp_path / "final.mp4", tmp_path, premixed=made)
    assert not (tmp_path / "final.mp4").exists()


def test_the_compose_stage_copies_in_the_soundtrack_mixed_while_the_shots_were_made(emulator, tmp_path, fake):
    sheet = narrated_sheet(emulator, tmp_path, fake)
    (rid,) = sheet.add_rows([{sheet.cols.image: sheet.image_cell(), sheet.cols.scene: "山谷", sheet.cols.template: "tiny-story"}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed, project.error
    paths = app.store.paths(project)
    (mixed,) = paths.final_dir.glob("premix-*.m4a")
    assert audio_md5(paths.final_video) == audio_md5(mixed)
    # Spoken once, and the subtitles are timed to it.
    assert spoken(fake) == ["清晨。", "溪水。", "夕阳。"]
    srt = paths.subtitles.read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:00,000 --> ") and "夕阳。" in srt
    assert text_of(cells(sheet, rid)[sheet.cols.status]) == "已完成"


def test_an_edited_storyboard_never_gets_the_soundtrack_premixed_for_the_old_one(emulator, tmp_path, fake):
    sheet = narrated_sheet(emulator, tmp_path, fake)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.scene: "山谷", cols.template: "tiny-story", cols.mode: "分步"}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.storyboard_ready
    paths = app.store.paths(project)
    assert any(paths.final_dir.glob("premix-*.json"))  # `once` waits for the work ahead it started

    # The operator rewrites the second line while the project rests, then goes on.
    board = text_of(cells(sheet, rid)[cols.storyboard])
    edited = board.replace("旁白：溪水。", "旁白：小鸟飞过。")
    assert edited != board
    act(sheet, app, rid, "继续", **{cols.storyboard: edited})
    act(sheet, app, rid, "继续")
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed, project.error
    # The old premix's subtitles would still say 溪水 (the fake TTS gives every line the same sound).
    srt = paths.subtitles.read_text(encoding="utf-8")
    assert "小鸟飞过。" in srt and "溪水。" not in srt and spoken(fake)[-1] == "小鸟飞过。"


@pytest.mark.parametrize("damage", ["unreadable", "another length"])
def test_a_damaged_premix_is_passed_over_and_the_video_is_still_made(emulator, tmp_path, fake, damage):
    sheet = narrated_sheet(emulator, tmp_path, fake)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.scene: "山谷", cols.template: "tiny-story", cols.mode: "分步"}])
    app = sheet.app()
    app.once()
    paths = app.store.paths(app.store.by_record(sheet.table_id, rid))
    (record,) = paths.final_dir.glob("premix-*.json")
    if damage == "unreadable":
        record.write_text("{not json")
    else:  # a record claiming another length: the copied track would end early
        made = premix.Premix.model_validate_json(record.read_text())
        record.write_text(made.model_copy(update={"duration": made.duration + 1}).model_dump_json())
    act(sheet, app, rid, "继续")
    act(sheet, app, rid, "继续")
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed, project.error
    # Mixed in the compose run instead: the sound lasts exactly as long as the picture.
    assert [abs(float(d) - 2.5) < 0.05 for d in ffprobe_lines(paths.final_video, "-show_entries", "stream=duration")] \
        == [True, True]
    assert spoken(fake) == ["清晨。", "溪水。", "夕阳。"]  # the clips spoken ahead are still used


@on_postgres
def test_another_host_composes_with_the_soundtrack_premixed_where_the_storyboard_was_made(emulator, tmp_path, fake,
                                                                                        database_url):
    store = tmp_path / "store"
    sheet = narrated_sheet(emulator, tmp_path, fake, database_url=database_url, SHEETREEL_STORE_DIR=store)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.scene: "山谷", cols.template: "tiny-story", cols.mode: "分步"}])
    sheet.app().once()  # host A: the storyboard, and the soundtrack ahead
    (mixed,) = store.rglob("premix-*.m4a")

    host_b = App(sheet.settings.model_copy(update={"data_dir": tmp_path / "host-b"}), make_table(sheet.settings))
    act(sheet, host_b, rid, "继续")
    act(sheet, host_b, rid, "继续")
    project = host_b.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed, project.error
    final = host_b.store.paths(project).final_video
    assert final.is_relative_to(tmp_path / "host-b") and audio_md5(final) == audio_md5(mixed)
    assert len(spoken(fake)) == 3  # host B spoke nothing


def test_work_ahead_is_waited_for_while_it_runs_and_taken_over_before_it_starts(caplog):
    ahead = Ahead(at_once=1)
    running, release, ran = threading.Event(), threading.Event(), []

    def first() -> None:
        running.set()
        release.wait(60)
        ran.append("first")

    ahead.start("p1", "soundtrack", first)
    assert running.wait(60)
    ahead.start("p2", "soundtrack", lambda: ran.append("second"))  # waits for the one slot
    ahead.claim("p2", "soundtrack")  # not started: the stage does it itself, and it never runs
    threading.Timer(0.2, release.set).start()
    ahead.claim("p1", "soundtrack")  # running: the stage waits for it
    assert ran == ["first"]
    failing = threading.Event()

    def fails() -> None:
        failing.set()
        raise RuntimeError("TTS down")

    ahead.start("p3", "soundtrack", fails)
    assert failing.wait(60)
    ahead.claim("p3", "soundtrack")  # a failure is the stage's to meet (it does the work again), never raised here
    assert "work ahead failed project=p3 work=soundtrack error=TTS down" in caplog.text
    ahead.claim("unknown", "soundtrack")
    assert ahead.wait_idle(60)


def test_pictures_drawn_ahead_never_hold_up_a_soundtrack():
    """Pictures run below everything and may be starved for a while: the soundtrack a compose may
    wait for has slots of its own."""
    ahead = Ahead(at_once=1)
    drawing, release, drawn = threading.Event(), threading.Event(), []

    def picture() -> None:
        drawing.set()
        release.wait(60)
        drawn.append("plan")

    ahead.start("p1", "plan pictures", picture, nice=PICTURES_NICE)
    ahead.start("p2", "plan pictures", lambda: drawn.append("plan 2"), nice=PICTURES_NICE)  # behind the first
    assert drawing.wait(60)
    mixed = threading.Event()
    ahead.start("p1", "soundtrack", mixed.set)
    assert mixed.wait(60)  # while the picture still holds the one slot of its priority
    assert drawn == []
    release.set()
    assert ahead.wait_idle(60) and sorted(drawn) == ["plan", "plan 2"]
