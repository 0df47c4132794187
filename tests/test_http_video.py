"""The remote video API backend against a local fake that speaks the wire and makes real MP4s."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from connectors.video.http_api import HttpVideoGenerator
from connectors.video.protocol import SegmentRequest
from storage.errors import (
    AuthFailed,
    BadInput,
    MediaError,
    Permanent,
    RateLimited,
    Transient,
)
from storage.storyboard import Shot

from conftest import stream_info
from fake_video_api import FakeVideoAPI, error_reply
from loopback import Scripted

W, H, FPS = 160, 288, 12
KEY = "vk-fake-test-key"


class FakeTime:
    """The generator's clock and sleep: sleeping advances time at once, and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def api():
    with FakeVideoAPI(api_key=KEY) as server:
        yield server


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def image(tmp_path) -> Path:
    out = tmp_path / "start.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2=s=180x320",
                    "-frames:v", "1", str(out)], check=True)
    return out


def generator(api: FakeVideoAPI, fake_time: FakeTime, **overrides) -> HttpVideoGenerator:
    settings = {"base_url": api.url, "api_key": KEY, "model": "fake-i2v", "poll_interval": 5.0, "timeout": 60.0,
                "request_timeout": 10.0, "max_retries": 3, "sleep": fake_time.sleep, "clock": fake_time.clock}
    return HttpVideoGenerator(**{**settings, **overrides})


def request(image: Path, out: Path, duration: float = 1.0) -> SegmentRequest:
    shot = Shot(index=0, prompt="waves roll onto the beach", duration=duration)
    return SegmentRequest(image=image, shot=shot, width=W, height=H, fps=FPS, out=out, seed=42)


def assert_segment(req: SegmentRequest) -> None:
    info = stream_info(req.out)
    assert int(info["nb_read_frames"]) == req.frame_count
    assert (info["width"], info["height"], info["codec_name"], info["pix_fmt"]) == (W, H, "h264", "yuv420p")


def nothing_left_behind(folder: Path, *keep: Path) -> bool:
    return sorted(folder.iterdir()) == sorted(keep)


# ---- the happy path --------------------------------------------------------------------------


def test_submit_poll_download_conform(api, fake_time, image, tmp_path):
    api.polls_before_done = 3
    req = request(image, tmp_path / "seg.mp4", duration=1.5)
    generator(api, fake_time).generate(req)

    assert_segment(req)
    (submit,) = api.calls("POST", "/v1/videos")
    assert submit.headers["authorization"] == f"Bearer {KEY}"
    assert submit.body["model"] == "fake-i2v" and submit.body["prompt"] == "waves roll onto the beach"
    assert (submit.body["width"], submit.body["height"], submit.body["duration"], submit.body["seed"]) == (W, H, 1.5, 42)
    head, data = submit.body["image"].split(",", 1)
    assert head == "data:image/jpeg;base64" and base64.b64decode(data) == image.read_bytes()
    assert len(api.calls("GET", "/v1/videos/")) == 4  # three "running", then "succeeded"
    assert fake_time.sleeps == [5.0, 5.0, 5.0]
    assert nothing_left_behind(tmp_path, image, req.out)


def test_short_remote_clip_is_held_and_relative_links_resolve(api, fake_time, image, tmp_path):
    api.video_seconds, api.relative_video_url = 0.4, True
    req = request(image, tmp_path / "seg.mp4", duration=1.0)
    generator(api, fake_time).generate(req)
    assert_segment(req)


# ---- retries ---------------------------------------------------------------------------------


def test_rate_limit_waits_for_retry_after(api, fake_time, image, tmp_path):
    api.script("submit", error_reply(429, "slow down", retry_after="7"))
    req = request(image, tmp_path / "seg.mp4")
    generator(api, fake_time).generate(req)
    assert fake_time.sleeps[0] == 7.0
    assert len(api.jobs) == 1
    assert_segment(req)


def test_server_errors_are_retried_with_backoff(api, fake_time, image, tmp_path):
    api.script("poll", error_reply(500), error_reply(503))
    api.script("download", error_reply(502))
    req = request(image, tmp_path / "seg.mp4")
    generator(api, fake_time).generate(req)
    assert fake_time.sleeps == [1.0, 2.0, 5.0, 1.0]  # backoff, backoff, poll interval, backoff
    assert_segment(req)


