"""Logging for the CLI: our own key=value lines at INFO for the long-running commands, the
libraries' chatter only with -v, and the same lines as JSON objects for log shippers."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal

from sync import redact

OURS = ("sync", "pipeline", "connectors", "storage")
# Their INFO lines are about themselves (Alembic's plugin setup, every scheduler tick, each HTTP
# request): only -v shows them. APScheduler's warnings are ticks skipped while the last one still
# runs, which is by design (our jobs log their own failures), so it stays at ERROR even then.
ALWAYS_QUIET = {"apscheduler": logging.ERROR}
TEXT_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
# `step done project=p1 error=第1段 失败 (x)`: a value runs up to the next ` key=`, spaces and all.
_FIELD = re.compile(r"(?:^|\s)([a-z_][a-z0-9_]*)=")

LogFormat = Literal["text", "json"]


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, event, then the message's key=value fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        matches = list(_FIELD.finditer(message))
        event = message[: matches[0].start()].strip() if matches else message
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "event": event,
        }
        for m, following in zip(matches, [*matches[1:], None]):
            value = message[m.end(): following.start() if following else len(message)].strip()
            out.setdefault(m.group(1), value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged: rich's live table proxies it (the
    line goes above the table), and a caller that swapped it for a while is followed, never a
    stream closed since."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(*, service: bool, verbose: bool, fmt: LogFormat = "text") -> None:
    """`service`: run/once/gateway/worker, whose step lines are the point of their log."""
    handler = Stderr()
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, Stderr)]:  # ours from an earlier call only
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    ours = logging.DEBUG if verbose else logging.INFO if service else logging.WARNING
    for name in OURS:
        logging.getLogger(name).setLevel(ours)
    for name, level in ALWAYS_QUIET.items():
        logging.getLogger(name).setLevel(level)
    # Alembic configures its own loggers from its ini on each upgrade; this keeps them at WARNING.
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)
    redact.install()
