"""verify / compare / fix: the four sources of truth checked against each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.feishu.protocol import Record
from pipeline.publish import Publisher
from storage.projects import ProjectStore
from storage.stores import Stores
from sync import repair
from sync.checks import Mismatch, check_project, check_sheet, meta_without_db
from sync.columns import Columns
from sync.connections import load_connections
from sync.settings import Settings
from sync.staging import pull_for_check


@dataclass
class Result:
    mismatches: list[Mismatch] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    unknown_rows: list[str] = field(default_factory=list)


@dataclass
class _Sheet:
    columns: Columns
    records: dict[str, Record]


def _sheets(settings: Settings) -> dict[str, _Sheet]:
    """Each served table's rows, by table id, read in that table's column names."""
    from sync.app import make_table

    return {c.table_id: _Sheet(c.settings.columns, {r.record_id: r for r in make_table(c.settings).search()})
            for c in load_connections(settings)}


def verify(store: ProjectStore, settings: Settings | None, project_id: str | None = None,
           pull: Publisher | None = None) -> Result:
    """With `pull` (several hosts), this host's folders are a cache: the store's copies are checked.
    A project of a table this service no longer serves is checked without its sheet."""
    from sync.app import utc_clock

    sheets = _sheets(settings) if settings else {}
    result = Result()
    for p in store.projects():
        if project_id and p.id != project_id:
            continue
        result.checked.append(p.id)
        if pull is not None:
            pull_for_check(pull, store.paths(p), p, store.segments(p.id))
        sheet = sheets.get(p.table_id)
        cols = sheet.columns if sheet else (settings.columns if settings else Columns())
        result.mismatches += check_project(store, p, sheet.records.get(p.record_id) if sheet else None, cols,
                                           utc_clock(), with_sheet=sheet is not None)
    if not project_id:
        result.mismatches += list(meta_without_db(store))
    return result


def compare_sheet(store: ProjectStore, settings: Settings) -> Result:
    from sync.app import utc_clock

    sheets = _sheets(settings)
    result = Result()
    known = set()
    for p in store.projects():
        sheet = sheets.get(p.table_id)
        if sheet is None:
            continue  # a table this service does not serve
        known.add(p.record_id)
        result.checked.append(p.id)
        result.mismatches += check_sheet(p, store.segments(p.id), sheet.records.get(p.record_id), sheet.columns,
                                         utc_clock())
    result.unknown_rows = [rid for sheet in sheets.values() for rid in sheet.records if rid not in known]
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
        drained = all([make_writer(c.settings, stores, make_table(c.settings), life).drain(drain_seconds)
                       for c in load_connections(live)])
        left = stores.outbox.size()
        done.append("sheet updated" if drained else f"{left} sheet writes still pending; `sheetreel run` will send them")
    return done
