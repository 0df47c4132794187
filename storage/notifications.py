"""Chat messages owed: written in the transaction of the event they announce, sent once, marked."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, or_, select

from storage.base import Repo
from storage.models import Notification, Project, utcnow


def _of_table(q, table_id: str | None):
    """Messages about projects of one table (each table may announce in its own chat)."""
    if table_id is None:
        return q
    return q.where(col(Notification.project_id).in_(select(Project.id).where(Project.table_id == table_id)))


class NotificationStore(Repo):
    def due(self, now: datetime | None = None, table_id: str | None = None) -> list[Notification]:
        with self.session() as s:
            q = _of_table(select(Notification).where(Notification.sent_at == None, Notification.skipped == False)  # noqa: E711, E712
                          .order_by(Notification.id), table_id)
            if now is not None:
                q = q.where(or_(Notification.next_attempt_at == None, Notification.next_attempt_at <= now))  # noqa: E711
            return list(s.exec(q))

    def of_project(self, project_id: str) -> list[Notification]:
        with self.session() as s:
            q = select(Notification).where(Notification.project_id == project_id).order_by(Notification.id)
            return list(s.exec(q))

    def skip_older(self, before: datetime, reason: str, table_id: str | None = None) -> int:
        """Unsent messages owed since before `before` will never be sent (a chat turned on after
        weeks of use must not get weeks of old cards)."""
        with self.session() as s:
            q = _of_table(select(Notification).where(Notification.sent_at == None, Notification.skipped == False,  # noqa: E711, E712
                                                     Notification.created_at < before), table_id)
            rows = list(s.exec(q))
            for row in rows:
                row.skipped, row.last_error = True, reason
                s.add(row)
            s.commit()
            return len(rows)

    def release(self, before: datetime, table_id: str | None = None) -> None:
        """The chat answers again: unsent messages postponed to before `before` are due now."""
        with self.session() as s:
            q = _of_table(select(Notification).where(
                Notification.sent_at == None, Notification.skipped == False,  # noqa: E711, E712
                Notification.next_attempt_at != None, Notification.next_attempt_at < before), table_id)  # noqa: E711
            for row in s.exec(q):
                row.next_attempt_at = None
                s.add(row)
            s.commit()

    def mark_sent(self, note: Notification) -> None:
        self._mark(note, None, None)

    def mark_failed(self, note: Notification, error: str, next_attempt_at: datetime | None) -> None:
        self._mark(note, error, next_attempt_at)

    def _mark(self, note: Notification, error: str | None, next_attempt_at: datetime | None) -> None:
        with self.session() as s:
            row = s.get(Notification, note.id)
            if error is None:
                row.sent_at = utcnow()
            else:
                row.attempts += 1
                row.last_error = error
                row.next_attempt_at = next_attempt_at
            s.add(row)
            s.commit()
