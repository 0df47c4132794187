"""Where DB, meta.json, files and the sheet disagree, one precise line per difference.

The DB is the reference; every check reports the DB's value next to the other side's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors import ffmpeg
from connectors.feishu.protocol import Record
from storage import meta
from storage.errors import MediaError
from storage.models import Project, ProjectState, Segment, SegmentState
from storage.projects import ProjectStore
from sync import sheet_view
from sync.columns import Columns
from sync.rows import text_of

DURATION_TOLERANCE = 0.15
# Fields of the project that meta.json must mirror exactly.
META_FIELDS = ("state", "last_good", "progress", "error", "final_url", "cover_url", "storyboard_json", "shot_count",
               "takes")


@dataclass
class Mismatch:
    project_id: str
    record_id: str
    side: str  # meta | files | sheet | db
    field: str
    db: Any
    other: Any

    def line(self) -> str:
        other = "meta.json" if self.side == "db" else self.side
        return f"{self.project_id} {self.record_id} {self.side}.{self.field}: db={_short(self.db)} {other}={_short(self.other)}"

    def as_dict(self) -> dict:
        return asdict(self)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# -- meta.json ---------------------------------------------------------------------------------


def check_meta(store: ProjectStore, p: Project, segments: list[Segment]) -> list[Mismatch]:
    path = store.paths(p).meta
    if not path.is_file():
        return [Mismatch(p.id, p.record_id, "meta", "file", str(path), None)]
    try:
        mirrored = meta.read(path)
    except ValueError as e:
        return [Mismatch(p.id, p.record_id, "meta", "file", "valid JSON", str(e).splitlines()[0])]
    out = []
    db_row = p.model_dump(mode="json")
    for name in META_FIELDS:
        # A meta.json written before a field existed holds its default, as the DB row does.
        kept = mirrored.project.get(name, Project.model_fields[name].default)
        if kept != db_row.get(name):
            out.append(Mismatch(p.id, p.record_id, "meta", name, db_row.get(name), kept))
    db_segs = [(s.index, s.state.value, s.url, s.clip) for s in segments]
    meta_segs = [(s.get("index"), s.get("state"), s.get("url"), s.get("clip")) for s in mirrored.segments]
    if db_segs != meta_segs:
        out.append(Mismatch(p.id, p.record_id, "meta", "segments", db_segs, meta_segs))
    return out


# -- files -------------------------------------------------------------------------------------


def check_files(store: ProjectStore, p: Project, segments: list[Segment]) -> list[Mismatch]:
    paths = store.paths(p)
    out = []
    for seg in segments:
        if seg.state != SegmentState.done or p.cleaned_at is not None:  # removed on purpose by cleanup
            continue
        for name, path in ((f"segment{seg.index + 1}", paths.segment(seg.index)),
                           (f"segment{seg.index + 1}.last_frame", paths.last_frame(seg.index))):
            out += _media(p, name, path, seg.duration if path.suffix == ".mp4" else None)
    if p.storyboard_json and not paths.storyboard.is_file():
        out.append(Mismatch(p.id, p.record_id, "files", "storyboard.json", "present", "missing"))
    if p.state == ProjectState.completed:
        out += _media(p, "final.mp4", paths.final_video, p.final_duration)
        out += _media(p, "cover.jpg", paths.cover, None)
    return out


def _media(p: Project, name: str, path: Path, duration: float | None) -> list[Mismatch]:
    if not path.is_file() or path.stat().st_size == 0:
        return [Mismatch(p.id, p.record_id, "files", name, "present", "missing")]
    if duration is None:
        return []
    try:
        actual = ffmpeg.probe(path).duration
    except MediaError as e:
        return [Mismatch(p.id, p.record_id, "files", name, "playable", str(e)[:80])]
    if abs(actual - duration) > DURATION_TOLERANCE:
        return [Mismatch(p.id, p.record_id, "files", f"{name}.duration", round(duration, 2), round(actual, 2))]
    return []


# -- the sheet ---------------------------------------------------------------------------------


def check_sheet(p: Project, segments: list[Segment], record: Record | None, cols: Columns, now: datetime) -> list[Mismatch]:
    if p.row_deleted:
        return []
    if record is None:
        return [Mismatch(p.id, p.record_id, "sheet", "row", "present", "deleted")]
    expected = sheet_view.render(p, segments, cols, now).fields
    out = []
    for column, want in expected.items():
        if column == cols.updated_at:
            continue
        have = _cell_value(record.fields.get(column))
        if column == cols.progress and have:
            have = sheet_view.without_estimate(have)
        want = _cell_value(want)
        if have != want:
            out.append(Mismatch(p.id, p.record_id, "sheet", column, want, have))
    if p.state == ProjectState.completed:
        for column in (cols.final_video, cols.cover):
            if not record.fields.get(column):
                out.append(Mismatch(p.id, p.record_id, "sheet", column, "attachment", None))
    return out


def _cell_value(cell: Any) -> Any:
    """Compare cells by what a user sees: text, or a link's target."""
    if cell is None or cell == "" or cell == []:
        return None
    if isinstance(cell, dict) and "link" in cell:
        return cell["link"]
    return text_of(cell)


def check_project(store: ProjectStore, p: Project, record: Record | None, cols: Columns, now: datetime,
                  with_sheet: bool = True) -> list[Mismatch]:
    segments = store.segments(p.id)
    found = check_meta(store, p, segments) + check_files(store, p, segments)
    if with_sheet:
        found += check_sheet(p, segments, record, cols, now)
    return found


def meta_without_db(store: ProjectStore) -> Iterable[Mismatch]:
    """Projects whose meta.json exists but whose DB row is gone."""
    known = {p.id for p in store.projects()}
    for path in meta.find_all(store.data_dir):
        try:
            project = meta.read(path).project
        except ValueError:
            continue
        if project.get("id") not in known:
            yield Mismatch(project.get("id", "?"), project.get("record_id", "?"), "db", "row", "missing", str(path))
