"""Per-project file locks: one worker per project across threads and processes on one host."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class ProjectLocks:
    def __init__(self, lock_dir: Path):
        self.dir = Path(lock_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _lock(self, project_id: str) -> FileLock:
        # thread_local=False: the lock is held by whoever acquired it, whatever thread releases it.
        return FileLock(self.dir / f"{project_id}.lock", timeout=0, thread_local=False)

    @contextmanager
    def hold(self, project_id: str) -> Iterator[bool]:
        """Yield True while holding the lock, or False at once if someone else holds it."""
        lock = self._lock(project_id)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def is_free(self, project_id: str) -> bool:
        with self.hold(project_id) as got:
            return got
