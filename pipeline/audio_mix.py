"""The soundtrack of the final video: music bed, narration, ducking and loudness, as ffmpeg filters.

Why ffmpeg filters and not a pydub pre-mix: the mix then rides in the same ffmpeg pass as the
video (no intermediate WAV, nothing decoded into Python memory), loudness is real EBU R128
(pydub only knows dBFS), and ducking follows the narration's actual signal through
`sidechaincompress`, so it needs no cue times and also works for narration we did not
synthesise.

Loudness is measured, then applied as fixed gains in the video pass. Fixed gains, not
single-pass `loudnorm`: loudnorm's dynamic mode is an AGC that lifts the music between
narration lines, undoing the ducking. A quick audio-only pass (`ebur128`) measures music and
narration separately, so the narration can be set to the target and the bed `music_volume_db`
below it whatever their source levels; when both play, a second audio-only pass measures the
ducked mix and one more gain puts the whole at the target. A limiter keeps peaks under -1 dBFS.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from pydantic import BaseModel

from connectors import ffmpeg
from pipeline.compose_plan import ComposeSpec, filter_arg
from storage.errors import MediaError

AUDIO_RATE = 48000
AUDIO_BITRATE = "128k"
# The final video's audio encoding, whether mixed in its compose run or ahead of it (pipeline.premix).
ENCODE_ARGS = ("-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE), "-ac", "2")
AUDIO_FORMAT = f"aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"
FADE_IN = 1.0
FADE_OUT = 1.5
SILENCE_LUFS = -69.0  # ebur128 reports -70 when everything is below its absolute gate
PEAK_LIMIT = 0.891  # -1 dBFS: headroom for AAC's overshoot
# Ducking: the sidechain is boosted so that any speech drives the compressor tens of dB into
# reduction; `mix` then keeps 10^(-duck/20) of the dry bed, so the drop is duck_db (a few
# tenths of a dB short for very quiet speech).
DUCK_THRESHOLD = 0.001
DUCK_SIDECHAIN_GAIN = 4
DUCK_RATIO = 20
DUCK_ATTACK_MS = 20
DUCK_RELEASE_MS = 400
# The generated pad when a template has no music: a soft C major 9 chord of sines, each
# partial detuned a little between left and right so the slow beating sounds wide and alive
# rather than like a test tone. (frequency Hz, weight). Made inside the ffmpeg run that uses it:
# no file, no process of its own.
PAD_PARTIALS = ((130.81, 1.0), (196.00, 0.8), (329.63, 0.55), (493.88, 0.35), (587.33, 0.25))
PAD_DETUNE_HZ = 0.35
PAD_TREMOLO = "tremolo=f=0.2:d=0.25"
# Lifts the pad to roughly the level of mastered music, so music_volume_db means the same for both.
PAD_GAIN_DB = 6


class Levels(BaseModel):
    """Integrated loudness (LUFS) as measured; None for absent or silent."""

    music: float | None = None
    narration: float | None = None
    mix: float | None = None  # music and narration after their gains, before the final one


class LoudnessMemo:
    """Music beds already measured, by content digest and length.

    Every video of a template has the same music, and every video of one length without music the
    same generated pad: a long-running worker measures each once, not once per video. Thread-safe;
    bounded, the oldest entry goes first."""

    def __init__(self, capacity: int = 256) -> None:
        self._values: OrderedDict[tuple[str, str], float | None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    @staticmethod
    def key(spec: ComposeSpec, duration: float) -> tuple[str, str]:
        """The bed's identity: its content (or the pad, which depends on nothing else) and length."""
        return ffmpeg.file_sha256(spec.music) if spec.music is not None else "pad", f"{duration:.3f}"

    def get(self, key: tuple[str, str]) -> tuple[bool, float | None]:
        """(known, loudness): loudness None is a measured silence."""
        with self._lock:
            if key not in self._values:
                return False, None
            return True, self._values[key]

    def put(self, key: tuple[str, str], loudness: float | None) -> None:
        with self._lock:
            self._values[key] = loudness
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)


