"""The row's opening image, checked and made plain before anything is spent on it.

The downloaded bytes are decoded by Pillow's image decoders only (HEIC through pillow-heif) and
written back as an ordinary JPEG, so ffmpeg never sees what the user uploaded: a "picture" that
is really an HLS playlist or a concat list cannot make ffmpeg open other files.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from storage import atomic
from storage.errors import BadInput

MAX_IMAGE_PIXELS = 50_000_000  # beyond this, decoding one frame can take gigabytes of memory
MAX_SIDE = 8192  # a 50000x1000 strip is under the area cap and still makes ffmpeg allocate 1.3 GB
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "HEIF", "AVIF")  # never EPS/PDF and the like
# Transparent parts of a PNG (a cut-out product) show on white, as they do in the sheet.
BACKGROUND = (255, 255, 255)
_UNREADABLE = "首帧图片无法识别：请上传 jpg/png/webp/heic 格式的图片 (opening image is not a readable image)"


def _decoders() -> list[str]:
    from pillow_heif import register_heif_opener

    register_heif_opener()  # idempotent: it only adds HEIF to Pillow's table of openers
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


def prepare_opening_image(path: Path, dest: Path) -> None:
    """Decode `path` as an image, bound its size, and write it to `dest` as a plain RGB JPEG.

    BadInput for anything that is not an image we can decode safely."""
    formats = _decoders()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=formats) as im:  # reads the header only
                check_size(*im.size)
                im.seek(0)  # a GIF or an iPhone MPO: the first frame
                upright = ImageOps.exif_transpose(im)
                rgb = flatten(upright)
    except BadInput:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInput(_UNREADABLE) from e
    out = io.BytesIO()
    # 4:4:4 and high quality: this frame seeds the first shot and the colour guard.
    rgb.save(out, format="JPEG", quality=95, subsampling=0)
    atomic.write_bytes(dest, out.getvalue())


def check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise BadInput(_UNREADABLE)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise BadInput(f"首帧图片太大（{width}x{height}）：每边最多 {MAX_SIDE} 像素、总共最多 5000 万像素，"
                       "请缩小后重新上传")


def flatten(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on the background instead of dropped to whatever
    colour the transparent pixels happen to store."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")
