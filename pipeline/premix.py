"""The soundtrack, mixed and encoded while the shots are still being made.

Everything a video's sound depends on is known once its storyboard is: the narration's lines, the
shots' planned lengths, the template's music and levels. Narration can take a TTS service seconds a
sentence, and the AAC encode is most of what a stream-copy compose costs; mixed ahead, the compose
after the last shot only copies the finished track in.

A premix is kept under a key made of everything it was made from, so a changed storyboard or
template (or another TTS model) never gets an old one: compose then mixes as it always did. It is
found only when complete: the AAC file is written first, the record naming it last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from connectors import ffmpeg
from connectors.asr import Transcriber
from connectors.tts import Speech
from pipeline import audio_mix, final_cut
from pipeline.templates import TemplateConfig
from storage import atomic
from storage.storyboard import Storyboard

# Part of the key: raise it when the mix itself changes, so older premixes are not used.
VERSION = 1


class Premix(BaseModel):
    key: str
    duration: float  # seconds; the video must be exactly this long to take the track as it is
    levels: audio_mix.Levels
    srt: str | None = None  # subtitles timed to the narration, when there are any
    source: str = "none"  # where the speech came from: tts | asr | none

    def audio(self, workdir: Path) -> Path:
        return audio_path(workdir, self.key)


def premix_key(board: Storyboard, template: TemplateConfig, speech: Speech | None,
               transcriber: Transcriber | None) -> str:
    """Everything the soundtrack is made from (what `final_cut.soundtrack` and the mix read)."""
    facts = {
        "version": VERSION,
        "shots": [(s.index, s.duration, s.narration) for s in board.shots],
        "timeline": (template.fps, template.transition, template.transition_duration),
        "narration": template.narration.model_dump(mode="json"),
        "voiceover": _digest(template.voiceover_path),
        "music": _digest(template.music_path),
        "levels": (template.music_volume_db, template.duck_db, template.loudness_lufs),
        "speech": _identity(speech, "base_url", "model"),
        "asr": _identity(transcriber, "model_dir"),
        "encoding": (audio_mix.AUDIO_BITRATE, audio_mix.AUDIO_RATE),
    }
    return hashlib.sha256(json.dumps(facts, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()[:24]


def make(board: Storyboard, template: TemplateConfig, speech: Speech | None, transcriber: Transcriber | None,
         segments: list[Path], workdir: Path, memo: audio_mix.LoudnessMemo | None = None) -> Premix:
    """Mix and encode the soundtrack of the planned video into `workdir`; its record."""
    key = premix_key(board, template, speech, transcriber)
    sound = final_cut.soundtrack(board, template, speech, transcriber, workdir)
    spec = final_cut.compose_spec(board, template, segments, sound, final_cut.music_bed(template))
    duration = spec.total_duration
    plan = audio_mix.plan_audio(spec, audio_mix.measure_sources(spec, duration, workdir, memo), duration, 0, workdir)
    ffmpeg.run_to(audio_path(workdir, key), lambda tmp: [
        ffmpeg.FFMPEG, *plan.inputs, "-filter_complex", plan.graph, "-map", "[aout]", *audio_mix.ENCODE_ARGS,
        "-map_metadata", "-1", "-f", "mp4", str(tmp),
    ], what="mixing the soundtrack ahead")
    srt = sound.srt.read_text(encoding="utf-8") if sound.srt is not None and sound.srt.is_file() else None
    premix = Premix(key=key, duration=duration, levels=plan.levels, srt=srt, source=sound.source)
    atomic.write_text(record_path(workdir, key), premix.model_dump_json())
    return premix


def find(key: str, workdir: Path) -> Premix | None:
    """The premix made under `key` in `workdir`, if it is complete and readable."""
    try:
        premix = Premix.model_validate_json(record_path(workdir, key).read_bytes())
    except (OSError, ValidationError):
        return None
    return premix if premix.key == key and premix.audio(workdir).is_file() else None


def audio_path(workdir: Path, key: str) -> Path:
    return workdir / f"premix-{key}.m4a"


def record_path(workdir: Path, key: str) -> Path:
    return workdir / f"premix-{key}.json"


def _digest(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return ffmpeg.file_sha256(path)
    except OSError:
        return "missing"  # the mix will say what is wrong with it; the key only has to differ


def _identity(service: object | None, *attributes: str) -> str | None:
    """Which service (and model) made it, the same in every process: never a memory address."""
    if service is None:
        return None
    kind = type(service)
    return "|".join([f"{kind.__module__}.{kind.__qualname__}", *(str(getattr(service, a, "")) for a in attributes)])
