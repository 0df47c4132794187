"""Polls that a row edit can bring forward: a periodic job that an event runs at once.

Polling stays the source of truth (events can be late, lost or repeated); an event only makes
the next poll happen now instead of up to POLL_INTERVAL_SECONDS later.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from connectors.feishu.protocol import BitableClient, FieldInfo, RecordChange, RecordEvents
from sync.columns import Columns

log = logging.getLogger(__name__)


class Wakeup:
    """Runs `job` now, then every `interval` seconds or as soon as poked, one run at a time.
    A poke while the job runs makes it run again right after, so no edit waits for a whole interval."""

    def __init__(self, job: Callable[[], object], interval: float, stop: threading.Event):
        self.job, self.interval, self.stop = job, interval, stop
        self._poked = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"wakeup-{job.__name__}", daemon=True)

    def start(self) -> Wakeup:
        self._thread.start()
        return self

    def poke(self) -> None:
        self._poked.set()

    def join(self, timeout: float | None = None) -> None:
        self._poked.set()  # stop is set by now: let the wait end
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self._poked.clear()
            self.job()
            self._poked.wait(self.interval)


class RowWatch:
    """Which changes are worth a poll: any added or deleted row, and edits of a column SheetReel
    reads. SheetReel's own writes (状态, 进度, links...) fire events too and are ignored."""

    def __init__(self, table_id: str, fields: list[FieldInfo], columns: Columns):
        read = set(columns.read_columns())
        self.table_id = table_id
        self.ignored = {f.field_id for f in fields if f.name not in read}

    def matters(self, change: RecordChange) -> bool:
        if change.table_id != self.table_id:
            return False
        if change.action != "record_edited" or not change.field_ids:
            return True
        return not change.field_ids <= self.ignored


def listen_for_edits(events: RecordEvents, tables: list[tuple[BitableClient, Columns]],
                     poke: Callable[[], None]) -> RecordEvents | None:
    """Start `events` so a relevant change to a row of one of `tables` pokes the poll; None
    (polling only) when a base cannot be subscribed, said once in the log with what to do about it."""
    try:
        watches = [RowWatch(table.table_id, table.list_fields(), columns) for table, columns in tables]

        def on_change(change: RecordChange) -> None:
            if any(w.matters(change) for w in watches):
                log.info("row changed record=%s action=%s: polling now", change.record_id, change.action)
                poke()

        events.start(on_change)
    except Exception as e:
        log.warning("record events off (polling only) error=%s hint=%s", e,
                    "give the app manage permission on the base and choose 使用长连接接收事件 in its event settings")
        return None
    log.info("record events on table=%s", ",".join(table.table_id for table, _ in tables))
    return events
