"""A directory served by some web server (or opened as file:// in the demo)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from storage import atomic
from storage.paths import safe_component


class LocalObjectStore:
    def __init__(self, root: Path, base_url: str):
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")

    def _path(self, key: str) -> Path:
        parts = [safe_component(p, "object key part") for p in key.split("/")]
        return self.root.joinpath(*parts)

    def put(self, local: Path, key: str) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            # Same filesystem as the data dir in the common case: a hard link costs no space.
            os.link(local, tmp)
            os.replace(tmp, dest)
        except OSError:
            atomic.copy_file(Path(local), dest)
        return self.link(key)

    def link(self, key: str) -> str:
        return f"{self.base_url}/{quote(key)}"

    def expires_at(self, url: str) -> datetime | None:
        return None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def fetch(self, key: str, dest: Path) -> bool:
        source = self._path(key)
        if not source.is_file():
            return False
        atomic.copy_file(source, Path(dest))
        return True

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
