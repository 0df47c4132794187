"""TTS connector, narration timing and SRT output, with the real openai client and real audio."""

from __future__ import annotations

import re

import pytest
from pydub import AudioSegment

from connectors.tts import OpenAISpeech, decode_audio
from pipeline.compose_plan import shot_starts
from pipeline.narration import narrate, split_sentences, write_srt
from pipeline.subtitles import Cue, srt_time, to_srt
from storage.errors import AuthFailed, BadInput, RateLimited, Transient

from fake_openai import FakeOpenAI, error_reply

VOICE = "alloy"
TOLERANCE = 0.010  # seconds
SRT_BLOCK = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+?)\n(?:\n|$)", re.DOTALL)


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def speech(fake) -> OpenAISpeech:
    return OpenAISpeech(fake.url, fake.api_key, model="tts-1", timeout=5)


def seconds(stamp: str) -> float:
    h, m, rest = stamp.split(":")
    s, ms = rest.split(",")
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


# ---- the connector -------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [0.4, 2.5])
def test_speed_out_of_range_is_bad_input(fake, speech, tmp_path, speed):
    with pytest.raises(BadInput, match="语速"):
        speech.synthesize("你好。", tmp_path / "a.mp3", voice=VOICE, speed=speed)
    assert fake.requests == []


def test_synthesize_writes_audio_and_returns_its_length(fake, speech, tmp_path):
    out = tmp_path / "a.mp3"
    got = speech.synthesize("小猫在吃鱼。", out, voice="nova", speed=1.25)

    [req] = fake.speech_requests()
    assert req.body == {"model": "tts-1", "voice": "nova", "input": "小猫在吃鱼。", "speed": 1.25, "response_format": "mp3"}
    assert got == pytest.approx(req.audio_seconds, abs=TOLERANCE)
    assert AudioSegment.from_file(out).duration_seconds == pytest.approx(got, abs=TOLERANCE)


def test_speech_errors_are_translated(fake, speech, tmp_path):
    fake.queue_speech(error_reply(429, retry_after="3"))
    with pytest.raises(RateLimited) as err:
        speech.synthesize("你好。", tmp_path / "a.mp3", voice=VOICE, speed=1.0)
    assert err.value.retry_after == 3

    wrong = OpenAISpeech(fake.url, "sk-not-the-key", timeout=5)
    with pytest.raises(AuthFailed) as err:
        wrong.synthesize("你好。", tmp_path / "a.mp3", voice=VOICE, speed=1.0)
    assert "sk-not-the-key" not in str(err.value)
    assert not (tmp_path / "a.mp3").exists()


# ---- narration -----------------------------------------------------------------------------------


def test_sentences_split_on_chinese_and_english_punctuation():
    text = "小猫闻到鱼香。它走过去！真香吗？是的；\nFull and happy! Time to nap? ok; 他说：“好吃！”然后睡了"
    assert split_sentences(text) == [
        "小猫闻到鱼香。", "它走过去！", "真香吗？", "是的；",
        "Full and happy!", "Time to nap?", "ok;", "他说：“好吃！”", "然后睡了",
    ]
    assert split_sentences("。。\n  ！") == []


