"""Saving the emulator's state to one JSON file, debounced, always atomically.

A burst of writes (a batch of 500 records, a seeding script) becomes one file
write; `close()` flushes whatever is pending so `Emulator.stop()` loses nothing.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .blobs import write_atomic

FORMAT_VERSION = 1


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if raw.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported emulator state version {raw.get('version')!r}")
    return raw


def media_dir_for(state_path: Path) -> Path:
    return state_path.with_name(f"{state_path.stem}_media")


class StateWriter:
    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]], delay: float = 0.05) -> None:
        self._path = path
        self._snapshot = snapshot
        self._delay = delay
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._dirty = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def mark_dirty(self) -> None:
        with self._cond:
            self._dirty = True
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="feishu-emulator-save", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self) -> None:
        with self._write_lock:
            with self._cond:
                if not self._dirty:
                    return
                self._dirty = False
            payload = {"version": FORMAT_VERSION, **self._snapshot()}
            self._path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path, json.dumps(payload, ensure_ascii=False, indent=1).encode())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cond:
            # Re-arm: mutations made after stop() (Python API) still get saved.
            self._closed = False
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return  # close() does the final flush itself
            time.sleep(self._delay)  # let a burst of writes coalesce into one save
            self.flush()
