"""Object stores: where finished files get a URL users can open."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ObjectStore(Protocol):
    def put(self, local: Path, key: str) -> str:
        """Store `local` under `key` (a relative path with / separators) and return its URL."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object under `key`; deleting a missing object is not an error."""
        ...