def test_three_shots_give_cues_with_the_real_audio_times(fake, speech, tmp_path):
    lines = [(0, "小猫闻到了鱼香。它慢慢走过去！"), (1, "第一口，真香？"), (2, "Full and happy; time to nap.")]
    starts = shot_starts([4.0, 4.0, 4.0])

    result = narrate(lines, speech, tmp_path, starts=starts, voice=VOICE, speed=1.0, gap=0.25)

    sent = fake.speech_requests()
    # One request per sentence, each with the settings we passed.
    assert [r.body["input"] for r in sent] == [
        "小猫闻到了鱼香。", "它慢慢走过去！", "第一口，真香？", "Full and happy;", "time to nap.",
    ]
    assert {(r.body["voice"], r.body["speed"]) for r in sent} == {(VOICE, 1.0)}
    cues = result.cues
    assert [c.index for c in cues] == [0, 0, 1, 2, 2]
    for cue, req in zip(cues, sent):
        assert cue.end - cue.start == pytest.approx(req.audio_seconds, abs=TOLERANCE)
    # Each shot's narration starts at its shot; sentences within a shot follow after the gap.
    assert [cues[0].start, cues[2].start, cues[3].start] == [0.0, 4.0, 8.0]
    assert cues[1].start == pytest.approx(cues[0].end + 0.25, abs=TOLERANCE)
    assert cues[4].start == pytest.approx(cues[3].end + 0.25, abs=TOLERANCE)
    assert result.pushed == {}

    track = AudioSegment.from_file(result.track)
    assert track.duration_seconds == pytest.approx(result.duration, abs=TOLERANCE)
    assert result.duration == cues[-1].end

    srt = tmp_path / "narration.srt"
    write_srt(cues, srt)
    blocks = SRT_BLOCK.findall(srt.read_text(encoding="utf-8"))
    assert [int(b[0]) for b in blocks] == [1, 2, 3, 4, 5]
    for (_, start, end, text), cue in zip(blocks, cues):
        assert seconds(start) == pytest.approx(cue.start, abs=0.001)
        assert seconds(end) == pytest.approx(cue.end, abs=0.001)
        assert text == cue.text


def test_long_narration_pushes_the_next_shot_and_reports_it(fake, speech, tmp_path):
    lines = [(0, "这一句旁白很长很长很长很长很长，比镜头还要长。"), (1, "下一句。")]
    result = narrate(lines, speech, tmp_path, starts=shot_starts([1.0, 1.0]), voice=VOICE, speed=1.0)

    first, second = result.cues
    assert second.start == pytest.approx(first.end + 0.25, abs=TOLERANCE)
    assert result.pushed == {1: pytest.approx(second.start - 1.0, abs=0.001)}


def test_rerun_reuses_the_sentences_already_spoken(fake, speech, tmp_path):
    lines = [(0, "第一句。第二句。")]
    first = narrate(lines, speech, tmp_path, starts=[0.0], voice=VOICE, speed=1.0)
    again = narrate(lines, speech, tmp_path, starts=[0.0], voice=VOICE, speed=1.0)
    assert again.cues == first.cues
    assert len(fake.speech_requests()) == 2

    narrate(lines, speech, tmp_path, starts=[0.0], voice=VOICE, speed=1.5)  # new speed, new audio
    assert len(fake.speech_requests()) == 4


def test_nothing_to_say_gives_no_track(fake, speech, tmp_path):
    result = narrate([(0, "  "), (1, "。")], speech, tmp_path, starts=[0.0, 1.0], voice=VOICE, speed=1.0)
    assert (result.track, result.cues, result.duration) == (None, [], 0.0)
    assert fake.requests == []


# ---- SRT -----------------------------------------------------------------------------------------


def test_srt_numbers_from_one_and_formats_times():
    cues = [
        Cue(index=1, start=3723.4567, end=3725.0, text="第二句\n\n两行"),
        Cue(index=0, start=0.0, end=0.0004, text="第一句"),
    ]
    assert to_srt(cues) == (
        "1\n00:00:00,000 --> 00:00:00,001\n第一句\n"
        "\n"
        "2\n01:02:03,457 --> 01:02:05,000\n第二句\n两行\n"
    )
    assert srt_time(0) == "00:00:00,000"


def test_a_cue_must_end_after_it_starts():
    with pytest.raises(ValueError):
        Cue(index=0, start=2.0, end=2.0, text="x")


def test_a_speech_reply_that_is_a_playlist_is_not_followed(tmp_path):
    (tmp_path / "secret.wav").write_bytes(b"")
    reply = tmp_path / "clip.mp3"
    reply.write_text(f"#EXTM3U\n#EXTINF:1,\n{tmp_path / 'secret.wav'}\n#EXT-X-ENDLIST\n")
    with pytest.raises(Transient, match="不是音频"):
        decode_audio(reply)
