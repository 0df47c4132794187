"""Narration: TTS one sentence at a time, so every subtitle cue has its exact spoken time.

Each shot's narration starts at that shot's start on the video timeline. When the previous
shot's narration is still speaking then, the later one waits (plus `gap`) and the delay is
reported in `Narration.pushed`, so the caller can warn the user or shorten lines.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel
from pydub import AudioSegment

from connectors.tts import Speech, audio_seconds, decode_audio
from pipeline.subtitles import Cue, write_srt
from storage.atomic import temp_path_for

__all__ = ["Narration", "narrate", "split_sentences", "write_srt"]

# A sentence runs up to and including its end punctuation and any closing quotes after it.
_SENTENCE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]*[”’\"'」』）)]*")
_PUNCT_ONLY = re.compile(r"^[\s\W_]*$")
_PUSH_TOLERANCE = 0.0005  # below a millisecond, a "delay" is float noise


class Narration(BaseModel):
    track: Path | None  # WAV on the video timeline (0 s = video start); None when nothing is said
    duration: float  # end of the last cue, seconds
    cues: list[Cue]
    pushed: dict[int, float]  # shot index -> seconds its narration starts after the shot does


def split_sentences(text: str) -> list[str]:
    pieces = (m.group().strip() for m in _SENTENCE.finditer(text))
    return [p for p in pieces if p and not _PUNCT_ONLY.match(p)]


def narrate(
    lines: list[tuple[int, str]],
    speech: Speech,
    workdir: Path,
    *,
    starts: Sequence[float],
    voice: str,
    speed: float,
    gap: float = 0.25,
) -> Narration:
    """Speak `(shot index, text)` lines; `starts[i]` is shot i's start on the video timeline."""
    clips: list[tuple[Path, Cue]] = []
    pushed: dict[int, float] = {}
    cursor = 0.0  # earliest moment the next shot's narration may begin
    for shot, text in sorted(lines, key=lambda line: line[0]):
        sentences = split_sentences(text)
        if not sentences:
            continue
        at = max(_start_of(shot, starts), cursor)
        if at - starts[shot] > _PUSH_TOLERANCE:
            pushed[shot] = round(at - starts[shot], 3)
        for k, sentence in enumerate(sentences):
            clip = _clip_path(workdir, shot, k, sentence, speech, voice, speed)
            seconds = _speak(speech, sentence, clip, voice, speed)
            clips.append((clip, Cue(index=shot, start=at, end=at + seconds, text=sentence)))
            at += seconds + gap
        cursor = at
    cues = [cue for _, cue in clips]
    track = _mix(clips, workdir / "narration.wav") if clips else None
    return Narration(track=track, duration=cues[-1].end if cues else 0.0, cues=cues, pushed=pushed)


def _start_of(shot: int, starts: Sequence[float]) -> float:
    if not 0 <= shot < len(starts):
        raise ValueError(f"narration for shot {shot} but only {len(starts)} shot start times were given")
    return starts[shot]


def _clip_path(workdir: Path, shot: int, k: int, sentence: str, speech: Speech, voice: str, speed: float) -> Path:
    # The name carries everything that changes the audio, so a rerun reuses only what still fits.
    key = f"{getattr(speech, 'model', '')}|{voice}|{speed:g}|{sentence}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return workdir / "narration" / f"{shot:02d}-{k:02d}-{digest}.mp3"


def _speak(speech: Speech, sentence: str, clip: Path, voice: str, speed: float) -> float:
    if clip.is_file():
        return audio_seconds(clip)
    return speech.synthesize(sentence, clip, voice=voice, speed=speed)


def _mix(clips: list[tuple[Path, Cue]], out: Path) -> Path:
    """Lay every clip at its cue's start on one silent track; positions are rounded to 1 ms
    independently, so rounding never accumulates along the track."""
    segments = [(decode_audio(path), cue) for path, cue in clips]
    first = segments[0][0]
    # +1 ms: len() rounds to whole milliseconds, and overlay cuts what sticks out of the track.
    end_ms = max(round(cue.start * 1000) + len(seg) for seg, cue in segments) + 1
    track = AudioSegment.silent(duration=end_ms, frame_rate=first.frame_rate).set_channels(first.channels)
    for seg, cue in segments:
        track = track.overlay(seg, position=round(cue.start * 1000))
    tmp = temp_path_for(out)
    try:
        track.export(tmp, format="wav")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
