"""--fix: repair each difference in the right direction.

DB -> meta.json, DB -> sheet (through the outbox), missing files -> the project goes back to the
stage that makes them, meta.json without a DB row -> the row is restored from it.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from storage import atomic
from storage.errors import SheetReelError
from storage.locks import ProjectLocks
from storage.models import Project
from sync import lifecycle
from sync.checks import Mismatch
from sync.lifecycle import Lifecycle, Refused

log = logging.getLogger(__name__)


def plan(mismatches: list[Mismatch]) -> list[tuple[str, str]]:
    """(project id, what --fix will do), one line per project and kind of repair."""
    steps: dict[str, list[str]] = defaultdict(list)
    for m in mismatches:
        steps[m.project_id].append(_describe(m))
    return [(pid, step) for pid, todo in steps.items() for step in dict.fromkeys(todo)]


def _describe(m: Mismatch) -> str:
    if m.side == "db":
        return f"restore the DB row from {m.other}"
    if m.side == "meta":
        return "rewrite meta.json from the DB"
    if m.side == "sheet" and m.field == "row":
        return "mark the project as having no row (the row was deleted in the sheet)"
    if m.side == "sheet":
        return "write the DB's values to the row"
    if m.field == "storyboard.json":
        return "rewrite storyboard.json from the DB"
    return f"send the project back to the stage that makes {m.field.split('.')[0]}"


def apply(life: Lifecycle, locks: ProjectLocks, mismatches: list[Mismatch]) -> list[str]:
    """Repair each project under its lock, as a worker would hold it: never beside a running step."""
    store = life.store
    done: list[str] = []
    by_project: dict[str, list[Mismatch]] = defaultdict(list)
    for m in mismatches:
        by_project[m.project_id].append(m)
    for pid, found in by_project.items():
        with locks.hold(pid) as got:
            if not got:
                done.append(f"{pid}: busy (a worker holds it); left alone, run the check again later")
                continue
            try:
                if any(m.side == "db" for m in found):
                    restored = store.rebuild_from_meta_file(next(m.other for m in found if m.side == "db"))
                    done.append(f"{pid}: restored from meta.json" if restored else f"{pid}: not restored (conflict)")
                    continue
                project = store.get(pid)
                if project is not None:
                    done += _repair(life, project, found)
            except (OSError, SheetReelError) as e:  # one project's unwritable folder leaves the others to repair
                log.warning("repair failed project=%s error=%s", pid, e)
                done.append(f"{pid}: not repaired: {e}")
    return done


def _repair(life: Lifecycle, p: Project, found: list[Mismatch]) -> list[str]:
    store, done = life.store, []
    paths = store.paths(p)
    if any(m.field == "storyboard.json" for m in found) and p.storyboard_json:
        atomic.write_text(paths.storyboard, p.storyboard_json)
        done.append(f"{p.id}: storyboard.json rewritten")
    transitions: list[lifecycle.Transition] = []
    missing = _missing_files(found)
    if missing == "segments":
        first_missing = min(int(m.field.split(".")[0].removeprefix("segment")) for m in found
                            if m.side == "files" and m.field.startswith("segment"))
        store.delete_segments_from(p.id, first_missing - 1)
    if missing is not None:
        transitions.append(lambda q: lifecycle.files_missing(q, segments=missing == "segments"))
        back = "storyboard_ready" if missing == "segments" else "segments_ready"
        done.append(f"{p.id}: back to {back}; the next `sheetreel once`/`run` regenerates the missing files")
    if any(m.side == "sheet" and m.field == "row" for m in found):
        transitions.append(lifecycle.row_deleted)
        done.append(f"{p.id}: marked as row deleted")
    elif any(m.side == "sheet" for m in found) or missing is not None:
        transitions.append(lifecycle.resync)
        done.append(f"{p.id}: row rewritten from the DB")
    if transitions:
        try:
            life.commit(p.id, lambda q: [t(q) for t in transitions])  # also rewrites meta.json
        except Refused as e:
            done.append(f"{p.id}: not repaired ({e})")
            return done
    else:
        store.write_meta(p.id)
    if any(m.side == "meta" for m in found):
        done.append(f"{p.id}: meta.json rewritten")
    return done


def _missing_files(found: list[Mismatch]) -> str | None:
    missing = [m.field for m in found if m.side == "files" and m.field != "storyboard.json"]
    if any(f.startswith("segment") for f in missing):
        return "segments"
    return "final video" if missing else None
