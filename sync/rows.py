"""Sheet rows -> typed inputs, parsed once at the boundary. Nothing else reads raw cells."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from connectors.feishu.protocol import Record
from storage.errors import BadInput
from storage.models import Mode
from sync.columns import MODE_LABELS, PRIORITY_LABELS, Columns

MIN_SHOTS, MAX_SHOTS = 1, 20
# Longest text a cell may hold. A scene goes into every shot's prompt, so past this it is refused
# with a sentence, not cut where the model would read half a thought.
MAX_TITLE, MAX_SCENE, MAX_URL = 200, 2000, 4096
# Years a publish date may be in: the date picker offers year 1, which no video is published in.
MIN_YEAR, MAX_YEAR = 2000, 2100


class ImageRef(BaseModel):
    """Where the opening image comes from: a Feishu attachment or an http(s) URL."""

    file_token: str | None = None
    url: str | None = None
    name: str = ""


class RowInput(BaseModel):
    """The user-owned cells of one row, parsed once: typed values, and a sentence for each cell
    that did not parse (its value is then None)."""

    record_id: str
    title: str = ""
    image: ImageRef | None = None
    scene: str = ""
    template: str = ""
    shot_count: int | None = None  # None: the template's default
    publish_date: date | None = None  # None: today
    mode: Mode = Mode.auto
    priority: int = 0  # not an input: a change reorders the queue, it does not redo the video
    action: str = ""
    storyboard: str = ""
    modified_ms: int | None = None
    problems: list[str] = []
    # Changes when the user edits an input, valid or not; our own writes to system cells never change it.
    input_hash: str = ""


def _input_hash(image: ImageRef | None, scene: str, template: str, shot_count: Any, publish_date: Any) -> str:
    # Over the cells as typed, so an invalid value edited into another invalid value is news too;
    # the formula is the one earlier releases stored, so an upgrade does not redo every row.
    cells = {"image": image.model_dump(mode="json") if image else None, "scene": scene, "template": template,
             "shot_count": shot_count, "publish_date": publish_date}
    blob = json.dumps(cells, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def text_of(cell: Any) -> str:
    """Flatten any Bitable cell shape (segments, url objects, numbers) to plain text."""
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return f"{cell:g}" if isinstance(cell, float) else str(cell)
    if isinstance(cell, dict):
        return str(cell.get("link") or cell.get("text") or "")
    if isinstance(cell, list):
        return "".join(text_of(part.get("text") if isinstance(part, dict) and "text" in part else part) for part in cell)
    return str(cell)


def parse_row(record: Record, cols: Columns, default_template: str, tz: ZoneInfo) -> RowInput:
    """Never raises: a cell that cannot be read becomes a problem sentence and its value None."""
    f = record.fields
    problems: list[str] = []

    def parsed(column: str, parse, raw):
        try:
            return parse(raw)
        except BadInput as e:
            problems.append(str(e))
        except Exception:  # noqa: BLE001 - any cell shape we did not foresee is that cell's problem
            problems.append(f"「{column}」列的内容无法读取：请清空后重新填写")
        return None

    def text(column: str, limit: int | None = None) -> str:
        value = parsed(column, lambda raw: text_of(raw).strip(), f.get(column)) or ""
        if limit is not None and len(value) > limit:
            problems.append(f"「{column}」太长（{len(value)} 字）：最多 {limit} 字，请删减")
        return value

    image = parsed(cols.image, _image_ref, f.get(cols.image))
    scene, template = text(cols.scene, MAX_SCENE), text(cols.template) or default_template
    raw_shots, raw_date = f.get(cols.shot_count), f.get(cols.publish_date)
    mode = MODE_LABELS.get(text(cols.mode), "auto")
    return RowInput(
        record_id=record.record_id,
        title=text(cols.title, MAX_TITLE)[:MAX_TITLE],
        image=image,
        scene=scene[:MAX_SCENE],  # the digest below sees it whole: an edit past the cut is news
        template=template[:100],
        shot_count=parsed(cols.shot_count, shot_count, raw_shots),
        publish_date=parsed(cols.publish_date, lambda raw: publish_date(raw, tz), raw_date),
        mode=Mode(mode),
        # An unknown label (an option added by hand) is 普通: the order is a hint, not worth an error.
        priority=PRIORITY_LABELS.get(text(cols.priority), 0),
        action=text(cols.action)[:100],
        storyboard=parsed(cols.storyboard, text_of, f.get(cols.storyboard)) or "",
        modified_ms=record.last_modified_time,
        problems=problems,
        input_hash=_input_hash(image, scene, template, raw_shots, raw_date),
    )


def _image_ref(cell: Any) -> ImageRef | None:
    if isinstance(cell, list) and cell and isinstance(cell[0], dict) and cell[0].get("file_token"):
        return ImageRef(file_token=str(cell[0]["file_token"]), name=str(cell[0].get("name") or ""))
    url = text_of(cell).strip()
    if len(url) > MAX_URL:
        raise BadInput(f"首帧图片链接太长（{len(url)} 字符）：最多 {MAX_URL} 字符")
    return ImageRef(url=url) if url else None


def shot_count(raw: Any) -> int | None:
    """1..20 from a number or text cell; None when empty (the template decides)."""
    if raw is None or raw == "" or raw == []:
        return None
    text = text_of(raw).strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer() or not MIN_SHOTS <= value <= MAX_SHOTS:
        raise BadInput(f"段数“{text[:40]}”无效：请填写 {MIN_SHOTS} 到 {MAX_SHOTS} 之间的整数 (shot count must be {MIN_SHOTS}-{MAX_SHOTS})")
    return int(value)


_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")


def publish_date(raw: Any, tz: ZoneInfo) -> date | None:
    """A Bitable date cell is ms since the epoch; a text cell may hold 2026-11-22. Empty: None (today)."""
    if raw is None or raw == "" or raw == []:
        return None
    text = text_of(raw).strip()
    day = None
    try:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            day = datetime.fromtimestamp(raw / 1000, tz).date()
        elif m := _DATE.match(text):
            day = date(int(m[1]), int(m[2]), int(m[3]))
    except (ValueError, OverflowError, OSError):  # outside what a calendar (or the platform) can hold
        day = None
    if day is None:
        raise BadInput(f"发布日期“{text[:40]}”无效：请填写日期，例如 2026-11-22 (publish date must be a date)")
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise BadInput(f"发布日期 {day.isoformat()} 不在 {MIN_YEAR} 到 {MAX_YEAR} 年之间：请重新选择日期")
    return day
