"""A cloud provider end to end: rows in the emulated sheet, Seedance (through the Ark SDK) and
Kling against their wire fakes, a worker killed while its tasks run, and a sheet that shows what
the videos cost. Every shot is paid for once, however often the worker dies."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from storage.models import ProjectState
from sync.app import make_stores
from sync.rows import text_of

from conftest import Sheet, stream_info, wait_for
from fake_video_providers import ARK_KEY, KLING_ACCESS, KLING_SECRET, FakeVideoProviders

ROOT = Path(__file__).resolve().parent.parent
PRICES = {"doubao-seedance-1-0-pro-250528": 0.5, "kling-v2-1": 0.25}
PROVIDER_ENV = {
    "seedance": lambda fake: {"ARK_API_KEY": ARK_KEY, "ARK_BASE_URL": fake.origin + "/api/v3"},
    "kling": lambda fake: {"KLING_ACCESS_KEY": KLING_ACCESS, "KLING_SECRET_KEY": KLING_SECRET,
                           "KLING_BASE_URL": fake.origin},
}


@pytest.fixture
def fake():
    with FakeVideoProviders(polls_before_done=2) as f:
        yield f


def cloud_sheet(emulator, tmp_path, fake: FakeVideoProviders, backend: str) -> Sheet:
    env = PROVIDER_ENV[backend](fake)
    return Sheet(emulator, tmp_path / "data", SEGMENT_BACKEND=backend, VIDEO_POLL_SECONDS=0.05,
                 SHEETREEL_VIDEO_PRICES=PRICES, **env)


def add_rows(sheet: Sheet, count: int) -> list[str]:
    cols = sheet.cols
    return sheet.add_rows([{cols.title: f"云端{i}", cols.image: sheet.image_cell(), cols.template: "cloud",
                            cols.scene: f"小猫吃饭{i}"} for i in range(count)])


@pytest.mark.parametrize("backend", ["seedance", "kling"])
def test_rows_become_videos_through_a_provider_and_show_their_cost(backend, emulator, tmp_path, fake):
    sheet = cloud_sheet(emulator, tmp_path, fake, backend)
    [record] = add_rows(sheet, 1)
    app = sheet.app()
    assert app.once(timeout=300)

    row = sheet.row(record)["fields"]
    cols = sheet.cols
    assert text_of(row[cols.status]) == "已完成"
    # Three shots of 1 s each were made as 5 s provider clips (the shortest the model offers).
    price = PRICES["doubao-seedance-1-0-pro-250528" if backend == "seedance" else "kling-v2-1"]
    assert row[cols.cost] == pytest.approx(3 * 5 * price)
    project = app.store.projects()[0]
    final = app.store.paths(project).final_video
    assert (stream_info(final)["width"], stream_info(final)["height"]) == (144, 256)
    provider = "seedance" if backend == "seedance" else "kling"
    assert len(fake.submits(provider)) == 3
    meta = json.loads(app.store.paths(project).meta.read_text())
    tasks = [json.loads(s["task"]) for s in meta["segments"]]
    assert [t["provider"] for t in tasks] == [backend] * 3 and all(t["id"] and t["seconds"] == 5 for t in tasks)
    assert meta["project"]["cost"] == pytest.approx(3 * 5 * price)


def start(sheet: Sheet, extra: dict[str, str]) -> subprocess.Popen:
    return sheet.start_run(SHEETREEL_DEFAULT_TEMPLATE="cloud", SHEETREEL_MAX_CRASH_RESUMES="10",
                           SHEETREEL_RETRY_BASE_SECONDS="0", VIDEO_POLL_SECONDS="0.05",
                           SHEETREEL_VIDEO_PRICES=json.dumps(PRICES), **extra)


def test_a_worker_killed_while_its_tasks_run_resumes_them_and_pays_once(emulator, tmp_path, fake):
    sheet = cloud_sheet(emulator, tmp_path, fake, "seedance")
    records = add_rows(sheet, 2)
    store = make_stores(sheet.settings).projects
    env = {"SEGMENT_BACKEND": "seedance", **PROVIDER_ENV["seedance"](fake)}

    def saved_tasks() -> int:
        return sum(1 for p in store.projects() for s in store.segments(p.id) if s.task and '"id":"se-' in s.task)

    fake.polls_before_done = 10**9  # the provider keeps every task running until the test lets go
    # Die with one task out, then with both rows' tasks out. The first run has one worker so that no
    # second submit can be in flight at the kill: a submit cut off mid-request is, by design, a row error
    # (it may have been billed), and that is tested on its own.
    for kills, workers in ((1, "1"), (2, "2")):
        proc = start(sheet, {**env, "SHEETREEL_WORKERS": workers})
        try:
            wait_for(lambda: saved_tasks() >= kills, timeout=120)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert len(fake.submits("seedance")) == kills == saved_tasks()
    for task in fake.tasks("seedance"):  # now the provider finishes them, and every later one
        task.polls_left = 1
    fake.polls_before_done = 1
    proc = start(sheet, env)
    try:
        wait_for(lambda: all(text_of(sheet.row(r)["fields"][sheet.cols.status]) == "已完成" for r in records), timeout=300)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    assert [p.state for p in store.projects()] == [ProjectState.completed] * 2
    prompts = [s.params["prompt"] for s in fake.submits("seedance")]
    assert len(prompts) == 6 and len(set(prompts)) == 6  # every shot of both rows submitted exactly once
    for r in records:
        assert sheet.row(r)["fields"][sheet.cols.cost] == pytest.approx(3 * 5 * 0.5)
