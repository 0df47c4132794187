"""meta.json: the portable mirror of a project's DB rows, enough to rebuild the DB from files."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from storage import atomic
from storage.models import Project, Segment, StepRun

META_VERSION = 1


class ProjectMeta(BaseModel):
    version: int = META_VERSION
    project: dict
    segments: list[dict]
    steps: list[dict]

    @classmethod
    def of(cls, project: Project, segments: list[Segment], steps: list[StepRun]) -> ProjectMeta:
        return cls(
            project=project.model_dump(mode="json"),
            segments=[s.model_dump(mode="json") for s in segments],
            steps=[s.model_dump(mode="json") for s in steps],
        )

    def rows(self) -> tuple[Project, list[Segment], list[StepRun]]:
        return (
            Project.model_validate(self.project),
            [Segment.model_validate(s) for s in self.segments],
            [StepRun.model_validate(s) for s in self.steps],
        )


def write(path: Path, meta: ProjectMeta) -> None:
    atomic.write_text(path, json.dumps(meta.model_dump(mode="json"), ensure_ascii=False, indent=2))


def read(path: Path) -> ProjectMeta:
    """The meta.json at `path`; ValueError when it cannot be read or is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:  # gone since it was found, a folder, no permission
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    return ProjectMeta.model_validate_json(text)


def find_all(data_dir: Path, subtree: str = "") -> list[Path]:
    """Every meta.json under projects/ (optionally under projects/<subtree>, e.g. "2026-11-22")."""
    root = Path(data_dir) / "projects" / subtree
    return sorted(root.glob("**/meta.json")) if root.is_dir() else []
