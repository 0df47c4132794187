"""First and last frames of a segment: the last one seeds the next shot, so it must be exact."""

from __future__ import annotations

import os
from pathlib import Path

from connectors import ffmpeg
from storage.errors import MediaError

# The last frame is always among those decoded from this far before the end.
TAIL_SECONDS = 1.0


def extract_first_last(video: Path, first: Path, last: Path | None) -> None:
    """Both frames; only the first when `last` is None (a provider gave its own last frame).

    Both come from one ffmpeg run (the file opened twice, the second time near its end): a GPU
    host does this after every shot, and starting ffmpeg costs more CPU than decoding a frame."""
    if last is None:
        ffmpeg.run_to(first, lambda tmp: [ffmpeg.FFMPEG, "-i", str(video), *_first_frame_args(tmp)],
                      what=f"first frame of {video.name}")
        return
    what = f"first and last frames of {video.name}"
    first_tmp, last_tmp = ffmpeg.temp_path_for(first), ffmpeg.temp_path_for(last)
    try:
        # -sseof starts the second input this far before the end: ffmpeg seeks to the keyframe
        # before that point and decodes forward, so a 5 s segment is not decoded in full.
        ffmpeg.run([ffmpeg.FFMPEG, "-i", str(video), "-sseof", f"-{TAIL_SECONDS:g}", "-i", str(video),
                    *_first_frame_args(first_tmp), *_last_frame_args(last_tmp)], what=what)
        for tmp in (first_tmp, last_tmp):
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise MediaError(f"{what} failed: ffmpeg wrote no output")
        os.replace(first_tmp, first)
        os.replace(last_tmp, last)
    finally:
        first_tmp.unlink(missing_ok=True)
        last_tmp.unlink(missing_ok=True)


def _first_frame_args(out: Path) -> list[str]:
    return ["-map", "0:v:0", "-frames:v", "1", *ffmpeg.JPEG_ARGS, str(out)]


def _last_frame_args(out: Path) -> list[str]:
    # -update 1 rewrites the one output file for every decoded frame, so what remains is the
    # true last frame; passthrough stops the muxer from dropping or duplicating frames by time.
    return ["-map", "1:v:0", "-fps_mode", "passthrough", "-update", "1", *ffmpeg.JPEG_ARGS, str(out)]
