"""Project (DB) -> the system cells of its row. The single definition of what the sheet shows."""

from __future__ import annotations

from datetime import datetime

from storage.models import Project, ProjectState, Segment, SegmentSource
from storage.repo import SheetUpdate
from sync.columns import Columns

SOURCE_LABELS = {SegmentSource.ai: "AI", SegmentSource.stock: "实拍素材"}


def progress_text(project: Project) -> str:
    return f"{project.progress}% {project.progress_text}".strip()


def render(
    project: Project,
    segments: list[Segment],
    cols: Columns,
    now: datetime,
    attachments: dict[str, list[str]] | None = None,
) -> SheetUpdate:
    fields: dict = {
        cols.status: project.state.label,
        cols.progress: progress_text(project),
        cols.error: project.error or None,
        cols.project_id: project.id,
        cols.updated_at: int(now.timestamp() * 1000),
    }
    by_index = {s.index: s for s in segments}
    count = project.shot_count or 0
    for n in range(1, cols.max_segments + 1):
        seg = by_index.get(n - 1)
        if seg is not None and seg.url:
            fields[cols.segment(n)] = {"text": f"段{n} · {SOURCE_LABELS[seg.source]}", "link": seg.url}
        elif n <= max(count, len(by_index)):
            fields[cols.segment(n)] = None
    if project.state == ProjectState.completed and project.final_url:
        fields[cols.final_url] = {"text": "成片", "link": project.final_url}
    elif project.state in (ProjectState.pending, ProjectState.storyboarding):
        fields[cols.final_url] = None
    return SheetUpdate(fields=fields, attachments=attachments or {})


def storyboard_cell(cols: Columns, text: str) -> SheetUpdate:
    return SheetUpdate(fields={cols.storyboard: text})
