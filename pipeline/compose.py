"""Final assembly in one ffmpeg pass.

`compose` takes a `ComposeSpec`: segments joined by stream copy when nothing visual is asked
for, otherwise one re-encode with transitions, logo and burned subtitles; the soundtrack
(`pipeline.audio_mix`) rides in the same pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from connectors import ffmpeg
from pipeline import audio_mix
from pipeline.compose_plan import (
    ComposeSpec,
    clip_srt,
    decorate_graph,
    join_graph,
    needs_reencode,
)
from pipeline.premix import Premix
from storage import atomic
from storage.errors import MediaError

PROBE_WORKERS = 8
# A premixed track fits a video this close to its length (the segments' durations as probed).
PREMIX_FIT_SECONDS = 0.001


class PremixUnfit(MediaError):
    """The video is not the length the soundtrack was premixed for: mix it with the video instead."""


class ComposeResult(BaseModel):
    video: Path
    cover: Path | None
    duration: float  # measured on the written file, seconds
    reencoded: bool  # False: the segments' H.264 was copied untouched
    levels: audio_mix.Levels  # measured loudness before gains, for the logs


class _Layout(BaseModel):
    """How the segments get in: decided from the spec and what the segments really are."""

    conform: list[bool]  # per segment: not in the shared format, must be scaled/resampled
    stream_copy: bool  # copy the segments' H.264 untouched
    separate: bool  # one -i per segment (transitions or conforming), else the concat demuxer
    duration: float  # of the output, seconds


def compose(spec: ComposeSpec, out: Path, workdir: Path, *, cover: Path | None = None,
            known: Mapping[Path, ffmpeg.ProbedFile | None] | None = None,
            loudness: audio_mix.LoudnessMemo | None = None, premixed: Premix | None = None) -> ComposeResult:
    """Write the final H.264/AAC MP4 in one ffmpeg pass, and a JPEG cover (`out`.jpg by default):
    in the same pass when the video stream is copied, else from the written file.

    Copies the video stream when the segments share the format and nothing visual is asked
    for; otherwise re-encodes once. The soundtrack is always encoded, silent when there is
    neither music nor narration, so that players see an audio track. `known`: segments' probes
    taken earlier, used for each segment whose file still has the content they were taken of;
    `loudness`: music measured for earlier videos; `premixed`: the soundtrack mixed ahead (in
    `workdir`), copied in as it is instead of the spec's narration and music; PremixUnfit when
    the segments do not add up to its length.
    """
    if premixed is None:
        # Both are mostly waiting on short ffmpeg/ffprobe runs: do them side by side. The loudness
        # is measured over the planned length; the real one (stream copy plays the files as they
        # are) is near enough for an integrated loudness.
        with ThreadPoolExecutor(max_workers=1) as pool:
            measuring = pool.submit(audio_mix.measure_sources, spec, spec.total_duration, workdir, loudness)
            layout = _layout(spec, known or {})
            levels = measuring.result()
    else:
        layout = _layout(spec, known or {})
        if abs(layout.duration - premixed.duration) > PREMIX_FIT_SECONDS:
            raise PremixUnfit(f"the segments last {layout.duration:.3f} s, the premixed soundtrack "
                              f"{premixed.duration:.3f} s")
    args, graphs, next_input = _video_part(spec, layout, out, workdir)
    if premixed is None:
        audio = audio_mix.plan_audio(spec, levels, layout.duration, next_input, workdir)
        args += audio.inputs
        next_input += audio.input_count
        graphs, audio_map, audio_codec, levels = [*graphs, audio.graph], "[aout]", audio_mix.ENCODE_ARGS, audio.levels
    else:
        args += ["-i", str(premixed.audio(workdir))]
        audio_map, audio_codec, levels = f"{next_input}:a:0", ("-c:a", "copy"), premixed.levels
        next_input += 1
    soft = _soft_subtitles(spec, layout.duration, workdir / f"{out.stem}.soft.srt")
    if soft is not None:
        args += ["-i", str(soft)]
    outputs = [
        *(["-filter_complex", ";".join(graphs)] if graphs else []),
        "-map", "0:v:0" if layout.stream_copy else "[vout]", "-map", audio_map,
        *(["-c:v", "copy"] if layout.stream_copy else _video_codec_args(spec)),
        *(_soft_subtitle_args(next_input, spec) if soft is not None else []),
        *audio_codec, "-map_metadata", "-1", "-movflags", "+faststart",
    ]
    cover_path = None if spec.cover_at is None else cover or out.with_suffix(".jpg")
    # A copied video's cover comes out of the same run, from the same packets: one ffmpeg start
    # fewer (re-encoded, the filtergraph's one output is the video's, and make_cover reads it).
    same_run = cover_path is not None and layout.stream_copy

    def command(tmps: list[Path]) -> list[str]:
        cover_out = ["-map", "0:v:0", "-ss", f"{cover_time(spec.cover_at, layout.duration):.3f}", "-frames:v", "1",
                     *ffmpeg.JPEG_ARGS, str(tmps[1])] if same_run else []
        return [ffmpeg.FFMPEG, *args, *outputs, str(tmps[0]), *cover_out]

    ffmpeg.run_to_all([out, cover_path] if same_run else [out], command, what="composing the final video")

    with ThreadPoolExecutor(max_workers=1) as pool:
        probing = pool.submit(ffmpeg.probe, out)
        if cover_path is not None and not same_run:
            make_cover(out, cover_path, at=spec.cover_at, length=layout.duration)
        length = probing.result().duration
    return ComposeResult(video=out, cover=cover_path, duration=length, reencoded=not layout.stream_copy,
                         levels=levels)


def make_cover(video: Path, cover: Path, at: float = 1.0, *, length: float | None = None) -> None:
    """A JPEG of the frame at `at` seconds, moved inside the video when it is shorter than that.

    `length`: the video's duration when the caller has already probed it.
    """
    length = ffmpeg.probe(video).duration if length is None else length
    when = cover_time(at, length)
    ffmpeg.run_to(
        cover,
        lambda tmp: [
            ffmpeg.FFMPEG, "-ss", f"{when:.3f}", "-i", str(video), "-map", "0:v:0",
            "-frames:v", "1", *ffmpeg.JPEG_ARGS, str(tmp),
        ],
        what=f"cover image from {video.name}",
    )


def cover_time(at: float, length: float) -> float:
    """`at`, moved inside a video `length` seconds long: a little before the end, as seeking onto
    the very end decodes nothing."""
    return min(max(at, 0.0), max(length - 0.1, 0.0))


def concat_listing(segments: list[Path]) -> str:
    """The concat demuxer's list file, with absolute paths quoted the way it parses them."""
    lines = ["ffconcat version 1.0"]
    for seg in segments:
        path = str(seg.resolve())
        if "\n" in path or "\r" in path:
            raise MediaError(f"segment path {path!r} contains a line break")
        # Inside single quotes nothing is special except the quote itself: close, escape, reopen.
        lines.append("file '" + path.replace("'", "'\\''") + "'")
    return "\n".join(lines) + "\n"


