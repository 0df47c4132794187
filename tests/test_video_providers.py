"""The cloud video providers through their real SDKs (openai, dashscope, Ark) or real HTTP
(Kling's JWT API) against local fakes of their wire formats: segments come out right, a task
is polled again after a crash instead of being paid for twice, a lost submit answer is never
resubmitted blindly, and the vendors' errors become sentences for the row."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image

from connectors.video.ark_seedance import ArkSeedance
from connectors.video.dashscope_wan import DashScopeWan
from connectors.video.kling import Kling
from connectors.video.openai_videos import OpenAIVideos
from connectors.video.protocol import RemoteTask, SegmentRequest
from connectors.video.remote import RemoteGenerator, SubmitSpacing
from storage.errors import AuthFailed, BadInput, Permanent, RateLimited, Unavailable
from storage.storyboard import Camera, Shot

from fake_video_providers import (
    ARK_KEY,
    DASHSCOPE_KEY,
    KLING_ACCESS,
    KLING_SECRET,
    OPENAI_KEY,
    FakeVideoProviders,
)
from loopback import Scripted

W, H, FPS = 144, 256, 8
PROVIDERS = ["openai", "wan", "seedance", "kling"]
FAKE_NAME = {"openai": "openai", "wan": "wan", "wan-kf2v": "wan", "seedance": "seedance", "kling": "kling"}
RATE_LIMITED = {
    "openai": Scripted(429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
    "wan": Scripted(429, {"request_id": "r", "code": "Throttling.RateQuota", "message": "Requests rate limit exceeded"}),
    "seedance": Scripted(429, {"error": {"code": "RateLimitExceeded.EndpointRPMExceeded", "message": "rpm exceeded"}}),
    "kling": Scripted(429, {"code": 1302, "message": "request too fast", "request_id": "r"}),
}
OUTAGE = {
    "openai": Scripted(503, {"error": {"message": "overloaded", "type": "server_error"}}),
    "wan": Scripted(503, {"request_id": "r", "code": "ServiceUnavailable", "message": "busy"}),
    "seedance": Scripted(503, {"error": {"code": "ServerOverloaded", "message": "busy"}}),
    "kling": Scripted(503, {"code": 5001, "message": "maintenance", "request_id": "r"}),
}


class Crash(Exception):
    """Stands for the worker dying mid-poll (the saved journal is all that survives)."""


class Journal:
    """The runner's journal, in memory: what the segment row would hold."""

    def __init__(self, crash_at_poll: int | None = None):
        self.task: RemoteTask | None = None
        self.history: list[RemoteTask | None] = []
        self.polls, self.crash_at_poll = 0, crash_at_poll

    def saved(self) -> RemoteTask | None:
        return self.task

    def save(self, task: RemoteTask | None) -> None:
        self.task = task
        self.history.append(task)

    def checkpoint(self) -> None:
        self.polls += 1
        if self.crash_at_poll is not None and self.polls == self.crash_at_poll:
            raise Crash()


@pytest.fixture(scope="module")
def fake():
    with FakeVideoProviders(polls_before_done=1, video_size=(192, 336)) as f:
        yield f


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("img") / "start.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2=s=640x360",
                    "-frames:v", "1", str(out)], check=True)
    return out


def provider(name: str, fake: FakeVideoProviders, **kw):
    if name == "openai":
        return OpenAIVideos(fake.origin + "/v1", kw.get("key", OPENAI_KEY), "sora-2", sizes=("720x1280", "1280x720"))
    if name == "wan":
        return DashScopeWan(kw.get("key", DASHSCOPE_KEY), "wan2.5-i2v-preview", base_url=fake.origin + "/api/v1",
                            durations=(5, 10))
    if name == "wan-kf2v":
        return DashScopeWan(DASHSCOPE_KEY, "wan2.1-kf2v-plus", base_url=fake.origin + "/api/v1")
    if name == "seedance":
        return ArkSeedance(kw.get("key", ARK_KEY), "doubao-seedance-1-0-pro-250528", base_url=fake.origin + "/api/v3")
    return Kling(KLING_ACCESS, kw.get("key", KLING_SECRET), base_url=fake.origin)


def generator(name: str, fake: FakeVideoProviders, concurrency: int = 2, **kw) -> RemoteGenerator:
    return RemoteGenerator(provider(name, fake, **kw), concurrency=concurrency, poll_interval=0.0, sleep=lambda s: None)