def test_persistent_server_errors_become_transient(api, fake_time, image, tmp_path):
    api.script("submit", *[error_reply(500)] * 4)
    req = request(image, tmp_path / "seg.mp4")
    with pytest.raises(Transient, match="HTTP 500"):
        generator(api, fake_time).generate(req)
    assert len(api.calls("POST", "/v1/videos")) == 4  # one try plus max_retries
    assert nothing_left_behind(tmp_path, image)


def test_persistent_rate_limit_carries_retry_after(api, fake_time, image, tmp_path):
    api.script("submit", *[error_reply(429, retry_after="12")] * 4)
    with pytest.raises(RateLimited) as err:
        generator(api, fake_time).generate(request(image, tmp_path / "seg.mp4"))
    assert err.value.retry_after == 12.0


def test_unreachable_server_is_transient(fake_time, image, tmp_path):
    with FakeVideoAPI(api_key=KEY) as gone:
        url = gone.url
    gen = HttpVideoGenerator(url, KEY, "m", max_retries=1, sleep=fake_time.sleep, clock=fake_time.clock)
    with pytest.raises(Transient, match="无法连接"):
        gen.generate(request(image, tmp_path / "seg.mp4"))


def test_a_lost_submit_reply_does_not_start_a_second_job(api, fake_time, image, tmp_path):
    # The idempotency key lets the server return the first job to the retried POST.
    gen = generator(api, fake_time)
    gen.generate(request(image, tmp_path / "a.mp4"))
    gen.generate(request(image, tmp_path / "a.mp4"))
    assert len(api.calls("POST", "/v1/videos")) == 2 and len(api.jobs) == 1


# ---- final errors ----------------------------------------------------------------------------


def test_bad_key_is_auth_failed_and_never_echoed(api, fake_time, image, tmp_path):
    wrong = "vk-wrong-secret-123"
    with pytest.raises(AuthFailed) as err:
        generator(api, fake_time, api_key=wrong).generate(request(image, tmp_path / "seg.mp4"))
    assert wrong not in str(err.value) and "VIDEO_API_KEY" in str(err.value)
    assert fake_time.sleeps == []  # not retried


def test_rejected_input_is_bad_input_with_the_server_message(api, fake_time, image, tmp_path):
    api.script("submit", error_reply(422, f"image too small (key {KEY})"))
    with pytest.raises(BadInput, match="image too small") as err:
        generator(api, fake_time).generate(request(image, tmp_path / "seg.mp4"))
    assert KEY not in str(err.value)


def test_failed_job_is_permanent_with_its_error(api, fake_time, image, tmp_path):
    api.job_error = "content policy: image rejected"
    with pytest.raises(Permanent, match="content policy"):
        generator(api, fake_time).generate(request(image, tmp_path / "seg.mp4"))
    assert nothing_left_behind(tmp_path, image)


def test_a_job_that_never_finishes_times_out(api, fake_time, image, tmp_path):
    api.polls_before_done = 10**6
    with pytest.raises(Transient, match="60 秒"):
        generator(api, fake_time, timeout=60.0).generate(request(image, tmp_path / "seg.mp4"))
    assert sum(fake_time.sleeps) <= 60.0
    assert len(api.calls("GET", "/v1/videos/")) == 13  # at 0, 5, ..., 60 s


def test_oversized_download_is_refused(api, fake_time, image, tmp_path):
    with pytest.raises(Permanent, match="上限"):
        generator(api, fake_time, max_bytes=1000).generate(request(image, tmp_path / "seg.mp4"))
    assert nothing_left_behind(tmp_path, image)


def test_broken_remote_video_is_a_media_error(api, fake_time, image, tmp_path):
    api.script("download", Scripted(200, {"not": "a video"}))
    with pytest.raises(MediaError):
        generator(api, fake_time).generate(request(image, tmp_path / "seg.mp4"))
    assert nothing_left_behind(tmp_path, image)


def test_broken_start_image_fails_before_any_job(api, fake_time, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(MediaError, match="cannot be decoded"):
        generator(api, fake_time).generate(request(broken, tmp_path / "seg.mp4"))
    assert api.requests == [] and nothing_left_behind(tmp_path, broken)
