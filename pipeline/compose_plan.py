"""What the final video should look like (`ComposeSpec`) and the video half of its filtergraph.

The spec is plain data the runner builds from a template; `pipeline.compose` turns it into one
ffmpeg command. Filtergraph text is built here, audio in `pipeline.audio_mix`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from connectors import ffmpeg
from pipeline.subtitles import srt_time

Transition = Literal[
    "none", "fade", "dissolve", "fadeblack", "fadewhite", "wipeleft", "wiperight", "wipeup",
    "wipedown", "slideleft", "slideright", "slideup", "slidedown", "smoothleft", "smoothright",
    "circleopen", "circleclose", "radial", "pixelize", "zoomin",
]
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]

# SRT cues reach libass as an ASS script whose canvas ffmpeg declares as 384x288; sizes in
# force_style are in those units, so a size relative to the frame height is scaled by this.
ASS_PLAY_RES_Y = 288
# Characters that end or quote a token at either filtergraph level (see `filter_arg`).
_OPTION_SPECIALS = re.compile(r"([\\':\s])")
_GRAPH_SPECIALS = re.compile(r"([\\'\[\],;\s])")
_SRT_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")


class LogoSpec(BaseModel):
    path: Path
    position: Corner = "bottom-right"
    margin: int = Field(default=24, ge=0, description="pixels from both edges of the corner")
    scale: float = Field(default=0.12, gt=0, le=1, description="logo width as a fraction of video width")
    opacity: float = Field(default=0.8, ge=0, le=1)


class SubtitleSpec(BaseModel):
    srt: Path
    mode: Literal["burn", "soft"] = "burn"
    font: str = "Noto Sans CJK SC"
    font_size: float = Field(default=0.045, gt=0, le=0.5, description="fraction of video height")
    outline: float = Field(default=2.0, ge=0, le=20, description="outline width, pixels")
    margin_v: int = Field(default=48, ge=0, description="pixels above the bottom edge")
    colour: str = Field(default="#FFFFFF", pattern=r"^#[0-9A-Fa-f]{6}$")
    outline_colour: str = Field(default="#000000", pattern=r"^#[0-9A-Fa-f]{6}$")
    language: str = Field(default="chi", pattern=r"^[a-z]{3}$", description="ISO 639-2 tag of a soft track")


class ComposeSpec(BaseModel):
    segments: list[Path] = Field(min_length=1)
    durations: list[float] = Field(min_length=1, description="planned seconds of each segment")
    width: int = Field(ge=16, le=3840)
    height: int = Field(ge=16, le=3840)
    fps: int = Field(ge=1, le=60)
    transition: Transition = "none"
    transition_duration: float = Field(default=0.5, gt=0, le=5)
    logo: LogoSpec | None = None
    subtitles: SubtitleSpec | None = None
    narration: Path | None = None  # one track already on the final timeline (0 s = video start)
    music: Path | None = None
    pad: bool = Field(default=False, description="without music: a generated soft pad as the bed")
    music_volume_db: float = Field(default=-16.0, le=0, description="bed level below the narration")
    duck_db: float = Field(default=10.0, ge=0, le=60, description="extra music drop under narration")
    loudness_lufs: float = Field(default=-14.0, ge=-40, le=-5)
    cover_at: float | None = 1.0
    preset: str = "veryfast"
    crf: int = Field(default=ffmpeg.X264_CRF, ge=0, le=51)

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:  # yuv420p H.264 cannot encode odd sizes
            raise ValueError(f"video size must be even, got {v}")
        return v

    @field_validator("durations")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(d <= 0 for d in v):
            raise ValueError(f"segment durations must be positive, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ComposeSpec:
        if len(self.durations) != len(self.segments):
            raise ValueError(f"{len(self.segments)} segments but {len(self.durations)} durations")
        if self.has_transitions and self.overlap > max_transition(self.durations) + 1e-9:
            raise ValueError(
                f"a {self.transition_duration:g} s transition does not fit segments of {self.durations} s: "
                "each join takes that long from both segments"
            )
        return self

    @property
    def overlap(self) -> float:
        """Seconds each join takes away from the timeline (xfade plays both sides at once)."""
        if self.transition == "none" or len(self.segments) < 2:
            return 0.0
        return whole_frames(self.transition_duration, self.fps)

    @property
    def has_transitions(self) -> bool:
        return self.overlap > 0

    @property
    def total_duration(self) -> float:
        return sum(self.durations) - (len(self.durations) - 1) * self.overlap

    def shot_starts(self) -> list[float]:
        """When each segment starts on the final timeline: where narration and cues must go."""
        return shot_starts(self.durations, self.overlap)


def shot_starts(durations: Sequence[float], overlap: float = 0.0) -> list[float]:
    """Where each shot begins on the final timeline when joins overlap by `overlap` seconds."""
    starts, t = [], 0.0
    for d in durations:
        starts.append(t)
        t += d - overlap
    return starts


def whole_frames(seconds: float, fps: int) -> float:
    """`seconds` rounded down to whole frames: the two sides of a join must be equally long,
    and a fraction of a frame would give one side a frame more than the other."""
    return math.floor(seconds * fps + 1e-6) / fps


def max_transition(durations: list[float]) -> float:
    """The longest transition that fits: the first and last segment give it once, the middle
    ones twice (they fade in and out)."""
    if len(durations) < 2:
        return 0.0
    return min(durations[0], durations[-1], *(d / 2 for d in durations[1:-1]))


def needs_reencode(spec: ComposeSpec) -> bool:
    """False when the segments can be joined by stream copy (soft subtitles are only muxed)."""
    burn = spec.subtitles is not None and spec.subtitles.mode == "burn"
    return spec.has_transitions or spec.logo is not None or burn


def join_graph(spec: ComposeSpec, conform: list[bool]) -> str:
    """Separate segment inputs 0..n-1 joined into [joined]: with transitions or by concat.

    `conform[i]` marks a segment not in the shared format: it is scaled and resampled first,
    because xfade and concat refuse inputs that differ in size, rate or time base.

    A transition blends only the last `overlap` seconds of one segment with the first of the
    next; everything else is concatenated untouched. xfade works in yuv444p, so chaining it over
    whole segments would convert every frame of the film there and back: slower, and softer colour.
    """
    n, t = len(spec.segments), spec.overlap
    # Each piece restarts at 0 and counts whole frames: concat takes a piece's length from its
    # timestamps, and xfade's own may be a fraction of a frame off.
    restamp = f"setpts=N/({spec.fps}*TB)"
    chains, pieces = [], []
    for i, (d, fix) in enumerate(zip(spec.durations, conform)):
        # Every input on one time base: xfade refuses two that differ, and a file's is whatever
        # its muxer chose (the fps filter's, 1/fps, is too coarse for xfade's own arithmetic).
        fit = f"{ffmpeg.conform_filter(spec.width, spec.height)},fps={spec.fps}," if fix else ""
        fit += "settb=AVTB,"
        # (label, start, end) of the parts of segment i; trimming to the plan keeps every join
        # where the timeline arithmetic put it.
        head = t if i > 0 else 0.0
        tail = d - t if i < n - 1 else d
        has_body = tail - head > 0.5 / spec.fps  # a shot exactly two transitions long has none
        parts = [("h", 0.0, t)] if head else []
        if has_body:
            parts.append(("b", head, tail))
        if tail < d:
            parts.append(("t", tail, d))
        outs = "".join(f"[{p}{i}in]" for p, _, _ in parts)
        chains.append(f"[{i}:v:0]{fit}split={len(parts)}{outs}" if len(parts) > 1 else f"[{i}:v:0]{fit[:-1]}{outs}")
        chains += [f"[{p}{i}in]trim=start={a:.6f}:end={b:.6f},{restamp}[{p}{i}]" for p, a, b in parts]
        if i > 0 and t:
            chains.append(f"[t{i - 1}][h{i}]xfade=transition={spec.transition}:duration={t:.6f}:offset=0,"
                          f"format={ffmpeg.PIX_FMT},{restamp}[x{i}]")
            pieces.append(f"[x{i}]")
        if has_body:
            pieces.append(f"[b{i}]")
    chains.append("".join(pieces) + f"concat=n={len(pieces)}:v=1:a=0[joined]")
    return ";".join(chains)


def decorate_graph(spec: ComposeSpec, source: str, logo_input: int | None) -> str:
    """[source] -> logo overlay -> burned subtitles -> [vout] in the output pixel format."""
    chains, current = [], source
    if spec.logo is not None and logo_input is not None:
        chains.append(_logo_chain(spec, logo_input))
        # Blend in yuv420 on a yuv420p picture. format=auto would pick rgba for an rgba logo and
        # convert every frame there and back: a third of the encode's time, and a colour shift.
        chains.append(f"[{current}]format={ffmpeg.PIX_FMT}[main]")
        chains.append(f"[main][logo]overlay={_corner_xy(spec.logo)}:format=yuv420:eval=init[withlogo]")
        current = "withlogo"
    steps = []
    if spec.subtitles is not None and spec.subtitles.mode == "burn":
        steps.append(subtitles_filter(spec.subtitles, spec.height))
    steps.append(f"format={ffmpeg.PIX_FMT}")
    chains.append(f"[{current}]{','.join(steps)}[vout]")
    return ";".join(chains)


def subtitles_filter(subs: SubtitleSpec, height: int) -> str:
    units = ASS_PLAY_RES_Y / height  # pixels -> ASS script units
    style = ",".join([
        f"FontName={subs.font}",
        f"FontSize={subs.font_size * ASS_PLAY_RES_Y:.2f}",
        f"PrimaryColour={ass_colour(subs.colour)}",
        f"OutlineColour={ass_colour(subs.outline_colour)}",
        "BorderStyle=1",
        f"Outline={subs.outline * units:.2f}",
        "Shadow=0",
        "Alignment=2",  # bottom centre
        f"MarginV={round(subs.margin_v * units)}",
    ])
    return (
        f"subtitles=filename={filter_arg(str(subs.srt.resolve()))}"
        f":charenc=UTF-8:force_style={filter_arg(style)}"
    )


def ass_colour(hex_rgb: str) -> str:
    """'#RRGGBB' -> ASS '&H00BBGGRR' (alpha first, 00 = opaque, then blue-green-red)."""
    r, g, b = hex_rgb[1:3], hex_rgb[3:5], hex_rgb[5:7]
    return f"&H00{b}{g}{r}".upper()


def filter_arg(value: str) -> str:
    """Escape a value for an option inside a -filter_complex graph.

    ffmpeg unescapes twice: the graph parser first (where [ ] , ; end a filter), then the
    filter's option parser (where : ends an option). Both honour backslash escapes and strip
    unescaped surrounding whitespace, so escape for the inner level, then the outer one.
    """
    inner = _OPTION_SPECIALS.sub(r"\\\1", value)
    return _GRAPH_SPECIALS.sub(r"\\\1", inner)


def _logo_chain(spec: ComposeSpec, logo_input: int) -> str:
    assert spec.logo is not None
    width = max(2, round(spec.width * spec.logo.scale))
    # One decoded still: overlay repeats its last frame, so the PNG is never decoded again.
    return (
        f"[{logo_input}:v:0]scale={width}:-1:flags=lanczos,format=rgba,"
        f"colorchannelmixer=aa={spec.logo.opacity:.3f}[logo]"
    )


def _corner_xy(logo: LogoSpec) -> str:
    m = logo.margin
    x = f"{m}" if logo.position.endswith("left") else f"main_w-overlay_w-{m}"
    y = f"{m}" if logo.position.startswith("top") else f"main_h-overlay_h-{m}"
    return f"x={x}:y={y}"


def clip_srt(text: str, end: float) -> str:
    """SRT text without what lies past `end` seconds: cues after it dropped, the last one cut.

    A soft subtitle track longer than the video would make the file (and its reported
    duration) longer than the picture. Returns "" when no cue is left.
    """
    cues = (_srt_cue(b) for b in re.split(r"\n\s*\n", text.lstrip("\ufeff").replace("\r\n", "\n")))
    kept = [(start, min(stop, end), body) for start, stop, body in filter(None, cues) if start < end]
    blocks = [
        f"{n}\n{srt_time(round(start * 1000))} --> {srt_time(round(stop * 1000))}\n{body}"
        for n, (start, stop, body) in enumerate(kept, start=1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def _srt_cue(block: str) -> tuple[float, float, str] | None:
    """(start, end, text) of one SRT block; None for anything without a timing line."""
    lines = block.strip().split("\n")
    for i, line in enumerate(lines):
        stamps = [_SRT_TIME.search(part) for part in line.split("-->")] if "-->" in line else []
        if len(stamps) == 2 and all(stamps):
            start, stop = (_seconds(m) for m in stamps if m)
            return start, stop, "\n".join(lines[i + 1:]) or " "
    return None


def _seconds(m: re.Match[str]) -> float:
    h, mnt, sec, frac = m.groups()
    return int(h) * 3600 + int(mnt) * 60 + int(sec) + int(frac.ljust(3, "0")) / 1000
