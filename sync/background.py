"""Work that can wait runs at a lower CPU priority than the work that keeps a GPU busy.

A host that renders shots also composes finished videos and draws previews. A compose can take
every core for many seconds (x264, subtitles); meanwhile the next shot of another project waits
for its seed frame to be extracted and checked, and the GPU, the expensive part, sits idle.
Linux keeps the nice value per thread and a child process inherits its thread's, so such work
runs in a thread of its own, niced, and every ffmpeg it starts is niced with it. The thread is
new each time because a process may lower its priority but not raise it back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

NICE = 10
# Pictures for the row nobody waits for (previews): the least of everything, so a compose, a
# soundtrack or a shot's frame work never shares a core with them.
PICTURES_NICE = 19


def in_background(work: Callable[[], T]) -> T:
    """`work()`'s result (or its exception), computed at a lower CPU priority. Waits for it."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _lower_this_thread()
            outcome.append(work())
        except BaseException as e:  # handed to the caller, which decides
            failure.append(e)

    worker = threading.Thread(target=body, name=f"{threading.current_thread().name}-background", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _lower_this_thread(by: int = NICE) -> None:
    if sys.platform != "linux":  # elsewhere the nice value is the whole process's: leave it
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError:
        pass  # a sandbox that forbids it: the work still runs, only not behind the GPU's


class Ahead:
    """Work for a project that no stage has to wait for now (its soundtrack, its previews), at a
    lower priority, a few at once of each priority. A stage that comes to need it `claim`s it:
    waits for it if it is running, and takes it over if it has not started yet (returns at once:
    the stage does that work itself), so a stage never waits behind other projects' work ahead.
    Failures are logged; whoever needs the result does the work again and reports them."""

    def __init__(self, at_once: int = 2):
        self._at_once = at_once
        self._lock = threading.Lock()
        self._work: dict[tuple[str, str], _Job] = {}
        # Slots per priority: starved pictures never hold up a soundtrack a compose may wait for.
        self._slots: dict[int, threading.BoundedSemaphore] = {}

    def start(self, project_id: str, what: str, work: Callable[[], object], nice: int = NICE) -> None:
        """Run `work` at `nice` more than now. NICE (compose's) for work a stage may come to wait
        for: never lower, or that stage would wait for work starved by everything it outranks."""
        key, job = (project_id, what), _Job()
        with self._lock:
            self._work[key] = job  # a newer start replaces an older one's claim
            slots = self._slots.setdefault(nice, threading.BoundedSemaphore(self._at_once))

        def body() -> None:
            try:
                with slots:
                    with self._lock:
                        if job.taken:
                            return
                        job.running = True
                    _lower_this_thread(nice)
                    work()
            except Exception as e:  # noqa: BLE001 - the stage that needs it redoes it and reports
                log.warning("work ahead failed project=%s work=%s error=%s", project_id, what, str(e)[:300])
            finally:
                job.done.set()
                with self._lock:
                    if self._work.get(key) is job:
                        del self._work[key]

        threading.Thread(target=body, name=f"ahead-{what}-{project_id}", daemon=True).start()

    def wait_idle(self, timeout: float) -> bool:
        """Until no work ahead is queued or running (a process about to exit keeps what it made)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                jobs = list(self._work.values())
            if not jobs:
                return True
            if not jobs[0].done.wait(max(deadline - time.monotonic(), 0)):
                return False

    def claim(self, project_id: str, what: str) -> None:
        """Wait for this work of the project if it is running; drop it if it has not started."""
        with self._lock:
            job = self._work.pop((project_id, what), None)
            if job is None:
                return
            if not job.running:
                job.taken = True
                return
        job.done.wait()


class _Job:
    def __init__(self) -> None:
        self.running = False
        self.taken = False
        self.done = threading.Event()
