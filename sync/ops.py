"""Operations on the data dir: inspect, reset stuck work, clean up old intermediates, health."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from storage.locks import ProjectLocks
from storage.models import Project, ProjectState
from storage.outbox import OutboxStore
from storage.projects import ProjectStore
from sync import lifecycle
from sync.lifecycle import Lifecycle, Refused


@dataclass
class Overview:
    by_state: dict[str, int]
    by_template: dict[str, int]
    stuck: list[str]
    recent_errors: list[dict]
    outbox_backlog: int
    outbox_oldest_seconds: float | None
    projects: list[dict] = field(default_factory=list)


def select(store: ProjectStore, state: str | None = None, date: str | None = None, template: str | None = None,
           record: str | None = None) -> list[Project]:
    out = []
    for p in store.projects():
        if state and p.state.value != state and p.state.label != state:
            continue
        if date and (p.publish_date.isoformat() if p.publish_date else "") != date:
            continue
        if (template and p.template != template) or (record and p.record_id != record):
            continue
        out.append(p)
    return out


def stuck(store: ProjectStore, locks: ProjectLocks, now: datetime, idle: timedelta) -> list[Project]:
    """Running work whose lock nobody holds, or that has not moved for `idle`."""
    return [p for p in store.projects(lifecycle.RUNNING) if locks.is_free(p.id) or now - p.updated_at > idle]


def overview(store: ProjectStore, outbox: OutboxStore, locks: ProjectLocks, now: datetime, idle: timedelta,
             projects: list[Project]) -> Overview:
    entries = outbox.entries()
    oldest = min((e.created_at for e in entries), default=None)
    failed = sorted((p for p in projects if p.error), key=lambda p: p.updated_at, reverse=True)[:10]
    return Overview(
        by_state=dict(Counter(p.state.value for p in projects)),
        by_template=dict(Counter(p.template or "(invalid)" for p in projects)),
        stuck=[p.id for p in stuck(store, locks, now, idle) if p in projects],
        recent_errors=[{"project": p.id, "record": p.record_id, "state": p.state.value, "error": p.error} for p in failed],
        outbox_backlog=len(entries),
        outbox_oldest_seconds=(now - oldest).total_seconds() if oldest else None,
    )


def reset_stuck(life: Lifecycle, locks: ProjectLocks, now: datetime, idle: timedelta, dry_run: bool) -> list[str]:
    done = []
    for listed in stuck(life.store, locks, now, idle):
        # Holding the lock while resetting keeps a worker that is merely slow from being overrun;
        # the project is read again under it, as the worker may have finished since the listing.
        with locks.hold(listed.id) as got:
            if not got:
                done.append(f"{listed.id}: still held by a live worker; left alone")
                continue
            p = life.store.get(listed.id)
            if p is None or not lifecycle.is_running(p.state):
                done.append(f"{listed.id}: no longer running ({p.state.value if p else 'deleted'}); left alone")
                continue
            done.append(f"{p.id}: {p.state.value} -> {lifecycle.RESUME_FROM[p.state].value}")
            if not dry_run:
                try:
                    life.commit(p.id, lifecycle.reset)
                except Refused:
                    done[-1] = f"{p.id}: changed meanwhile; left alone"
    return done


@dataclass
class CleanupItem:
    project_id: str
    path: Path
    size: int


def cleanup_plan(store: ProjectStore, now: datetime, older_than: timedelta) -> list[CleanupItem]:
    """Intermediates of projects completed long ago; final video, cover and meta.json stay."""
    items = []
    for p in store.projects([ProjectState.completed]):
        if now - p.updated_at < older_than:
            continue
        paths = store.paths(p)
        for d in (paths.segments, paths.frames, paths.inputs):
            if d.is_dir():
                items.append(CleanupItem(p.id, d, folder_size(d)))
    return items


def cleanup(life: Lifecycle, locks: ProjectLocks, items: list[CleanupItem], now: datetime) -> dict[Path, str]:
    """Delete the intermediates, and mark each project so repairs know they went on purpose.
    Returns, for each folder left (wholly or partly) in place, why."""
    left: dict[Path, str] = {}
    for project_id in dict.fromkeys(i.project_id for i in items):
        mine = [item for item in items if item.project_id == project_id]
        with locks.hold(project_id) as got:
            if not got:  # a worker has it (a redo): its files are not ours to delete now
                left.update((item.path, "busy: a worker holds the project") for item in mine)
                continue
            try:
                life.commit(project_id, lambda q: lifecycle.cleaned_up(q, now))
            except (KeyError, Refused):
                left.update((item.path, "no longer a completed project") for item in mine)
                continue
            for item in mine:
                shutil.rmtree(item.path, ignore_errors=True)
                if item.path.exists():  # a file we may not delete: say so rather than count it freed
                    left[item.path] = "could not be removed completely (permissions?)"
    return left


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GB"
