"""The operator's commands: init, inspect-db, verify-consistency, compare-feishu-and-db,
migrate-local-to-db, reset-stuck, cleanup, health."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path, PurePosixPath

from storage.errors import SheetReelError
from sync.cli_support import DIFFERENCES, CliError, emit, load_settings, need_sheet, require_db, sheet_settings


def register(sub: argparse._SubParsersAction) -> dict:
    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description)
        p.add_argument("--data-dir", type=Path, default=None, help="data dir (default SHEETREEL_DATA_DIR or ./data)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("init", "check settings, the connection and the table's columns",
            "Check the credentials and the table, and list configured columns that are missing or of the wrong type.")
    p.add_argument("--create", action="store_true", help="add the missing columns with the right types and options")

    p = add("inspect-db", "projects by state, stuck work, last errors, outbox backlog",
            "Summarise the database: projects by state and template, stuck work, the last errors, the outbox backlog.")
    add_filters(p)
    p.add_argument("--stuck-minutes", type=non_negative, default=30, help="running this long without progress counts as stuck (default 30)")

    p = add("verify-consistency", "compare DB, meta.json, files and the sheet; --fix repairs",
            "Compare every project's DB row with its meta.json, its files (sizes, ffprobe durations) and its sheet row. "
            "Prints one line per difference; exit code 0 only when everything agrees.")
    p.add_argument("--fix", action="store_true", help="repair: DB -> meta.json, DB -> sheet, missing files -> back to the stage that makes them")
    p.add_argument("--dry-run", action="store_true", help="with --fix: show the plan, change nothing")
    p.add_argument("--project", default=None, help="only this project id")
    p.add_argument("--no-sheet", action="store_true", help="skip the sheet (DB, meta.json and files only)")

    add("compare-feishu-and-db", "the sheet-vs-DB part alone, for the whole table",
        "Compare the sheet with the DB for every row; also list rows the DB has never seen and projects whose row was deleted.")

    p = add("migrate-local-to-db", "rebuild the DB from meta.json files (idempotent)",
            "Insert projects found in meta.json files; update the DB where meta.json is newer; report conflicts where the DB is newer.")
    p.add_argument("--subtree", default="", type=_subtree,
                   help="only projects under projects/<subtree>, e.g. 2026-11-22 or 2026-11-22/pet-eating")

    p = add("reset-stuck", "put running work with no live worker back to its last good stage",
            "Running work whose lock nobody holds, or that has shown no progress for --minutes, goes back to its last good stage.")
    p.add_argument("--minutes", type=non_negative, default=30, help="no progress for this long counts as stuck (default 30)")
    p.add_argument("--dry-run", action="store_true", help="show what would be reset")

    p = add("cleanup", "delete intermediates of projects completed more than N days ago",
            "Delete segments, frames and inputs of projects completed more than --days ago; keeps final video, cover, meta.json.")
    p.add_argument("--days", type=non_negative, required=True, help="age in days")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted and the space it frees")

    p = add("health", "exit 0 when DB, disk, ffmpeg, the sheet, its writes and the configured backends are fine",
            "Check the DB is writable, the data dir has space, ffmpeg and a Chinese font are present, the sheet "
            "answers, accepts the writes and the outbox is not backing up; and, where configured, the diffusers "
            "model folder and CUDA, the LLM and TTS endpoints (GET /models with the key) and the OSS endpoint.")
    p.add_argument("--min-free-gb", type=non_negative, default=2.0, help="least free disk space (default 2)")
    p.add_argument("--max-backlog", type=int, default=500, help="most pending sheet writes (default 500)")
    return {"init": cmd_init, "inspect-db": cmd_inspect, "verify-consistency": cmd_verify,
            "compare-feishu-and-db": cmd_compare, "migrate-local-to-db": cmd_migrate, "reset-stuck": cmd_reset,
            "cleanup": cmd_cleanup, "health": cmd_health}


def _state(value: str) -> str:
    from storage.models import ProjectState

    names = {s.value for s in ProjectState} | {s.label for s in ProjectState}
    if value not in names:
        raise argparse.ArgumentTypeError(f"unknown state {value!r}: one of {', '.join(s.value for s in ProjectState)} "
                                         f"(or its label, e.g. 失败)")
    return value


def _date(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {value!r} (YYYY-MM-DD, e.g. 2026-12-03)") from None


def _subtree(value: str) -> str:
    """A folder under projects/, never one beside or above it (another data dir's projects)."""
    parts = PurePosixPath(value).parts
    if value.startswith("/") or ".." in parts or "\\" in value:
        raise argparse.ArgumentTypeError(f"not a folder under projects/: {value!r} (e.g. 2026-11-22/pet-eating)")
    return value


MOST = 1e6  # minutes or days: years either way, and within what a timedelta holds


def non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= MOST:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"not a number from 0 to {MOST:.0f}: {value!r}")
    return number


