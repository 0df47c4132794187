"""Where a project's files live, and the validation of every path part that comes from a row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from storage.errors import BadInput

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def safe_component(value: str, what: str) -> str:
    """Return `value` if it is a single harmless path component, else raise BadInput.

    Row data ends up in directory names; refusing separators, `..` and absolute paths here is
    what keeps a cell like `../../etc` from writing outside the data dir.
    """
    if not _SAFE.match(value or "") or ".." in value:
        raise BadInput(f"{what} “{value}” 不合法：只能包含字母、数字、-、_ 和 .，不能含 / 或 .. (invalid {what})")
    return value


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @classmethod
    def of(cls, data_dir: Path, publish_date: date | None, template: str, project_id: str) -> ProjectPaths:
        day = publish_date.isoformat() if publish_date else "undated"
        parts = [safe_component(p, "path part") for p in (day, template, project_id)]
        return cls(Path(data_dir) / "projects" / Path(*parts))

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def storyboard(self) -> Path:
        return self.root / "storyboard.json"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def opening_image(self) -> Path:
        return self.inputs / "opening.jpg"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def frames(self) -> Path:
        return self.root / "frames"

    @property
    def final_dir(self) -> Path:
        return self.root / "final"

    @property
    def final_video(self) -> Path:
        return self.final_dir / "final.mp4"

    @property
    def cover(self) -> Path:
        return self.final_dir / "cover.jpg"

    @property
    def subtitles(self) -> Path:
        return self.final_dir / "subtitles.srt"

    def segment(self, index: int) -> Path:
        return self.segments / f"seg_{index:02d}.mp4"

    def first_frame(self, index: int) -> Path:
        return self.frames / f"seg_{index:02d}_first.jpg"

    def last_frame(self, index: int) -> Path:
        return self.frames / f"seg_{index:02d}_last.jpg"

    def seed_frame(self, index: int) -> Path:
        """The colour-corrected last frame that seeds the next shot, when drift needed fixing."""
        return self.frames / f"seg_{index:02d}_seed.jpg"

    @property
    def preview(self) -> Path:
        """The 预览 and 分镜预览 pictures, and what ffmpeg needed to draw them."""
        return self.root / "preview"

    @property
    def plan_sheet(self) -> Path:
        return self.preview / "plan.jpg"

    @property
    def animatic(self) -> Path:
        return self.preview / "animatic.mp4"

    @property
    def shots_sheet(self) -> Path:
        return self.preview / "shots.jpg"

    def make_dirs(self) -> None:
        for d in (self.inputs, self.segments, self.frames, self.final_dir, self.preview):
            d.mkdir(parents=True, exist_ok=True)
