"""Project locks as two hosts see them: files on one host, PostgreSQL advisory locks across hosts.
The advisory locks' connections are pooled, so a connection going back to the pool must never
carry its lock to the next holder."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text

from storage.db import normalize_url
from storage.locks import AdvisoryLocks, FileLocks


@pytest.fixture
def two_hosts(database_url, tmp_path):
    """Two independent lock holders on one database (or one lock folder, on SQLite)."""
    if not database_url:
        yield FileLocks(tmp_path / "locks"), FileLocks(tmp_path / "locks")
        return
    a, b = AdvisoryLocks(normalize_url(database_url)), AdvisoryLocks(normalize_url(database_url))
    yield a, b
    a.engine.dispose()
    b.engine.dispose()


@pytest.mark.databases
def test_a_held_lock_is_refused_elsewhere_and_free_once_released(two_hosts):
    a, b = two_hosts
    with a.hold("p1") as got:
        assert got
        assert not b.is_free("p1")
        with b.hold("p1") as other:
            assert not other
        assert b.is_free("p2")  # another project's lock is its own
    assert b.is_free("p1")
    with b.hold("p1") as got:
        assert got


@pytest.mark.databases
def test_a_failing_holder_releases_its_lock(two_hosts):
    a, b = two_hosts
    with pytest.raises(RuntimeError), a.hold("p1") as got:
        assert got
        raise RuntimeError("the stage failed")
    assert b.is_free("p1")


@pytest.mark.databases
def test_many_holders_at_once_never_wait_for_a_connection(two_hosts):
    """More locks held at once than the pool keeps: each still gets its answer at once."""
    a, b = two_hosts
    held, release, results = threading.Barrier(13), threading.Event(), []

    def holder(i: int) -> None:
        with a.hold(f"p{i}") as got:
            results.append(got)
            held.wait(timeout=60)
            release.wait(timeout=60)

    threads = [threading.Thread(target=holder, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    held.wait(timeout=60)
    assert results == [True] * 12
    assert not any(b.is_free(f"p{i}") for i in range(12))
    release.set()
    for t in threads:
        t.join(timeout=60)
    assert all(b.is_free(f"p{i}") for i in range(12))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_connection_lost_while_holding_takes_its_lock_with_it_and_is_not_reused(two_hosts, database_url):
    a, b = two_hosts
    admin = create_engine(normalize_url(database_url))
    with a.hold("p1") as got:
        assert got
        with admin.connect() as conn:  # the server ends the holder's session (a restart, a network cut)
            # Only this test's database: the server may be serving other test runs.
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                              "WHERE locktype = 'advisory' AND pid <> pg_backend_pid() AND database = "
                              "(SELECT oid FROM pg_database WHERE datname = current_database())"))
    admin.dispose()
    assert b.is_free("p1")
    # The pool hands out a working connection afterwards, and no lock rides along with it.
    with a.hold("p1") as got:
        assert got
        assert not b.is_free("p1")
    assert b.is_free("p1")
