"""Project listings for `status` and the demo's closing table."""

from __future__ import annotations

from storage.repo import ProjectStore


def project_rows(store: ProjectStore) -> list[dict]:
    out = []
    for p in store.projects():
        final = store.paths(p).final_video if p.template else None
        out.append(
            {
                "project_id": p.id,
                "record_id": p.record_id,
                "state": p.state.value,
                "label": p.state.label,
                "progress": p.progress,
                "shots": p.shot_count,
                "duration": round(p.final_duration, 2) if p.final_duration else None,
                "final_path": str(final) if final and final.is_file() else None,
                "final_url": p.final_url,
                "error": p.error or None,
            }
        )
    return out


def format_table(rows: list[dict]) -> str:
    headers = ["row", "state", "shots", "duration", "final video", "url / error"]
    body = [
        [
            r["record_id"],
            r["state"],
            str(r["shots"] or "-"),
            f"{r['duration']:.1f}s" if r["duration"] else "-",
            r["final_path"] or "-",
            r["final_url"] or (r["error"] or "-"),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
