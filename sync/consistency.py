"""verify / compare / fix: the four sources of truth checked against each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.feishu.protocol import Record
from pipeline.publish import Publisher
from storage.projects import ProjectStore
from storage.stores import Stores
from sync import repair
from sync.checks import Mismatch, check_project, check_sheet, meta_without_db
from sync.settings import Settings
from sync.staging import pull_for_check


@dataclass
class Result:
    mismatches: list[Mismatch] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    unknown_rows: list[str] = field(default_factory=list)


def _records(settings: Settings) -> dict[str, Record]:
    from sync.app import make_table

    return {r.record_id: r for r in make_table(settings).search()}


def verify(store: ProjectStore, settings: Settings | None, project_id: str | None = None,
           pull: Publisher | None = None) -> Result:
    """With `pull` (several hosts), this host's folders are a cache: the store's copies are checked."""
    from sync.app import utc_clock

    records = _records(settings) if settings else {}
    cols = (settings.columns if settings else None) or _default_columns()
    result = Result()
    for p in store.projects():
        if project_id and p.id != project_id:
            continue
        result.checked.append(p.id)
        if pull is not None:
            pull_for_check(pull, store.paths(p), p, store.segments(p.id))
        result.mismatches += check_project(store, p, records.get(p.record_id), cols, utc_clock(), with_sheet=settings is not None)
    if not project_id:
        result.mismatches += list(meta_without_db(store))
    return result


def compare_sheet(store: ProjectStore, settings: Settings) -> Result:
    from sync.app import utc_clock

    records = _records(settings)
    result = Result()
    known = set()
    for p in store.projects():
        known.add(p.record_id)
        result.checked.append(p.id)
        result.mismatches += check_sheet(p, store.segments(p.id), records.get(p.record_id), settings.columns, utc_clock())
    result.unknown_rows = [rid for rid in records if rid not in known]
    return result


def fix(stores: Stores, settings: Settings, live: Settings | None, mismatches: list[Mismatch], dry_run: bool,
        drain_seconds: float = 30) -> list[str]:
    """Repair, then send the sheet writes through the table's one writer (its flush lock and
    refusal handling), as `run` would."""
    from sync.app import make_lifecycle, make_locks, make_table, make_writer

    if dry_run:
        return [f"{pid}: {step}" for pid, step in repair.plan(mismatches)]
    life = make_lifecycle(live or settings, stores)
    done = repair.apply(life, make_locks(settings), mismatches)
    if live is not None and stores.outbox.size():
        drained = make_writer(live, stores, make_table(live), life).drain(drain_seconds)
        left = stores.outbox.size()
        done.append("sheet updated" if drained else f"{left} sheet writes still pending; `sheetreel run` will send them")
    return done


def _default_columns():
    from sync.columns import Columns

    return Columns()
