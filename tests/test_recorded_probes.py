"""What a stage measured once is not measured again: compose reuses the segments stage's probes
while the files are unchanged, and a worker measures a music bed once per content and length.
Counted as ffprobe/ffmpeg process starts (on a small host their start-up was most of a compose's
CPU), checked against what the user gets (the MP4 via ffprobe, its loudness)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_actions import act
from test_compose import RATE, H, W, ffprobe_lines, frame_at, integrated_lufs, lavfi_audio, make_segment, pcm, spec

from connectors import ffmpeg
from pipeline.audio_mix import PAD_PARTIALS, LoudnessMemo
from pipeline.compose import compose, make_cover
from storage.models import ProjectState

from conftest import record_starts


def starts(log: Path, program: str) -> int:
    return sum(line.split(" ", 2)[1] == program for line in log.read_text().splitlines())


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    media = tmp_path_factory.mktemp("probes")
    return [make_segment(media / f"seg{i}.mp4", src) for i, src in enumerate(["testsrc2", "smptebars", "rgbtestsrc"])]


def test_compose_takes_recorded_probes_and_probes_a_file_changed_since(clips, tmp_path, monkeypatch):
    known = {seg: ffmpeg.probe_file(seg) for seg in clips}
    log = record_starts(tmp_path / "bin", monkeypatch)
    out = tmp_path / "a.mp4"
    result = compose(spec(clips), out, tmp_path, known=known)
    assert not result.reencoded and starts(log, "ffprobe") == 1  # the check of the written file only
    assert starts(log, "ffmpeg") == 1  # the video and its cover, in one run
    assert abs(ffmpeg.probe(out).duration - 3.0) < 0.1
    # The cover is the picture at cover_at (1 s: the second clip's first frame), as a later read shows it.
    later = tmp_path / "later.jpg"
    make_cover(out, later, at=1.0)
    assert np.abs(np.asarray(Image.open(result.cover), float) - np.asarray(Image.open(later), float)).mean() < 2
    assert np.abs(np.asarray(Image.open(result.cover), float) - frame_at(clips[0], 0.0, tmp_path / "first.png")).mean() > 20

    # A segment replaced after it was probed, by one of another size: its old facts would have it
    # copied as it is, into a video of two sizes.
    replaced = tmp_path / "replaced.mp4"
    shutil.copyfile(clips[1], replaced)
    known[replaced] = ffmpeg.probe_file(replaced)
    make_segment(replaced, "testsrc2", size=(200, 200))
    result = compose(spec([clips[0], replaced]), tmp_path / "b.mp4", tmp_path, known=known)
    assert result.reencoded
    info = ffmpeg.probe(result.video)
    assert (info.width, info.height) == (W, H) and abs(info.duration - 2.0) < 0.1


def test_a_music_bed_is_measured_once_per_content_and_length(clips, tmp_path, monkeypatch):
    music = lavfi_audio(tmp_path / "music.wav", "sine=frequency=440:duration=4", "-af", "volume=-30dB")
    memo = LoudnessMemo()
    log = record_starts(tmp_path / "bin", monkeypatch)
    compose(spec(clips, music=music), tmp_path / "a.mp4", tmp_path, loudness=memo)
    first = starts(log, "ffmpeg")
    compose(spec(clips, music=music), tmp_path / "b.mp4", tmp_path, loudness=memo)
    assert starts(log, "ffmpeg") - first == first - 1  # the same, less the measuring run
    # (3 s with the bed's fades in and out: the same level every time, a little under the target)
    level = integrated_lufs(tmp_path / "a.mp4")
    assert abs(integrated_lufs(tmp_path / "b.mp4") - level) <= 0.5

    # The same file name with other content (an operator replaced the template's music): measured
    # anew, so the video comes out at the same level, not 25 dB louder.
    lavfi_audio(music, "sine=frequency=440:duration=4", "-af", "volume=-5dB")
    compose(spec(clips, music=music), tmp_path / "c.mp4", tmp_path, loudness=memo)
    assert abs(integrated_lufs(tmp_path / "c.mp4") - level) <= 0.5


def test_segments_keep_their_probes_and_compose_survives_a_bad_record_or_a_swapped_file(sheet):
    cols = sheet.cols
    (step_row,) = sheet.add_rows([{cols.title: "分步", cols.image: sheet.image_cell(), cols.template: "tiny",
                                   cols.mode: "分步", cols.shot_count: 3}])
    app = sheet.app()
    app.once()
    act(sheet, app, step_row, "继续")  # storyboard -> segments, resting before compose
    project = app.store.by_record(sheet.table_id, step_row)
    assert project.state == ProjectState.segments_ready
    paths = app.store.paths(project)
    segs = app.store.segments(project.id)
    recorded = [ffmpeg.ProbedFile.model_validate_json(s.media) for s in segs]
    assert [r.sha256 for r in recorded] == [ffmpeg.file_sha256(paths.segment(s.index)) for s in segs]
    assert [r.info.duration for r in recorded] == [s.duration for s in segs]

    # One record no longer parses; one file was swapped for another size after it was recorded.
    segs[0].media = '{"sha256": 1'
    app.store.save(app.store.get(project.id), [segs[0]])
    make_segment(paths.segment(1), "testsrc2", size=(200, 200))
    act(sheet, app, step_row, "继续")
    project = app.store.by_record(sheet.table_id, step_row)
    assert project.state == ProjectState.completed, project.error
    template = app.runner.d.templates.get(project.template)
    frames = ffprobe_lines(paths.final_video, "-select_streams", "v:0", "-show_entries", "frame=width,height")
    sizes = {line.strip(",") for line in frames}
    assert sizes == {f"{template.width},{template.height}"}  # every frame, the swapped shot's too


def test_the_pad_is_made_in_the_compose_run_and_measured_once_per_length(clips, tmp_path, monkeypatch):
    memo = LoudnessMemo()
    log = record_starts(tmp_path / "bin", monkeypatch)
    compose(spec(clips, pad=True, cover_at=None), tmp_path / "a.mp4", tmp_path, loudness=memo)
    assert starts(log, "ffmpeg") == 2  # measuring, composing: no process of its own for the pad
    compose(spec(clips, pad=True, cover_at=None), tmp_path / "b.mp4", tmp_path, loudness=memo)
    assert starts(log, "ffmpeg") == 3
    compose(spec(clips[:2], pad=True, cover_at=None), tmp_path / "c.mp4", tmp_path, loudness=memo)
    assert starts(log, "ffmpeg") == 5  # another length is measured

    assert abs(integrated_lufs(tmp_path / "b.mp4") - integrated_lufs(tmp_path / "a.mp4")) <= 0.5
    samples = pcm(tmp_path / "a.mp4")[RATE:2 * RATE]  # a steady second, after the fade-in
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    strongest = np.fft.rfftfreq(len(samples), 1 / RATE)[spectrum.argmax()]
    assert abs(strongest - PAD_PARTIALS[0][0]) < 2  # the chord's root, its loudest partial
