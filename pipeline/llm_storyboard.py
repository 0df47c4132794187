"""Storyboards written by an OpenAI-compatible chat model, validated, and cached on disk.

A reply that fails validation goes back to the model with the reason, a bounded number of
times. Transient failures of the chat service get a few short, capped waits here (the runner's
own retry would redo the whole step much later); anything longer is raised for the runner.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from connectors import ffmpeg
from connectors.llm import ChatClient, user_message
from pipeline.templates import TemplateConfig
from storage import atomic
from storage.errors import BadInput, NotFound, Permanent, Transient
from storage.retry import RetryPolicy
from storage.storyboard import Camera, Shot, Storyboard, explain

CACHE_VERSION = 1  # bump when the messages we send change, so old answers are not reused
BACKOFF_BASE, BACKOFF_CAP = 1.0, 30.0
MAX_RETRY_AFTER = 60.0  # a longer wait is the runner's business, not a blocked worker's
MAX_IMAGE_SIDE = 1024
# How much of a rejected reply goes back to the model with the fix request: a valid board is far
# shorter, and echoing a runaway reply whole would multiply the next request's size and cost.
MAX_ECHO = 8000

SYSTEM = (
    "你是短视频分镜师。只输出一个 JSON 对象，不要任何解释：{{\"shots\": [...]}}，正好 {shot_count} 个镜头。"
    "每个镜头是一个对象：index（从 0 开始依次编号的整数），prompt（非空字符串，描述画面与动作），"
    "duration（秒，数字，约 {shot_duration}），camera（只能是 {cameras} 之一），"
    "narration（旁白字符串或 null），stock_tags（字符串列表，可为空）。"
)


class LLMStoryboarder:
    name = "llm"

    def __init__(
        self,
        chat: ChatClient,
        cache_dir: Path,
        max_fix_attempts: int = 2,
        max_transient_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        supports_images: bool = False,
        json_mode: bool = True,
    ):
        self.chat = chat
        self.cache_dir = Path(cache_dir)
        self.max_fix_attempts = max(0, max_fix_attempts)
        self.retry = RetryPolicy(attempts=max(0, max_transient_retries) + 1, base=BACKOFF_BASE, cap=BACKOFF_CAP,
                                 max_retry_after=MAX_RETRY_AFTER)
        self.sleep = sleep
        self.supports_images = supports_images
        self.json_mode = json_mode

    def write(self, template: TemplateConfig, scene: str, shot_count: int, image: Path) -> Storyboard:
        prompt = render_prompt(template, scene, shot_count)
        jpeg = model_jpeg(image) if self.supports_images else None
        cache = self.cache_dir / f"{self._cache_key(template, prompt, scene, shot_count, image)}.json"
        if (board := _read_cache(cache, shot_count)) is not None:
            return board
        messages = [
            {"role": "system", "content": system_prompt(template, shot_count)},
            user_message(prompt, jpeg),
        ]
        board = self._converse(messages, template, shot_count)
        atomic.write_text(cache, board.model_dump_json(indent=2))
        return board

    def _converse(self, messages: list[dict], template: TemplateConfig, shot_count: int) -> Storyboard:
        tries = self.max_fix_attempts + 1
        for _ in range(tries):
            reply = self._complete(messages)
            try:
                return parse_storyboard(reply, shot_count, template.shot_duration, template.cameras)
            except ReplyError as e:
                reason = e.reason
            echo = reply if len(reply) <= MAX_ECHO else reply[:MAX_ECHO] + "…（回复过长，已截断）"
            messages = [*messages, {"role": "assistant", "content": echo}, fix_request(reason, shot_count)]
        raise BadInput(
            f"分镜生成失败：模型连续 {tries} 次返回的分镜格式不正确（{reason}），请重试或改用模板分镜"
        )

    def _complete(self, messages: list[dict]) -> str:
        for attempt in itertools.count():
            try:
                return self.chat.complete(messages, json_mode=self.json_mode)
            except Transient as e:
                delay = self._delay(e, attempt)
                if delay is None:
                    raise
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, err: Transient, attempt: int) -> float | None:
        """Seconds to wait before asking again, or None to give up and raise."""
        return self.retry.next_delay(attempt + 1, getattr(err, "retry_after", None))

    def _cache_key(self, template: TemplateConfig, prompt: str, scene: str, shot_count: int, image: Path) -> str:
        parts = [
            CACHE_VERSION, template.id, prompt, scene, shot_count,
            _sha256(image), self.chat.model, self.supports_images,
        ]
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


def render_prompt(template: TemplateConfig, scene: str, shot_count: int) -> str:
    try:
        text = template.prompt_text()
    except OSError as e:
        raise Permanent(f"模板“{template.id}”缺少分镜提示词文件 {template.prompt_file}") from e
    try:
        return text.format(**_fields(template, shot_count), scene=scene)
    except (KeyError, IndexError, ValueError) as e:
        raise Permanent(
            f"模板“{template.id}”的分镜提示词文件 {template.prompt_file} 有无法识别的占位符 {e}："
            "可用 {scene} {shot_count} {shot_duration} {cameras}，字面的大括号请写成 {{ }}"
        ) from e


def system_prompt(template: TemplateConfig, shot_count: int) -> str:
    return SYSTEM.format(**_fields(template, shot_count))


def fix_request(reason: str, shot_count: int) -> dict:
    return {
        "role": "user",
        "content": f"上面的回复不合格：{reason}。请只输出修正后的完整 JSON 对象，正好 {shot_count} 个镜头。",
    }


def model_jpeg(image: Path) -> bytes:
    """The image as a JPEG no larger than MAX_IMAGE_SIDE: big photos cost tokens and time."""
    if not image.is_file():
        raise NotFound(f"首帧图片不存在：{image.name}")
    info = ffmpeg.probe(image)
    small = max(info.width or 0, info.height or 0) <= MAX_IMAGE_SIDE
    if info.video_codec == "mjpeg" and small:
        return image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="sheetreel-img-") as tmp:
        out = Path(tmp) / "image.jpg"
        ffmpeg.run_to(out, lambda dst: _downscale_argv(image, dst), what=f"downscale {image.name} for the model")
        return out.read_bytes()


def _downscale_argv(image: Path, out: Path) -> list[str]:
    side = MAX_IMAGE_SIDE
    # min() with the input size keeps small images as they are: only ever shrink.
    scale = (
        f"scale='min({side},iw)':'min({side},ih)':force_original_aspect_ratio=decrease"
        ":force_divisible_by=2:out_color_matrix=bt601:out_range=pc,format=yuvj420p"
    )
    return [ffmpeg.FFMPEG, "-i", str(image), "-frames:v", "1", "-vf", scale, "-q:v", "3", "-f", "mjpeg", str(out)]


def _fields(template: TemplateConfig, shot_count: int) -> dict:
    return {
        "shot_count": shot_count,
        "shot_duration": f"{template.shot_duration:g}",
        "cameras": ", ".join(c.value for c in Camera),
    }


def _sha256(path: Path) -> str:
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(path: Path, shot_count: int) -> Storyboard | None:
    """A cached board, or None when there is none or it is unreadable (then we ask again)."""
    try:
        board = Storyboard.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None
    return board if len(board.shots) == shot_count else None


# -- reading the reply -------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_SECONDS_SUFFIX = "s秒 "


class ReplyError(Exception):
    """The reply is not a usable storyboard; `reason` goes to the model and, in the end, the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_storyboard(reply: str, shot_count: int, shot_duration: float, cameras: list[Camera]) -> Storyboard:
    items = _shot_items(_json_in(reply), shot_count)
    _check_numbering(items)
    return Storyboard(shots=[_shot(i, item, shot_duration, cameras) for i, item in enumerate(items)])


