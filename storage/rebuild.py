"""Rebuild the DB from meta.json files: idempotent, and never overwrites newer DB data."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import delete

from storage import meta
from storage.locks import ProjectLocks
from storage.models import Project, Segment, StepRun
from storage.projects import ProjectStore


@dataclass
class MigrateReport:
    restored: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # "project: why"


def migrate(store: ProjectStore, locks: ProjectLocks, subtree: str = "") -> MigrateReport:
    report = MigrateReport()
    for path in meta.find_all(store.data_dir, subtree):
        try:
            project, segs, steps = meta.read(path).rows()
        except ValueError as e:
            report.conflicts.append(f"{path}: unreadable meta.json ({str(e).splitlines()[0]})")
            continue
        # Under the project's lock, as a worker holds it: a running step is never overwritten.
        with locks.hold(project.id) as got:
            if not got:
                report.conflicts.append(f"{project.id}: busy (a worker holds it); run the migration again later")
                continue
            _migrate_one(store, path, project, segs, steps, report)
    return report


def _migrate_one(store: ProjectStore, path, project: Project, segs: list[Segment], steps: list[StepRun],
                 report: MigrateReport) -> None:
    current = store.get(project.id)
    if current is None:
        store.rebuild_from_meta_file(path)
        report.restored.append(project.id)
    elif _same(current, project):
        report.unchanged.append(project.id)
    elif project.updated_at > current.updated_at:
        _replace(store, project, segs, steps, current)
        report.updated.append(project.id)
    else:
        report.conflicts.append(
            f"{project.id}: DB is newer ({current.updated_at:%Y-%m-%d %H:%M:%S}) than {path} "
            f"({project.updated_at:%Y-%m-%d %H:%M:%S}); kept the DB (run `sheetreel verify --fix` to rewrite meta.json)"
        )


def _same(a: Project, b: Project) -> bool:
    ignore = {"version"}  # a counter of saves, not content
    return a.model_dump(mode="json", exclude=ignore) == b.model_dump(mode="json", exclude=ignore)


def _replace(store: ProjectStore, project: Project, segs: list[Segment], steps: list[StepRun], current: Project) -> None:
    # The file wins over the DB row we just read, and only over that one: a save in between
    # (versioned) makes this fail rather than be overwritten.
    project.version = current.version
    with store.session() as s:
        s.exec(delete(Segment).where(Segment.project_id == project.id))
        s.exec(delete(StepRun).where(StepRun.project_id == project.id))
        s.merge(project)
        for row in (*segs, *steps):
            s.merge(row)
        s.commit()