class AudioPlan(BaseModel):
    inputs: list[str]  # ffmpeg input arguments, in order: music first, then narration
    graph: str  # filtergraph chains ending in [aout], exactly the video's length
    levels: Levels

    @property
    def input_count(self) -> int:
        return self.inputs.count("-i")


def plan_audio(spec: ComposeSpec, levels: Levels, duration: float, first_input: int, workdir: Path) -> AudioPlan:
    """Inputs and filters for the soundtrack, given the sources' `levels` (`measure_sources`).

    The track is padded and trimmed to exactly `duration`: the output must not rely on
    -shortest, which ffmpeg 5.1 ignores for an endless stream from the video's filtergraph
    and applies far too early when a subtitle stream is muxed.
    """
    levels = levels.model_copy()
    end = f"apad=whole_dur={duration:.6f},atrim=duration={duration:.6f}"
    if levels.music is None and levels.narration is None:
        graph = f"anullsrc=r={AUDIO_RATE}:cl=stereo,{AUDIO_FORMAT},{end}[aout]"
        return AudioPlan(inputs=[], graph=graph, levels=levels)
    trim = 0.0
    if levels.music is not None and levels.narration is not None:
        inputs, chains = _mix_graph(spec, levels, duration, first_input=0)
        levels.mix = _measure(inputs, chains, ["mix"], workdir)["mix"]
        trim = spec.loudness_lufs - levels.mix if levels.mix is not None else 0.0
    inputs, chains = _mix_graph(spec, levels, duration, first_input)
    chains.append(f"[mix]volume={trim:.2f}dB,alimiter=limit={PEAK_LIMIT}:level=0:latency=1,{AUDIO_FORMAT},{end}[aout]")
    return AudioPlan(inputs=inputs, graph=";".join(chains), levels=levels)


def has_bed(spec: ComposeSpec) -> bool:
    return spec.music is not None or spec.pad


def bed_args(spec: ComposeSpec, duration: float) -> list[str]:
    """Input arguments of the bed: the music looped, or the pad synthesised for this length."""
    if spec.music is not None:
        return source_args(spec.music, duration, loop=True)
    return ["-f", "lavfi", "-i", pad_graph(duration)]


def pad_graph(duration: float) -> str:
    """The pad as a lavfi source graph, a little longer than `duration` (the bed is trimmed)."""
    length = f"{duration + 0.5:.3f}"
    weights = " ".join(f"{w:g}" for _, w in PAD_PARTIALS)
    chains, labels = [], {"L": "", "R": ""}
    for side, shift in (("L", -PAD_DETUNE_HZ / 2), ("R", PAD_DETUNE_HZ / 2)):
        for i, (freq, _) in enumerate(PAD_PARTIALS):
            chains.append(f"sine=f={freq + shift:.3f}:r={AUDIO_RATE}:d={length}[{side}{i}]")
            labels[side] += f"[{side}{i}]"
        chains.append(f"{labels[side]}amix=inputs={len(PAD_PARTIALS)}:weights={weights}:normalize=0[{side}]")
    chains.append(f"[L][R]join=inputs=2:channel_layout=stereo,{PAD_TREMOLO},volume={PAD_GAIN_DB}dB[out0]")
    return ";".join(chains)


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


def voice_filters(duration: float, gain_db: float) -> str:
    return f"{AUDIO_FORMAT},volume={gain_db:.2f}dB,apad=whole_dur={duration:.6f},atrim=duration={duration:.6f}"


