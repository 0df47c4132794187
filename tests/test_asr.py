"""ASR: FunASR output shapes -> cues, and the loader's local-only, load-once, clear-error behaviour."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.asr import GPU_EXTRA_HINT, FunAsrTranscriber, Transcriber, cues_from_funasr
from storage.cues import Cue
from storage.errors import NotFound, Permanent

import tiny_funasr


def char_stamps(start_ms: int, count: int, step: int = 240) -> list[list[int]]:
    return [[start_ms + i * step, start_ms + (i + 1) * step] for i in range(count)]


# What paraformer-zh + fsmn-vad + ct-punc return with sentence_timestamp=True (shape copied from a
# real run's structure; numbers are made up but keep FunASR's conventions: ints in milliseconds,
# the next sentence starting where the previous one ended).
SENTENCE_INFO_RESULT = [{
    "key": "narration",
    "text": "欢迎大家来到魔搭社区进行体验，今天我们来看看小猫吃饭。",
    "timestamp": char_stamps(880, 14) + char_stamps(4480, 10),
    "sentence_info": [
        {"text": "欢迎大家来到魔搭社区进行体验，", "start": 880, "end": 4240, "timestamp": char_stamps(880, 14)},
        {"text": "今天我们来看看小猫吃饭。", "start": 4240, "end": 6880, "timestamp": char_stamps(4480, 10)},
    ],
}]


class TestCuesFromFunasr:
    def test_sentence_info_becomes_cues_in_seconds(self):
        cues = cues_from_funasr(SENTENCE_INFO_RESULT)
        assert cues == [
            Cue(index=1, start=0.88, end=4.24, text="欢迎大家来到魔搭社区进行体验，"),
            Cue(index=2, start=4.24, end=6.88, text="今天我们来看看小猫吃饭。"),
        ]

    def test_sentence_info_wins_over_token_timestamps(self):
        item = dict(SENTENCE_INFO_RESULT[0], timestamp=[[0, 10]])
        assert [c.start for c in cues_from_funasr([item])] == [0.88, 4.24]

    def test_sentence_info_with_token_list_text(self):
        # FunASR's sentence splitter hands back text.split() when the punctuation ids are empty.
        result = [{"key": "a", "text": "小 猫 吃 饭", "sentence_info": [
            {"text": ["小", "猫", "吃", "饭"], "start": 100, "end": 1060, "timestamp": char_stamps(100, 4)}]}]
        assert cues_from_funasr(result) == [Cue(index=1, start=0.1, end=1.06, text="小猫吃饭")]

    def test_token_timestamps_are_split_at_punctuation(self):
        result = [{"key": "a", "text": "欢迎大家来到魔搭社区进行体验，今天天气很好！你好吗？",
                   "timestamp": char_stamps(880, 14) + char_stamps(4600, 6) + char_stamps(7000, 3)}]
        cues = cues_from_funasr(result)
        assert [c.text for c in cues] == ["欢迎大家来到魔搭社区进行体验，", "今天天气很好！", "你好吗？"]
        assert [(c.start, c.end) for c in cues] == [(0.88, 4.24), (4.6, 6.04), (7.0, 7.72)]
        assert [c.index for c in cues] == [1, 2, 3]

    def test_unpunctuated_tokens_split_at_long_pauses(self):
        # No punctuation model: paraformer's text is space-separated tokens, one timestamp each.
        stamps = char_stamps(0, 4) + char_stamps(3000, 4)
        cues = cues_from_funasr([{"key": "a", "text": "小 猫 吃 饭 小 狗 睡 觉", "timestamp": stamps}])
        assert [(c.text, c.start, c.end) for c in cues] == [("小猫吃饭", 0.0, 0.96), ("小狗睡觉", 3.0, 3.96)]

    def test_english_words_keep_their_spaces(self):
        text = "我们用funasr做字幕，it works well."
        cues = cues_from_funasr([{"key": "a", "text": text, "timestamp": char_stamps(0, 10, step=300)}])
        assert [c.text for c in cues] == ["我们用funasr做字幕，", "it works well."]
        assert cues[1].start == 2.1 and cues[1].end == 3.0

    def test_fewer_timestamps_than_tokens_does_not_crash(self):
        cues = cues_from_funasr([{"key": "a", "text": "小猫吃饭了。", "timestamp": char_stamps(0, 3)}])
        assert cues == [Cue(index=1, start=0.0, end=0.72, text="小猫吃饭了。")]

    def test_zero_length_sentence_gets_a_visible_duration(self):
        result = [{"key": "a", "text": "嗯。", "sentence_info": [{"text": "嗯。", "start": 500, "end": 500}]}]
        assert cues_from_funasr(result)[0].end == pytest.approx(0.7)

    def test_silence_gives_no_cues(self):
        assert cues_from_funasr([{"key": "a", "text": "", "timestamp": []}]) == []
        assert cues_from_funasr([]) == []

    def test_text_without_any_timing_is_permanent(self):
        with pytest.raises(Permanent, match="timestamp"):
            cues_from_funasr([{"key": "a", "text": "小猫吃饭"}])


def test_cue_requires_end_after_start():
    with pytest.raises(ValidationError):
        Cue(index=1, start=2.0, end=2.0, text="x")
    with pytest.raises(ValidationError):
        Cue(index=1, start=0.0, end=1.0, text="   ")


# ---- the loader ---------------------------------------------------------------------------


@pytest.fixture
def model_dirs(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / "models" / name for name in ("paraformer", "vad", "punc")}
    for d in dirs.values():
        d.mkdir(parents=True)
        (d / "config.yaml").write_text("model: stand-in\n")
    return dirs


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "narration.wav"
    path.write_bytes(b"RIFF....WAVE")  # never decoded: only the fake model sees the path
    return path


def test_missing_model_dir_names_the_setting(tmp_path: Path):
    with pytest.raises(Permanent, match="ASR_MODEL_DIR"):
        FunAsrTranscriber(tmp_path / "not-downloaded", device="cpu")
    with pytest.raises(Permanent, match="ASR_MODEL_DIR"):
        FunAsrTranscriber(Path("paraformer-zh"), device="cpu")  # a hub name is not a local dir


def test_missing_vad_or_punc_dir_names_its_setting(model_dirs: dict[str, Path], tmp_path: Path):
    with pytest.raises(Permanent, match="ASR_VAD_MODEL_DIR"):
        FunAsrTranscriber(model_dirs["paraformer"], vad_model_dir=tmp_path / "nope")
    with pytest.raises(Permanent, match="ASR_PUNC_MODEL_DIR"):
        FunAsrTranscriber(model_dirs["paraformer"], punc_model_dir=tmp_path / "nope")


def test_missing_funasr_says_which_extra_to_install(model_dirs, audio, monkeypatch):
    monkeypatch.setitem(sys.modules, "funasr", None)  # makes `import funasr` raise ImportError
    transcriber = FunAsrTranscriber(model_dirs["paraformer"], device="cpu")
    with pytest.raises(Permanent) as err:
        transcriber.transcribe(audio)
    assert GPU_EXTRA_HINT in str(err.value)
    assert isinstance(err.value.__cause__, ImportError)


def test_missing_audio_is_not_found(model_dirs, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "funasr", None)
    with pytest.raises(NotFound):
        FunAsrTranscriber(model_dirs["paraformer"]).transcribe(tmp_path / "none.wav")


def test_model_loads_once_from_local_dirs(model_dirs, audio, monkeypatch):
    """The one stand-in in this file: a tiny `funasr` module, since there is no wire to fake."""
    loads: list[dict] = []
    generates: list[dict] = []

    class AutoModel:
        def __init__(self, **kwargs):
            loads.append(kwargs)

        def generate(self, **kwargs):
            generates.append(kwargs)
            return SENTENCE_INFO_RESULT

    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=AutoModel))
    transcriber: Transcriber = FunAsrTranscriber(
        model_dirs["paraformer"], device="cuda:0",
        vad_model_dir=model_dirs["vad"], punc_model_dir=model_dirs["punc"], batch_size_s=120,
    )
    first = transcriber.transcribe(audio)
    second = transcriber.transcribe(audio)

    assert loads == [{
        "model": str(model_dirs["paraformer"].resolve()), "vad_model": str(model_dirs["vad"].resolve()),
        "punc_model": str(model_dirs["punc"].resolve()), "device": "cuda:0", "disable_update": True,
        "disable_pbar": True,
    }]
    assert generates == [{"input": str(audio), "batch_size_s": 120, "sentence_timestamp": True,
                          "disable_pbar": True}] * 2
    assert first == second == cues_from_funasr(SENTENCE_INFO_RESULT)


# ---- the real FunASR, with tiny models ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("funasr", reason="the FunASR path needs funasr (the gpu or test extra)")
    return tiny_funasr.build(tmp_path_factory.mktemp("funasr"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "voice.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=f=220:d=3", "-ar", "16000",
                    "-ac", "1", str(path)], check=True)
    return path


def test_funasr_with_vad_and_punctuation_gives_sentence_cues(tiny_models, speech):
    transcriber = FunAsrTranscriber(tiny_models["asr"], device="cpu", vad_model_dir=tiny_models["vad"],
                                    punc_model_dir=tiny_models["punc"])
    [cue] = transcriber.transcribe(speech)  # the punctuation model ends the one sentence with 。
    assert cue.index == 1 and 0 <= cue.start < 0.5 and cue.end == pytest.approx(3.0, abs=0.05)
    assert cue.text.endswith("。") and set(cue.text[:-1]) <= set(tiny_funasr.VOCAB)


def test_funasr_alone_gives_cues_from_token_timestamps(tiny_models, speech):
    cues = FunAsrTranscriber(tiny_models["asr"], device="cpu").transcribe(speech)
    assert cues and [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert 0 <= cues[0].start < 0.5 and cues[-1].end == pytest.approx(3.0, abs=0.05)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))
    assert set("".join(c.text for c in cues)) <= set(tiny_funasr.VOCAB)