def request(image: Path, tmp: Path, journal: Journal | None = None, prompt: str = "a cat eats", index: int = 2,
            end_image: Path | None = None) -> SegmentRequest:
    shot = Shot(index=index, prompt=prompt, duration=4.5, camera=Camera.zoom_in)
    return SegmentRequest(image=image, shot=shot, width=W, height=H, fps=FPS, out=tmp / f"seg_{index:02d}.mp4",
                          seed=7, journal=journal, last_frame=tmp / f"last_{index:02d}.png", end_image=end_image)


def probe(video: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,nb_read_frames,codec_name", "-of", "json", str(video)],
                         capture_output=True, check=True)
    return json.loads(out.stdout)["streams"][0]


def submits(fake: FakeVideoProviders, name: str, prompt: str) -> list:
    return [s for s in fake.submits(FAKE_NAME[name]) if s.params.get("prompt") == prompt]


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_shot_becomes_a_segment_through_the_provider(name, fake, image, tmp_path):
    journal = Journal()
    req = request(image, tmp_path, journal, prompt=f"{name}: a cat eats")
    generator(name, fake).generate(req)

    info = probe(req.out)
    assert (info["width"], info["height"], int(info["nb_read_frames"])) == (W, H, req.frame_count)
    [sent] = submits(fake, name, req.shot.prompt)
    frame = Image.open(io.BytesIO(sent.params["image"]))
    if name == "openai":  # Sora wants the reference at exactly the requested size
        assert frame.size == (720, 1280) and sent.params["size"] == "720x1280" and sent.params["seconds"] == "8"
    else:  # the first frame goes at the template's aspect, at the shortest duration covering the shot
        assert abs(frame.size[0] / frame.size[1] - W / H) < 0.01 and int(sent.params["seconds"]) == 5
    task = journal.task
    assert task is not None and task.id and task.provider == name and task.seconds == (8 if name == "openai" else 5)
    assert [t.id for t in journal.history] == [None, task.id, task.id]  # intent, then the id, then done
    if name == "seedance":
        # Ark returned the clip's last frame: that, not a decoded one, is what seeds the next shot.
        assert sent.params["return_last_frame"] is True
        r, g, b = Image.open(req.last_frame).convert("RGB").resize((1, 1)).getpixel((0, 0))
        assert r > 250 and g < 5 and b > 250  # the fake's flat magenta
    else:
        assert not req.last_frame.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([req.out.name] + (["last_02.png"] if name == "seedance" else []))


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_restarted_worker_polls_the_saved_task_instead_of_paying_again(name, fake, image, tmp_path):
    journal = Journal(crash_at_poll=1)
    req = request(image, tmp_path, journal, prompt=f"{name}: crash while polling")
    with pytest.raises(Crash):
        generator(name, fake).generate(req)
    saved = journal.task
    assert saved is not None and saved.id  # the task id was kept before the first poll

    generator(name, fake).generate(req)  # a new process: new client, same journal
    assert probe(req.out)["nb_read_frames"] == str(req.frame_count)
    assert len(submits(fake, name, req.shot.prompt)) == 1
    assert journal.task.id == saved.id


@pytest.mark.parametrize("name", ["openai", "wan", "seedance"])
def test_a_lost_submit_answer_is_never_resubmitted(name, fake, image, tmp_path):
    journal = Journal()
    req = request(image, tmp_path, journal, prompt=f"{name}: the answer is lost")
    fake.lose_next_submit()
    for _ in range(2):  # the step's retry meets the same unanswered submit: still no second video
        with pytest.raises(Permanent, match="第3段.*没有收到答复.*重做第3段"):
            generator(name, fake).generate(req)
    assert len(submits(fake, name, req.shot.prompt)) == 1
    assert journal.task is not None and journal.task.id is None
    assert not req.out.exists()


def test_kling_finds_the_task_of_a_lost_answer_by_its_external_id(fake, image, tmp_path):
    journal = Journal()
    req = request(image, tmp_path, journal, prompt="kling: the answer is lost")
    fake.lose_next_submit()
    with pytest.raises(Unavailable, match="没有收到答复"):
        generator("kling", fake).generate(req)
    generator("kling", fake).generate(req)

    [sent] = submits(fake, "kling", req.shot.prompt)
    assert sent.params["key"] == journal.task.key and journal.task.id == fake.find("kling", sent.params["key"]).id
    assert probe(req.out)["nb_read_frames"] == str(req.frame_count)