def _layout(spec: ComposeSpec, known: Mapping[Path, ffmpeg.ProbedFile | None]) -> _Layout:
    # ffprobe is mostly process start-up: probe the segments side by side.
    with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(spec.segments))) as pool:
        infos = list(pool.map(lambda seg: ffmpeg.probe_known(seg, known.get(seg)), spec.segments))
    conform = [not _in_shared_format(info, spec) for info in infos]
    separate = spec.has_transitions or any(conform)
    if separate:
        _check_lengths(spec, infos)
    return _Layout(
        conform=conform,
        stream_copy=not needs_reencode(spec) and not any(conform),
        separate=separate,
        # Separate inputs are trimmed to the plan; the demuxer plays the files as they are.
        duration=spec.total_duration if separate else sum(info.duration for info in infos),
    )


def _video_part(spec: ComposeSpec, layout: _Layout, out: Path, workdir: Path) -> tuple[list[str], list[str], int]:
    """Video and logo input arguments, the video filtergraph chains, and the next input index."""
    if layout.separate:
        args = [a for seg in spec.segments for a in ("-i", str(seg))]
    else:
        listing = workdir / f"{out.stem}.concat.txt"
        atomic.write_text(listing, concat_listing(spec.segments))
        args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    next_input = len(spec.segments) if layout.separate else 1
    if layout.stream_copy:
        return args, [], next_input
    logo_input = None
    if spec.logo is not None:
        args += ["-i", str(spec.logo.path)]
        logo_input, next_input = next_input, next_input + 1
    if layout.separate:
        graphs = [join_graph(spec, layout.conform), decorate_graph(spec, "joined", logo_input)]
    else:
        graphs = [decorate_graph(spec, "0:v:0", logo_input)]
    return args, graphs, next_input


def _in_shared_format(info: ffmpeg.MediaInfo, spec: ComposeSpec) -> bool:
    """What stream-copy joining needs to hold for every segment (what `encode_args` writes)."""
    return (
        info.video_codec == "h264" and info.pix_fmt == ffmpeg.PIX_FMT
        and (info.width, info.height) == (spec.width, spec.height)
        and info.fps is not None and abs(info.fps - spec.fps) < 0.01
    )


def _check_lengths(spec: ComposeSpec, infos: list[ffmpeg.MediaInfo]) -> None:
    # A segment shorter than planned would shift every later transition; say so instead.
    for i, (planned, info) in enumerate(zip(spec.durations, infos)):
        if info.duration < planned - 1.5 / spec.fps:
            raise MediaError(
                f"segment {i} ({spec.segments[i].name}) lasts {info.duration:.2f} s, "
                f"shorter than the planned {planned:g} s"
            )


def _video_codec_args(spec: ComposeSpec) -> list[str]:
    """The shared segment encoding (see connectors.ffmpeg.encode_args) with the spec's preset."""
    gop = str(max(1, spec.fps * ffmpeg.GOP_SECONDS))
    return [
        "-c:v", ffmpeg.VIDEO_CODEC, "-preset", spec.preset, "-crf", str(spec.crf),
        "-profile:v", ffmpeg.X264_PROFILE, "-pix_fmt", ffmpeg.PIX_FMT,
        "-r", str(spec.fps), "-fps_mode", "cfr", "-g", gop, *ffmpeg.COLOR_TAGS,
    ]


def _soft_subtitles(spec: ComposeSpec, duration: float, clipped: Path) -> Path | None:
    """The SRT to mux as a mov_text track, cut to the video; None when there is nothing to mux."""
    if spec.subtitles is None or spec.subtitles.mode != "soft":
        return None
    try:
        text = spec.subtitles.srt.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MediaError(f"cannot read subtitles {spec.subtitles.srt.name}: {e}") from e
    kept = clip_srt(text, duration)
    if not kept:
        return None
    atomic.write_text(clipped, kept)
    return clipped


def _soft_subtitle_args(index: int, spec: ComposeSpec) -> list[str]:
    assert spec.subtitles is not None
    return [
        "-map", f"{index}:s:0", "-c:s", "mov_text",
        "-metadata:s:s:0", f"language={spec.subtitles.language}",
    ]