def add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", default=None, type=_state, help="e.g. failed or 失败")
    p.add_argument("--date", default=None, type=_date, help="publish date, YYYY-MM-DD")
    p.add_argument("--template", default=None, help="template id")
    p.add_argument("--record", default=None, help="Bitable record id")


def _stores(args):
    from sync.app import make_stores

    settings = load_settings(args.data_dir)
    require_db(settings)
    return settings, make_stores(settings)


def _now():
    from sync.app import utc_clock

    return utc_clock()


def cmd_init(args) -> int:
    from sync.connections import load_connections

    with sheet_settings(load_settings(args.data_dir)) as live:
        connections = load_connections(need_sheet(live))
        reports = [_init_table(c.settings, args.create) for c in connections]
    if len(connections) == 1:
        payload, text = reports[0]
        emit(payload, args.json, text)
        return 0 if payload["ok"] else 1
    ok = all(payload["ok"] for payload, _ in reports)
    tables = [{"name": c.name, **payload} for c, (payload, _) in zip(connections, reports, strict=True)]
    text = "\n\n".join(f"[{c.name}]\n{t}" for c, (_, t) in zip(connections, reports, strict=True))
    emit({"ok": ok, "tables": tables}, args.json, text)
    return 0 if ok else 1


def _init_table(settings, create: bool) -> tuple[dict, str]:
    from sync.app import make_table, template_library
    from sync.backends import offered_templates
    from sync.schema import TYPE_NAMES, check_columns, create_missing, sync_options

    table = make_table(settings)
    offered, held_back = offered_templates(settings, template_library(settings))
    report = check_columns(table, settings.columns.schema(offered))
    created = create_missing(table, report) if create else []
    options = sync_options(table, settings.columns.template, offered, apply=create)
    missing = [name for name, _, _ in report.missing if name not in created]
    wrong = [f"{n}: is {TYPE_NAMES.get(a, a)}, should be {TYPE_NAMES.get(e, e)}" for n, e, a in report.wrong_type]
    col = settings.columns.template
    lines = [f"connected: table {settings.feishu_table_id} in base {settings.feishu_app_token}"]
    lines += [f"created column {n}" for n in created]
    lines += [f"missing column {n} ({TYPE_NAMES.get(t, t)})" for n, t, _ in report.missing if n in missing]
    lines += [f"wrong type: {w}" for w in wrong]
    lines.append(f"templates offered in {col}: {', '.join(offered) or 'none'}")
    lines += [f"template {t} not offered: {'；'.join(why)}" for t, why in held_back.items()]
    if options is not None and col not in created:
        added, removed = ("added", "removed") if create else ("to add", "to remove")
        lines += [f"{col} option {o}: {added}" for o in options.add]
        lines += [f"{col} option {o}: {removed} (no row picks it)" for o in options.remove]
        lines += [f"{col} option {o}: kept although not offered, {n} row(s) pick it" for o, n in options.kept.items()]
        if options.changes and not create:
            lines.append(f"hint: run `sheetreel init --create` to bring the {col} options up to date")
    if missing and not create:
        lines.append("hint: run `sheetreel init --create` to add the missing columns")
    ok = not missing and not wrong
    lines.append("columns OK" if ok else "columns need attention")
    payload = {"created": created, "missing": missing, "wrong_type": wrong, "ok": ok, "offered": offered,
               "not_offered": held_back,
               "options": None if options is None else {"added": options.add, "removed": options.remove,
                                                        "kept": options.kept, "applied": create}}
    return payload, "\n".join(lines)