def test_kling_submits_again_when_it_has_no_task_for_the_key(fake, image, tmp_path):
    """The worker died after writing its intent and before the submit left: Kling says it has no
    such task, so submitting is safe (for the others the operator decides)."""
    journal = Journal(crash_at_poll=1)
    req = request(image, tmp_path, journal, prompt="kling: died before the submit")
    with pytest.raises(Crash):
        generator("kling", fake).generate(req)
    journal.task = journal.task.model_copy(update={"id": None})
    fake_task = fake.find("kling", journal.task.key)
    fake_task.params["key"] = "someone-else"  # as if that first submit never reached Kling

    generator("kling", fake).generate(req)
    assert len(submits(fake, "kling", req.shot.prompt)) == 2
    assert probe(req.out)["nb_read_frames"] == str(req.frame_count)


@pytest.mark.parametrize("name", PROVIDERS)
def test_moderation_names_the_shot_and_a_retry_submits_afresh(name, fake, image, tmp_path):
    journal = Journal()
    req = request(image, tmp_path, journal, prompt=f"{name}: blocked content")
    with pytest.raises(BadInput, match="第3段未通过.*内容审核.*修改「分镜脚本」中第3段"):
        generator(name, fake).generate(req)
    assert journal.task is None  # the provider is done with that task: 重试 may submit again


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_rate_limited_submit_is_retried_later_and_never_counted_as_made(name, fake, image, tmp_path):
    journal = Journal()
    req = request(image, tmp_path, journal, prompt=f"{name}: rate limited")
    fake.script("submit", RATE_LIMITED[name])
    with pytest.raises(RateLimited):
        generator(name, fake).generate(req)
    assert journal.task is None
    generator(name, fake).generate(req)
    assert len(submits(fake, name, req.shot.prompt)) == 1 and req.out.is_file()


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_provider_outage_while_polling_keeps_the_task(name, fake, image, tmp_path):
    journal = Journal()
    req = request(image, tmp_path, journal, prompt=f"{name}: outage while polling")
    fake.script("poll", *[OUTAGE[name]] * 12)
    with pytest.raises(Unavailable):
        generator(name, fake).generate(req)
    assert journal.task is not None and journal.task.id
    while fake.scripted("poll") is not None:  # the outage ends
        pass
    generator(name, fake).generate(req)
    assert len(submits(fake, name, req.shot.prompt)) == 1 and req.out.is_file()


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_wrong_key_is_auth_failed_and_never_echoed(name, fake, image, tmp_path):
    wrong = "zz-wrong-secret-key-0123456789abcdef"
    journal = Journal()
    with pytest.raises(AuthFailed) as err:
        generator(name, fake, key=wrong).generate(request(image, tmp_path, journal, prompt=f"{name}: wrong key"))
    assert wrong not in str(err.value) and journal.task is None


def test_first_and_last_frame_models_get_both_frames(fake, image, tmp_path):
    end = tmp_path / "end.png"
    Image.new("RGB", (400, 700), (10, 200, 30)).save(end)
    gen = generator("wan-kf2v", fake)
    gen.generate(request(image, tmp_path, Journal(), prompt="kf2v: to the end frame", end_image=end))
    [sent] = submits(fake, "wan", "kf2v: to the end frame")
    assert sent.path.endswith("/image2video/video-synthesis") and sent.params["end_image"].startswith("data:image/")

    with pytest.raises(Permanent, match="需要首帧和尾帧"):
        gen.generate(request(image, tmp_path, Journal(), prompt="kf2v: no end frame"))


def test_provider_slots_bound_the_tasks_in_flight(fake, image, tmp_path):
    gen = generator("kling", fake, concurrency=1)
    errors: list[BaseException] = []

    def shot(k: int) -> None:
        try:
            gen.generate(request(image, tmp_path / str(k), Journal(), prompt=f"kling: slot {k}", index=k))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=shot, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    sent = [s for s in fake.submits("kling") if s.params["prompt"].startswith("kling: slot")]
    # Each went out after the one before it was fetched.
    assert len(sent) == 3 and not any(p.startswith("kling: slot") for s in sent for p in s.unfinished)


def test_submit_spacing_spreads_submits_over_the_minute():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)

    spacing = SubmitSpacing(per_minute=30, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        spacing.wait()
    assert slept == [2.0, 4.0]
    now[0] = 100.0
    spacing.wait()
    assert slept == [2.0, 4.0]  # a quiet spell needs no wait
