"""The row's opening image, checked before anything is spent on it."""

from __future__ import annotations

from pathlib import Path

from connectors import ffmpeg
from storage.errors import BadInput, MediaError

MAX_IMAGE_PIXELS = 50_000_000  # beyond this, decoding one frame can take gigabytes of memory
_UNREADABLE = "首帧图片无法识别：请上传 jpg/png/webp 格式的图片 (opening image is not a readable image)"


def check_opening_image(path: Path) -> None:
    """BadInput unless `path` is an image of a size we can decode."""
    try:
        info = ffmpeg.probe(path)
    except MediaError as e:
        raise BadInput(_UNREADABLE) from e
    if not info.width or not info.height:
        raise BadInput(_UNREADABLE)
    if info.width * info.height > MAX_IMAGE_PIXELS:
        raise BadInput(f"首帧图片太大（{info.width}x{info.height}），请缩小到 5000 万像素以内后重新上传")