def cmd_inspect(args) -> int:
    from sync import ops
    from sync.app import make_locks

    settings, stores = _stores(args)
    store = stores.projects
    projects = ops.select(store, args.state, args.date, args.template, args.record)
    view = ops.overview(store, stores.outbox, make_locks(settings), _now(), timedelta(minutes=args.stuck_minutes), projects)
    lines = [f"projects: {len(projects)}  " + "  ".join(f"{k}={v}" for k, v in sorted(view.by_state.items())),
             "templates: " + "  ".join(f"{k}={v}" for k, v in sorted(view.by_template.items())),
             f"stuck: {', '.join(view.stuck) or 'none'}",
             f"outbox backlog: {view.outbox_backlog}" + (f" (oldest {view.outbox_oldest_seconds:.0f}s)" if view.outbox_oldest_seconds else "")]
    lines += ["last errors:"] + [f"  {e['project']} {e['record']} {e['state']}: {e['error']}" for e in view.recent_errors] if view.recent_errors else ["last errors: none"]
    emit(asdict(view), args.json, "\n".join(lines))
    return 0


def cmd_verify(args) -> int:
    from sync import consistency

    settings, stores = _stores(args)
    with sheet_settings(settings) as live:
        if live is None and not args.no_sheet:
            raise CliError("no sheet configured, so the sheet cannot be compared", "use --no-sheet, or set the FEISHU_* settings")
        from sync.app import make_publisher, shares_files

        pull = make_publisher(settings) if shares_files(settings) else None
        result = consistency.verify(stores.projects, None if args.no_sheet else live, args.project, pull)
        lines = [m.line() for m in result.mismatches]
        fixes = []
        if args.fix and result.mismatches:
            fixes = consistency.fix(stores, settings, live, result.mismatches, dry_run=args.dry_run)
            lines += [("plan: " if args.dry_run else "fixed: ") + f for f in fixes]
    lines.append(f"{len(result.checked)} projects checked, {len(result.mismatches)} differences")
    emit({"mismatches": [m.as_dict() for m in result.mismatches], "fixes": fixes, "checked": len(result.checked)},
         args.json, "\n".join(lines))
    return 0 if not result.mismatches else DIFFERENCES


def cmd_compare(args) -> int:
    from sync import consistency

    settings, stores = _stores(args)
    with sheet_settings(settings) as live:
        result = consistency.compare_sheet(stores.projects, need_sheet(live))
    lines = [m.line() for m in result.mismatches]
    lines += [f"row never seen by the DB: {rid}" for rid in result.unknown_rows]
    lines.append(f"{len(result.checked)} projects compared, {len(result.mismatches)} differences, {len(result.unknown_rows)} unknown rows")
    emit({"mismatches": [m.as_dict() for m in result.mismatches], "unknown_rows": result.unknown_rows}, args.json, "\n".join(lines))
    return 0 if not result.mismatches and not result.unknown_rows else DIFFERENCES


def cmd_migrate(args) -> int:
    from storage.rebuild import migrate
    from sync.app import make_locks, make_stores

    settings = load_settings(args.data_dir)
    if not (settings.data_dir / "projects").is_dir():
        raise CliError(f"no project folders in {settings.data_dir} (nothing to rebuild the database from)",
                       "pass --data-dir pointing at the data dir that holds projects/<date>/<template>/<project>/meta.json")
    report = migrate(make_stores(settings).projects, make_locks(settings), args.subtree)
    lines = [f"restored {len(report.restored)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}, "
             f"conflicts {len(report.conflicts)}"] + [f"conflict: {c}" for c in report.conflicts]
    emit(asdict(report), args.json, "\n".join(lines))
    return 0 if not report.conflicts else 1


def cmd_reset(args) -> int:
    from sync import ops
    from sync.app import make_lifecycle, make_locks

    settings, stores = _stores(args)
    done = ops.reset_stuck(make_lifecycle(settings, stores), make_locks(settings), _now(), timedelta(minutes=args.minutes),
                           args.dry_run)
    emit({"reset": done, "dry_run": args.dry_run}, args.json, "\n".join(done) or "nothing stuck")
    return 0


