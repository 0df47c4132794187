"""The chat message owed when a project completes or fails."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from storage.models import Notification, Project, ProjectState


def row_link(sheet_url: str, table_id: str, record_id: str) -> str:
    """The base URL as copied from the browser (it may already carry ?table=…&view=…) pointed at one row."""
    parts = urlsplit(sheet_url.strip())
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if query.get("table") != table_id:
        query.pop("view", None)  # a view belongs to the table it was copied from
    query |= {"table": table_id, "record": record_id}
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


def announcement(p: Project, sheet_url: str = "", cover: Path | None = None) -> Notification:
    lines = [f"**状态**：{p.state.label}"]
    if p.error:
        lines.append(f"**错误**：{p.error}")
    if p.final_url:
        lines.append(f"**成片**：[{p.final_url}]({p.final_url})")
    row = row_link(sheet_url, p.table_id, p.record_id) if sheet_url else ""
    lines.append(f"**行**：[{p.record_id}]({row})" if row else f"**行**：{p.record_id}")
    mark = "✅" if p.state == ProjectState.completed else "❌"
    title = f"{mark} {p.title or p.scene[:20] or p.id} {p.state.label}"
    image = str(cover) if cover is not None and p.state == ProjectState.completed and cover.is_file() else None
    return Notification(project_id=p.id, event=p.state.value, title=title, body="\n".join(lines), image=image,
                        link=row or None)
