"""Where uploaded media bytes live: in memory, or one file per token on disk."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    def put(self, token: str, data: bytes) -> None: ...

    def get(self, token: str) -> bytes | None: ...


class MemoryBlobs:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, token: str, data: bytes) -> None:
        with self._lock:
            self._data[token] = bytes(data)

    def get(self, token: str) -> bytes | None:
        with self._lock:
            return self._data.get(token)


class DirBlobs:
    """Files named by token; tokens are our own [A-Za-z0-9] ids, safe as file names."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def put(self, token: str, data: bytes) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        write_atomic(self._root / token, data)

    def get(self, token: str) -> bytes | None:
        if not token.isalnum():
            return None
        try:
            return (self._root / token).read_bytes()
        except FileNotFoundError:
            return None


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
