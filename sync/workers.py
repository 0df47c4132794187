"""In-process worker pool. The interface (submit / wait_idle / shutdown) is the seam for a
distributed queue later."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class WorkerPool:
    """`size` threads run the submitted projects; each free thread takes the waiting project of
    lowest rank at that moment, so a rank given again (a new 优先级) reorders what still waits."""

    def __init__(self, work: Callable[[str], object], size: int):
        self._work = work
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sheetreel-worker")
        self._waiting: dict[str, Any] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def submit(self, project_id: str, rank: Any = ()) -> bool:
        """Queue a project unless it is already queued or running here (a queued one takes the new rank)."""
        with self._lock:
            if project_id in self._waiting:
                self._waiting[project_id] = rank
                return False
            if project_id in self._running:
                return False
            self._waiting[project_id] = rank
        # One take per submission: the executor's FIFO only says when, `_take` says which.
        self._executor.submit(self._take)
        return True

    def _take(self) -> None:
        with self._lock:
            if not self._waiting:
                return
            project_id = min(self._waiting, key=self._waiting.__getitem__)
            del self._waiting[project_id]
            self._running.add(project_id)
        try:
            self._work(project_id)
        except Exception as e:  # noqa: BLE001 - the runner's own failures are rows' errors; this is a bug
            log.error("worker crashed project=%s error=%r", project_id, e)
        finally:
            with self._lock:
                self._running.discard(project_id)
                self._idle.notify_all()

    def busy(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._running)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._waiting or self._running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:  # cancelled takes leave their projects here; the next start runs them
            self._waiting.clear()
            self._idle.notify_all()
