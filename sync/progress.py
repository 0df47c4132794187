"""What `demo`, `once` and `run` show while rows are made: a live table in a terminal (rich), plain
lines when the output is a file or a pipe (cron, CI logs), so nothing is lost either way."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from storage.models import Project
from storage.projects import ProjectStore
from sync import lifecycle


class ProgressView(Protocol):
    def show(self, projects: Iterable[Project]) -> None: ...

    def close(self) -> None: ...


def progress_view(stream: TextIO | None = None) -> ProgressView:
    stream = stream or sys.stdout
    return LiveTable(stream) if stream.isatty() else PlainLines(lambda line: print(line, file=stream, flush=True))


class PlainLines:
    """One line per change of a row's state or progress, handed to `emit`."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit, self.seen = emit, {}

    def show(self, projects: Iterable[Project]) -> None:
        for p in projects:
            line = f"{p.state.label} {p.progress}% {p.progress_text}"
            if self.seen.get(p.id) != line:
                self.seen[p.id] = line
                self.emit(f"{datetime.now():%H:%M:%S} {p.title or p.record_id} {line}")

    def close(self) -> None:
        pass


class LiveTable:
    """A row per video, redrawn in place: title, the sheet's state label, a bar, the stage
    (生成第3/7段). rich measures CJK characters as two columns, so the columns stay aligned."""

    def __init__(self, stream: TextIO):
        self.console = Console(file=stream)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()  # from here sys.stderr is rich's proxy: log lines go above the table (sync.logs)

    def show(self, projects: Iterable[Project]) -> None:
        table = Table(box=None, pad_edge=False)
        for name in ("行", "状态", "进度", "", "步骤"):
            table.add_column(name)
        for p in projects:
            table.add_row(p.title or p.record_id, p.state.label, ProgressBar(total=100, completed=p.progress, width=20),
                          f"{p.progress}%", p.progress_text or p.state.label)
        self.live.update(table, refresh=True)

    def close(self) -> None:
        self.live.stop()


@contextmanager
def watching(store: ProjectStore, stream: TextIO | None = None, every: float = 0.5,
             finished_kept: int | None = None) -> Iterator[None]:
    """In a terminal, a live table of the rows worked on while the block runs; else nothing (the
    log has a line per step). `finished_kept`: a service that runs for days (`run`) shows the rows
    still in work and only this many of those that ended, newest last, so the table stays a screen."""
    stream = stream or sys.stdout
    if not stream.isatty():
        yield
        return
    since, done, view = datetime.now(UTC), threading.Event(), LiveTable(stream)

    def shown() -> list[Project]:
        touched = store.projects(updated_since=since)  # not every project ever, twice a second
        if finished_kept is None:
            return touched
        ended = sorted((p for p in touched if p.state in lifecycle.FINAL), key=lambda p: p.updated_at)
        kept = {p.id for p in ended[-finished_kept:]} if finished_kept else set()
        return [p for p in touched if p.state not in lifecycle.FINAL or p.id in kept]

    def loop() -> None:
        while not done.wait(every):
            view.show(shown())

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        view.show(shown())
        view.close()
