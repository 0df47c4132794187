"""The one boundary to the ffmpeg and ffprobe binaries.

Every other module builds an argv (or an ffmpeg-python stream) and hands it to `run`; failures
come back as `MediaError` carrying the tail of ffmpeg's stderr, never as vendor exceptions.
The segment format lives here too, because stream-copy concatenation only works when every
generator writes exactly the same kind of H.264.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Union

import ffmpeg as ffmpeg_python
from pydantic import AfterValidator, BaseModel, Field

from storage.atomic import temp_path_for
from storage.errors import MediaError

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
STDERR_TAIL_LINES = 8
INSTALL_HINT = "install ffmpeg (e.g. `apt install ffmpeg` or `brew install ffmpeg`) and make sure it is on PATH"

# The segment format. Same codec, profile, pixel format, SAR, frame rate, GOP and timescale in
# every segment is what lets compose join them with `-c:v copy` instead of re-encoding.
VIDEO_CODEC = "libx264"
X264_PRESET = "veryfast"
X264_CRF = 20
X264_PROFILE = "high"
PIX_FMT = "yuv420p"
GOP_SECONDS = 2
# Tag what `conform_filter` actually converts to, so players do not guess BT.601 vs BT.709.
COLOR_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")

# Still frames: JPEG (JFIF) means full-range BT.601. Without an explicit conversion ffmpeg only
# changes the range, and the BT.709 colours come out visibly shifted (up to ~30 levels on
# saturated greens) -- an error that would compound as each last frame seeds the next shot.
# 4:4:4 keeps the chroma the video has instead of subsampling it a second time.
JPEG_ARGS = ("-vf", "scale=out_color_matrix=bt601:out_range=pc,format=yuvj444p", "-q:v", "2")

Command = Union[Sequence[str], Any]  # an argv list, or an ffmpeg-python stream/output node

# Demuxers that media from outside (stock clips, voice-overs, music) may be read with. Not hls,
# dash or concat: a "clip" that is a playlist would make ffmpeg open files it names (another
# project's video). mov's external data references are off by default in ffmpeg.
VIDEO_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts"
AUDIO_FORMATS = "mp3,wav,flac,ogg,aac,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm"


def only(formats: str) -> list[str]:
    """Input options (before `-i`): read the file with one of `formats`, from the local file only."""
    return ["-format_whitelist", formats, "-protocol_whitelist", "file"]



def _even(v: int) -> int:
    # H.264 in yuv420p cannot encode odd sizes.
    if v % 2:
        raise ValueError(f"video size must be even, got {v}")
    return v


# A frame width or height every backend and the compose step can encode.
EvenSize = Annotated[int, Field(ge=16, le=3840), AfterValidator(_even)]

class MediaInfo(BaseModel):
    duration: float
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    pix_fmt: str | None = None
    video_streams: int = 0
    audio_streams: int = 0
    size: int = 0
    fps: float | None = None


class ProbedFile(BaseModel):
    """A probe with the content it was taken of: another stage or host may reuse it for as long as
    the file's digest still matches, instead of starting ffprobe again."""

    sha256: str
    info: MediaInfo


class FrameInfo(BaseModel):
    width: int
    height: int


def encode_args(fps: int) -> list[str]:
    """Output options for a video-only segment in the shared format."""
    gop = str(max(1, fps * GOP_SECONDS))
    return [
        "-c:v", VIDEO_CODEC, "-preset", X264_PRESET, "-crf", str(X264_CRF),
        "-profile:v", X264_PROFILE, "-pix_fmt", PIX_FMT,
        "-r", str(fps), "-fps_mode", "cfr",
        # A fixed GOP with no scene-cut keyframes keeps the stream layout identical per segment.
        "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
        *COLOR_TAGS,
        "-video_track_timescale", str(fps * 1000),
        "-an", "-sn", "-dn", "-map_metadata", "-1",
        "-movflags", "+faststart",
    ]


def conform_filter(width: int, height: int) -> str:
    """Filters any backend can end its graph with: cover-scale and centre-crop to exactly
    width x height, BT.709 limited-range yuv420p, square pixels -- what `encode_args` tags."""
    return (
        f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=bicubic"
        f":out_color_matrix=bt709:out_range=tv,crop={width}:{height},format={PIX_FMT},setsar=1"
    )


def run(command: Command, *, what: str, timeout: float | None = None) -> None:
    """Run ffmpeg quietly; raise MediaError with the stderr tail when it fails.

    `command` is an ffmpeg-python node or an argv whose first item is the program.
    """
    argv = _argv(command)
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=timeout, check=False,
        )
    except FileNotFoundError as e:
        raise MediaError(f"{what} failed: {argv[0]} not found; {INSTALL_HINT}") from e
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"{what} failed: ffmpeg ran longer than {timeout:g} s", stderr_tail(e.stderr)) from e
    if done.returncode != 0:
        raise MediaError(f"{what} failed", stderr_tail(done.stderr))