def _json_in(reply: str) -> object:
    """The JSON value in a reply that may wrap it in ``` fences or put prose before it."""
    decoder, error = json.JSONDecoder(), "回复里没有 JSON 对象"
    for text in [m.group(1) for m in _FENCE.finditer(reply)] + [reply]:
        for start in sorted(i for i in (text.find("{"), text.find("[")) if i >= 0):
            try:
                return decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError as e:
                error = f"JSON 格式错误：{e.msg}（第{e.lineno}行第{e.colno}列）"
    raise ReplyError(error)


def _shot_items(data: object, shot_count: int) -> list[dict]:
    items = data.get("shots") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ReplyError('缺少 "shots" 镜头列表')
    if len(items) != shot_count:
        raise ReplyError(f"需要正好 {shot_count} 个镜头，回复里有 {len(items)} 个")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ReplyError(f"第{i + 1}个镜头不是 JSON 对象")
    return items


def _check_numbering(items: list[dict]) -> None:
    # Models often count from 1; either way we renumber 0..N-1. Anything else may mean the
    # shots are out of order, which we cannot repair.
    given, n = [item.get("index") for item in items], len(items)
    if given not in ([None] * n, list(range(n)), list(range(1, n + 1))):
        raise ReplyError("镜头编号 index 应从 0 开始依次递增")


def _shot(i: int, item: dict, shot_duration: float, cameras: list[Camera]) -> Shot:
    where = f"第{i + 1}个镜头"
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ReplyError(f"{where}缺少 prompt")
    try:
        return Shot(
            index=i,
            prompt=prompt,
            duration=_duration(item.get("duration"), shot_duration, where),
            camera=_camera(item.get("camera"), cameras[i % len(cameras)], where),
            narration=item.get("narration") or None,
            stock_tags=_tags(item.get("stock_tags")),
        )
    except ValidationError as e:
        raise ReplyError(f"{where}：{explain(e)}") from e


def _duration(raw: object, target: float, where: str) -> float:
    if raw is None:
        return target
    try:
        value = float(str(raw).strip().rstrip(_SECONDS_SUFFIX))
    except ValueError:
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value):
        raise ReplyError(f"{where}的 duration 不是秒数：{raw!r}")
    # The template sets the pacing; keep the model within half to double of it (and ≤ 30 s).
    return min(max(value, target / 2), target * 2, 30.0)


def _camera(raw: object, default: Camera, where: str) -> Camera:
    if raw is None or raw == "":
        return default
    key = re.sub(r"[\s\-]+", "_", str(raw).strip().lower())
    if key not in Camera.__members__:
        raise ReplyError(f"{where}的 camera “{raw}” 无效，只能是 {', '.join(c.value for c in Camera)}")
    return Camera(key)


def _tags(raw: object) -> list[str]:
    if raw is None:
        return []
    values = re.split(r"[,，、]", raw) if isinstance(raw, str) else raw if isinstance(raw, list) else [raw]
    return [str(v).strip() for v in values if str(v).strip()]
