"""Publishing a project's files to the object store, under keys that mirror its folder."""

from __future__ import annotations

from pathlib import Path

from connectors.store.protocol import ObjectStore


class Publisher:
    def __init__(self, objects: ObjectStore, projects_root: Path):
        self.objects, self.projects_root = objects, Path(projects_root)

    def put(self, local: Path) -> str:
        """Upload `local` (a file inside the project folder); its public URL."""
        key = "/".join(Path(local).relative_to(self.projects_root).parts)
        return self.objects.put(local, key)
