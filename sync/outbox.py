"""Sheet write-back: pending row writes, coalesced per record, sent in batches, never lost.

`TableWriter` is the one way anything sends them (and the chat messages): it takes the table's
flush lock, so two processes never flush one table at once (Feishu refuses concurrent writes,
1254291, and two flushers could land an older value last and delete the newer one as sent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from connectors.feishu.protocol import BitableClient
from storage.errors import NotFound, Permanent, RateLimited, SheetReelError, Transient
from storage.locks import ProjectLocks
from storage.models import OutboxEntry
from storage.outbox import OutboxStore
from storage.retry import Probe, RetryPolicy
from storage.sync_state import SyncState

log = logging.getLogger(__name__)


@dataclass
class RowWrite:
    """Everything pending for one record, merged oldest to newest (the latest value wins)."""

    record_id: str
    project_id: str
    fields: dict = field(default_factory=dict)
    attachments: dict[str, list[str]] = field(default_factory=dict)
    entry_ids: list[int] = field(default_factory=list)
    not_before: datetime | None = None
    failures: int = 0


@dataclass
class FlushResult:
    written: int = 0
    postponed: int = 0
    dropped: int = 0


def coalesce(entries: list[OutboxEntry]) -> list[RowWrite]:
    rows: dict[str, RowWrite] = {}
    for e in sorted(entries, key=lambda e: e.id):
        row = rows.setdefault(e.record_id, RowWrite(record_id=e.record_id, project_id=e.project_id))
        row.fields.update(json.loads(e.fields))
        row.attachments.update(json.loads(e.attachments))
        row.entry_ids.append(e.id)
        row.failures = max(row.failures, e.attempts)
        if e.next_attempt_at and (row.not_before is None or e.next_attempt_at > row.not_before):
            row.not_before = e.next_attempt_at
    return list(rows.values())


class OutboxFlusher:
    def __init__(
        self,
        outbox: OutboxStore,
        uploads: SyncState,
        table: BitableClient,
        clock: Callable[[], datetime],
        retry: RetryPolicy,
        on_permanent: Callable[[str, str], None] | None = None,
        on_missing: Callable[[str, list[str]], None] | None = None,
        optional: frozenset[str] = frozenset(),
        batch_size: int = 500,
    ):
        self.outbox, self.uploads, self.table, self.clock = outbox, uploads, table, clock
        self.retry, self.on_permanent, self.on_missing, self.batch_size = retry, on_permanent, on_missing, batch_size
        # Columns a table may simply not have (费用): dropped from the write without a word.
        self.optional = optional
        self._lock = threading.Lock()
        self._probe = Probe()
        self._known_fields: set[str] | None = None
        self._known_at: datetime | None = None
        self._failing = False

    def flush(self) -> FlushResult:
        with self._lock:
            result = FlushResult()
            now = self.clock()
            rows = coalesce(self.outbox.entries(self.table.table_id))
            # A record waits as a whole: sending its newer entries ahead of a postponed older one
            # would let the older value land last and win.
            due = [r for r in rows if r.not_before is None or r.not_before <= now]
            if not due and rows and self._probe.due(now):
                due = [min(rows, key=lambda r: r.not_before)]  # is the table back?
            if due:
                self._probe.tried(now)
            if self._send_all(due, result) and result.written and len(due) < len(rows):
                self.outbox.release(self.table.table_id)  # it is: what backed off during the outage goes now
                self._send_all(coalesce(self.outbox.entries(self.table.table_id)), result)
            return result

    def _send_all(self, rows: list[RowWrite], result: FlushResult) -> bool:
        for i in range(0, len(rows), self.batch_size):
            if not self._send(rows[i : i + self.batch_size], result):
                result.postponed += sum(len(r.entry_ids) for r in rows[i + self.batch_size :])
                return False
        return True

    def _send(self, batch: list[RowWrite], result: FlushResult) -> bool:
        """Write one batch. False when the table is unavailable and the rest should wait."""
        try:
            updates = [(row.record_id, self._cells(row)) for row in batch]
            self.table.batch_update(updates)
        except (RateLimited, Transient) as e:
            self._postpone(batch, e)
            result.postponed += sum(len(r.entry_ids) for r in batch)
            return False
        except (Permanent, NotFound) as e:
            if len(batch) > 1:
                # Find the one bad row by halving, so every good row still lands.
                mid = len(batch) // 2
                return self._send(batch[:mid], result) and self._send(batch[mid:], result)
            self._drop(batch[0], e)
            result.dropped += len(batch[0].entry_ids)
            return True
        if self._failing:
            log.info("sheet writes recovered")
            self._failing = False
        self.outbox.delete([i for row in batch for i in row.entry_ids])
        result.written += len(batch)
        return True

    def _cells(self, row: RowWrite) -> dict:
        wanted = {k for k, v in row.fields.items() if v is not None} | set(row.attachments)
        if not wanted <= self._fields():
            self._fields(fresh=True)  # the user may have added the column since we last looked
        known = self._fields()
        # A column the table lacks (deleted by a user, or 段8视频 in a table made with six) must not
        # sink the row's other cells: they land, and the row says what is missing. Clearing such
        # a column is a no-op, not a problem.
        if missing := [k for k in (*row.fields, *row.attachments) if k in wanted - known - self.optional]:
            log.warning("columns missing project=%s record=%s columns=%s", row.project_id, row.record_id,
                        ",".join(missing))
        if self.on_missing:  # also when none are, to clear the row's notice once they are back
            self.on_missing(row.project_id, missing)
        cells = {k: v for k, v in row.fields.items() if k in known}
        for column, files in row.attachments.items():
            if column not in known:
                continue
            present = [Path(f) for f in files if Path(f).is_file()]
            if len(present) < len(files):
                # Deleted since the write was queued (new inputs, a cleanup): the cell keeps what
                # it has, the row's other cells still land, and the outbox goes on.
                log.warning("attachment file missing project=%s record=%s column=%s", row.project_id, row.record_id, column)
            if present:
                cells[column] = [{"file_token": self._upload(f)} for f in present]
        return cells

    def _fields(self, fresh: bool = False) -> set[str]:
        now = self.clock()
        # Refreshed at most once a minute while a column is missing: one listing per flush, not per row.
        stale = fresh and (self._known_at is None or now - self._known_at > timedelta(minutes=1))
        if self._known_fields is None or stale:
            self._known_fields, self._known_at = {f.name for f in self.table.list_fields()}, now
        return self._known_fields

    def _upload(self, path: Path) -> str:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        token = self.uploads.uploaded(digest, self.table.app_token)
        if token is None:
            token = self.table.upload_attachment(path, image=path.suffix.lower() in (".jpg", ".jpeg", ".png"))
            self.uploads.remember_upload(digest, self.table.app_token, token, len(data))
        return token

    def _postpone(self, batch: list[RowWrite], err: SheetReelError) -> None:
        if not self._failing:
            log.warning("sheet writes failing, will retry error=%s", err)
        self._failing = True
        retry_after = err.retry_after if isinstance(err, RateLimited) else None
        now = self.clock()
        for row in batch:  # each record backs off on its own count
            when = now + timedelta(seconds=self.retry.delay(row.failures + 1, retry_after))
            self.outbox.postpone(row.entry_ids, str(err), when)

    def _drop(self, row: RowWrite, err: SheetReelError) -> None:
        log.error("sheet write refused project=%s record=%s error=%s", row.project_id, row.record_id, err)
        self._known_fields = None  # the table may have changed under us
        self.outbox.delete(row.entry_ids)
        if self.on_permanent:
            self.on_permanent(row.project_id, str(err))


class TableWriter:
    """Sends a table's pending sheet writes and chat messages, one process at a time."""

    def __init__(self, locks: ProjectLocks, table_id: str, flusher: OutboxFlusher, notifier=None):
        self.locks, self.table_id, self.flusher, self.notifier = locks, table_id, flusher, notifier

    def flush(self) -> bool:
        """One round; False when another process is flushing this table right now."""
        with self.locks.hold(f"_flush-{self.table_id}") as got:
            if not got:
                return False
            self.flusher.flush()
            if self.notifier is not None:
                self.notifier.flush()
            return True

    def drain(self, timeout: float, pause: float = 0.2) -> bool:
        """Flush until the outbox is empty (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            if not self.flusher.outbox.size(self.table_id):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(pause)