def measure_sources(spec: ComposeSpec, duration: float, workdir: Path, memo: LoudnessMemo | None = None) -> Levels:
    """Loudness of the music and the narration over the first `duration` seconds, each alone.

    With `memo`, music measured before (same content, same length) is not decoded again."""
    _check_sources(spec)
    music_key, music_known, music = None, False, None
    if memo is not None and has_bed(spec):
        music_key = LoudnessMemo.key(spec, duration)
        music_known, music = memo.get(music_key)
    inputs: list[str] = []
    chains: list[str] = []
    labels: list[str] = []
    if has_bed(spec) and not music_known:
        # Without the fades: music_volume_db is about the steady bed, not its average.
        chains.append(f"[{len(chains)}:a:0]atrim=duration={duration:.3f},{AUDIO_FORMAT}[music]")
        inputs += bed_args(spec, duration)
        labels.append("music")
    if spec.narration is not None:
        chains.append(f"[{len(chains)}:a:0]{voice_filters(duration, 0)}[narration]")
        inputs += source_args(spec.narration, duration, loop=False)
        labels.append("narration")
    measured = _measure(inputs, chains, labels, workdir) if labels else {}
    if "music" in measured:
        music = measured["music"]
        if memo is not None and music_key is not None:
            memo.put(music_key, music)
    return Levels(music=music, narration=measured.get("narration"))


def _mix_graph(spec: ComposeSpec, levels: Levels, duration: float, first_input: int) -> tuple[list[str], list[str]]:
    """Inputs and chains that end in [mix]: the gained bed, ducked under the gained voice."""
    inputs: list[str] = []
    chains: list[str] = []
    index = first_input
    if levels.music is not None:
        assert has_bed(spec)
        # Under narration the bed sits music_volume_db below it; alone, the music is the programme.
        relative = spec.music_volume_db if levels.narration is not None else 0.0
        gain = spec.loudness_lufs + relative - levels.music
        inputs += bed_args(spec, duration)
        chains.append(f"[{index}:a:0]{bed_filters(duration, gain)}[bed]")
        index += 1
    if levels.narration is not None:
        assert spec.narration is not None
        inputs += source_args(spec.narration, duration, loop=False)
        split = ",asplit=2[key][voice]" if levels.music is not None else "[voice]"
        chains.append(f"[{index}:a:0]{voice_filters(duration, spec.loudness_lufs - levels.narration)}{split}")
    chains.append(_mix_chain(levels.music is not None, levels.narration is not None, spec.duck_db))
    return inputs, chains


def _mix_chain(bed: bool, voice: bool, duck_db: float) -> str:
    if bed and voice:
        keep = 10 ** (-duck_db / 20)
        return (
            f"[bed][key]sidechaincompress=threshold={DUCK_THRESHOLD}:ratio={DUCK_RATIO}"
            f":attack={DUCK_ATTACK_MS}:release={DUCK_RELEASE_MS}:level_sc={DUCK_SIDECHAIN_GAIN}"
            f":mix={1 - keep:.4f}[ducked];[ducked][voice]amix=inputs=2:normalize=0:duration=first[mix]"
        )
    return "[bed]anull[mix]" if bed else "[voice]anull[mix]"


def _measure(inputs: list[str], chains: list[str], labels: list[str], workdir: Path) -> dict[str, float | None]:
    """One audio-only ffmpeg run: each labelled stream through ebur128, the values into files."""
    reports = {label: workdir / f"loudness.{label}.txt" for label in labels}
    graph = list(chains)
    for label, report in reports.items():
        report.unlink(missing_ok=True)
        graph.append(
            f"[{label}]ebur128=metadata=1,"
            f"ametadata=mode=print:key=lavfi.r128.I:file={filter_arg(str(report.resolve()))}[m_{label}]"
        )
    maps = [a for label in labels for a in ("-map", f"[m_{label}]")]
    ffmpeg.run([ffmpeg.FFMPEG, *inputs, "-filter_complex", ";".join(graph), *maps, "-f", "null", "-"],
               what="measuring the loudness of the soundtrack")
    return {label: _integrated(report) for label, report in reports.items()}


def _integrated(report: Path) -> float | None:
    """The last running integrated loudness ametadata printed: the whole stream's value."""
    lines = report.read_text(encoding="utf-8").splitlines() if report.is_file() else []
    values = [float(line.split("=", 1)[1]) for line in lines if line.startswith("lavfi.r128.I=")]
    if not values or values[-1] <= SILENCE_LUFS:
        return None
    return values[-1]


def _check_sources(spec: ComposeSpec) -> None:
    for what, path in (("music", spec.music), ("narration", spec.narration)):
        if path is not None and not path.is_file():
            raise MediaError(f"{what} file {path.name} does not exist")