def run_to(out: Path, build: Callable[[Path], Command], *, what: str) -> None:
    """Run the command `build(tmp)` writing to a temp sibling of `out`, then rename it into place."""
    run_to_all([out], lambda tmps: build(tmps[0]), what=what)


def run_to_all(outs: Sequence[Path], build: Callable[[list[Path]], Command], *, what: str) -> None:
    """Run `build(tmps)`, one temp sibling per output; rename them into place once all are written.

    ffmpeg can exit 0 without writing anything (e.g. a seek past the end), so an empty result
    is an error too.
    """
    tmps = [temp_path_for(out) for out in outs]
    try:
        run(build(tmps), what=what)
        if any(not tmp.is_file() or tmp.stat().st_size == 0 for tmp in tmps):
            raise MediaError(f"{what} failed: ffmpeg wrote no output")
        for tmp, out in zip(tmps, outs):
            os.replace(tmp, out)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def probe(path: Path, formats: str | None = None) -> MediaInfo:
    """What a media file holds; with `formats`, MediaError unless it is one of those demuxers."""
    guard = only(formats) if formats else []
    data = _ffprobe_json([*guard, "-show_format", "-show_streams", str(path)], what=f"cannot read media file {path.name}")
    return _media_info(data, path)


def probe_file(path: Path) -> ProbedFile:
    """`probe` plus the digest of the bytes it read."""
    return ProbedFile(sha256=file_sha256(path), info=probe(path))


def probe_known(path: Path, known: ProbedFile | None) -> MediaInfo:
    """`known`'s facts when they were taken of exactly this file's content, else a fresh probe."""
    if known is not None:
        try:
            if file_sha256(path) == known.sha256:
                return known.info
        except OSError:
            pass  # gone or unreadable: the probe says so in its own words
    return probe(path)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_image(image: Path) -> None:
    """Raise MediaError unless `image` exists and its first frame decodes."""
    if not image.is_file():
        raise MediaError(f"image {image.name} cannot be decoded: file does not exist")
    try:
        probe_first_frame(image)
    except MediaError as e:
        raise MediaError(f"image {image.name} cannot be decoded", e.stderr_tail) from e


def probe_first_frame(path: Path) -> FrameInfo:
    """Decode the first video frame (proving it decodes) and return its size.

    Raises MediaError when there is no decodable video frame.
    """
    what = f"cannot decode {path.name}"
    data = _ffprobe_json(
        ["-select_streams", "v:0", "-read_intervals", "%+#1", "-show_frames",
         "-show_entries", "frame=width,height", str(path)],
        what=what,
    )
    frames = data.get("frames") or []
    if not frames or not frames[0].get("width"):
        raise MediaError(f"{what}: no video frame found")
    return FrameInfo(width=int(frames[0]["width"]), height=int(frames[0]["height"]))


def stderr_tail(stderr: bytes | str | None, lines: int = STDERR_TAIL_LINES) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else (stderr or "")
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _ffprobe_json(args: list[str], *, what: str) -> dict[str, Any]:
    argv = [FFPROBE, "-v", "error", "-print_format", "json", *args]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except FileNotFoundError as e:
        raise MediaError(f"{what}: {FFPROBE} not found; {INSTALL_HINT}") from e
    if done.returncode != 0:
        raise MediaError(what, stderr_tail(done.stderr))
    try:
        data = json.loads(done.stdout)
    except ValueError as e:
        raise MediaError(f"{what}: unexpected ffprobe output") from e
    if not isinstance(data, dict):
        raise MediaError(f"{what}: unexpected ffprobe output")
    return data


def _argv(command: Command) -> list[str]:
    if isinstance(command, (list, tuple)):
        argv = [str(a) for a in command]
    else:
        argv = ffmpeg_python.compile(command, cmd=FFMPEG)
    if not argv:
        raise ValueError("empty ffmpeg command")
    # Our flags go first so that a caller's own -loglevel, if any, still wins.
    return [argv[0], "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *argv[1:]]


def _media_info(data: dict[str, Any], path: Path) -> MediaInfo:
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = _float(fmt.get("duration")) or _float((video or {}).get("duration")) or 0.0
    return MediaInfo(
        duration=duration,
        width=(video or {}).get("width"),
        height=(video or {}).get("height"),
        video_codec=(video or {}).get("codec_name"),
        audio_codec=(audio or {}).get("codec_name"),
        pix_fmt=(video or {}).get("pix_fmt"),
        video_streams=sum(1 for s in streams if s.get("codec_type") == "video"),
        audio_streams=sum(1 for s in streams if s.get("codec_type") == "audio"),
        size=int(fmt.get("size") or path.stat().st_size),
        fps=_rate((video or {}).get("avg_frame_rate")),
    )


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rate(value: Any) -> float | None:
    """ffprobe writes rates as "24/1"; "0/0" means unknown."""
    num, _, den = str(value or "").partition("/")
    num_f, den_f = _float(num), _float(den or "1")
    return num_f / den_f if num_f and den_f else None
