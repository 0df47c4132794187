"""Media tests against the real ffmpeg: segment format, frame counts, frames, composition, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from connectors import ffmpeg
from connectors.video.kenburns import KenBurnsGenerator
from connectors.video.protocol import SegmentGenerator, SegmentRequest
from pipeline.compose import compose, concat_listing, make_cover
from pipeline.compose_plan import ComposeSpec
from pipeline.frames import extract_first_last
from storage.errors import MediaError
from storage.storyboard import Camera, Shot

W, H, FPS = 160, 288, 12


# ---- helpers -----------------------------------------------------------------------------


def lavfi(out: Path, source: str, *extra: str) -> Path:
    """Make a test input with ffmpeg's built-in sources (no binary fixtures in the repo)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", source, *extra, str(out)],
        check=True,
    )
    return out


def count_frames(video: Path) -> int:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "json", str(video)],
        capture_output=True, check=True,
    )
    return int(json.loads(done.stdout)["streams"][0]["nb_read_frames"])


def decode_frames(video: Path, width: int, height: int) -> np.ndarray:
    """Every frame as RGB, decoded independently of the code under test."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-map", "0:v:0",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    )
    return np.frombuffer(done.stdout, np.uint8).reshape(-1, height, width, 3).astype(np.int16)


# Where the picture content moves on screen when the camera pans: (axis, direction).
PAN_SHIFT = {
    Camera.pan_right: (1, -1),
    Camera.pan_left: (1, 1),
    Camera.pan_down: (0, -1),
    Camera.pan_up: (0, 1),
}


def content_shift(before: np.ndarray, after: np.ndarray, axis: int, limit: int = 45) -> int:
    """The offset s (pixels along axis) for which after[i + s] best matches before[i]."""
    def cost(s: int) -> float:
        a = np.moveaxis(before, axis, 0)
        b = np.moveaxis(after, axis, 0)
        n = a.shape[0] - abs(s)
        return diff(a[max(0, -s):max(0, -s) + n], b[max(0, s):max(0, s) + n])
    return min(range(-limit, limit + 1), key=cost)


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def shot(camera: Camera = Camera.zoom_in, duration: float = 1.0, index: int = 0) -> Shot:
    return Shot(index=index, prompt="a cat eats", duration=duration, camera=camera)


def request(image: Path, out: Path, **kw) -> SegmentRequest:
    fields = dict(image=image, shot=shot(), width=W, height=H, fps=FPS, out=out) | kw
    return SegmentRequest(**fields)


def no_partials(folder: Path) -> bool:
    return not any(".partial" in p.name for p in folder.iterdir())


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def landscape(media: Path) -> Path:
    # Deliberately the "wrong" shape: 1000x600 landscape into a 160x288 portrait frame.
    return lavfi(media / "landscape.png", "testsrc2=size=1000x600", "-frames:v", "1")


@pytest.fixture(scope="module")
def segments(media: Path, landscape: Path) -> list[Path]:
    gen = KenBurnsGenerator()
    outs = []
    for i, cam in enumerate([Camera.zoom_in, Camera.pan_left, Camera.zoom_out]):
        out = media / f"seg{i}.mp4"
        gen.generate(request(landscape, out, shot=shot(cam, index=i)))
        outs.append(out)
    return outs


# ---- Ken Burns ---------------------------------------------------------------------------


def test_kenburns_is_a_segment_generator():
    gen: SegmentGenerator = KenBurnsGenerator()
    assert gen.name == "kenburns"


@pytest.mark.parametrize("camera", list(Camera))
def test_every_camera_writes_exact_frames_in_the_shared_format_and_moves(camera, landscape, tmp_path):
    out = tmp_path / "seg.mp4"
    KenBurnsGenerator().generate(request(landscape, out, shot=shot(camera)))

    info = ffmpeg.probe(out)
    assert (info.width, info.height) == (W, H)
    assert (info.video_codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.video_streams, info.audio_streams) == (1, 0)
    assert info.fps == FPS
    assert count_frames(out) == FPS
    assert no_partials(tmp_path)
    frames = decode_frames(out, W, H)
    if camera is Camera.static:
        assert diff(frames[0], frames[-1]) < 1
    else:
        assert diff(frames[0], frames[-1]) > 5
    if camera in PAN_SHIFT:
        axis, sign = PAN_SHIFT[camera]
        assert np.sign(content_shift(frames[0], frames[-1], axis)) == sign


def test_frame_count_rounds_fractional_durations(landscape, tmp_path):
    out = tmp_path / "seg.mp4"
    req = request(landscape, out, shot=shot(duration=1.3))  # 15.6 frames -> 16
    KenBurnsGenerator().generate(req)
    assert req.frame_count == 16
    assert count_frames(out) == 16


@pytest.mark.parametrize(
    ("name", "size", "extra"),
    [
        ("small.jpg", "333x777", ["-q:v", "3"]),  # smaller than the canvas, odd, other aspect
        ("wide.webp", "900x200", ["-c:v", "libwebp"]),
        ("square.png", "64x64", []),
    ],
)
def test_any_image_format_and_shape(name, size, extra, media, tmp_path):
    image = lavfi(tmp_path / name, f"mandelbrot=size={size}", "-frames:v", "1", *extra)
    out = tmp_path / "seg.mp4"
    KenBurnsGenerator().generate(request(image, out, width=176, height=96, fps=8))
    info = ffmpeg.probe(out)
    assert (info.width, info.height, info.pix_fmt) == (176, 96, "yuv420p")
    assert count_frames(out) == 8


def test_exif_orientation_is_applied_once(tmp_path):
    # Stored sideways (landscape pixels, "rotate 90 CW" tag), the way phones save portrait photos.
    stored = np.zeros((100, 200, 3), np.uint8)
    stored[:, :100] = (220, 30, 30)  # left half red -> top after rotation
    stored[:, 100:] = (30, 40, 220)  # right half blue -> bottom
    image = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(image, quality=95, exif=exif.tobytes())

    out = tmp_path / "seg.mp4"
    KenBurnsGenerator().generate(request(image, out, width=100, height=200, shot=shot(Camera.static)))
    frame = decode_frames(out, 100, 200)[0]
    assert frame[40, 50, 0] > 150 and frame[40, 50, 2] < 100  # top is red
    assert frame[160, 50, 2] > 150 and frame[160, 50, 0] < 100  # bottom is blue


def test_chained_shot_starts_where_the_previous_one_ended(landscape, tmp_path):
    gen = KenBurnsGenerator()
    first_seg, second_seg = tmp_path / "s1.mp4", tmp_path / "s2.mp4"
    gen.generate(request(landscape, first_seg, shot=shot(Camera.zoom_in, index=0)))
    extract_first_last(first_seg, tmp_path / "s1_first.jpg", tmp_path / "s1_last.jpg")

    gen.generate(request(tmp_path / "s1_last.jpg", second_seg, shot=shot(Camera.pan_right, index=1)))
    assert count_frames(second_seg) == FPS
    end_of_one = decode_frames(first_seg, W, H)[-1]
    start_of_two = decode_frames(second_seg, W, H)[0]
    # pan_right starts at the left edge of a 1.15x crop: same picture, slightly enlarged.
    enlarged = np.asarray(
        Image.fromarray(end_of_one.astype(np.uint8)).crop((0, 19, 139, 269)).resize((W, H), Image.BICUBIC)
    ).astype(np.int16)
    assert diff(start_of_two, enlarged) < 8


def test_undecodable_image_raises_media_error(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n" * 20)
    with pytest.raises(MediaError, match="cannot be decoded"):
        KenBurnsGenerator().generate(request(text, tmp_path / "seg.mp4"))
    with pytest.raises(MediaError, match="cannot be decoded"):
        KenBurnsGenerator().generate(request(tmp_path / "missing.png", tmp_path / "seg.mp4"))
    assert not (tmp_path / "seg.mp4").exists()
    assert no_partials(tmp_path)


def test_odd_sizes_are_refused_up_front(landscape, tmp_path):
    with pytest.raises(ValueError, match="even"):
        request(landscape, tmp_path / "seg.mp4", width=161)


# ---- first and last frames ---------------------------------------------------------------


@pytest.mark.parametrize("seconds", [2.0, 0.5])
def test_first_and_last_frames_are_exact(seconds, tmp_path):
    # A clip whose every frame differs (moving test pattern), encoded in the segment format.
    video = tmp_path / "clip.mp4"
    frames_n = int(seconds * FPS)
    lavfi(video, f"testsrc2=size={W}x{H}:rate={FPS}", "-frames:v", str(frames_n), *ffmpeg.encode_args(FPS))
    first, last = tmp_path / "first.jpg", tmp_path / "last.jpg"
    extract_first_last(video, first, last)

    frames = decode_frames(video, W, H)
    assert len(frames) == frames_n
    assert Image.open(last).size == (W, H)
    assert diff(rgb(first), frames[0]) < 2
    assert diff(rgb(last), frames[-1]) < 2
    # Neighbouring frames of this clip differ by ~10: the tolerance above tells them apart.
    assert diff(rgb(last), frames[-2]) > diff(rgb(last), frames[-1]) + 4
    assert no_partials(tmp_path)


def test_frame_colours_survive_the_jpeg(tmp_path):
    # BT.709 video -> BT.601 JPEG needs an explicit conversion; check saturated colours.
    swatch = np.zeros((32, 128, 3), np.uint8)
    for i, colour in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220), (200, 180, 60)]):
        swatch[:, i * 32:(i + 1) * 32] = colour
    image = tmp_path / "swatch.png"
    Image.fromarray(swatch).save(image)
    video = tmp_path / "seg.mp4"
    KenBurnsGenerator().generate(request(image, video, width=128, height=32, shot=shot(Camera.static)))
    extract_first_last(video, tmp_path / "first.jpg", tmp_path / "last.jpg")
    centres = rgb(tmp_path / "first.jpg")[16, 16::32]
    assert np.abs(centres - swatch[16, 16::32].astype(np.int16)).max() <= 6


# ---- composition -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def music_file(media: Path) -> Path:
    # Shorter than the video, so looping is exercised; mono 44.1 kHz, so resampling is too.
    return lavfi(media / "music.mp3", "sine=frequency=330:duration=1.3", "-ac", "1", "-ar", "44100")


def join(segments: list[Path], out: Path, workdir: Path, music: Path | None = None, pad: bool = False) -> None:
    durations = [ffmpeg.probe(s).duration for s in segments]
    compose(ComposeSpec(segments=segments, durations=durations, width=W, height=H, fps=FPS, music=music, pad=pad),
            out, workdir)


@pytest.mark.parametrize("use_music", [False, True], ids=["pad", "music"])
def test_join_with_music(use_music, segments, music_file, tmp_path):
    out = tmp_path / "final.mp4"
    join(segments, out, tmp_path, music_file if use_music else None, pad=not use_music)

    info = ffmpeg.probe(out)
    assert (info.video_streams, info.audio_streams) == (1, 1)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert abs(info.duration - 3.0) < 0.1
    assert count_frames(out) == 3 * FPS
    assert _audio_is_audible(out)
    assert no_partials(tmp_path)


def test_concat_handles_quotes_and_spaces_in_paths(segments, tmp_path):
    odd = tmp_path / "it's a clip.mp4"
    odd.write_bytes(segments[0].read_bytes())
    out = tmp_path / "final.mp4"
    join([odd, segments[1]], out, tmp_path)
    assert count_frames(out) == 2 * FPS
    assert "'\\''" in concat_listing([odd])


def test_a_foreign_clip_in_the_shared_format_joins_by_stream_copy(segments, tmp_path):
    # What another backend (stock, http, diffusers) does: any input -> conform_filter + encode_args.
    source = lavfi(tmp_path / "stock.mkv", "testsrc2=size=320x240:rate=25", "-t", "1.2")
    foreign = tmp_path / "foreign.mp4"
    ffmpeg.run_to(
        foreign,
        lambda tmp: ["ffmpeg", "-i", str(source), "-vf", ffmpeg.conform_filter(W, H),
                     "-frames:v", str(FPS), *ffmpeg.encode_args(FPS), str(tmp)],
        what="conforming a stock clip",
    )
    out = tmp_path / "final.mp4"
    join([segments[0], foreign], out, tmp_path)
    assert count_frames(out) == 2 * FPS
    frames = decode_frames(out, W, H)
    assert diff(frames[FPS], decode_frames(foreign, W, H)[0]) < 3


def test_missing_music_is_a_media_error(segments, tmp_path):
    with pytest.raises(MediaError, match="music"):
        join(segments, tmp_path / "f.mp4", tmp_path, music=tmp_path / "nope.mp3")


def test_make_cover_clamps_inside_the_video(segments, tmp_path):
    cover = tmp_path / "cover.jpg"
    make_cover(segments[0], cover, at=30.0)
    assert Image.open(cover).size == (W, H)
    make_cover(segments[0], cover)
    assert Image.open(cover).format == "JPEG"


def _audio_is_audible(video: Path) -> bool:
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(video), "-map", "0:a", "-af", "volumedetect",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )
    peak = next(line for line in done.stderr.splitlines() if "max_volume" in line)
    return float(peak.split("max_volume:")[1].split("dB")[0]) > -60


# ---- the ffmpeg boundary -----------------------------------------------------------------


def test_failing_ffmpeg_raises_media_error_with_stderr_tail(tmp_path):
    missing = tmp_path / "nothing-here.mp4"
    with pytest.raises(MediaError) as caught:
        ffmpeg.run(["ffmpeg", "-i", str(missing), str(tmp_path / "x.mp4")], what="transcoding")
    assert str(caught.value).startswith("transcoding failed: ")
    assert "No such file or directory" in caught.value.stderr_tail
    assert caught.value.stderr_tail in str(caught.value)


def test_ffmpeg_python_streams_are_accepted(tmp_path):
    import ffmpeg as ffmpeg_python

    out = tmp_path / "x.mp4"
    stream = ffmpeg_python.input(f"color=c=blue:size={W}x{H}:rate={FPS}", f="lavfi", t=0.5)
    ffmpeg.run(ffmpeg_python.output(stream, str(out), vcodec="libx264"), what="test clip")
    assert count_frames(out) == FPS // 2


def test_missing_binary_says_to_install_ffmpeg():
    with pytest.raises(MediaError, match="install ffmpeg"):
        ffmpeg.run(["ffmpeg-that-is-not-installed", "-version"], what="checking")


def test_stderr_tail_keeps_the_last_non_empty_lines():
    text = "\n".join(f"line {i}" for i in range(20)) + "\n\n  \n"
    assert ffmpeg.stderr_tail(text) == " | ".join(f"line {i}" for i in range(12, 20))


def test_probe_of_a_non_media_file_is_a_media_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not media" * 100)
    with pytest.raises(MediaError, match="cannot read media file junk.mp4"):
        ffmpeg.probe(junk)