def cmd_cleanup(args) -> int:
    from sync import ops
    from sync.app import make_lifecycle, make_locks

    settings, stores = _stores(args)
    items = ops.cleanup_plan(stores.projects, _now(), timedelta(days=args.days))
    left: dict[Path, str] = {}
    if not args.dry_run:
        left = ops.cleanup(make_lifecycle(settings, stores), make_locks(settings), items, _now())
    # What is gone, not what was planned: a folder left in place frees only what went from it.
    freed = {i.path: i.size if args.dry_run else i.size - ops.folder_size(i.path) for i in items}
    total = sum(freed.values())
    verb = "would free" if args.dry_run else "freed"
    lines = [f"{i.project_id} {i.path} {ops.human(freed[i.path])}" + (f" (left: {left[i.path]})" if i.path in left else "")
             for i in items]
    lines.append(f"{len({i.project_id for i in items})} projects, {verb} {ops.human(total)}"
                 + (f"; {len(left)} folders left in place" if left else ""))
    emit({"items": [{"project": i.project_id, "path": str(i.path), "bytes": freed[i.path], "left": left.get(i.path)}
                    for i in items], "bytes": total, "dry_run": args.dry_run}, args.json, "\n".join(lines))
    return 1 if any(why.startswith("could not") for why in left.values()) else 0


def cmd_health(args) -> int:
    from sync import health
    from sync.app import make_stores

    settings = load_settings(args.data_dir)
    checks: dict[str, tuple[bool, str]] = {}
    shots = 1
    try:
        require_db(settings)  # a health check must not create the database it checks
        stores = make_stores(settings)
        shots = max((p.shot_count or 1 for p in stores.projects.projects()), default=1)
        stores.sync.set_watermark("__health__", 0)
        backlog = stores.outbox.size()
        checks["db"] = (True, "writable")
        checks["outbox"] = (backlog <= args.max_backlog, f"{backlog} pending writes")
        refused, why = stores.outbox.refused()
        checks["sheet writes"] = (not refused, f"{refused} refused by the table, latest: {why[:160]}" if refused
                                  else "none refused")
    except Exception as e:  # any failure here is exactly what health reports
        checks["db"] = (False, f"{type(e).__name__}: {e}")
    free = shutil.disk_usage(settings.data_dir if settings.data_dir.exists() else Path(".")).free / 1024**3
    checks["disk"] = (free >= args.min_free_gb, f"{free:.1f} GB free")
    checks["ffmpeg"] = (shutil.which("ffmpeg") is not None, shutil.which("ffmpeg") or "not on PATH")
    try:
        with sheet_settings(settings) as live:
            checks.update(_sheet_checks(live, shots))
    except CliError as e:  # the demo's emulated sheet is damaged: that is this check's answer
        checks["sheet"] = (False, str(e))
    checks.update(health.host_checks(settings))
    ok = all(good for good, _ in checks.values())
    emit({"ok": ok, "checks": {k: {"ok": g, "detail": d} for k, (g, d) in checks.items()}}, args.json,
         "\n".join(f"{'ok  ' if g else 'FAIL'} {k}: {d}" for k, (g, d) in checks.items()))
    return 0 if ok else 1


def _sheet_checks(live, shots: int) -> dict[str, tuple[bool, str]]:
    """Whether each configured table answers and has the columns SheetReel uses."""
    from connectors.feishu.protocol import BitableClient
    from sync import health
    from sync.app import make_record_events, make_table
    from sync.connections import load_connections

    found: dict[str, tuple[bool, str]] = {}
    if live is None:
        found["sheet"] = (False, "not configured")
    else:
        try:
            connections = load_connections(live)
        except SheetReelError as e:
            connections, found["sheet"] = [], (False, str(e))
        for c in connections:
            named = f" {c.name}" if len(connections) > 1 else ""
            try:
                table: BitableClient = make_table(c.settings)
                names = {f.name for f in table.list_fields()}
                found[f"sheet{named}"] = (True, f"{len(names)} columns")
                # A missing column silently loses that part of every row's write.
                missing = [n for n in c.settings.columns.needed(shots) if n not in names]
                found[f"columns{named}"] = (not missing, f"missing {', '.join(missing)} (sheetreel init adds them)"
                                             if missing else "every column SheetReel uses is there")
            except SheetReelError as e:
                found[f"sheet{named}"] = (False, str(e))
        if connections and (events := make_record_events(
                live, make_table(connections[0].settings), [c.settings.feishu_app_token for c in connections])):
            found["events"] = health.record_events(events, len(connections))
    return found
