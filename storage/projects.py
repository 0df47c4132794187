"""ProjectStore: the project aggregate (project, its segments, its step runs, a pending 取消), and
meta.json kept in step with it.

Changes go through `update`: it reads the project fresh, applies the caller's change, and commits
the project with the sheet write and the chat message the change owes, in one transaction. The
commit is versioned; if anyone saved the project in between, the change is applied again to what
they saved, so a stale copy can never overwrite newer state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session, col, delete, func, select

from storage import meta
from storage.base import Repo
from storage.models import CancelRequest, Notification, Project, ProjectState, Segment, StepOutcome, StepRun, utcnow
from storage.outbox import SheetUpdate
from storage.paths import ProjectPaths

UPDATE_TRIES = 20  # a change that loses the race this often has a writer looping on the same row


class StaleProject(Exception):
    """The project was saved by someone else since this copy was read."""


@dataclass
class Effects:
    """What a project change owes besides the project row; committed with it."""

    sheet: SheetUpdate | None = None
    notify: Notification | None = None
    clear_cancel: bool = False  # a 取消 that this change answers or makes obsolete
    close_open_steps: tuple[StepOutcome, str] | None = None  # step runs a dead process left open


Mutation = Callable[[Project, list[Segment]], Effects]


# Called with each project change inside its transaction, before the commit: the scale-out mode
# defers the job that the change makes due (sync/jobqueue.py), so both commit or neither does.
Dispatch = Callable[[Session, Project], None]


class ProjectStore(Repo):
    def __init__(self, engine: Engine, data_dir: Path, dispatch: Dispatch | None = None,
                 mirror: Callable[[Path], None] | None = None):
        super().__init__(engine)
        self.data_dir = Path(data_dir)
        self.dispatch = dispatch
        # Several hosts: each meta.json written is also kept in the object store, the copy every
        # host (and verify-consistency) reads.
        self.mirror = mirror

    def paths(self, project: Project) -> ProjectPaths:
        return ProjectPaths.of(self.data_dir, project.publish_date, project.template or "invalid-template", project.id)

    # -- reading ----------------------------------------------------------------------------

    def get(self, project_id: str) -> Project | None:
        with self.session() as s:
            return s.get(Project, project_id)

    def by_record(self, table_id: str, record_id: str) -> Project | None:
        with self.session() as s:
            q = select(Project).where(Project.table_id == table_id, Project.record_id == record_id)
            return s.exec(q).first()

    def record_ids(self, table_id: str) -> set[str]:
        """The rows of this table that have a project."""
        with self.session() as s:
            return set(s.exec(select(Project.record_id).where(Project.table_id == table_id)))

    def projects(self, states: Iterable[ProjectState] | None = None, updated_since: datetime | None = None) -> list[Project]:
        with self.session() as s:
            q = select(Project).order_by(Project.created_at, Project.id)
            if states is not None:
                q = q.where(col(Project.state).in_(list(states)))
            if updated_since is not None:
                # Stored as UTC ISO-8601 text (AwareDateTime), which sorts as the times do.
                q = q.where(col(Project.updated_at) >= updated_since)
            return list(s.exec(q))

    def count_by_state(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.exec(select(Project.state, func.count()).group_by(Project.state)).all()
        return {ProjectState(state).value: count for state, count in rows}

    def segments(self, project_id: str) -> list[Segment]:
        with self.session() as s:
            q = select(Segment).where(Segment.project_id == project_id).order_by(Segment.index)
            return list(s.exec(q))

    def steps(self, project_id: str) -> list[StepRun]:
        with self.session() as s:
            q = select(StepRun).where(StepRun.project_id == project_id).order_by(StepRun.id)
            return list(s.exec(q))

    # -- writing ----------------------------------------------------------------------------

    def create(self, project: Project, effects: Effects | None = None) -> bool:
        """Insert a new project; False if its row already has one (another poller won the race)."""
        effects = effects or Effects()
        project.updated_at = utcnow()
        try:
            with self.session() as s:
                s.add(project)
                self._add_effects(s, project, effects)
                if self.dispatch is not None:
                    s.flush()
                    self.dispatch(s, project)
                s.commit()
        except IntegrityError:
            return False
        self.write_meta(project.id)
        return True

    def update(self, project_id: str, change: Mutation, segments: Iterable[Segment] = ()) -> Project:
        """Apply `change` to the freshest copy of the project and commit it with its effects.

        `change` sees the project and all its segments (the given ones merged in) and may raise to
        abandon the update. It may run more than once, so it must only touch what it is given.
        """
        segments = list(segments)
        for _ in range(UPDATE_TRIES):
            with self.session() as s:
                project = s.get(Project, project_id)
                if project is None:
                    raise KeyError(project_id)
                now = utcnow()
                for seg in segments:
                    seg.updated_at = now
                    s.merge(seg)
                s.flush()
                current = list(s.exec(select(Segment).where(Segment.project_id == project_id).order_by(Segment.index)))
                effects = change(project, current)
                project.updated_at = now
                try:
                    # Adding the effects can flush (a query autoflushes): the versioned UPDATE may
                    # find a newer copy there already.
                    self._add_effects(s, project, effects)
                    if self.dispatch is not None:
                        s.flush()  # the versioned UPDATE first: a stale copy defers nothing
                        self.dispatch(s, project)
                    s.commit()
                except StaleDataError:
                    s.rollback()
                    continue
            self.write_meta(project_id)
            return project
        raise StaleProject(f"project {project_id} kept changing under this update")

    def save(self, project: Project, segments: Iterable[Segment] = ()) -> Project:
        """Write this copy as it is; StaleProject if the DB holds a newer one. For loading data
        whole (tests, rebuilds); state changes go through `update`."""
        with self.session() as s:
            try:
                merged = s.merge(project)
                for seg in segments:
                    s.merge(seg)
                s.commit()
            except StaleDataError as e:
                raise StaleProject(str(e)) from None
        project.version = merged.version
        self.write_meta(project.id)
        return merged

    def _add_effects(self, s, project: Project, effects: Effects) -> None:
        if effects.sheet is not None:
            s.add(effects.sheet.entry(project))
        if effects.notify is not None:
            s.add(effects.notify)
        if effects.clear_cancel:
            s.exec(delete(CancelRequest).where(CancelRequest.project_id == project.id))
        if effects.close_open_steps is not None:
            outcome, error = effects.close_open_steps
            q = select(StepRun).where(StepRun.project_id == project.id, StepRun.ended_at == None)  # noqa: E711
            for run in s.exec(q):
                run.ended_at, run.ok, run.outcome, run.error = utcnow(), outcome == StepOutcome.succeeded, outcome, error
                s.add(run)

    def write_meta(self, project_id: str) -> Path:
        for _ in range(3):
            with self.session() as s:
                project = s.get(Project, project_id)
                segs = list(s.exec(select(Segment).where(Segment.project_id == project_id).order_by(Segment.index)))
                steps = list(s.exec(select(StepRun).where(StepRun.project_id == project_id).order_by(StepRun.id)))
            path = self.paths(project).meta
            meta.write(path, meta.ProjectMeta.of(project, segs, steps))
            if self.mirror is None:
                return path
            self.mirror(path)
            # Another host may have mirrored an older copy over ours meanwhile; whoever saved
            # last finds its version still current and stops, so the newest copy stays.
            with self.session() as s:
                now = s.get(Project, project_id)
            if now is None or now.version == project.version:
                return path
        return path

    def delete_segments_from(self, project_id: str, first_index: int) -> None:
        with self.session() as s:
            s.exec(delete(Segment).where(Segment.project_id == project_id, Segment.index >= first_index))
            s.commit()

    # -- step history -------------------------------------------------------------------------

    def start_step(self, project_id: str, step: str, host: str) -> StepRun:
        with self.session() as s:
            previous = s.exec(select(StepRun).where(StepRun.project_id == project_id, StepRun.step == step)).all()
            run = StepRun(project_id=project_id, step=step, attempt=len(previous) + 1, host=host)
            s.add(run)
            s.commit()
            s.refresh(run)
            return run

    # -- 取消 for a project some worker holds ---------------------------------------------------

    def request_cancel(self, project_id: str) -> None:
        self._upsert(CancelRequest(project_id=project_id))

    def cancel_requested(self, project_id: str) -> bool:
        with self.session() as s:
            return s.get(CancelRequest, project_id) is not None

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
            try:
                s.commit()
            except IntegrityError:  # inserted by someone else meanwhile
                return None
        return project.id
