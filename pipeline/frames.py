"""First and last frames of a segment: the last one seeds the next shot, so it must be exact."""

from __future__ import annotations

from pathlib import Path

from connectors import ffmpeg

# Start this far before the end: ffmpeg seeks to the keyframe before that point and decodes
# forward, so the last frame is always among those written, and a 5 s segment is not decoded
# in full.
TAIL_SECONDS = 1.0


def extract_first_last(video: Path, first: Path, last: Path | None) -> None:
    """Both frames; only the first when `last` is None (a provider gave its own last frame)."""
    ffmpeg.run_to(first, lambda tmp: _first_frame_argv(video, tmp), what=f"first frame of {video.name}")
    if last is not None:
        ffmpeg.run_to(last, lambda tmp: _last_frame_argv(video, tmp), what=f"last frame of {video.name}")


def _first_frame_argv(video: Path, out: Path) -> list[str]:
    return [
        ffmpeg.FFMPEG, "-i", str(video), "-map", "0:v:0", "-frames:v", "1",
        *ffmpeg.JPEG_ARGS, str(out),
    ]


def _last_frame_argv(video: Path, out: Path) -> list[str]:
    # -update 1 rewrites the one output file for every decoded frame, so what remains is the
    # true last frame; passthrough stops the muxer from dropping or duplicating frames by time.
    return [
        ffmpeg.FFMPEG, "-sseof", f"-{TAIL_SECONDS:g}", "-i", str(video), "-map", "0:v:0",
        "-fps_mode", "passthrough", "-update", "1", *ffmpeg.JPEG_ARGS, str(out),
    ]
