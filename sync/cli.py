"""`sheetreel`: a thin CLI over the library. Errors are one line plus a hint, exit code 1."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from storage.errors import AuthFailed, NotFound, SheetReelError
from sync import cli_ops, redact
from sync.cli_support import CliError, emit, load_settings, require_db

EPILOG = """examples:
  sheetreel demo                       offline demo: emulated Bitable, 3 sample rows, real MP4s
  sheetreel demo --rows 5 --shots 3    more rows, fewer shots each
  sheetreel demo --template landscape-story --rows 1   narrated (set TTS_BASE_URL/TTS_API_KEY)
  sheetreel status --data-dir ./demo-data --json
  sheetreel once                       poll the real table once and finish what it found (cron)
  sheetreel run                        poll forever (the GPU host's long-running process)

settings come from the environment or a .env file: FEISHU_APP_ID, FEISHU_APP_SECRET,
FEISHU_APP_TOKEN, FEISHU_TABLE_ID, SHEETREEL_DATA_DIR, ... (see README)."""


PENDING_WRITES = 3  # exit code of `once` when results are done but not all of them reached the sheet


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sheetreel")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sheetreel",
        description="Turn Feishu Bitable rows into finished short videos, and write the results back into the rows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every step (key=value lines on stderr)")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run the whole loop offline against the built-in Bitable emulator",
                       description="Start the Bitable emulator on 127.0.0.1, create a table with the default "
                       "columns and sample rows, run the real poller through lark-oapi until every row is done, "
                       "and print the results. No credentials, GPU or network needed.")
    d.add_argument("--data-dir", type=Path, default=Path("./demo-data"), help="where the DB, videos and the emulated table live (default ./demo-data)")
    d.add_argument("--rows", type=int, default=3, help="how many sample rows to add (default 3)")
    d.add_argument("--shots", type=int, default=None, help="shots per video (default: the template's)")
    d.add_argument("--template", default="pet-eating",
                   help="pet-eating (default: 7 portrait shots) or landscape-story (narration, subtitles, logo, "
                   "fades, stock shots: with TTS_BASE_URL set it is narrated; stock clips are synthetic unless "
                   "STOCK_LIBRARY_DIR is set)")

    s = sub.add_parser("status", help="list projects from the database, or show one in detail",
                       description="List projects with state, shots, duration and the final video; with a project id, "
                       "show its segments (ai/stock, durations) and every step attempt with its error.")
    s.add_argument("project", nargs="?", help="a project id (or record id) for the detail view")
    s.add_argument("--data-dir", type=Path, default=None, help="data dir (default SHEETREEL_DATA_DIR or ./data)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    cli_ops.add_filters(s)

    for name, text in (("once", "poll the table once, run what it found, write results back, exit"),
                       ("run", "poll the table forever; stop with Ctrl-C or SIGTERM")):
        c = sub.add_parser(name, help=text, description=text + ". Settings come from the environment or .env.")
        c.add_argument("--data-dir", type=Path, default=None, help="data dir (default SHEETREEL_DATA_DIR or ./data)")
        if name == "once":
            c.add_argument("--wait-writes", type=float, default=600, metavar="SECONDS",
                           help="how long to keep sending sheet writes the table refuses for now (default 600); "
                                f"exit code {PENDING_WRITES} if some are still pending")
    COMMANDS.update(cli_ops.register(sub))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    redact.install()
    try:
        return COMMANDS[args.command](args)
    except CliError as e:
        return _fail(str(e), e.hint)
    except AuthFailed as e:
        return _fail(str(e), "check FEISHU_APP_ID / FEISHU_APP_SECRET and that the app is added to the base")
    except NotFound as e:
        return _fail(str(e), "check FEISHU_APP_TOKEN / FEISHU_TABLE_ID")
    except SheetReelError as e:
        return _fail(str(e), "run with -v for the full log")
    except ValidationError as e:
        return _fail(f"invalid setting: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}", "see the configuration table in README.md")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sheetreel status --json | head`: the reader has what it wanted. Point stdout at devnull
        # so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _fail(message: str, hint: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    if hint:
        print(f"Hint: {hint}", file=sys.stderr)
    return 1


def _settings(args):
    return load_settings(getattr(args, "data_dir", None))


def cmd_demo(args) -> int:
    from sync.demo import run_demo
    from sync.report import format_table

    if not 1 <= args.rows <= 50:
        raise CliError("--rows must be between 1 and 50")
    if args.shots is not None and not 1 <= args.shots <= 20:
        raise CliError("--shots must be between 1 and 20")
    rows = run_demo(args.data_dir, rows=args.rows, shots=args.shots, template=args.template)
    print()
    print(format_table(rows))
    print(f"\nnext: sheetreel status --data-dir {args.data_dir}")
    return 0 if all(r["state"] == "completed" for r in rows) else 1


def cmd_status(args) -> int:
    from sync import ops
    from sync.app import make_stores
    from sync.report import format_detail, format_table, project_detail, project_rows

    settings = _settings(args)
    require_db(settings)
    store = make_stores(settings).projects
    if args.project:
        detail = project_detail(store, args.project)
        if detail is None:
            raise CliError(f"no project or record {args.project}", "run `sheetreel status` to list them")
        emit(detail, args.json, format_detail(detail))
        return 0
    chosen = {p.id for p in ops.select(store, args.state, args.date, args.template, args.record)}
    rows = [r for r in project_rows(store) if r["project_id"] in chosen]
    emit(rows, args.json, format_table(rows))
    return 0


def _live_app(args):
    from sync.app import App, make_table

    settings = _settings(args)
    missing = settings.missing_feishu()
    if missing:
        raise CliError(f"missing settings: {', '.join(missing)}", "set them in the environment or .env (see README), or try `sheetreel demo`")
    return App(settings, make_table(settings))


def cmd_once(args) -> int:
    app = _live_app(args)
    if app.once(write_timeout=args.wait_writes):
        return 0
    print(f"Warning: {app.stores.outbox.size()} sheet writes are still pending (the table did not accept them)",
          file=sys.stderr)
    print("Hint: they are kept and sent by the next `sheetreel once` or `run`; `sheetreel health` shows why",
          file=sys.stderr)
    return PENDING_WRITES


def cmd_run(args) -> int:
    app = _live_app(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"polling every {app.settings.poll_interval_seconds:g}s; Ctrl-C to stop", file=sys.stderr)
    app.run(stop)
    return 0


COMMANDS = {"demo": cmd_demo, "status": cmd_status, "once": cmd_once, "run": cmd_run}

if __name__ == "__main__":
    sys.exit(main())
