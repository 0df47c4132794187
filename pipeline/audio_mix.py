"""The soundtrack of the final video: music bed, narration, ducking and loudness, as ffmpeg filters.

Why ffmpeg filters and not a pydub pre-mix: the mix then rides in the same ffmpeg pass as the
video (no intermediate WAV, nothing decoded into Python memory), loudness is real EBU R128
(pydub only knows dBFS), and ducking follows the narration's actual signal through
`sidechaincompress`, so it needs no cue times and also works for narration we did not
synthesise.

Loudness is two steps: a quick audio-only pass measures the music and the narration
separately (`ebur128`), then the video pass applies fixed gains. Fixed gains, not single-pass
`loudnorm`: loudnorm's dynamic mode is an AGC that lifts the music between narration lines,
undoing the ducking. The narration is set to the target, the music `music_volume_db` below it
(or to the target itself when nothing is said), and a limiter keeps peaks under -1 dBFS.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from connectors import ffmpeg
from pipeline.compose_plan import ComposeSpec, filter_arg
from storage.errors import MediaError

AUDIO_RATE = 48000
AUDIO_BITRATE = "128k"
AUDIO_FORMAT = f"aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"
FADE_IN = 1.0
FADE_OUT = 1.5
SILENCE_LUFS = -69.0  # ebur128 reports -70 when everything is below its absolute gate
PEAK_LIMIT = 0.891  # -1 dBFS: headroom for AAC's overshoot
# Ducking: the sidechain is boosted so that any speech drives the compressor tens of dB into
# reduction; `mix` then keeps exactly 10^(-duck/20) of the dry bed, so the drop equals duck_db.
DUCK_THRESHOLD = 0.001
DUCK_SIDECHAIN_GAIN = 4
DUCK_RATIO = 20
DUCK_ATTACK_MS = 20
DUCK_RELEASE_MS = 400


class Levels(BaseModel):
    """Integrated loudness of each source as played (LUFS); None for absent or silent."""

    music: float | None = None
    narration: float | None = None


class AudioPlan(BaseModel):
    inputs: list[str]  # ffmpeg input arguments, in order: music first, then narration
    graph: str  # filtergraph chains ending in [aout]
    levels: Levels

    @property
    def input_count(self) -> int:
        return self.inputs.count("-i")


def plan_audio(spec: ComposeSpec, duration: float, first_input: int, workdir: Path, *, endless: bool) -> AudioPlan:
    """Inputs and filters for the soundtrack; measures the sources first.

    `endless`: pad with silence forever, for `-shortest` to end the file on a copied video
    stream. Otherwise the track is exactly `duration` long: ffmpeg 5.1's -shortest does not
    stop an endless stream coming from the same filtergraph as the video.
    """
    _check_sources(spec)
    levels = measure(spec.music, spec.narration, duration, workdir)
    end = "apad" if endless else f"apad=whole_dur={duration:.6f},atrim=duration={duration:.6f}"
    if levels.music is None and levels.narration is None:
        graph = f"anullsrc=r={AUDIO_RATE}:cl=stereo,{AUDIO_FORMAT},{end}[aout]"
        return AudioPlan(inputs=[], graph=graph, levels=levels)
    inputs: list[str] = []
    chains: list[str] = []
    index = first_input
    bed = voice = None
    if levels.music is not None:
        assert spec.music is not None
        inputs += source_args(spec.music, duration, loop=True)
        gain = spec.loudness_lufs - levels.music + (spec.music_volume_db if levels.narration is not None else 0)
        chains.append(f"[{index}:a:0]{bed_filters(duration, gain)}[bed]")
        bed, index = "bed", index + 1
    if levels.narration is not None:
        assert spec.narration is not None
        inputs += source_args(spec.narration, duration, loop=False)
        gain = spec.loudness_lufs - levels.narration
        chains.append(f"[{index}:a:0]{AUDIO_FORMAT},volume={gain:.2f}dB,apad=whole_dur={duration:.3f},"
                      f"atrim=duration={duration:.3f},asplit=2[key][voice]")
        voice = "voice"
    chains.append(_mix_chain(bed, voice, spec.duck_db, end))
    return AudioPlan(inputs=inputs, graph=";".join(chains), levels=levels)


def source_args(path: Path, duration: float, *, loop: bool) -> list[str]:
    looping = ["-stream_loop", "-1"] if loop else []
    # Reading stops at the video's length: a long song is not decoded to its end.
    return [*looping, "-t", f"{duration + 0.5:.3f}", "-i", str(path)]


def bed_filters(duration: float, gain_db: float) -> str:
    fade_in = min(FADE_IN, duration / 3)
    fade_out = min(FADE_OUT, duration / 2)
    return ",".join([
        f"atrim=duration={duration:.3f}",
        "asetpts=PTS-STARTPTS",
        AUDIO_FORMAT,
        f"volume={gain_db:.2f}dB",
        f"afade=t=in:st=0:d={fade_in:.3f}",
        f"afade=t=out:st={duration - fade_out:.3f}:d={fade_out:.3f}",
    ])


def measure(music: Path | None, narration: Path | None, duration: float, workdir: Path) -> Levels:
    """One audio-only ffmpeg run: each source through its own ebur128, values written to files."""
    sources = {name: path for name, path in (("music", music), ("narration", narration)) if path is not None}
    if not sources:
        return Levels()
    argv: list[str] = [ffmpeg.FFMPEG]
    chains, maps, reports = [], [], {}
    for i, (name, path) in enumerate(sources.items()):
        argv += source_args(path, duration, loop=name == "music")
        reports[name] = workdir / f"loudness.{name}.txt"
        reports[name].unlink(missing_ok=True)
        chains.append(
            f"[{i}:a:0]atrim=duration={duration:.3f},{AUDIO_FORMAT},ebur128=metadata=1,"
            f"ametadata=mode=print:key=lavfi.r128.I:file={filter_arg(str(reports[name].resolve()))}[m{i}]"
        )
        maps += ["-map", f"[m{i}]"]
    argv += ["-filter_complex", ";".join(chains), *maps, "-f", "null", "-"]
    ffmpeg.run(argv, what="measuring the loudness of music and narration")
    return Levels(**{name: _integrated(report) for name, report in reports.items()})


def _integrated(report: Path) -> float | None:
    """The last running integrated loudness ametadata printed: the whole source's value."""
    lines = report.read_text(encoding="utf-8").splitlines() if report.is_file() else []
    values = [float(line.split("=", 1)[1]) for line in lines if line.startswith("lavfi.r128.I=")]
    if not values or values[-1] <= SILENCE_LUFS:
        return None
    return values[-1]


def _mix_chain(bed: str | None, voice: str | None, duck_db: float, end: str) -> str:
    tail = f"alimiter=limit={PEAK_LIMIT}:level=0:latency=1,{AUDIO_FORMAT},{end}[aout]"
    if bed and voice:
        keep = 10 ** (-duck_db / 20)
        duck = (
            f"[bed][key]sidechaincompress=threshold={DUCK_THRESHOLD}:ratio={DUCK_RATIO}"
            f":attack={DUCK_ATTACK_MS}:release={DUCK_RELEASE_MS}:level_sc={DUCK_SIDECHAIN_GAIN}"
            f":mix={1 - keep:.4f}[ducked]"
        )
        return f"{duck};[ducked][voice]amix=inputs=2:normalize=0:duration=first,{tail}"
    if bed:
        return f"[bed]{tail}"
    return f"[key]anullsink;[voice]{tail}"


def _check_sources(spec: ComposeSpec) -> None:
    for what, path in (("music", spec.music), ("narration", spec.narration)):
        if path is not None and not path.is_file():
            raise MediaError(f"{what} file {path.name} does not exist")
