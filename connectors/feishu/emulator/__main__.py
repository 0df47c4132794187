"""`python -m connectors.feishu.emulator --port 8080 --state FILE`: serve until Ctrl-C/SIGTERM."""
from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .emulator import Emulator


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m connectors.feishu.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (the SDK allows http:// on loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--state", type=Path, default=None, help="JSON state file; media go in <stem>_media/")
    parser.add_argument("--app-id", default="cli_demo")
    parser.add_argument("--app-secret", default="demo-secret")
    parser.add_argument("--create-app", metavar="APP_TOKEN", default=None, help="ensure a base with this token exists")
    parser.add_argument("--block-size", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--batch-limit", type=int, default=1000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    emu = Emulator(args.app_id, args.app_secret, args.state, args.block_size, args.batch_limit)
    if args.create_app:
        emu.create_app(args.create_app, app_token=args.create_app)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    url = emu.start(args.host, args.port)
    print(f"Feishu emulator on {url} (app_id={args.app_id})", flush=True)
    try:
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()  # flushes the state file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
