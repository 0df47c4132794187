"""verify / compare / fix: the four sources of truth checked against each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.feishu.protocol import Record
from storage.repo import ProjectStore
from sync import repair
from sync.checks import Mismatch, check_project, check_sheet, meta_without_db
from sync.settings import Settings


@dataclass
class Result:
    mismatches: list[Mismatch] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    unknown_rows: list[str] = field(default_factory=list)


def _records(settings: Settings) -> dict[str, Record]:
    from sync.app import make_table

    return {r.record_id: r for r in make_table(settings).search()}


def verify(store: ProjectStore, settings: Settings | None, project_id: str | None = None) -> Result:
    from sync.app import utc_clock

    records = _records(settings) if settings else {}
    cols = (settings.columns if settings else None) or _default_columns()
    result = Result()
    for p in store.projects():
        if project_id and p.id != project_id:
            continue
        result.checked.append(p.id)
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


def fix(store: ProjectStore, settings: Settings | None, mismatches: list[Mismatch], dry_run: bool) -> list[str]:
    from sync.app import make_table, utc_clock
    from sync.outbox import OutboxFlusher

    if dry_run:
        return [f"{pid}: {step}" for pid, step in repair.plan(mismatches)]
    cols = settings.columns if settings else _default_columns()
    done = repair.apply(store, mismatches, cols, utc_clock)
    if settings is not None and store.outbox_size():
        flusher = OutboxFlusher(store, make_table(settings), utc_clock)
        for _ in range(20):
            flusher.flush()
            if not store.outbox_size():
                break
        left = store.outbox_size()
        done.append("sheet updated" if not left else f"{left} sheet writes still pending; `sheetreel run` will send them")
    return done


def _default_columns():
    from sync.columns import Columns

    return Columns()
