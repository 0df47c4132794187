"""The storyboard document: saved as storyboard.json and in the DB, read by every stage."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, Field, ValidationError, field_validator

# The user-facing limits, also named in the Chinese messages below.
MAX_PROMPT, MAX_NARRATION, MAX_TAGS, MAX_TAG = 2000, 500, 20, 50


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
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    duration: float = Field(gt=0, le=30, allow_inf_nan=False)
    camera: Camera = Camera.zoom_in
    narration: str | None = Field(default=None, max_length=MAX_NARRATION)
    stock_tags: list[Annotated[str, Field(max_length=MAX_TAG)]] = Field(default_factory=list, max_length=MAX_TAGS)

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


FIELD_LABELS = {"prompt": "画面描述", "duration": "时长", "camera": "运镜", "narration": "旁白", "stock_tags": "素材标签",
                "index": "编号", "shots": "镜头列表"}


def explain(err: ValidationError) -> str:
    """The first problem of a storyboard validation, as a Chinese sentence naming the shot and
    the field: users edit the storyboard cell, and pydantic's English means nothing to them."""
    first = err.errors()[0]
    loc, ctx, kind = first["loc"], first.get("ctx") or {}, first["type"]
    shot = next((part for part in loc if isinstance(part, int)), None) if "shots" in loc else None
    field = next((FIELD_LABELS[part] for part in reversed(loc) if part in FIELD_LABELS), "内容")
    where = f"第{shot + 1}个镜头的{field}" if shot is not None and field != "镜头列表" else field
    bounds = {
        "string_too_short": "不能为空",
        "string_too_long": f"太长：最多 {ctx.get('max_length')} 个字",
        "too_short": f"至少需要 {ctx.get('min_length')} 项",
        "too_long": f"太多：最多 {ctx.get('max_length')} 项",
        "greater_than": f"必须大于 {ctx.get('gt')}",
        "greater_than_equal": f"不能小于 {ctx.get('ge')}",
        "less_than_equal": f"不能超过 {ctx.get('le')}",
        "less_than": f"必须小于 {ctx.get('lt')}",
        "finite_number": "必须是有限的数字",
        "enum": f"无效：可选 {', '.join(Camera.__members__)}",
    }
    return f"{where}{bounds.get(kind, '格式不对')}"
