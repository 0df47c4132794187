"""Sends the chat messages owed (one per completed/failed event), at most once each."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from connectors.feishu.protocol import Messenger
from storage.errors import RateLimited, SheetReelError, Transient
from storage.repo import ProjectStore

log = logging.getLogger(__name__)


class Notifier:
    def __init__(
        self,
        store: ProjectStore,
        messenger: Messenger,
        max_attempts: int = 5,
        min_interval: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store, self.messenger = store, messenger
        self.max_attempts, self.min_interval, self.sleep = max_attempts, min_interval, sleep
        self._lock = threading.Lock()

    def flush(self) -> int:
        """Send what is due. Stops at the first temporary failure; the next flush goes on."""
        sent = 0
        with self._lock:
            for note in self.store.notifications_due():
                if note.attempts >= self.max_attempts:
                    continue
                if sent:
                    self.sleep(self.min_interval)  # Feishu allows 5 messages/s per chat
                try:
                    self.messenger.send_card(note.title, note.body, f"sheetreel-{note.project_id}-{note.id}", failed=note.event == "failed")
                except (RateLimited, Transient) as e:
                    self.store.mark_notification(note, str(e))
                    log.warning("notification postponed project=%s event=%s error=%s", note.project_id, note.event, e)
                    break
                except SheetReelError as e:
                    self.store.mark_notification(note, str(e))
                    log.error("notification refused project=%s event=%s error=%s", note.project_id, note.event, e)
                    continue
                self.store.mark_notification(note)
                sent += 1
        return sent
