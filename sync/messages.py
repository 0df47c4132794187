"""The chat message owed when a project completes or fails."""

from __future__ import annotations

from storage.models import Notification, Project, ProjectState


def announcement(p: Project, sheet_url: str = "") -> Notification:
    lines = [f"**状态**：{p.state.label}"]
    if p.error:
        lines.append(f"**错误**：{p.error}")
    if p.final_url:
        lines.append(f"**成片**：[{p.final_url}]({p.final_url})")
    row = f"{sheet_url}?table={p.table_id}&record={p.record_id}" if sheet_url else ""
    lines.append(f"**行**：[{p.record_id}]({row})" if row else f"**行**：{p.record_id}")
    mark = "✅" if p.state == ProjectState.completed else "❌"
    title = f"{mark} {p.title or p.scene[:20] or p.id} {p.state.label}"
    return Notification(project_id=p.id, event=p.state.value, title=title, body="\n".join(lines))
