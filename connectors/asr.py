"""Speech recognition for subtitles: FunASR on the GPU host, loaded from local weights once.

FunASR's `generate` returns one dict per input. With a punctuation model and
`sentence_timestamp=True` it carries `sentence_info`: `[{"text": "今天天气很好，", "start": 880,
"end": 2340, "timestamp": [[880, 1120], ...]}, ...]` (milliseconds). Without it there is only
`text` plus `timestamp`, one `[start_ms, end_ms]` per recognised token (a Chinese character or an
English word; the punctuation model's marks get none). Both become `Cue`s here.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from storage.cues import Cue
from storage.errors import NotFound, Permanent, Transient

GPU_EXTRA_HINT = "install the gpu extra: pip install 'sheetreel[gpu]'"

# Where a subtitle line may end. FunASR itself also splits at 、, which makes one cue per list item.
_BREAKS = frozenset("，。？！；…,.?!;")
# A pause this long between two tokens ends a cue even without punctuation (no punc model).
_PAUSE_BREAK_MS = 1000
_MIN_CUE_SECONDS = 0.2
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*|\S")


class Transcriber(Protocol):
    def transcribe(self, audio: Path) -> list[Cue]: ...


class FunAsrTranscriber:
    """Keeps one FunASR model resident per instance; the first transcribe() loads it."""

    def __init__(
        self,
        model_dir: Path,
        device: str = "cuda",
        vad_model_dir: Path | None = None,
        punc_model_dir: Path | None = None,
        batch_size_s: int = 300,
    ):
        self.model_dir = _local_dir(model_dir, "ASR_MODEL_DIR")
        self.vad_model_dir = _local_dir(vad_model_dir, "ASR_VAD_MODEL_DIR") if vad_model_dir else None
        self.punc_model_dir = _local_dir(punc_model_dir, "ASR_PUNC_MODEL_DIR") if punc_model_dir else None
        self.device = device
        self.batch_size_s = batch_size_s
        self._model: Any = None
        self._load_lock = threading.Lock()  # two workers asking at once must not load it twice

    def transcribe(self, audio: Path) -> list[Cue]:
        if not Path(audio).is_file():
            raise NotFound(f"要识别的音频不存在：{audio}")
        model = self._loaded()
        try:
            result = model.generate(input=str(audio), batch_size_s=self.batch_size_s, sentence_timestamp=True,
                                    disable_pbar=True)
        except Exception as e:  # the vendor boundary: torch/funasr raise anything
            raise _from_generate_error(e) from e
        return cues_from_funasr(result)

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        try:
            from funasr import AutoModel  # optional dependency: the gpu extra
        except ImportError as e:
            raise Permanent(f"FunASR is not installed; {GPU_EXTRA_HINT}") from e
        # No version check (a network call) and no progress bars in the worker's log.
        kwargs: dict[str, Any] = {"model": str(self.model_dir), "device": self.device, "disable_update": True,
                                  "disable_pbar": True}
        if self.vad_model_dir:
            kwargs["vad_model"] = str(self.vad_model_dir)
        if self.punc_model_dir:
            kwargs["punc_model"] = str(self.punc_model_dir)
        try:
            return AutoModel(**kwargs)
        except Exception as e:
            raise Permanent(f"loading the FunASR model from {self.model_dir} failed ({type(e).__name__}: {e}); "
                            "check ASR_MODEL_DIR and ASR_DEVICE") from e


def _local_dir(path: Path, setting: str) -> Path:
    """Weights come from local directories only: a hub name here would mean a download at run time."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise Permanent(f"{setting} “{path}” is not a directory: download the model there, or fix {setting}")
    return path.resolve()


def _from_generate_error(e: Exception) -> Exception:
    if type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower():
        return Transient("语音识别时 GPU 显存不足，稍后自动重试 (CUDA out of memory)")
    return Permanent(f"语音识别失败 ({type(e).__name__}: {e})")


# ---- FunASR output -> cues ----------------------------------------------------------------


def cues_from_funasr(result: list[dict]) -> list[Cue]:
    """Cues in time order, numbered from 1. `sentence_info` is preferred over token timestamps."""
    spans: list[tuple[int, int, str]] = []
    for item in result:
        if item.get("sentence_info"):
            spans.extend(_sentence_spans(item["sentence_info"]))
        elif item.get("timestamp"):
            spans.extend(_token_spans(_as_text(item.get("text", "")), item["timestamp"]))
        elif _as_text(item.get("text", "")).strip():
            raise Permanent("the ASR model returned text without timestamps; use a timestamp model (paraformer-zh)")
    return [_cue(i, start, end, text) for i, (start, end, text) in enumerate(sorted(spans), start=1)]


def _cue(index: int, start_ms: int, end_ms: int, text: str) -> Cue:
    start = round(start_ms / 1000, 3)
    end = max(round(end_ms / 1000, 3), round(start + _MIN_CUE_SECONDS, 3))
    return Cue(index=index, start=start, end=end, text=text)


def _sentence_spans(sentences: Iterable[dict]) -> Iterator[tuple[int, int, str]]:
    for s in sentences:
        text = _as_text(s.get("text", "")).strip()
        if text:
            yield int(s["start"]), int(s["end"]), text


def _as_text(text: str | list[str]) -> str:
    # FunASR gives a token list instead of a string when no punctuation model ran.
    return _join(text) if isinstance(text, list) else text


def _token_spans(text: str, stamps: list[list[int]]) -> Iterator[tuple[int, int, str]]:
    """Walk the text's tokens alongside their timestamps; cut at punctuation and long pauses."""
    words: list[str] = []
    start = end = None
    stamp_iter = iter(stamps)
    for token in _TOKEN.findall(text):
        if _is_punct(token):
            if words:
                words[-1] += token
                if token in _BREAKS:
                    yield start, end, _join(words)
                    words, start = [], None
            continue
        t0, t1 = next(stamp_iter, (end, end))  # FunASR warns that counts may differ; keep going
        if words and t0 - end >= _PAUSE_BREAK_MS:
            yield start, end, _join(words)
            words, start = [], None
        start = t0 if start is None else start
        end = t1
        words.append(token)
    if words:
        yield start, end, _join(words)


def _is_punct(token: str) -> bool:
    return len(token) == 1 and unicodedata.category(token).startswith("P")


def _join(tokens: list[str]) -> str:
    """Chinese characters run together; a Latin word gets a space after a Latin word or ASCII mark."""
    out = ""
    for token in tokens:
        if out and _latin(token[0]) and out[-1].isascii() and not out[-1].isspace():
            out += " "
        out += token
    return out


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()
