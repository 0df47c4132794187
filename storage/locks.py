"""Per-project locks: one worker per project at a time.

On one host (SQLite) they are files; with PostgreSQL they are advisory locks, so they hold across
hosts, and the lock of a process that dies goes with its connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


class ProjectLocks(Protocol):
    def hold(self, key: str) -> AbstractContextManager[bool]:
        """Yield True while holding the lock, or False at once if someone else holds it."""

    def is_free(self, key: str) -> bool: ...


class FileLocks:
    def __init__(self, lock_dir: Path):
        self.dir = Path(lock_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _lock(self, key: str) -> FileLock:
        # thread_local=False: the lock is held by whoever acquired it, whatever thread releases it.
        return FileLock(self.dir / f"{key}.lock", timeout=0, thread_local=False)

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        lock = self._lock(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def is_free(self, key: str) -> bool:
        with self.hold(key) as got:
            return got


class AdvisoryLocks:
    """pg_try_advisory_lock on a connection of its own, held for as long as the lock is."""

    def __init__(self, url: str):
        # No pool: a lock lives and dies with its connection, and a pooled connection handed back
        # with a lock still on it would hand the lock to whoever takes the connection next.
        self.engine = create_engine(url, poolclass=NullPool)

    @staticmethod
    def key_of(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        with self.engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key_of(key)}).scalar()
            conn.commit()  # no transaction left open for as long as the lock is held
            yield bool(got)
            # Closing the connection releases the lock.

    def is_free(self, key: str) -> bool:
        with self.hold(key) as got:
            return got
