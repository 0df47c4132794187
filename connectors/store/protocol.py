"""Object stores: where finished files get a URL users can open."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol


class ObjectStore(Protocol):
    def put(self, local: Path, key: str) -> str:
        """Store `local` under `key` (a relative path with / separators) and return its URL."""
        ...

    def link(self, key: str) -> str:
        """A URL for an object already stored (a signing store signs it anew; no upload)."""
        ...

    def expires_at(self, url: str) -> datetime | None:
        """When a URL this store handed out stops working; None when it does not expire."""
        ...

    def exists(self, key: str) -> bool: ...

    def fetch(self, key: str, dest: Path) -> bool:
        """Download the object under `key` to `dest` (atomically); False when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object under `key`; deleting a missing object is not an error."""
        ...
