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
