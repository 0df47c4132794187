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
from sync.columns import MODE_LABELS, Columns

MIN_SHOTS, MAX_SHOTS = 1, 20


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
    f = record.fields
    problems: list[str] = []

    def parsed(parse, raw):
        try:
            return parse(raw)
        except BadInput as e:
            problems.append(str(e))
            return None

    image, scene = _image_ref(f.get(cols.image)), text_of(f.get(cols.scene)).strip()
    template = text_of(f.get(cols.template)).strip() or default_template
    raw_shots, raw_date = f.get(cols.shot_count), f.get(cols.publish_date)
    return RowInput(
        record_id=record.record_id,
        title=text_of(f.get(cols.title)).strip(),
        image=image,
        scene=scene,
        template=template,
        shot_count=parsed(shot_count, raw_shots),
        publish_date=parsed(lambda raw: publish_date(raw, tz), raw_date),
        mode=Mode(MODE_LABELS.get(text_of(f.get(cols.mode)).strip(), "auto")),
        action=text_of(f.get(cols.action)).strip(),
        storyboard=text_of(f.get(cols.storyboard)),
        modified_ms=record.last_modified_time,
        problems=problems,
        input_hash=_input_hash(image, scene, template, raw_shots, raw_date),
    )


def _image_ref(cell: Any) -> ImageRef | None:
    if isinstance(cell, list) and cell and isinstance(cell[0], dict) and cell[0].get("file_token"):
        return ImageRef(file_token=cell[0]["file_token"], name=cell[0].get("name", ""))
    url = text_of(cell).strip()
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
        raise BadInput(f"段数“{text}”无效：请填写 {MIN_SHOTS} 到 {MAX_SHOTS} 之间的整数 (shot count must be {MIN_SHOTS}-{MAX_SHOTS})")
    return int(value)


_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")


def publish_date(raw: Any, tz: ZoneInfo) -> date | None:
    """A Bitable date cell is ms since the epoch; a text cell may hold 2026-11-22. Empty: None (today)."""
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw / 1000, tz).date()
    text = text_of(raw).strip()
    m = _DATE.match(text)
    try:
        if m:
            return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        pass
    raise BadInput(f"发布日期“{text}”无效：请填写日期，例如 2026-11-22 (publish date must be a date)")
