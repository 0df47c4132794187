"""From finished segments to the compose spec: narration, subtitles, logo, music, transitions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connectors import ffmpeg
from connectors.asr import Transcriber
from connectors.tts import Speech
from pipeline.compose_plan import ComposeSpec, LogoSpec, SubtitleSpec, max_transition, shot_starts, whole_frames
from pipeline.narration import narrate
from pipeline.subtitles import write_srt
from pipeline.templates import TemplateConfig
from storage.errors import MediaError, Permanent
from storage.storyboard import Storyboard


@dataclass(frozen=True)
class Soundtrack:
    narration: Path | None = None
    srt: Path | None = None
    source: str = "none"  # tts | asr | none


def overlap(template: TemplateConfig, durations: list[float]) -> float:
    """Seconds each join takes: the template's transition in whole frames, shortened to fit the
    shortest shot (an LLM may plan a shot shorter than two transitions); 0 for none."""
    if template.transition == "none" or len(durations) < 2:
        return 0.0
    return whole_frames(min(template.transition_duration, max_transition(durations)), template.fps)


def soundtrack(board: Storyboard, template: TemplateConfig, speech: Speech | None,
               transcriber: Transcriber | None, workdir: Path) -> Soundtrack:
    """Speech for the film and subtitles timed to it.

    Our own narration is synthesized a sentence at a time, so cue times come from the audio
    itself; a pre-recorded voiceover is transcribed by ASR instead.
    """
    srt = workdir / "subtitles.srt"
    voiceover = _audio_file(template.voiceover_path, template, "配音")
    if voiceover is not None and transcriber is not None:
        write_srt(transcriber.transcribe(voiceover), srt)
        return Soundtrack(narration=voiceover, srt=srt, source="asr")
    lines = [(s.index, s.narration) for s in board.shots if s.narration]
    if template.narration.enabled and speech is not None and lines:
        durations = [s.duration for s in board.shots]
        starts = shot_starts(durations, overlap(template, durations))
        spoken = narrate(lines, speech, workdir / "narration", starts=starts, voice=template.narration.voice,
                         speed=template.narration.speed, gap=template.narration.gap)
        write_srt(spoken.cues, srt)
        return Soundtrack(narration=spoken.track, srt=srt, source="tts")
    return Soundtrack(narration=voiceover)


def music_bed(template: TemplateConfig) -> Path | None:
    """The template's music; None for none (`compose_spec` then puts the generated pad under the
    video, so every video has a bed)."""
    return _audio_file(template.music_path, template, "背景音乐")


def compose_spec(board: Storyboard, template: TemplateConfig, segments: list[Path], sound: Soundtrack,
                 music: Path | None) -> ComposeSpec:
    subs = template.subtitles
    durations = [s.duration for s in board.shots]
    joins = overlap(template, durations)
    return ComposeSpec(
        segments=segments,
        durations=durations,
        width=template.width,
        height=template.height,
        fps=template.fps,
        transition=template.transition if joins else "none",
        transition_duration=joins or template.transition_duration,
        logo=LogoSpec(path=template.logo_path, position=template.logo.position, margin=template.logo.margin,
                      scale=template.logo.scale, opacity=template.logo.opacity) if template.logo else None,
        subtitles=SubtitleSpec(srt=sound.srt, mode=subs.mode, font=subs.font, font_size=subs.size,
                               outline=subs.outline, margin_v=subs.margin_v, colour=subs.colour)
        if sound.srt and subs.mode != "off" else None,
        narration=sound.narration,
        music=music,
        pad=music is None,
        music_volume_db=template.music_volume_db,
        duck_db=template.duck_db,
        loudness_lufs=template.loudness_lufs,
        cover_at=template.cover_at,
    )


def _audio_file(path: Path | None, template: TemplateConfig, what: str) -> Path | None:
    """The template's own audio, read only if it is a plain audio file (never a playlist that
    names other files)."""
    if path is None:
        return None
    try:
        info = ffmpeg.probe(path, ffmpeg.AUDIO_FORMATS)
    except MediaError as e:
        raise Permanent(f"模板「{template.name}」的{what}文件 {path.name} 不是可用的音频（mp3/wav/m4a 等）："
                        "请检查模板文件夹") from e
    if not info.audio_streams:
        raise Permanent(f"模板「{template.name}」的{what}文件 {path.name} 没有音轨：请检查模板文件夹")
    return path
