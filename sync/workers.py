"""In-process worker pool. The interface (submit / wait_idle / shutdown) is the seam for a
distributed queue later."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, work: Callable[[str], object], size: int):
        self._work = work
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sheetreel-worker")
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def submit(self, project_id: str) -> bool:
        """Queue a project unless it is already queued or running here."""
        with self._lock:
            if project_id in self._inflight:
                return False
            self._inflight.add(project_id)
        future = self._executor.submit(self._work, project_id)
        future.add_done_callback(lambda f, pid=project_id: self._finished(pid, f))
        return True

    def _finished(self, project_id: str, future: Future) -> None:
        if future.exception() is not None:
            log.error("worker crashed project=%s error=%r", project_id, future.exception())
        with self._lock:
            self._inflight.discard(project_id)
            self._idle.notify_all()

    def busy(self) -> int:
        with self._lock:
            return len(self._inflight)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._inflight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
