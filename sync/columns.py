"""The sheet contract: column names (configurable) and the labels users pick from."""

from __future__ import annotations

import enum
import string

from pydantic import BaseModel, Field, field_validator, model_validator

from connectors.feishu.protocol import FieldType


class Action(str, enum.Enum):
    start = "开始"
    resume = "继续"
    redo_storyboard = "重新生成分镜"
    redo_segment = "重做第N段"
    compose = "合成"
    retry = "重试"
    cancel = "取消"


MODE_LABELS = {"自动": "auto", "分步": "step"}
PRIORITY_LABELS = {"高": 1, "普通": 0, "低": -1}


class Columns(BaseModel):
    """Default names are Chinese because the users are Feishu users; override any in settings."""

    title: str = "标题"
    image: str = "首帧图片"
    scene: str = "场景描述"
    template: str = "模板"
    shot_count: str = "段数"
    publish_date: str = "发布日期"
    mode: str = "模式"
    action: str = "操作"
    storyboard: str = "分镜脚本"
    status: str = "状态"
    progress: str = "进度"
    error: str = "错误信息"
    segment_pattern: str = "段{n}视频"
    final_url: str = "成片链接"
    final_video: str = "成片"
    cover: str = "封面"
    project_id: str = "项目ID"
    updated_at: str = "更新时间"
    # Optional (a number column): what the row's provider shots have cost, by SHEETREEL_VIDEO_PRICES.
    cost: str = "费用"
    # Optional attachments: the contact sheet of the plan (then of the made shots), and the plan's
    # low-resolution animatic, so a plan is judged from pictures before any GPU time is spent.
    preview: str = "预览"
    animatic: str = "分镜预览"
    # Optional single select (高/普通/低): the queue runs higher priority first, then the oldest row.
    priority: str = "优先级"
    # A ModifiedTime field: lets a poll read only rows changed since the last one.
    modified_time: str = "最后修改时间"
    max_segments: int = Field(default=20, ge=1, le=20)

    @field_validator("segment_pattern")
    @classmethod
    def _one_number(cls, pattern: str) -> str:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
        except ValueError as e:
            raise ValueError(f"{pattern!r} is not a pattern: {e}") from None
        if fields != ["n"]:
            raise ValueError(f"{pattern!r} must hold {{n}} once (the segment number) and no other {{…}}, e.g. \"段{{n}}视频\"")
        return pattern

    @model_validator(mode="after")
    def _distinct(self) -> Columns:
        """Two roles in one column would have SheetReel write its status over the user's title."""
        names = [v for k, v in self if isinstance(v, str) and k != "segment_pattern"]
        names += [self.segment(n) for n in range(1, self.max_segments + 1)]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"one column name for two uses: {', '.join(twice)}")
        return self

    def segment(self, n: int) -> str:
        """Column for segment n, counted from 1 as users count."""
        return self.segment_pattern.format(n=n)

    def optional(self) -> frozenset[str]:
        """Written when the table has them; a table without them is fine."""
        return frozenset({self.cost, self.preview, self.animatic})

    def user_columns(self) -> list[str]:
        return [self.image, self.scene, self.template, self.shot_count, self.publish_date, self.mode]

    def read_columns(self) -> list[str]:
        """What a poll needs to read of each row."""
        return [self.title, *self.user_columns(), self.action, self.storyboard, self.priority]

    def needed(self, segments: int) -> list[str]:
        """Every column SheetReel reads or writes for projects of up to `segments` shots."""
        written = [self.status, self.progress, self.error, *(self.segment(n) for n in range(1, segments + 1)),
                   self.final_url, self.final_video, self.cover, self.project_id, self.updated_at]
        return [*self.read_columns(), *written]

    def schema(self, templates: list[str]) -> list[tuple[str, int, list[str]]]:
        """(name, field type, select options) of every column, in sheet order; the title first."""
        from storage.models import STATE_LABELS

        cols = [
            (self.title, FieldType.text, []),
            (self.image, FieldType.attachment, []),
            (self.scene, FieldType.text, []),
            (self.template, FieldType.single_select, templates),
            (self.shot_count, FieldType.number, []),
            (self.publish_date, FieldType.datetime, []),
            (self.mode, FieldType.single_select, list(MODE_LABELS)),
            (self.priority, FieldType.single_select, list(PRIORITY_LABELS)),
            (self.action, FieldType.single_select, [a.value for a in Action]),
            (self.storyboard, FieldType.text, []),
            (self.status, FieldType.single_select, list(STATE_LABELS.values())),
            (self.progress, FieldType.text, []),
            (self.error, FieldType.text, []),
        ]
        cols += [(self.segment(n), FieldType.url, []) for n in range(1, self.max_segments + 1)]
        cols += [
            (self.final_url, FieldType.url, []),
            (self.final_video, FieldType.attachment, []),
            (self.cover, FieldType.attachment, []),
            (self.project_id, FieldType.text, []),
            (self.updated_at, FieldType.datetime, []),
            (self.modified_time, FieldType.modified_time, []),
            (self.cost, FieldType.number, []),
            (self.preview, FieldType.attachment, []),
            (self.animatic, FieldType.attachment, []),
        ]
        return cols
