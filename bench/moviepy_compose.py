"""The MoviePy side of bench/compose.py: the same film (concat, logo, Chinese subtitles, music).

Imports nothing from SheetReel, so it can run under another interpreter that has MoviePy
(MoviePy is deliberately not a project dependency):

    python bench/moviepy_compose.py '<json job>'
"""

from __future__ import annotations

import json
import sys
from typing import Any


def render(job: dict[str, Any]) -> None:
    """Write job["out"]; the job's keys are what bench/compose.py passes (see `moviepy_job`)."""
    from moviepy import (
        AudioFileClip,
        CompositeVideoClip,
        ImageClip,
        TextClip,
        afx,
        concatenate_videoclips,
    )
    from moviepy.video.tools.subtitles import SubtitlesClip

    width, height = job["width"], job["height"]
    video = concatenate_videoclips([_video_clip(p) for p in job["segments"]])
    logo = ImageClip(job["logo"]).resized(width=round(width * job["logo_scale"]))
    logo = logo.with_opacity(job["logo_opacity"]).with_duration(video.duration)
    logo = logo.with_position((width - logo.w - job["margin"], height - logo.h - job["margin"]))

    def text(line: str) -> TextClip:
        return TextClip(font=job["font_file"], text=line, font_size=job["font_px"], color="white",
                        stroke_color="black", stroke_width=job["outline_px"], margin=(4, 4))

    subs = SubtitlesClip(job["srt"], make_textclip=text, encoding="utf-8")
    subs = subs.with_position(("center", height - job["margin_v"] - job["font_px"] * 1.4))
    music = AudioFileClip(job["music"]).with_effects([
        afx.AudioLoop(duration=video.duration),
        afx.MultiplyVolume(10 ** (job["music_gain_db"] / 20)),
        afx.AudioFadeIn(1.0),
        afx.AudioFadeOut(1.5),
    ])
    final = CompositeVideoClip([video, logo, subs], size=(width, height)).with_audio(music)
    final.write_videofile(
        job["out"], fps=job["fps"], codec="libx264", preset=job["preset"], audio_codec="aac",
        audio_bitrate="128k", audio_fps=48000, threads=job["threads"], logger=None,
        ffmpeg_params=["-crf", str(job["crf"]), "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    )
    final.close()


def _video_clip(path: str) -> Any:
    from moviepy import VideoFileClip
    return VideoFileClip(path, audio=False)


if __name__ == "__main__":
    render(json.loads(sys.argv[1]))
