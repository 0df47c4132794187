"""Text to speech over the OpenAI-compatible `audio/speech` endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import openai
from pydub import AudioSegment
from pydub.exceptions import CouldntDecodeError

from connectors import deadline
from connectors.openai_errors import translated
from storage import atomic
from storage.errors import BadInput, Transient

SERVICE = "语音合成服务"
MIN_SPEED, MAX_SPEED = 0.5, 2.0
MAX_INPUT_CHARS = 4096  # the endpoint's own limit; one sentence is far below it


class Speech(Protocol):
    def synthesize(self, text: str, out: Path, *, voice: str, speed: float) -> float:
        """Write the spoken `text` to `out`; return its length in seconds."""
        ...


class OpenAISpeech:
    def __init__(self, base_url: str, api_key: str, model: str = "tts-1", timeout: float = 60):
        self.base_url = base_url
        self.model = model
        self._api_key = api_key
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout,
                                     http_client=deadline.client(timeout))

    def __repr__(self) -> str:
        return f"OpenAISpeech(base_url={self.base_url!r}, model={self.model!r})"

    def synthesize(self, text: str, out: Path, *, voice: str, speed: float) -> float:
        check_request(text, speed)
        with translated(SERVICE, model=self.model, base_url=self.base_url, api_key=self._api_key):
            reply = self._client.audio.speech.create(
                model=self.model, voice=voice, input=text, speed=speed, response_format="mp3"
            )
            audio = reply.content
        atomic.write_bytes(out, audio)
        return audio_seconds(out)


def check_request(text: str, speed: float) -> None:
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise BadInput(f"旁白语速 {speed:g} 超出范围：请填写 {MIN_SPEED:g} 到 {MAX_SPEED:g} 之间的数")
    if not text.strip():
        raise BadInput("旁白内容为空：请填写要朗读的文字")
    if len(text) > MAX_INPUT_CHARS:
        raise BadInput(f"一句旁白超过 {MAX_INPUT_CHARS} 个字：请拆成较短的句子")


def audio_seconds(path: Path) -> float:
    """Decoded length (what will actually play), not the container's claim: an MP3's header
    can be off by tens of milliseconds, which would drift every subtitle after it."""
    seconds = decode_audio(path).duration_seconds
    if seconds <= 0:
        raise Transient(f"{SERVICE}返回了空音频，稍后自动重试 ({path.name})")
    return seconds


def decode_audio(path: Path) -> AudioSegment:
    try:
        # The demuxer is named, never guessed: a reply that is a playlist is not followed.
        fmt = _audio_format(path)
        return AudioSegment.from_file(path, format=fmt, codec="mp3" if fmt == "mp3" else None)
    except (CouldntDecodeError, IndexError, KeyError) as e:
        # A body that does not decode is a broken transfer as far as we can tell.
        raise Transient(f"{SERVICE}返回的音频无法解码，稍后自动重试 ({path.name})") from e


def _audio_format(path: Path) -> str:
    """The container, from the file's first bytes; Transient for anything else (a broken transfer
    as far as we can tell)."""
    with path.open("rb") as f:
        head = f.read(12)
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    raise Transient(f"{SERVICE}返回的不是音频（mp3/wav/ogg/flac），稍后自动重试 ({path.name})")
