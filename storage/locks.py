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
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError


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
    """pg_try_advisory_lock on a connection of its own, held for as long as the lock is.

    Connections are pooled: a new one costs both sides a few milliseconds of CPU (a server
    process, the password exchange), and the gateway takes its flush lock several times a second.
    A lock is released before its connection goes back to the pool, and a connection that cannot
    release it is thrown away, which releases it too: a pooled connection never carries a lock."""

    def __init__(self, url: str):
        # As many connections as locks held at once (max_overflow=-1: never wait for one); a few
        # are kept for the next hold, the rest closed.
        self.engine = create_engine(url, pool_size=4, max_overflow=-1, pool_pre_ping=True)

    @staticmethod
    def key_of(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        k = self.key_of(key)
        with self.engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": k}).scalar())
            conn.commit()  # no transaction left open for as long as the lock is held
            try:
                yield got
            finally:
                if got:
                    _release(conn, k)

    def is_free(self, key: str) -> bool:
        with self.hold(key) as got:
            return got


def _release(conn: Connection, key: int) -> None:
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()
    except DBAPIError:
        # The session is gone or unusable: closing it for good is what releases the lock.
        conn.invalidate()
