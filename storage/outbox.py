"""The outbox: pending writes of a row's system cells, added in the transaction of the change
that caused them, flushed to the sheet later, deleted once they landed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import col, delete, func, select

from storage.base import Repo
from storage.models import OutboxEntry, Project


@dataclass
class SheetUpdate:
    """System cells to write into one row: plain values, and files for attachment cells."""

    fields: dict = field(default_factory=dict)
    attachments: dict[str, list[str]] = field(default_factory=dict)

    def entry(self, project: Project) -> OutboxEntry:
        return OutboxEntry(
            project_id=project.id,
            table_id=project.table_id,
            record_id=project.record_id,
            fields=json.dumps(self.fields, ensure_ascii=False),
            attachments=json.dumps(self.attachments, ensure_ascii=False),
        )


def _of_table(q, table_id: str | None):
    return q if table_id is None else q.where(OutboxEntry.table_id == table_id)


class OutboxStore(Repo):
    def entries(self, table_id: str | None = None) -> list[OutboxEntry]:
        """What waits (for one table, when given)."""
        with self.session() as s:
            return list(s.exec(_of_table(select(OutboxEntry).order_by(OutboxEntry.id), table_id)))

    def size(self, table_id: str | None = None) -> int:
        with self.session() as s:
            return s.exec(_of_table(select(func.count()).select_from(OutboxEntry), table_id)).one()

    def backlog(self, now: datetime) -> tuple[int, float]:
        """How many writes wait, and the age in seconds of the oldest (0 when none)."""
        with self.session() as s:
            count, oldest = s.exec(select(func.count(), func.min(OutboxEntry.created_at))).one()
        if not count or oldest is None:
            return 0, 0.0
        if isinstance(oldest, str):  # MIN() of the stored UTC ISO text, where the column type is not applied
            oldest = datetime.fromisoformat(oldest)
        return count, max((now - oldest).total_seconds(), 0.0)

    def refused(self) -> tuple[int, str]:
        """Writes the table turned down at least once and that still wait, and the latest reason."""
        with self.session() as s:
            rows = s.exec(select(OutboxEntry.last_error).where(OutboxEntry.attempts > 0)
                          .order_by(col(OutboxEntry.id).desc())).all()
        return len(rows), next((e for e in rows if e), "")

    def add(self, project: Project, sheet: SheetUpdate) -> None:
        """A sheet write that changes no project row (e.g. clearing an action cell)."""
        with self.session() as s:
            s.add(sheet.entry(project))
            s.commit()

    def delete(self, ids: Iterable[int]) -> None:
        with self.session() as s:
            s.exec(delete(OutboxEntry).where(col(OutboxEntry.id).in_(list(ids))))
            s.commit()

    def postpone(self, ids: Iterable[int], error: str, next_attempt_at: datetime) -> None:
        with self.session() as s:
            for entry in s.exec(select(OutboxEntry).where(col(OutboxEntry.id).in_(list(ids)))):
                entry.attempts += 1
                entry.last_error = error
                entry.next_attempt_at = next_attempt_at
                s.add(entry)
            s.commit()

    def release(self, table_id: str | None = None) -> None:
        """The table answers again: every postponed write is due now, its backoff started over."""
        with self.session() as s:
            q = _of_table(select(OutboxEntry).where(OutboxEntry.next_attempt_at != None), table_id)  # noqa: E711
            for entry in s.exec(q):
                entry.attempts, entry.next_attempt_at = 0, None
                s.add(entry)
            s.commit()

    def pending_for(self, record_id: str, column: str) -> bool:
        """Whether a write of `column` to this record has not reached the sheet yet."""
        with self.session() as s:
            q = select(OutboxEntry.fields).where(OutboxEntry.record_id == record_id)
            return any(column in json.loads(fields) for fields in s.exec(q))
