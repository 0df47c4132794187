"""SRT output for subtitle cues, from narration (TTS) or speech recognition alike."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from storage import atomic
from storage.cues import Cue

__all__ = ["Cue", "srt_time", "to_srt", "write_srt"]


def to_srt(cues: Iterable[Cue]) -> str:
    """SRT text: cues in time order, numbered from 1, times to the millisecond."""
    blocks = []
    for number, cue in enumerate(sorted(cues, key=lambda c: c.start), start=1):
        start_ms = round(cue.start * 1000)
        # Rounding must not make a cue zero-length: players drop those.
        end_ms = max(round(cue.end * 1000), start_ms + 1)
        blocks.append(f"{number}\n{srt_time(start_ms)} --> {srt_time(end_ms)}\n{_cue_text(cue.text)}\n")
    return "\n".join(blocks)


def write_srt(cues: Iterable[Cue], path: Path) -> None:
    atomic.write_text(path, to_srt(cues))


def srt_time(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends an SRT block, so a cue's own text may not contain one.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines) or " "
