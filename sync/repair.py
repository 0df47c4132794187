"""--fix: repair each difference in the right direction.

DB -> meta.json, DB -> sheet (through the outbox), missing files -> the project goes back to the
stage that makes them, meta.json without a DB row -> the row is restored from it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from storage import atomic
from storage.models import Project, ProjectState
from storage.repo import ProjectStore
from sync import sheet_view
from sync.checks import Mismatch
from sync.columns import Columns


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


def apply(store: ProjectStore, mismatches: list[Mismatch], cols: Columns, clock: Callable[[], datetime]) -> list[str]:
    done: list[str] = []
    by_project: dict[str, list[Mismatch]] = defaultdict(list)
    for m in mismatches:
        by_project[m.project_id].append(m)
    for pid, found in by_project.items():
        if any(m.side == "db" for m in found):
            restored = store.rebuild_from_meta_file(next(m.other for m in found if m.side == "db"))
            done.append(f"{pid}: restored from meta.json" if restored else f"{pid}: not restored (conflict)")
            continue
        project = store.get(pid)
        if project is None:
            continue
        done += _repair(store, project, found, cols, clock)
    return done


def _repair(store: ProjectStore, p: Project, found: list[Mismatch], cols: Columns, clock) -> list[str]:
    done = []
    paths = store.paths(p)
    if any(m.field == "storyboard.json" for m in found) and p.storyboard_json:
        atomic.write_text(paths.storyboard, p.storyboard_json)
        done.append(f"{p.id}: storyboard.json rewritten")
    back_to = _stage_for_missing_files(p, found)
    if back_to is not None:
        p.state, p.last_good, p.progress_text, p.advance_once = back_to, back_to, "文件缺失，重新生成", True
        if back_to == ProjectState.storyboard_ready:
            first_missing = min(int(m.field.split(".")[0].removeprefix("segment")) for m in found
                                if m.side == "files" and m.field.startswith("segment"))
            store.delete_segments_from(p.id, first_missing - 1)
        done.append(f"{p.id}: back to {back_to.value}; the next `sheetreel once`/`run` regenerates the missing files")
    if any(m.side == "sheet" and m.field == "row" for m in found):
        p.row_deleted = True
        done.append(f"{p.id}: marked as row deleted")
    sheet_fix = any(m.side == "sheet" and m.field != "row" for m in found) or back_to is not None
    sheet = None
    if sheet_fix and not p.row_deleted:
        files = {cols.final_video: [str(paths.final_video)], cols.cover: [str(paths.cover)]} if p.state == ProjectState.completed else {}
        sheet = sheet_view.render(p, store.segments(p.id), cols, clock(), files)
        done.append(f"{p.id}: row rewritten from the DB")
    # save() also rewrites meta.json from the DB, which is the meta repair.
    store.save(p, sheet=sheet)
    if any(m.side == "meta" for m in found):
        done.append(f"{p.id}: meta.json rewritten")
    return done


def _stage_for_missing_files(p: Project, found: list[Mismatch]) -> ProjectState | None:
    missing = [m.field for m in found if m.side == "files" and m.field != "storyboard.json"]
    if any(f.startswith("segment") for f in missing):
        return ProjectState.storyboard_ready
    if missing:
        return ProjectState.segments_ready
    return None


