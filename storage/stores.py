"""The repositories over one database, one per aggregate, opened together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from storage.notifications import NotificationStore
from storage.outbox import OutboxStore
from storage.projects import Dispatch, ProjectStore
from storage.sync_state import SyncState
from storage.timings import TimingStore


@dataclass(frozen=True)
class Stores:
    projects: ProjectStore
    outbox: OutboxStore
    notes: NotificationStore
    sync: SyncState
    timings: TimingStore

    @classmethod
    def open(cls, engine: Engine, data_dir: Path, dispatch: Dispatch | None = None,
             mirror: Callable[[Path], None] | None = None) -> Stores:
        return cls(ProjectStore(engine, data_dir, dispatch, mirror), OutboxStore(engine), NotificationStore(engine),
                   SyncState(engine), TimingStore(engine))
