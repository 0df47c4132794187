"""The LLM storyboarder and chat connector, with the real openai client against a local server."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from connectors import ffmpeg
from connectors.llm import OpenAIChat
from pipeline.llm_storyboard import LLMStoryboarder, ReplyError, parse_storyboard
from pipeline.storyboard import Storyboarder
from pipeline.templates import TemplateLibrary
from storage.errors import AuthFailed, BadInput, Permanent, RateLimited, Transient
from storage.storyboard import Camera

from fake_openai import FakeOpenAI, chat_json, chat_reply, error_reply

TEMPLATES = Path(__file__).parent / "templates"
MODEL = "deepseek-chat"
SCENE = "橘猫在木地板上吃鱼"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def template():
    return TemplateLibrary(TEMPLATES).get("tiny")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """A JPEG larger than what we send to a model, so the downscale path runs."""
    out = tmp_path_factory.mktemp("img") / "big.jpg"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc=size=1600x1200",
         "-frames:v", "1", str(out)],
        check=True,
    )
    return out


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(fake, tmp_path, sleeps):
    def build(api_key: str | None = None, **kw) -> LLMStoryboarder:
        chat = OpenAIChat(fake.url, api_key or fake.api_key, MODEL, timeout=5)
        return LLMStoryboarder(chat, tmp_path / "cache", sleep=sleeps.append, **kw)
    return build


def shots(n: int, first_index: int = 0, **overrides) -> dict:
    return {"shots": [
        {"index": i + first_index, "prompt": f"镜头{i + 1}：猫低头吃鱼", "duration": 1,
         "camera": "zoom_in", "narration": None, "stock_tags": [], **overrides}
        for i in range(n)
    ]}


def last_user_text(request: dict) -> str:
    return request["messages"][-1]["content"]


# ---- the happy paths ---------------------------------------------------------------------------


def test_good_reply_gives_a_validated_storyboard(fake, make, template, image):
    fake.queue_chat(chat_json(shots(3)))
    boarder: Storyboarder = make()  # satisfies the same Protocol as the template writer

    board = boarder.write(template, SCENE, 3, image)

    assert [s.index for s in board.shots] == [0, 1, 2]
    assert board.shots[0].prompt == "镜头1：猫低头吃鱼"
    [req] = fake.chat_requests()
    assert req["model"] == MODEL
    assert req["response_format"] == {"type": "json_object"}
    system, user = req["messages"]
    assert system["role"] == "system" and "正好 3 个镜头" in system["content"]
    # The template's prompt file, filled in; no image part for a text-only model.
    assert isinstance(user["content"], str)
    assert SCENE in user["content"] and "3 个镜头" in user["content"] and "每个镜头 1 秒" in user["content"]


def test_fenced_reply_after_prose_is_parsed_and_renumbered(fake, make, template, image):
    body = json.dumps(shots(3, first_index=1, camera="Pan Left"), ensure_ascii=False)
    fake.queue_chat(chat_reply(f"好的，以下是分镜：\n```json\n{body}\n```\n希望你喜欢！"))

    board = make().write(template, SCENE, 3, image)

    assert [s.index for s in board.shots] == [0, 1, 2]
    assert {s.camera for s in board.shots} == {Camera.pan_left}


def test_durations_are_clamped_to_the_template_pacing(template):
    reply = json.dumps({"shots": [
        {"prompt": "a", "duration": 0.1}, {"prompt": "b", "duration": "60s"}, {"prompt": "c"},
    ]})
    board = parse_storyboard(reply, 3, template.shot_duration, template.cameras)
    assert [s.duration for s in board.shots] == [0.5, 2.0, 1.0]
    # A missing camera follows the template's cycle.
    assert [s.camera for s in board.shots] == [Camera.zoom_in, Camera.pan_left, Camera.zoom_in]


def test_unknown_camera_is_a_reply_error(template):
    with pytest.raises(ReplyError, match="第1个镜头的 camera “dolly” 无效"):
        parse_storyboard(json.dumps(shots(1, camera="dolly")), 1, 1.0, template.cameras)


# ---- invalid replies go back to the model with the reason ---------------------------------------


def test_malformed_then_good_sends_the_error_back(fake, make, template, image):
    bad = '{"shots": [{"index": 0, "prompt": "猫"'
    fake.queue_chat(chat_reply(bad), chat_json(shots(3)))

    board = make().write(template, SCENE, 3, image)

    assert len(board.shots) == 3
    first, second = fake.chat_requests()
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {"role": "assistant", "content": bad}
    assert "JSON 格式错误" in last_user_text(second)


def test_wrong_shot_count_then_good(fake, make, template, image):
    fake.queue_chat(chat_json(shots(2)), chat_json(shots(3)))

    make().write(template, SCENE, 3, image)

    assert "需要正好 3 个镜头，回复里有 2 个" in last_user_text(fake.chat_requests()[1])


def test_always_invalid_gives_a_clear_error(fake, make, template, image):
    board = shots(3)
    del board["shots"][1]["prompt"]
    fake.queue_chat(*[chat_json(board)] * 3)

    with pytest.raises(BadInput) as err:
        make().write(template, SCENE, 3, image)

    assert str(err.value) == (
        "分镜生成失败：模型连续 3 次返回的分镜格式不正确（第2个镜头缺少 prompt），请重试或改用模板分镜"
    )
    assert len(fake.chat_requests()) == 3


# ---- transient failures: bounded waits through the injected sleep --------------------------------


def test_truncated_reply_is_retried(fake, make, template, image, sleeps):
    fake.queue_chat(chat_reply('{"shots": [{"ind', finish_reason="length"), chat_json(shots(3)))

    assert len(make().write(template, SCENE, 3, image).shots) == 3
    assert sleeps == [1.0]
    assert len(fake.chat_requests()) == 2


def test_rate_limited_waits_retry_after(fake, make, template, image, sleeps):
    fake.queue_chat(error_reply(429, retry_after="2"), chat_json(shots(3)))

    make().write(template, SCENE, 3, image)

    assert sleeps == [2.0]


def test_long_retry_after_is_left_to_the_runner(fake, make, template, image, sleeps):
    fake.queue_chat(error_reply(429, retry_after="600"))

    with pytest.raises(RateLimited) as err:
        make().write(template, SCENE, 3, image)

    assert err.value.retry_after == 600
    assert sleeps == []


def test_server_errors_give_up_after_the_retries(fake, make, template, image, sleeps):
    fake.queue_chat(*[error_reply(500)] * 4)

    with pytest.raises(Transient) as err:
        make(max_transient_retries=3).write(template, SCENE, 3, image)

    assert not isinstance(err.value, RateLimited)
    assert "HTTP 500" in str(err.value)
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(fake.chat_requests()) == 4


# ---- errors that are not retried ------------------------------------------------------------------


def test_bad_key_is_auth_failed_and_not_leaked(fake, make, template, image, sleeps):
    with pytest.raises(AuthFailed) as err:
        make(api_key="sk-wrong-secret-123").write(template, SCENE, 3, image)

    assert "sk-wrong-secret-123" not in str(err.value)
    assert "sk-wrong-secret-123" in str(err.value.__cause__)  # the vendor echoed it; we did not
    assert sleeps == [] and len(fake.chat_requests()) == 1


def test_content_filter_is_bad_input_without_retry(fake, make, template, image, sleeps):
    fake.queue_chat(chat_reply(None, finish_reason="content_filter"))

    with pytest.raises(BadInput, match="内容审核"):
        make().write(template, SCENE, 3, image)

    assert sleeps == [] and len(fake.chat_requests()) == 1


def test_unknown_model_is_permanent_and_names_it(fake, make, template, image):
    fake.queue_chat(error_reply(404, "The model `deepseek-chat` does not exist"))

    with pytest.raises(Permanent) as err:
        make().write(template, SCENE, 3, image)

    assert MODEL in str(err.value) and fake.url in str(err.value)


# ---- cache and image ------------------------------------------------------------------------------


def test_identical_inputs_hit_the_cache(fake, make, template, image):
    fake.queue_chat(chat_json(shots(3)), chat_json(shots(3)))

    first = make().write(template, SCENE, 3, image)
    again = make().write(template, SCENE, 3, image)  # a new instance: the cache is on disk
    assert again == first
    assert len(fake.chat_requests()) == 1

    make().write(template, SCENE + "，镜头更近", 3, image)
    assert len(fake.chat_requests()) == 2


def test_image_part_sent_when_the_model_accepts_images(fake, make, template, image, tmp_path):
    fake.queue_chat(chat_json(shots(3)))

    make(supports_images=True).write(template, SCENE, 3, image)

    [req] = fake.chat_requests()
    text, picture = req["messages"][1]["content"]
    assert text["type"] == "text" and SCENE in text["text"]
    assert picture["type"] == "image_url"
    prefix = "data:image/jpeg;base64,"
    assert picture["image_url"]["url"].startswith(prefix)
    sent = tmp_path / "sent.jpg"
    sent.write_bytes(base64.b64decode(picture["image_url"]["url"][len(prefix):]))
    info = ffmpeg.probe(sent)
    assert (info.video_codec, info.width, info.height) == ("mjpeg", 1024, 768)
