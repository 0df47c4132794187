"""Final assembly: join uniform segments without re-encoding and lay a music bed under them."""

from __future__ import annotations

from pathlib import Path

from connectors import ffmpeg
from storage import atomic
from storage.errors import MediaError

AUDIO_RATE = 48000
AUDIO_BITRATE = "128k"
FADE_IN = 1.0
FADE_OUT = 1.5

# The generated pad when a template has no music: a soft C major 9 chord of sines, each
# partial detuned a little between left and right so the slow beating sounds wide and alive
# rather than like a test tone. (frequency Hz, weight)
PAD_PARTIALS = ((130.81, 1.0), (196.00, 0.8), (329.63, 0.55), (493.88, 0.35), (587.33, 0.25))
PAD_DETUNE_HZ = 0.35
PAD_TREMOLO = "tremolo=f=0.2:d=0.25"
# Lifts the pad to roughly the level of mastered music, so music_volume_db means the same for both.
PAD_GAIN_DB = 6


def concat_with_music(
    segments: list[Path],
    out: Path,
    *,
    duration: float,
    music: Path | None,
    music_volume_db: float,
    workdir: Path,
) -> None:
    """One ffmpeg pass: segments joined by stream copy, plus looped music (or a pad), AAC stereo.

    The output ends with the joined video (AAC may run one audio frame, ~21 ms, longer): the
    bed is trimmed and faded to `duration`, then padded with silence, so `-shortest` ends the
    file on the video even when `duration` is a little off.
    """
    if not segments or duration <= 0:
        raise MediaError(f"cannot compose {len(segments)} segments into {duration:g} s of video")
    if music is not None and not music.is_file():
        raise MediaError(f"music file {music.name} does not exist")
    listing = workdir / f"{out.stem}.concat.txt"
    atomic.write_text(listing, concat_listing(segments))
    audio_inputs, source = _audio_source(music, duration)
    graph = f"{source}{_bed_filters(duration, music_volume_db)}[bed]"
    ffmpeg.run_to(
        out,
        lambda tmp: [
            ffmpeg.FFMPEG, "-f", "concat", "-safe", "0", "-i", str(listing), *audio_inputs,
            "-filter_complex", graph, "-map", "0:v:0", "-map", "[bed]",
            "-c:v", "copy", "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE), "-ac", "2",
            "-shortest", "-map_metadata", "-1", "-movflags", "+faststart", str(tmp),
        ],
        what="composing the final video",
    )


def make_cover(video: Path, cover: Path, at: float = 1.0) -> None:
    """A JPEG of the frame at `at` seconds, moved inside the video when it is shorter than that."""
    length = ffmpeg.probe(video).duration
    # Stay a little before the end: seeking onto the very end decodes nothing.
    when = min(max(at, 0.0), max(length - 0.1, 0.0))
    ffmpeg.run_to(
        cover,
        lambda tmp: [
            ffmpeg.FFMPEG, "-ss", f"{when:.3f}", "-i", str(video), "-map", "0:v:0",
            "-frames:v", "1", *ffmpeg.JPEG_ARGS, str(tmp),
        ],
        what=f"cover image from {video.name}",
    )


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


def _audio_source(music: Path | None, duration: float) -> tuple[list[str], str]:
    """Extra ffmpeg inputs and the filtergraph head that yields the raw bed."""
    if music is not None:
        return ["-stream_loop", "-1", "-i", str(music)], "[1:a:0]"
    return [], _pad_graph(duration)


def _pad_graph(duration: float) -> str:
    length = f"{duration + 1:.3f}"  # a little spare; the bed is trimmed exactly afterwards
    weights = " ".join(f"{w:g}" for _, w in PAD_PARTIALS)
    chains, labels = [], {"L": "", "R": ""}
    for side, shift in (("L", -PAD_DETUNE_HZ / 2), ("R", PAD_DETUNE_HZ / 2)):
        for i, (freq, _) in enumerate(PAD_PARTIALS):
            chains.append(f"sine=f={freq + shift:.3f}:r={AUDIO_RATE}:d={length}[{side}{i}]")
            labels[side] += f"[{side}{i}]"
        chains.append(f"{labels[side]}amix=inputs={len(PAD_PARTIALS)}:weights={weights}:normalize=0[{side}]")
    chains.append(f"[L][R]join=inputs=2:channel_layout=stereo,{PAD_TREMOLO},volume={PAD_GAIN_DB}dB")
    return ";".join(chains) + ","


def _bed_filters(duration: float, volume_db: float) -> str:
    fade_in = min(FADE_IN, duration / 3)
    fade_out = min(FADE_OUT, duration / 2)
    return ",".join([
        f"atrim=duration={duration:.3f}",
        "asetpts=PTS-STARTPTS",
        f"volume={volume_db:g}dB",
        f"afade=t=in:st=0:d={fade_in:.3f}",
        f"afade=t=out:st={duration - fade_out:.3f}:d={fade_out:.3f}",
        f"aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo",
        # Silence after the bed lets -shortest end the file on the video, never on the audio.
        "apad",
    ])
