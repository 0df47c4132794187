"""ProjectStore: the only code that reads and writes project rows, and keeps meta.json in step."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from storage import meta
from storage.models import (
    CancelRequest,
    Notification,
    OutboxEntry,
    PollState,
    Project,
    ProjectState,
    Segment,
    StepRun,
    UploadedFile,
    utcnow,
)
from storage.paths import ProjectPaths


@dataclass
class SheetUpdate:
    """System cells to write into one row: plain values, and files for attachment cells."""

    fields: dict = field(default_factory=dict)
    attachments: dict[str, list[str]] = field(default_factory=dict)


class ProjectStore:
    def __init__(self, engine: Engine, data_dir: Path):
        self.engine = engine
        self.data_dir = Path(data_dir)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _upsert(self, row) -> None:
        """merge() reads then inserts; another process may insert in between. The second try
        finds the row and updates it."""
        for attempt in range(2):
            with self.session() as s:
                try:
                    s.merge(row)
                    s.commit()
                    return
                except IntegrityError:
                    s.rollback()
                    if attempt:
                        raise

    def paths(self, project: Project) -> ProjectPaths:
        return ProjectPaths.of(self.data_dir, project.publish_date, project.template or "invalid-template", project.id)

    # -- projects ---------------------------------------------------------------------------

    def get(self, project_id: str) -> Project | None:
        with self.session() as s:
            return s.get(Project, project_id)

    def by_record(self, table_id: str, record_id: str) -> Project | None:
        with self.session() as s:
            q = select(Project).where(Project.table_id == table_id, Project.record_id == record_id)
            return s.exec(q).first()

    def projects(self, states: Iterable[ProjectState] | None = None) -> list[Project]:
        with self.session() as s:
            q = select(Project).order_by(Project.created_at, Project.id)
            if states is not None:
                q = q.where(col(Project.state).in_(list(states)))
            return list(s.exec(q))

    def create(self, project: Project, sheet: SheetUpdate | None = None, notify: Notification | None = None) -> bool:
        """Insert a new project; False if its row already has one (another poller won the race)."""
        try:
            self._commit(project, (), sheet, notify)
        except IntegrityError:
            return False
        return True

    def save(
        self,
        project: Project,
        segments: Iterable[Segment] = (),
        sheet: SheetUpdate | None = None,
        notify: Notification | None = None,
    ) -> None:
        """Write project, segments, the row's outbox entry and any chat message owed, in one
        transaction, then meta.json."""
        self._commit(project, segments, sheet, notify)

    def _commit(
        self,
        project: Project,
        segments: Iterable[Segment],
        sheet: SheetUpdate | None,
        notify: Notification | None = None,
    ) -> None:
        now = utcnow()
        project.updated_at = now
        with self.session() as s:
            s.merge(project)
            for seg in segments:
                seg.updated_at = now
                s.merge(seg)
            if sheet is not None:
                s.add(self._outbox_entry(project, sheet))
            if notify is not None:
                s.add(notify)
            s.commit()
        self.write_meta(project.id)

    @staticmethod
    def _outbox_entry(project: Project, sheet: SheetUpdate) -> OutboxEntry:
        return OutboxEntry(
            project_id=project.id,
            table_id=project.table_id,
            record_id=project.record_id,
            fields=json.dumps(sheet.fields, ensure_ascii=False),
            attachments=json.dumps(sheet.attachments, ensure_ascii=False),
        )

    def write_meta(self, project_id: str) -> Path:
        with self.session() as s:
            project = s.get(Project, project_id)
            segs = list(s.exec(select(Segment).where(Segment.project_id == project_id).order_by(Segment.index)))
            steps = list(s.exec(select(StepRun).where(StepRun.project_id == project_id).order_by(StepRun.id)))
        path = self.paths(project).meta
        meta.write(path, meta.ProjectMeta.of(project, segs, steps))
        return path

    # -- segments and step history ----------------------------------------------------------

    def segments(self, project_id: str) -> list[Segment]:
        with self.session() as s:
            q = select(Segment).where(Segment.project_id == project_id).order_by(Segment.index)
            return list(s.exec(q))

    def delete_segments_from(self, project_id: str, first_index: int) -> None:
        with self.session() as s:
            s.exec(delete(Segment).where(Segment.project_id == project_id, Segment.index >= first_index))
            s.commit()

    def start_step(self, project_id: str, step: str, host: str) -> StepRun:
        with self.session() as s:
            previous = s.exec(
                select(StepRun).where(StepRun.project_id == project_id, StepRun.step == step)
            ).all()
            run = StepRun(project_id=project_id, step=step, attempt=len(previous) + 1, host=host)
            s.add(run)
            s.commit()
            s.refresh(run)
            return run

    def end_step(self, run: StepRun, error: str | None = None) -> None:
        run.ended_at = utcnow()
        run.ok = error is None
        run.error = error
        with self.session() as s:
            s.merge(run)
            s.commit()

    def steps(self, project_id: str) -> list[StepRun]:
        with self.session() as s:
            q = select(StepRun).where(StepRun.project_id == project_id).order_by(StepRun.id)
            return list(s.exec(q))

    # -- outbox -----------------------------------------------------------------------------

    def outbox_entries(self) -> list[OutboxEntry]:
        with self.session() as s:
            return list(s.exec(select(OutboxEntry).order_by(OutboxEntry.id)))

    def outbox_size(self) -> int:
        with self.session() as s:
            return len(s.exec(select(OutboxEntry.id)).all())

    def outbox_delete(self, ids: Iterable[int]) -> None:
        with self.session() as s:
            s.exec(delete(OutboxEntry).where(col(OutboxEntry.id).in_(list(ids))))
            s.commit()

    def outbox_postpone(self, ids: Iterable[int], error: str, next_attempt_at: datetime) -> None:
        with self.session() as s:
            for entry in s.exec(select(OutboxEntry).where(col(OutboxEntry.id).in_(list(ids)))):
                entry.attempts += 1
                entry.last_error = error
                entry.next_attempt_at = next_attempt_at
                s.add(entry)
            s.commit()

    def outbox_pending_for(self, record_id: str, column: str) -> bool:
        """Whether a write of `column` to this record has not reached the sheet yet."""
        with self.session() as s:
            q = select(OutboxEntry.fields).where(OutboxEntry.record_id == record_id)
            return any(column in json.loads(fields) for fields in s.exec(q))

    # -- cancel requests ----------------------------------------------------------------------

    def request_cancel(self, project_id: str) -> None:
        self._upsert(CancelRequest(project_id=project_id))

    def cancel_requested(self, project_id: str) -> bool:
        with self.session() as s:
            return s.get(CancelRequest, project_id) is not None

    def clear_cancel(self, project_id: str) -> None:
        with self.session() as s:
            s.exec(delete(CancelRequest).where(CancelRequest.project_id == project_id))
            s.commit()

    def add_outbox(self, project: Project, sheet: SheetUpdate) -> None:
        """A sheet write that changes no project row (e.g. clearing an action cell)."""
        with self.session() as s:
            s.add(self._outbox_entry(project, sheet))
            s.commit()

    # -- poll watermark and notifications ---------------------------------------------------

    def watermark(self, table_id: str) -> int:
        with self.session() as s:
            row = s.get(PollState, table_id)
            return row.watermark_ms if row else 0

    def set_watermark(self, table_id: str, watermark_ms: int) -> None:
        self._upsert(PollState(table_id=table_id, watermark_ms=watermark_ms))

    def notifications_due(self) -> list[Notification]:
        with self.session() as s:
            q = select(Notification).where(Notification.sent_at == None).order_by(Notification.id)  # noqa: E711
            return list(s.exec(q))

    def notifications(self, project_id: str) -> list[Notification]:
        with self.session() as s:
            q = select(Notification).where(Notification.project_id == project_id).order_by(Notification.id)
            return list(s.exec(q))

    def mark_notification(self, note: Notification, error: str | None = None) -> None:
        with self.session() as s:
            row = s.get(Notification, note.id)
            if error is None:
                row.sent_at = utcnow()
            else:
                row.attempts += 1
                row.last_error = error
            s.add(row)
            s.commit()

    # -- uploaded attachments ---------------------------------------------------------------

    def uploaded(self, sha256: str, app_token: str) -> str | None:
        with self.session() as s:
            row = s.get(UploadedFile, (sha256, app_token))
            return row.file_token if row else None

    def remember_upload(self, sha256: str, app_token: str, file_token: str, size: int) -> None:
        self._upsert(UploadedFile(sha256=sha256, app_token=app_token, file_token=file_token, size=size))

    # -- rebuild ----------------------------------------------------------------------------

    def rebuild_from_meta(self, subtree: str = "") -> list[str]:
        """Insert every project found in meta.json files that the DB lacks. Returns their ids."""
        return [pid for path in meta.find_all(self.data_dir, subtree) if (pid := self.rebuild_from_meta_file(path))]

    def rebuild_from_meta_file(self, path: Path | str) -> str | None:
        """Insert the project of one meta.json if the DB lacks it; its id, or None if present."""
        project, segs, steps = meta.read(Path(path)).rows()
        with self.session() as s:
            if s.get(Project, project.id) is not None:
                return None
            s.add(project)
            s.add_all(segs)
            s.add_all(steps)
            s.commit()
        return project.id
