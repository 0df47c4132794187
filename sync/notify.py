"""Sends the chat messages owed (one per completed/failed event), at most once each."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from connectors.feishu.protocol import Card, Messenger
from storage.errors import RateLimited, SheetReelError, Transient
from storage.models import Notification
from storage.notifications import NotificationStore
from storage.retry import Probe, RetryPolicy

log = logging.getLogger(__name__)
# A message refused as often as the policy allows stays unsent, with its error, for `inspect-db`.
GIVEN_UP = timedelta(days=3650)


class Notifier:
    def __init__(
        self,
        notes: NotificationStore,
        messenger: Messenger,
        clock: Callable[[], datetime],
        retry: RetryPolicy,
        min_interval: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
        since: datetime | None = None,
        backlog: timedelta = timedelta(hours=24),
        table_id: str | None = None,
    ):
        self.notes, self.messenger, self.clock, self.retry = notes, messenger, clock, retry
        self.min_interval, self.sleep = min_interval, sleep
        # Announce only what happened since the chat was turned on, and within `backlog`.
        self.since, self.backlog = since, backlog
        self.table_id = table_id  # only this table's projects are announced here
        self._lock = threading.Lock()
        self._probe = Probe()

    def flush(self) -> int:
        """Send what is due. A temporary failure postpones that message by the retry policy and
        stops this round; a refused one is tried again up to the policy's attempts, as a refusal
        can be a passing permission change. While the chat is down one message probes it."""
        with self._lock:
            now = self.clock()
            horizon = max(filter(None, (self.since, now - self.backlog)))
            if skipped := self.notes.skip_older(horizon, "未发送：早于群通知开启时间，或已超过补发时限", self.table_id):
                log.info("old notifications not sent count=%d since=%s", skipped, horizon.isoformat())
            unsent = self.notes.due(table_id=self.table_id)  # one read: what is due now, and what backs off
            due = [n for n in unsent if n.next_attempt_at is None or n.next_attempt_at <= now]
            waiting = len(unsent) - len(due)
            if not due and waiting and self._probe.due(now):
                # Is the chat back? Tried with one backed-off message (not one given up on).
                due = [n for n in unsent if n.next_attempt_at < now + GIVEN_UP / 2][:1]
            if due:
                self._probe.tried(now)
            sent = self._send(due)
            if sent and waiting:
                self.notes.release(before=now + GIVEN_UP / 2, table_id=self.table_id)  # it is: what backed off goes now
                sent += self._send(self.notes.due(self.clock(), self.table_id))
        return sent

    def _send(self, notes: list[Notification]) -> int:
        """Send in order; stop at the first temporary failure (the chat is unavailable)."""
        sent = 0
        for note in notes:
            if sent:
                self.sleep(self.min_interval)  # Feishu allows 5 messages/s per chat
            try:
                card = Card(title=note.title, markdown=note.body, failed=note.event == "failed",
                            image=Path(note.image) if note.image else None, link=note.link or "")
                self.messenger.send_card(card, f"sheetreel-{note.project_id}-{note.id}")
            except (RateLimited, Transient) as e:
                retry_after = e.retry_after if isinstance(e, RateLimited) else None
                self._postpone(note, e, self.retry.delay(note.attempts + 1, retry_after))
                log.warning("notification postponed project=%s event=%s error=%s", note.project_id, note.event, e)
                break
            except SheetReelError as e:
                wait = self.retry.next_delay(note.attempts + 1)
                self._postpone(note, e, wait if wait is not None else GIVEN_UP.total_seconds())
                log.error("notification refused project=%s event=%s error=%s", note.project_id, note.event, e)
                continue
            self.notes.mark_sent(note)
            sent += 1
        return sent

    def _postpone(self, note, err: SheetReelError, seconds: float) -> None:
        self.notes.mark_failed(note, str(err), self.clock() + timedelta(seconds=seconds))
