"""Storyboards: the offline template writer, and the text form users see and edit in the sheet."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from pipeline.templates import TemplateConfig
from storage.errors import BadInput
from storage.storyboard import Camera, Shot, Storyboard, explain

MAX_TEXT = 50_000  # characters in the 分镜脚本 cell: 20 shots at the longest prompts fit easily


class Storyboarder(Protocol):
    name: str

    def write(self, template: TemplateConfig, scene: str, shot_count: int, image: Path) -> Storyboard: ...


class TemplateStoryboarder:
    """No LLM: the template's shot lines filled with the scene. For the demo, tests and fallbacks."""

    name = "template"

    def write(self, template: TemplateConfig, scene: str, shot_count: int, image: Path) -> Storyboard:
        scene = scene or template.name
        lines, cams = template.shot_prompts, template.cameras
        shots = [
            Shot(
                index=i,
                prompt=lines[i % len(lines)].format(scene=scene),
                duration=template.shot_duration,
                camera=cams[i % len(cams)],
                narration=template.narration_lines[i] if i < len(template.narration_lines) else None,
                stock_tags=template.stock_tags,
            )
            for i in range(shot_count)
        ]
        return Storyboard(shots=shots)


# One block per shot:  "1. [zoom_in 5s] prompt" then optional "旁白：…" and "素材：a, b" lines.
_HEAD = re.compile(r"^\s*(\d+)[.、)]\s*\[\s*([a-z_]+)\s+([\d.]+)\s*s\s*\]\s*(.*)$")
_NARRATION = ("旁白：", "旁白:")
_TAGS = ("素材：", "素材:")


def to_text(board: Storyboard) -> str:
    blocks = []
    for s in board.shots:
        lines = [f"{s.index + 1}. [{s.camera.value} {s.duration:g}s] {s.prompt}"]
        if s.narration:
            lines.append(f"旁白：{s.narration}")
        if s.stock_tags:
            lines.append(f"素材：{', '.join(s.stock_tags)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def from_text(text: str) -> Storyboard:
    """Parse the sheet's storyboard cell back; errors name the shot a user must fix."""
    if len(text) > MAX_TEXT:
        raise BadInput(f"分镜脚本太长（{len(text)} 字）：最多 {MAX_TEXT} 字，请删减后再选择“继续”")
    shots: list[dict] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if m := _HEAD.match(line):
            shots.append(_shot_head(m, len(shots)))
        elif shots and line.startswith(_NARRATION):
            # An empty 旁白 line is no narration, as to_text writes it.
            shots[-1]["narration"] = line.split("：" if "：" in line else ":", 1)[1].strip() or None
        elif shots and line.startswith(_TAGS):
            tags = line.split("：" if "：" in line else ":", 1)[1]
            shots[-1]["stock_tags"] = [t.strip() for t in re.split(r"[,，]", tags) if t.strip()]
        elif shots:
            shots[-1]["prompt"] += " " + line
        else:
            raise BadInput(f"分镜脚本第{n}行无法识别：每个镜头应以“1. [zoom_in 5s] 描述”开头")
    if not shots:
        raise BadInput("分镜脚本为空：至少需要一个镜头，格式“1. [zoom_in 5s] 描述”")
    try:
        return Storyboard.model_validate({"shots": shots})
    except ValidationError as e:
        raise BadInput(f"分镜脚本有误：{explain(e)}") from e


def _shot_head(m: re.Match, position: int) -> dict:
    number, camera, duration, prompt = int(m[1]), m[2], m[3], m[4].strip()
    if number != position + 1:
        raise BadInput(f"分镜脚本第{position + 1}个镜头的编号写成了 {number}：请按 1、2、3… 顺序编号")
    if camera not in Camera.__members__:
        allowed = ", ".join(Camera.__members__)
        raise BadInput(f"分镜脚本第{number}个镜头的运镜“{camera}”无效：可选 {allowed}")
    try:
        seconds = float(duration)
    except ValueError:
        raise BadInput(f"分镜脚本第{number}个镜头的时长“{duration}s”无效：请写秒数，例如 [zoom_in 5s]") from None
    return {"index": position, "camera": camera, "duration": seconds, "prompt": prompt}
