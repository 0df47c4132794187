"""Publishing a project's files to the object store, under keys that mirror its folder."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from connectors.store.protocol import ObjectStore


class Publisher:
    def __init__(self, objects: ObjectStore, projects_root: Path):
        self.objects, self.projects_root = objects, Path(projects_root)

    def put(self, local: Path) -> str:
        """Upload `local` (a file inside the project folder); its public URL."""
        return self.objects.put(local, self._key(local))

    def push(self, *files: Path) -> None:
        """Keep these project files in the store for a later stage on another host (those that exist)."""
        for local in files:
            if Path(local).is_file():
                self.put(local)

    def forget(self, *files: Path) -> None:
        """Remove the stored copies of these project files (made stale by a newer take)."""
        for local in files:
            self.objects.delete(self._key(local))

    def pull(self, *files: Path) -> None:
        """Bring the stored copies of these project files into this host's workspace (those missing here)."""
        for local in files:
            if not Path(local).is_file():
                self.objects.fetch(self._key(local), local)

    def renewed(self, local: Path, url: str | None, before: datetime) -> str | None:
        """A fresh URL for the published `local` when `url` stops working before `before`;
        None when it does not need one (no URL, or one that lasts)."""
        return self.objects.link(self._key(local)) if self.expiring(url, before) else None

    def expiring(self, url: str | None, before: datetime) -> bool:
        """Whether `url` stops working before `before` (never, for a link without an expiry)."""
        if not url:
            return False
        expires = self.objects.expires_at(url)
        return expires is not None and expires <= before

    def _key(self, local: Path) -> str:
        return "/".join(Path(local).relative_to(self.projects_root).parts)
