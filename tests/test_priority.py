"""The 优先级 column: higher priority runs first, then the oldest row; an edit reorders what waits."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
from test_jobqueue import change, templates

from storage.db import make_engine
from storage.models import Project
from storage.stores import Stores
from sync.jobqueue import JobQueue, Router
from sync.workers import WorkerPool

from conftest import Sheet

PRIORITIES = ["低", "普通", "高", "", "低", "高", "普通", "", "高", "低"]


def test_ten_queued_rows_run_by_priority_then_age_and_an_edit_reorders_them(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d", FEISHU_CHAT_ID="oc_team", SHEETREEL_WORKERS=1)
    cols = sheet.cols
    image = sheet.image_cell()
    rids = sheet.add_rows([{cols.title: f"第{i}行", cols.image: image, cols.template: "tiny", cols.shot_count: 1,
                            **({cols.priority: p} if p else {})} for i, p in enumerate(PRIORITIES)])
    app = sheet.app()
    app.poller.poll()  # all ten are known and waiting; none has run
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rids[9], {cols.priority: "高"})  # 第9行 jumps the queue
    app.once()

    done = [m["content"]["header"]["title"]["content"] for m in emulator.messages if m["kind"] == "im"]
    order = [int(title.split("第")[1].split("行")[0]) for title in done]
    assert order == [2, 5, 8, 9, 1, 3, 6, 7, 0, 4]
    assert all("已完成" in title for title in done)


def test_a_project_waiting_in_the_pool_takes_its_new_rank():
    started, release, ran = threading.Event(), threading.Event(), []

    def work(pid: str) -> None:
        ran.append(pid)
        if pid == "first":
            started.set()
            release.wait(30)

    pool = WorkerPool(work, size=1)
    try:
        pool.submit("first", (0,))
        assert started.wait(30)
        for pid, rank in [("a", (1,)), ("b", (2,)), ("c", (3,))]:
            pool.submit(pid, rank)
        assert not pool.submit("c", (0,))  # already waiting: only its place changes
        release.set()
        assert pool.wait_idle(30)
        assert ran == ["first", "c", "a", "b"]
    finally:
        release.set()
        pool.shutdown()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_workers_take_jobs_by_priority_then_age_and_a_new_priority_moves_a_waiting_job(database_url, tmp_path):
    queue = JobQueue(database_url, Router(templates(tmp_path), "kenburns"), clock=lambda: datetime.now(UTC))
    stores = Stores.open(make_engine(database_url), tmp_path, queue.dispatch)
    labels = {"高": 1, "普通": 0, "低": -1, "": 0}
    for i, label in enumerate(PRIORITIES):
        assert stores.projects.create(Project(id=f"p{i}", table_id="t", record_id=f"r{i}", template="tiny",
                                              priority=labels[label]))
    stores.projects.update("p9", change(priority=1))  # the row's 优先级 edited to 高 while it waits

    async def take_all() -> list[str]:
        # procrastinate's own choice of the next job, as every worker makes it.
        taken = []
        async with queue.app.open_async():
            worker = await queue.app.job_manager.register_worker()
            while (job := await queue.app.job_manager.fetch_job(queues=None, worker_id=worker)) is not None:
                taken.append(job.task_kwargs["project_id"])
        return taken

    assert asyncio.run(take_all()) == [f"p{i}" for i in (2, 5, 8, 9, 1, 3, 6, 7, 0, 4)]
