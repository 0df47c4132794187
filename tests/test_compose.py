"""compose(): stream copy, transitions, logo, Chinese subtitles, soundtrack -- against real ffmpeg."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from connectors import ffmpeg
from pipeline import final_cut
from pipeline.compose import compose
from pipeline.compose_plan import (
    ComposeSpec,
    LogoSpec,
    SubtitleSpec,
    clip_srt,
    filter_arg,
    max_transition,
    needs_reencode,
    shot_starts,
)
from pipeline.templates import TemplateLibrary, bundled_templates_dir
from storage.errors import MediaError
from storage.storyboard import Shot, Storyboard

W, H, FPS = 320, 180, 12
RATE = 48000
MUSIC_HZ, VOICE_HZ = 440.0, 1000.0


# ---- helpers -----------------------------------------------------------------------------


def make_segment(out: Path, source: str, seconds: float = 1.0, size: tuple[int, int] = (W, H)) -> Path:
    """A segment in the shared format, the way every generator writes one."""
    w, h = size
    options = f"{':' if '=' in source else '='}size={w}x{h}:rate={FPS}"
    ffmpeg.run_to(
        out,
        lambda tmp: ["ffmpeg", "-f", "lavfi", "-i", source + options, "-t", f"{seconds}",
                     *ffmpeg.encode_args(FPS), str(tmp)],
        what="test segment",
    )
    return out


def lavfi_audio(out: Path, source: str, *extra: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", source, *extra, str(out)],
                   check=True)
    return out


def ffprobe_lines(video: Path, *args: str) -> list[str]:
    done = subprocess.run(["ffprobe", "-v", "error", *args, "-of", "csv=p=0", str(video)],
                          capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line]


def video_packets(video: Path) -> list[tuple[str, str]]:
    """(flags, md5) of every video packet."""
    lines = ffprobe_lines(video, "-select_streams", "v:0", "-show_data_hash", "md5",
                          "-show_entries", "packet=flags,data_hash")
    return [tuple(line.split(",")) for line in lines]  # type: ignore[misc]


def frame_md5s(video: Path) -> list[str]:
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-map", "0:v:0",
                           "-f", "framemd5", "-"], capture_output=True, text=True, check=True)
    return [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines() if not line.startswith("#")]


def frame_at(video: Path, seconds: float, png: Path) -> np.ndarray:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-ss", f"{seconds}", "-i", str(video),
                    "-frames:v", "1", str(png)], check=True)
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int16)


def pcm(video: Path) -> np.ndarray:
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-map", "0:a:0",
                           "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-"], capture_output=True, check=True)
    return np.frombuffer(done.stdout, np.float32)


def tone_db(samples: np.ndarray, start: float, end: float, hz: float) -> float:
    """Level of one frequency inside a window, in dB (Hann-windowed FFT peak near `hz`)."""
    chunk = samples[int(start * RATE):int(end * RATE)]
    spectrum = np.abs(np.fft.rfft(chunk * np.hanning(len(chunk))))
    freqs = np.fft.rfftfreq(len(chunk), 1 / RATE)
    return float(20 * np.log10(spectrum[np.abs(freqs - hz) < 5].max() + 1e-12))


def integrated_lufs(video: Path) -> float:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-nostdin", "-i", str(video), "-map", "0:a:0",
                           "-af", "ebur128", "-f", "null", "-"], capture_output=True, text=True, check=True)
    summary = done.stderr.rsplit("Integrated loudness:", 1)[1]
    return float(re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary).group(1))


def spec(segments: list[Path], **kw) -> ComposeSpec:
    return ComposeSpec(segments=segments, durations=kw.pop("durations", [1.0] * len(segments)),
                       width=W, height=H, fps=FPS, **kw)


def write_srt(path: Path, text: str, start: str = "00:00:00,000", end: str = "00:00:05,000") -> Path:
    path.write_text(f"1\n{start} --> {end}\n{text}\n", encoding="utf-8")
    return path


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compose")


@pytest.fixture(scope="module")
def segments(media: Path) -> list[Path]:
    return [make_segment(media / f"seg{i}.mp4", src) for i, src in enumerate(["testsrc2", "smptebars", "rgbtestsrc"])]


@pytest.fixture(scope="module")
def black(media: Path) -> list[Path]:
    """Plain black segments: anything drawn on them stands out exactly."""
    return [make_segment(media / f"black{i}.mp4", "color=c=black") for i in range(2)]


@pytest.fixture(scope="module")
def logo(media: Path) -> Path:
    return lavfi_audio(media / "logo.png", "color=c=0xFF00FF:size=64x32", "-frames:v", "1")


# ---- the spec ----------------------------------------------------------------------------


def test_spec_validation_and_reencode_decision(segments, logo, tmp_path):
    assert not needs_reencode(spec(segments))
    assert not needs_reencode(spec(segments, subtitles=SubtitleSpec(srt=tmp_path / "a.srt", mode="soft")))
    assert needs_reencode(spec(segments, subtitles=SubtitleSpec(srt=tmp_path / "a.srt")))
    assert needs_reencode(spec(segments, logo=LogoSpec(path=logo)))
    assert needs_reencode(spec(segments, transition="dissolve"))
    assert not needs_reencode(spec(segments[:1], transition="dissolve"))  # nothing to join
    with pytest.raises(ValidationError, match="does not fit"):
        spec(segments, transition="fade", transition_duration=1.0)
    with pytest.raises(ValidationError, match="durations"):
        spec(segments, durations=[1.0, 1.0])
    with pytest.raises(ValidationError, match="even"):
        ComposeSpec(segments=segments[:1], durations=[1.0], width=321, height=H, fps=FPS)


def test_transition_timeline_math():
    assert max_transition([4.0, 3.0, 4.0]) == 1.5  # the middle shot fades in and out
    assert max_transition([1.0, 3.0]) == 1.0
    s = ComposeSpec(segments=[Path("a"), Path("b"), Path("c")], durations=[4.0, 3.0, 4.0],
                    width=W, height=H, fps=FPS, transition="fade", transition_duration=0.5)
    assert s.total_duration == pytest.approx(10.0)
    assert s.shot_starts() == pytest.approx([0.0, 3.5, 6.0])


def test_filter_arg_survives_both_parsing_levels():
    assert filter_arg("a:b") == "a\\\\:b"
    assert filter_arg("x,y") == "x\\,y"
    assert filter_arg("it's") == "it\\\\\\'s"


# ---- video -------------------------------------------------------------------------------


def test_nothing_visual_copies_the_video_stream(segments, tmp_path):
    out = tmp_path / "final.mp4"
    result = compose(spec(segments), out, tmp_path)

    assert not result.reencoded
    info = ffmpeg.probe(out)
    assert (info.video_streams, info.audio_streams) == (1, 1)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    packets = [p for seg in segments for p in video_packets(seg)]
    copied = video_packets(out)
    assert len(copied) == len(packets)
    # The concat demuxer repeats SPS/PPS inside keyframes; every other packet is byte-identical,
    # and decoding gives exactly the source frames -- a re-encode could not do either.
    assert [p for p in copied if "K" not in p[0]] == [p for p in packets if "K" not in p[0]]
    assert frame_md5s(out) == [m for seg in segments for m in frame_md5s(seg)]
    assert abs(result.duration - 3.0) < 0.1
    assert result.cover is not None and Image.open(result.cover).size == (W, H)
    assert np.abs(pcm(out)).max() == 0  # no music, no narration: a silent track


def test_soft_subtitles_are_muxed_without_reencoding(segments, tmp_path):
    srt = write_srt(tmp_path / "字幕 soft.srt", "你好，世界")
    out = tmp_path / "final.mp4"
    result = compose(spec(segments, subtitles=SubtitleSpec(srt=srt, mode="soft")), out, tmp_path)
    assert not result.reencoded
    streams = ffprobe_lines(out, "-show_entries", "stream=codec_type,codec_name")
    assert sorted(streams) == ["aac,audio", "h264,video", "mov_text,subtitle"]
    # The cue runs to 5 s; the file still ends with the 3 s picture.
    assert abs(ffmpeg.probe(out).duration - 3.0) < 0.1
    assert frame_md5s(out) == [m for seg in segments for m in frame_md5s(seg)]


def test_clip_srt_cuts_cues_at_the_end():
    text = "\ufeff1\r\n00:00:00,000 --> 00:00:05,000\r\n你好\r\n\r\n2\r\n00:00:06,000 --> 00:00:07,000\r\nx\r\n"
    assert clip_srt(text, 3.0) == "1\n00:00:00,000 --> 00:00:03,000\n你好\n"
    assert clip_srt(text, 0.0) == ""


def test_mismatched_segment_is_reencoded_to_the_spec(segments, media, tmp_path):
    odd = make_segment(media / "odd.mp4", "testsrc2", size=(200, 200))
    out = tmp_path / "final.mp4"
    result = compose(spec([segments[0], odd]), out, tmp_path)
    assert result.reencoded
    info = ffmpeg.probe(out)
    assert (info.width, info.height) == (W, H)
    assert abs(result.duration - 2.0) < 0.1


def test_a_mismatched_segment_joins_with_transitions_too(segments, media, tmp_path):
    odd = make_segment(media / "odd_rate.mp4", "testsrc2", size=(200, 200))  # other size
    s = spec([segments[0], odd, segments[2]], transition="fade", transition_duration=0.25)
    video = compose(s, tmp_path / "final.mp4", tmp_path).video
    info = ffmpeg.probe(video)
    assert (info.width, info.height, info.fps) == (W, H, FPS)
    assert frame_count(video) == round(2.5 * FPS)


def test_xfade_chain_shortens_by_the_overlaps(segments, tmp_path):
    out = tmp_path / "final.mp4"
    s = spec(segments, transition="fade", transition_duration=0.25)
    result = compose(s, out, tmp_path)
    assert result.reencoded
    assert s.total_duration == pytest.approx(2.5)
    assert abs(ffmpeg.probe(out).duration - 2.5) < 0.1
    assert abs(result.duration - 2.5) < 0.1
    assert ffmpeg.probe(out).fps == FPS


def frame_count(video: Path) -> int:
    return int(ffprobe_lines(video, "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=nb_read_frames")[0])


def test_transitions_blend_only_at_the_joins(segments, tmp_path):
    s = spec(segments, transition="fade", transition_duration=0.25)
    video = compose(s, tmp_path / "final.mp4", tmp_path).video
    assert frame_count(video) == round(2.5 * FPS)
    # Segment 1 plays from 0.75 s; at 1.25 s it is 0.5 s in, clear of both joins: untouched.
    middle = frame_at(video, 1.25, tmp_path / "m.png")
    assert np.abs(middle - frame_at(segments[1], 0.5, tmp_path / "s1.png")).mean() < 3
    # Halfway through the first join (0.875 s) both pictures show at about half strength.
    join = frame_at(video, 0.875 + 0.5 / FPS, tmp_path / "j.png")
    a, b = frame_at(segments[0], 0.875, tmp_path / "a.png"), frame_at(segments[1], 0.125, tmp_path / "b.png")
    assert np.abs(join - (a + b) / 2).mean() < np.abs(join - a).mean() / 2
    assert np.abs(join - (a + b) / 2).mean() < np.abs(join - b).mean() / 2


def test_a_shot_two_transitions_long_fades_in_and_straight_out(segments, tmp_path):
    s = spec(segments, durations=[1.0, 0.5, 1.0], transition="fade", transition_duration=0.25)
    assert s.total_duration == pytest.approx(2.0)
    assert frame_count(compose(s, tmp_path / "final.mp4", tmp_path).video) == 2 * FPS
    with pytest.raises(ValidationError, match="does not fit"):  # 0.34 s = 4 frames at 12 fps > 0.25 s
        spec(segments, durations=[1.0, 0.5, 1.0], transition="fade", transition_duration=0.34)


@pytest.mark.parametrize("corner", ["bottom-right", "top-left"])
def test_logo_lands_in_its_corner_with_its_opacity(corner, black, logo, tmp_path):
    plain = frame_at(compose(spec(black), tmp_path / "plain.mp4", tmp_path).video, 0.5, tmp_path / "a.png")
    s = spec(black, logo=LogoSpec(path=logo, position=corner, margin=10, scale=0.2, opacity=0.5))
    marked = frame_at(compose(s, tmp_path / "logo.mp4", tmp_path).video, 0.5, tmp_path / "b.png")

    # 0.2 x 320 = 64 px wide, 32 px high, 10 px from the edges.
    y0, x0 = (H - 10 - 32, W - 10 - 64) if corner == "bottom-right" else (10, 10)
    inside = marked[y0 + 8:y0 + 24, x0 + 16:x0 + 48].mean(axis=(0, 1))
    # Half-transparent magenta over black: about (128, 0, 128).
    assert 100 < inside[0] < 160 and inside[1] < 30 and 100 < inside[2] < 160
    far_y, far_x = (10, 10) if corner == "bottom-right" else (H - 42, W - 74)
    assert np.abs(marked[far_y:far_y + 32, far_x:far_x + 64] - plain[far_y:far_y + 32, far_x:far_x + 64]).max() < 8


def test_a_logo_leaves_the_colours_of_the_picture_alone(segments, logo, tmp_path):
    # Saturated bars show a colour-matrix round trip (yuv -> rgb -> yuv) that black would hide.
    source = frame_at(segments[1], 0.5, tmp_path / "source.png")
    s = spec(segments[1:2], logo=LogoSpec(path=logo, position="top-left", margin=4, scale=0.1, opacity=1.0),
             subtitles=SubtitleSpec(srt=write_srt(tmp_path / "s.srt", "字幕"), font_size=0.05, margin_v=4))
    marked = frame_at(compose(s, tmp_path / "logo.mp4", tmp_path).video, 0.5, tmp_path / "marked.png")
    # Away from the logo (top-left) and the subtitle (bottom): only x264's own loss is allowed.
    band = (slice(H // 3, 2 * H // 3), slice(0, W))
    assert np.abs(marked[band] - source[band]).mean(axis=(0, 1)).max() < 3


def test_burned_chinese_subtitles_render_real_glyphs(black, tmp_path):
    # A hostile folder and file name: spaces, quotes, colon, brackets, comma, semicolon, Chinese.
    folder = tmp_path / "sub dir 中文"
    folder.mkdir()

    def region(text: str, name: str) -> np.ndarray:
        srt = write_srt(folder / f"it's a 测试: [{name}], 1;2.srt", text)
        s = spec(black, subtitles=SubtitleSpec(srt=srt, font_size=0.12, margin_v=20))
        video = compose(s, tmp_path / f"{name}.mp4", tmp_path).video
        frame = frame_at(video, 0.5, tmp_path / f"{name}.png")
        return frame[H // 2:, :]  # bottom half: where the subtitle sits

    hello, bye = region("你好，世界", "hello"), region("再见，朋友", "bye")
    blank = np.zeros_like(hello)
    # (a) something white was drawn
    assert (hello > 200).sum() > 200 and np.abs(hello - blank).mean() > 2
    # (b) real glyphs: different characters give different shapes (tofu boxes would be identical)
    assert np.abs(hello - bye).mean() > 2
    # Control: characters the font lacks (private use area) all draw the same -- or nothing.
    tofu1, tofu2 = region("\ue000\ue001\ue002\ue003\ue004", "tofu1"), region("\ue010\ue011\ue012\ue013\ue014", "tofu2")
    assert np.abs(tofu1 - tofu2).mean() < 0.5


# ---- audio -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_segments(media: Path) -> list[Path]:
    return [make_segment(media / f"long{i}.mp4", "testsrc2", seconds=3.0) for i in range(2)]


@pytest.fixture(scope="module")
def music(media: Path) -> Path:
    # Shorter than the video (so it loops), mono 44.1 kHz (so it is resampled), mastered-loud.
    return lavfi_audio(media / "music.m4a", f"sine=frequency={MUSIC_HZ}:duration=2.1", "-ac", "1", "-ar", "44100",
                       "-af", "volume=-3dB")


@pytest.fixture(scope="module")
def narration(media: Path) -> Path:
    # Already on the timeline: speech (a tone) from 3.0 s to 4.3 s, quiet, ending early.
    return lavfi_audio(media / "narration.wav", f"sine=frequency={VOICE_HZ}:duration=1.3", "-ar", "24000",
                       "-af", "volume=-20dB,adelay=3000:all=1")


def test_music_is_ducked_under_narration_and_the_mix_hits_the_target(long_segments, music, narration, tmp_path):
    out = tmp_path / "final.mp4"
    s = spec(long_segments, durations=[3.0, 3.0], music=music, narration=narration,
             music_volume_db=-12, duck_db=10, loudness_lufs=-16)
    result = compose(s, out, tmp_path)

    assert ffmpeg.probe(out).audio_streams == 1 and ffmpeg.probe(out).audio_codec == "aac"
    lufs = integrated_lufs(out)
    samples = pcm(out)
    open_bed = tone_db(samples, 1.4, 2.6, MUSIC_HZ)  # after the fade-in, before the voice
    under_voice = tone_db(samples, 3.4, 4.2, MUSIC_HZ)
    print(f"mix {lufs} LUFS, bed {open_bed:.1f} dB, ducked {under_voice:.1f} dB, "
          f"voice {tone_db(samples, 3.4, 4.2, VOICE_HZ):.1f} dB, levels {result.levels}")
    assert abs(lufs - (-16)) <= 2
    assert open_bed - under_voice == pytest.approx(10, abs=2)
    # The bed sits music_volume_db below the (normalised) voice.
    assert tone_db(samples, 3.4, 4.2, VOICE_HZ) - open_bed == pytest.approx(12, abs=2)
    assert result.levels.music is not None and result.levels.narration is not None


@pytest.mark.parametrize("which", ["music", "narration"])
def test_a_single_source_is_normalised_to_the_target(which, long_segments, music, narration, tmp_path):
    out = tmp_path / "final.mp4"
    source = {"music": music} if which == "music" else {"narration": narration}
    compose(spec(long_segments, durations=[3.0, 3.0], loudness_lufs=-14, **source), out, tmp_path)
    assert abs(integrated_lufs(out) - (-14)) <= 2


def test_subtitles_and_soundtrack_in_the_same_reencode(long_segments, music, logo, tmp_path):
    srt = write_srt(tmp_path / "s.srt", "一起去看山")
    out = tmp_path / "final.mp4"
    s = spec(long_segments, durations=[3.0, 3.0], transition="slideup", transition_duration=0.5,
             logo=LogoSpec(path=logo), subtitles=SubtitleSpec(srt=srt), music=music)
    result = compose(s, out, tmp_path)
    info = ffmpeg.probe(out)
    assert (info.video_streams, info.audio_streams) == (1, 1)
    assert abs(info.duration - 5.5) < 0.1 and abs(result.duration - 5.5) < 0.1


# ---- errors ------------------------------------------------------------------------------


def test_a_broken_segment_is_a_media_error_with_the_stderr_tail(segments, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match="Invalid data found") as err:
        compose(spec([segments[0], broken]), tmp_path / "f.mp4", tmp_path)
    assert err.value.stderr_tail


def test_ffmpeg_failure_keeps_its_stderr_tail(segments, tmp_path):
    s = spec(segments, logo=LogoSpec(path=tmp_path / "no logo here.png"))
    with pytest.raises(MediaError, match="composing the final video failed.*No such file or directory"):
        compose(s, tmp_path / "f.mp4", tmp_path)
    assert not list(tmp_path.glob("*partial*"))


def test_missing_music_is_a_media_error(segments, tmp_path):
    with pytest.raises(MediaError, match="music"):
        compose(spec(segments, music=tmp_path / "nope.mp3"), tmp_path / "f.mp4", tmp_path)


def test_a_template_transition_is_shortened_to_fit_a_short_shot(segments, tmp_path):
    """An LLM may plan a shot shorter than two transitions: the join shrinks to fit, in whole
    frames, the film still composes, and the narration timeline uses the same overlap."""
    template = TemplateLibrary(bundled_templates_dir()).get("landscape-story")  # 0.5 s fades, 24 fps
    durations = [1.0, 0.6, 1.0]
    board = Storyboard(shots=[Shot(index=i, prompt="p", duration=d) for i, d in enumerate(durations)])
    s = final_cut.compose_spec(board, template, segments, final_cut.Soundtrack(), None)
    assert s.overlap == pytest.approx(7 / 24)  # 0.3 s is 7.2 frames: both sides get 7
    assert s.shot_starts() == pytest.approx(shot_starts(durations, final_cut.overlap(template, durations)))
    s = s.model_copy(update={"width": W, "height": H, "logo": None})  # the 12 fps segments are conformed
    video = compose(s, tmp_path / "final.mp4", tmp_path).video
    # 17 frames of shot 1 alone, two 7-frame joins, 17 of shot 3: the middle shot is all join.
    assert frame_count(video) == 17 + 7 + 7 + 17
