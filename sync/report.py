"""Project listings for `status` and the demo's closing table."""

from __future__ import annotations

from connectors.video.protocol import RemoteTask
from pipeline.text_width import width
from storage.projects import ProjectStore
from sync.sheet_view import Estimate, progress_text


def project_rows(store: ProjectStore, estimate: Estimate | None = None, tables: dict[str, str] | None = None
                 ) -> list[dict]:
    """`tables`: the name of each served table by id, when there are several (SHEETREEL_CONNECTIONS)."""
    out = []
    for p in store.projects():
        final = store.paths(p).final_video if p.template else None
        left = estimate(p, store.segments(p.id)) if estimate is not None else None
        out.append(
            {
                "project_id": p.id,
                **({"table": tables.get(p.table_id, p.table_id)} if tables is not None else {}),
                "record_id": p.record_id,
                "title": p.title,
                "state": p.state.value,
                "label": p.state.label,
                "progress": p.progress,
                "progress_text": progress_text(p, left),
                "left_seconds": round(left, 1) if left is not None else None,
                "shots": p.shot_count,
                "duration": round(p.final_duration, 2) if p.final_duration else None,
                "final_path": str(final) if final and final.is_file() else None,
                "final_url": p.final_url,
                "error": p.error or None,
                "cost": p.cost,
            }
        )
    return out


def _running(row: dict) -> str:
    if row["state"] in ("completed", "failed", "cancelled"):
        return "-"
    return row.get("progress_text") or "-"


def format_table(rows: list[dict]) -> str:
    """The rows as the sheet names them: title, 状态 label, and one place to find each video
    (its link, else the local file), or the error. Padded by display width: a CJK character is two
    columns, so Chinese titles keep the columns aligned."""
    costs = any(r["cost"] is not None for r in rows)  # a column only where a price table is set
    tables = any("table" in r for r in rows)  # a column only where several tables are served
    headers = [*(["表"] if tables else []), "行", "状态", "镜头", "时长", *(["费用"] if costs else []), "成片 / 错误"]
    body = [
        [
            *([r.get("table", "")] if tables else []),
            r.get("title") or r["record_id"],
            r["label"],
            str(r["shots"] or "-"),
            f"{r['duration']:.1f}s" if r["duration"] else "-",
            *([f"{r['cost']:g}" if r["cost"] is not None else "-"] if costs else []),
            r["error"] if r["error"] and not r["final_url"] else (r["final_url"] or r["final_path"] or _running(r)),
        ]
        for r in rows
    ]
    widths = [max(width(h), *(width(b[i]) for b in body)) if body else width(h) for i, h in enumerate(headers)]
    return "\n".join("  ".join(pad(c, w) for c, w in zip(line, widths)).rstrip() for line in [headers, *body])


def pad(text: str, columns: int) -> str:
    return text + " " * (columns - width(text))


def project_detail(store: ProjectStore, key: str) -> dict | None:
    project = store.get(key) or next((p for p in store.projects() if p.record_id == key), None)
    if project is None:
        return None
    return {
        "project": project.model_dump(mode="json", exclude={"storyboard_json"}),
        "folder": str(store.paths(project).root),
        "segments": [
            {"index": s.index + 1, "state": s.state.value, "source": s.source.value, "backend": s.backend,
             "duration": s.duration, "url": s.url, "clip": s.clip, "task": _task_id(s.task), "cost": s.cost}
            for s in store.segments(project.id)
        ],
        "steps": [
            {"step": r.step, "attempt": r.attempt, "host": r.host, "started": r.started_at.isoformat(),
             "ended": r.ended_at.isoformat() if r.ended_at else None, "ok": r.ok, "error": r.error}
            for r in store.steps(project.id)
        ],
    }


def format_detail(d: dict) -> str:
    p = d["project"]
    lines = [
        f"project {p['id']}  row {p['record_id']}  {p['state']} ({p['progress']}% {p['progress_text']})",
        f"template {p['template'] or '-'}  shots {p['shot_count'] or '-'}  date {p['publish_date'] or '-'}  mode {p['mode']}",
        f"folder {d['folder']}",
    ]
    if p["error"]:
        lines.append(f"error: {p['error']}")
    if p["final_url"]:
        lines.append(f"final: {p['final_url']} ({p['final_duration']:.1f}s)")
    if p["cost"] is not None:
        lines.append(f"cost: {p['cost']:g}")
    lines.append("segments:" if d["segments"] else "segments: none yet")
    lines += [f"  {s['index']:>2} {s['state']:<10} {s['source']:<5} {s['backend']:<9} "
              f"{(str(round(s['duration'], 2)) + 's') if s['duration'] else '-':>6}"
              + (f"  {s['clip']}" if s["clip"] else "") + (f"  task {s['task']}" if s["task"] else "")
              + (f"  cost {s['cost']:g}" if s["cost"] is not None else "") for s in d["segments"]]
    lines.append("steps:")
    lines += [f"  {r['step']:<10} #{r['attempt']} {r['started'][:19]} {'ok' if r['ok'] else ('running' if r['ok'] is None else 'failed')}"
              + (f"  {r['error']}" if r["error"] else "") for r in d["steps"]]
    return "\n".join(lines)


def _task_id(raw: str | None) -> str | None:
    """The provider task of a segment, as the provider's console shows it ("pending" before its answer)."""
    if not raw:
        return None
    try:
        task = RemoteTask.model_validate_json(raw)
    except ValueError:
        return "unreadable"
    return f"{task.provider}:{task.id or 'pending'}"
