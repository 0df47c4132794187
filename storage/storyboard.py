"""The storyboard document: saved as storyboard.json and in the DB, read by every stage."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, Field, field_validator


class Camera(str, enum.Enum):
    zoom_in = "zoom_in"
    zoom_out = "zoom_out"
    pan_left = "pan_left"
    pan_right = "pan_right"
    pan_up = "pan_up"
    pan_down = "pan_down"
    static = "static"


class Shot(BaseModel):
    index: int = Field(ge=0)
    prompt: str = Field(min_length=1, max_length=2000)
    duration: float = Field(gt=0, le=30)
    camera: Camera = Camera.zoom_in
    narration: str | None = None
    stock_tags: list[str] = Field(default_factory=list)

    @field_validator("prompt", "narration")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if isinstance(v, str) else v


class Storyboard(BaseModel):
    shots: Annotated[list[Shot], Field(min_length=1, max_length=20)]

    @property
    def total_duration(self) -> float:
        return sum(s.duration for s in self.shots)

    @field_validator("shots")
    @classmethod
    def _indexed_in_order(cls, shots: list[Shot]) -> list[Shot]:
        for expected, shot in enumerate(shots):
            if shot.index != expected:
                raise ValueError(f"shot {expected + 1} has index {shot.index + 1}; shots must be numbered 1..N in order")
        return shots
