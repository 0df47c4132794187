"""The outbox flusher: pending row writes, coalesced per record, sent in batches, never lost."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from connectors.feishu.protocol import BitableClient
from storage.errors import NotFound, Permanent, RateLimited, SheetReelError, Transient
from storage.models import OutboxEntry
from storage.repo import ProjectStore

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
        if e.next_attempt_at and (row.not_before is None or e.next_attempt_at > row.not_before):
            row.not_before = e.next_attempt_at
    return list(rows.values())


class OutboxFlusher:
    def __init__(
        self,
        store: ProjectStore,
        table: BitableClient,
        clock: Callable[[], datetime],
        batch_size: int = 500,
        backoff_cap: float = 300.0,
        on_permanent: Callable[[str, str], None] | None = None,
    ):
        self.store, self.table, self.clock = store, table, clock
        self.batch_size, self.backoff_cap = batch_size, backoff_cap
        self.on_permanent = on_permanent
        # Feishu rejects concurrent writes to one table (1254291): one flush at a time.
        self._lock = threading.Lock()
        self._known_fields: set[str] | None = None
        self._failures = 0

    def flush(self) -> FlushResult:
        with self._lock:
            result = FlushResult()
            now = self.clock()
            # A record waits as a whole: sending its newer entries ahead of a postponed older one
            # would let the older value land last and win.
            rows = [r for r in coalesce(self.store.outbox_entries()) if r.not_before is None or r.not_before <= now]
            for i in range(0, len(rows), self.batch_size):
                if not self._send(rows[i : i + self.batch_size], result):
                    result.postponed += sum(len(r.entry_ids) for r in rows[i + self.batch_size :])
                    break
            return result

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
        if self._failures:
            log.info("sheet writes recovered after=%d failures", self._failures)
            self._failures = 0
        self.store.outbox_delete([i for row in batch for i in row.entry_ids])
        result.written += len(batch)
        return True

    def _cells(self, row: RowWrite) -> dict:
        known = self._fields()
        # Clearing a column the table does not have is a no-op, not an error (segment columns
        # beyond the ones a table was created with).
        cells = {k: v for k, v in row.fields.items() if v is not None or k in known}
        for column, files in row.attachments.items():
            cells[column] = [{"file_token": self._upload(Path(f))} for f in files]
        return cells

    def _fields(self) -> set[str]:
        if self._known_fields is None:
            self._known_fields = {f.name for f in self.table.list_fields()}
        return self._known_fields

    def _upload(self, path: Path) -> str:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        token = self.store.uploaded(digest, self.table.app_token)
        if token is None:
            token = self.table.upload_attachment(path, image=path.suffix.lower() in (".jpg", ".jpeg", ".png"))
            self.store.remember_upload(digest, self.table.app_token, token, len(data))
        return token

    def _postpone(self, batch: list[RowWrite], err: SheetReelError) -> None:
        self._failures += 1
        if self._failures == 1:
            log.warning("sheet writes failing, will retry error=%s", err)
        delay = min(self.backoff_cap, 2 ** min(self._failures, 10)) * random.uniform(0.5, 1.0)
        if isinstance(err, RateLimited) and err.retry_after:
            delay = max(delay, err.retry_after)
        when = self.clock() + timedelta(seconds=delay)
        self.store.outbox_postpone([i for row in batch for i in row.entry_ids], str(err), when)

    def _drop(self, row: RowWrite, err: SheetReelError) -> None:
        log.error("sheet write refused project=%s record=%s error=%s", row.project_id, row.record_id, err)
        self._known_fields = None  # the table may have changed under us
        self.store.outbox_delete(row.entry_ids)
        if self.on_permanent:
            self.on_permanent(row.project_id, str(err))
