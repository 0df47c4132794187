"""`sheetreel`: a thin CLI over the library. Errors are one line plus a hint, exit code 1."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from storage.errors import AuthFailed, DatabaseUnusable, NotFound, SheetReelError
from sync import cli_ops, logs
from sync.cli_support import PENDING_WRITES, CliError, emit, load_settings, require_db
from sync.metrics import serving

EPILOG = """examples:
  sheetreel demo                       offline demo: emulated Bitable, 3 sample rows, real MP4s
  sheetreel demo --rows 5 --shots 3    more rows, fewer shots each
  sheetreel demo --template landscape-story --rows 1   narrated (set TTS_BASE_URL/TTS_API_KEY)
  sheetreel status --data-dir ./demo-data --json
  sheetreel once                       poll the real table once and finish what it found (cron)
  sheetreel run                        poll forever (the GPU host's long-running process)
  sheetreel gateway                    several hosts (PostgreSQL): the one process that talks to Feishu
  sheetreel worker --queues gpu:wan    several hosts: run the stages routed to these queues

settings come from the environment or a .env file: FEISHU_APP_ID, FEISHU_APP_SECRET,
FEISHU_APP_TOKEN, FEISHU_TABLE_ID, SHEETREEL_DATA_DIR, ... (see README).

exit codes: 0 ok, 1 error, 2 bad usage, 3 differences found (verify-consistency,
compare-feishu-and-db) or sheet writes still pending (once), 130 quit by a second Ctrl-C."""


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
    _log_options(p, default=False)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run the whole loop offline against the built-in Bitable emulator",
                       description="Start the Bitable emulator on 127.0.0.1, create a table with the default "
                       "columns and sample rows, run the real poller through lark-oapi until every row is done, "
                       "and print the results. No credentials, GPU or network needed.")
    d.add_argument("--data-dir", type=Path, default=Path("./demo-data"), help="where the DB, videos and the emulated table live (default ./demo-data)")
    d.add_argument("--rows", type=_between(1, 50), default=3, help="how many sample rows to add, 1 to 50 (default 3)")
    d.add_argument("--shots", type=_between(1, 20), default=None, help="shots per video, 1 to 20 (default: the template's)")
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
            c.add_argument("--wait-writes", type=cli_ops.non_negative, default=600, metavar="SECONDS",
                           help="how long to keep sending sheet writes the table refuses for now (default 600); "
                                f"exit code {PENDING_WRITES} if some are still pending")
    COMMANDS.update(cli_ops.register(sub))

    g = sub.add_parser("gateway", help="several hosts: poll the table and send its writes; workers do the stages",
                       description="The scale-out mode's link to Feishu (needs SHEETREEL_DATABASE_URL=postgresql://...): "
                       "polls the table, queues each due stage as a job, sends row writes and chat messages, renews "
                       "links and hands the jobs of dead workers to live ones. Run one per table; stop with SIGTERM.")
    g.add_argument("--data-dir", type=Path, default=None, help="data dir (default SHEETREEL_DATA_DIR or ./data)")
    w = sub.add_parser("worker", help="several hosts: run the stages queued on the given queues",
                       description="The scale-out mode's workers (needs SHEETREEL_DATABASE_URL=postgresql://...): take "
                       "jobs from the queues named and run their stages, SHEETREEL_WORKERS at a time. Never talks to "
                       "Feishu. Queues: cpu (storyboards, compose, Ken Burns shots), gpu:diffusers (or the name set "
                       "in SHEETREEL_QUEUES / a template's `queue`), api:<provider> for cloud providers. SIGTERM stops "
                       "it at the next safe point; the project resumes on another worker.")
    w.add_argument("--queues", required=True, type=_queue_list, metavar="Q1,Q2",
                   help="comma-separated queues this host can run, e.g. cpu or gpu:wan,cpu")
    w.add_argument("--data-dir", type=Path, default=None, help="this host's workspace (default SHEETREEL_DATA_DIR or ./data)")
    for command in sub.choices.values():
        # Also after the command (`sheetreel run -v`); SUPPRESS keeps one given before it.
        _log_options(command, default=argparse.SUPPRESS)
    return p


SERVICES = {"run", "once", "gateway", "worker"}  # their log is the record of the work: INFO by default


def _log_options(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="also debug lines and the libraries' own (HTTP requests, queue); run/once/gateway/worker "
                        "log one key=value line per step without it")
    p.add_argument("--log-format", choices=["text", "json"], default="text" if default is False else default,
                   help="text (key=value lines, default) or json (one object per line, for log shippers)")


def _queue_list(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues or any(not all(c.isalnum() or c in ":_-" for c in q) for q in queues):
        raise argparse.ArgumentTypeError(f"not a list of queue names: {value!r} (e.g. cpu or gpu:wan,cpu)")
    return queues


def _between(low: int, high: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"not a whole number from {low} to {high}: {value!r}")
        return number

    return parse


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if unreadable := [a for a in argv if _undecodable(a)]:
        print(f"sheetreel: error: an argument is not UTF-8 text: {unreadable[0]!r}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    logs.configure(service=args.command in SERVICES, verbose=args.verbose, fmt=args.log_format)
    try:
        return COMMANDS[args.command](args)
    except CliError as e:
        return _fail(str(e), e.hint)
    except AuthFailed as e:
        return _fail(str(e), "check FEISHU_APP_ID / FEISHU_APP_SECRET and that the app is added to the base")
    except NotFound as e:
        return _fail(str(e), "check FEISHU_APP_TOKEN / FEISHU_TABLE_ID")
    except DatabaseUnusable as e:
        return _fail(str(e), "SHEETREEL_DATABASE_URL takes sqlite:///path/to/sheetreel.db or "
                             "postgresql://user:password@host:5432/dbname (pip install 'sheetreel[postgres]')")
    except SheetReelError as e:
        return _fail(str(e), "run with -v for the full log")
    except DBAPIError as e:
        # The server refused or is unreachable; the driver's first line says which (never the password).
        first = str(e.orig or e).strip().splitlines()[0]
        return _fail(f"the database cannot be used: {first}", "check SHEETREEL_DATABASE_URL and that the server is running")
    except ValidationError as e:
        return _fail(f"invalid setting: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}", "see the configuration table in README.md")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sheetreel status --json | head`: the reader has what it wanted. Point stdout at devnull
        # so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a data dir that is a file, under /proc, not writable...
        where = f": {e.filename}" if e.filename else ""
        return _fail(f"{e.strerror or e}{where}", "check that the path exists, is a folder where one is expected, "
                                                   "and that this user may write there")


def _undecodable(arg: str) -> bool:
    """Bytes that were not UTF-8 reach Python as lone surrogates, which no database or file takes."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _fail(message: str, hint: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    if hint:
        print(f"Hint: {hint}", file=sys.stderr)
    return 1


def _settings(args):
    return load_settings(getattr(args, "data_dir", None))


def cmd_demo(args) -> int:
    from sync.demo import run_demo
    from sync.progress import progress_view
    from sync.report import format_table

    rows = run_demo(args.data_dir, rows=args.rows, shots=args.shots, template=args.template, view=progress_view())
    print()
    print(format_table(rows))
    print(f"\nnext: sheetreel status --data-dir {args.data_dir}")
    return 0 if all(r["state"] == "completed" for r in rows) else 1


def cmd_status(args) -> int:
    from sync import ops
    from sync.app import make_estimator, make_stores
    from sync.connections import load_connections
    from sync.report import format_detail, format_table, project_detail, project_rows

    settings = _settings(args)
    require_db(settings)
    stores = make_stores(settings)
    store = stores.projects
    if args.project:
        detail = project_detail(store, args.project)
        if detail is None:
            raise CliError(f"no project or record {args.project}", "run `sheetreel status` to list them")
        emit(detail, args.json, format_detail(detail))
        return 0
    chosen = {p.id for p in ops.select(store, args.state, args.date, args.template, args.record)}
    tables = {c.table_id: c.name for c in load_connections(settings)} if settings.connections_file else None
    rows = [r for r in project_rows(store, make_estimator(settings, stores), tables) if r["project_id"] in chosen]
    emit(rows, args.json, format_table(rows))
    return 0


def _live_app(args):
    from sync.app import App

    settings = _settings(args)
    missing = settings.missing_feishu()
    if missing:
        raise CliError(f"missing settings: {', '.join(missing)}", "set them in the environment or .env (see README), or try `sheetreel demo`")
    return App(settings)


def cmd_once(args) -> int:
    from sync.progress import watching

    app = _live_app(args)
    with watching(app.store):
        ok = app.once(write_timeout=args.wait_writes)
    if ok:
        return 0
    print(f"Warning: {app.stores.outbox.size()} sheet writes are still pending (the table did not accept them)",
          file=sys.stderr)
    print("Hint: they are kept and sent by the next `sheetreel once` or `run`; `sheetreel health` shows why",
          file=sys.stderr)
    return PENDING_WRITES


RUN_FINISHED_SHOWN = 10  # rows that ended, under those in work, in `run`'s live table


def _until_signal(service, what: str) -> int:
    """Run a service until SIGTERM or SIGINT (Ctrl-C); a second Ctrl-C quits at once."""
    stop = threading.Event()

    def on_signal(sig, _frame) -> None:
        if sig == signal.SIGINT and stop.is_set():
            print("quitting now; the interrupted steps resume on the next start", file=sys.stderr)
            os._exit(130)
        if sig == signal.SIGINT:
            print("finishing the current steps safely (Ctrl-C again to quit now)", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"{what} every {service.settings.poll_interval_seconds:g}s; Ctrl-C to stop", file=sys.stderr)
    with serving(service.metrics, service.settings.metrics_host, service.settings.metrics_port):
        service.run(stop)
    return 0


def cmd_run(args) -> int:
    from sync.progress import watching

    app = _live_app(args)
    with watching(app.store, finished_kept=RUN_FINISHED_SHOWN):
        return _until_signal(app, "polling")


def cmd_gateway(args) -> int:
    from sync.roles import Gateway, require_postgres

    settings = _settings(args)
    require_postgres(settings)
    missing = settings.missing_feishu()
    if missing:
        raise CliError(f"missing settings: {', '.join(missing)}", "set them in the environment or .env (see README)")
    return _until_signal(Gateway(settings), "gateway polling")


def cmd_worker(args) -> int:
    from sync.roles import Worker, require_postgres

    settings = _settings(args)
    require_postgres(settings)
    print(f"worker on {','.join(args.queues)}, {settings.workers} at a time; Ctrl-C to stop", file=sys.stderr)
    worker = Worker(settings, args.queues)
    with serving(worker.metrics, settings.metrics_host, settings.metrics_port):
        worker.run()
    return 0


COMMANDS = {"demo": cmd_demo, "status": cmd_status, "once": cmd_once, "run": cmd_run, "gateway": cmd_gateway,
            "worker": cmd_worker}

if __name__ == "__main__":
    sys.exit(main())
