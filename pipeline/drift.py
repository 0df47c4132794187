"""Colour drift guard for chained image-to-video: each shot starts from the last frame of the one
before, so a slight colour cast per shot compounds over a video. Measure it, and pull a frame
back towards a reference (normally the opening image) before it seeds the next shot.

The measure, `colour_distance`, is CIE76 ΔE*ab between the *average* CIELAB colours of the two
frames (sRGB, D65), computed on 64x64 downscales. It is a global colour-cast measure: motion and
re-framing inside the picture barely move it, whereas a per-pixel ΔE would count every moved
object as drift. About 2.3 is a just-noticeable difference; a cast is plainly visible by ~6.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from connectors import ffmpeg

SAMPLE_SIDE = 64
# Keep contrast matching sane on near-flat frames (a black frame has ~0 spread).
MIN_STD = 1.0
STD_RATIO_LIMITS = (0.5, 2.0)

# Linear sRGB -> CIE XYZ (D65), and the D65 white point.
_RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6 / 29


def colour_distance(a: Path, b: Path) -> float:
    """ΔE*ab (CIE76) between the mean Lab colours of two frames; 0 means the same colour balance."""
    mean_a = rgb_to_lab(_decode(a, SAMPLE_SIDE)).reshape(-1, 3).mean(axis=0)
    mean_b = rgb_to_lab(_decode(b, SAMPLE_SIDE)).reshape(-1, 3).mean(axis=0)
    return float(np.linalg.norm(mean_a - mean_b))


def correct_towards(frame: Path, reference: Path, out: Path, strength: float = 1.0) -> None:
    """Write `frame` with its per-channel Lab mean and spread moved towards `reference`'s.

    strength 1.0 matches the reference's statistics fully, 0.0 leaves the frame as it is. The
    result is a JPEG written like pipeline/frames.py writes frames, atomically.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    size = ffmpeg.probe_first_frame(frame)
    lab = rgb_to_lab(_decode(frame, None, (size.width, size.height)))
    ref = rgb_to_lab(_decode(reference, SAMPLE_SIDE)).reshape(-1, 3)
    src = lab.reshape(-1, 3)
    mean_s, mean_r = src.mean(axis=0), ref.mean(axis=0)
    ratio = np.clip(np.maximum(ref.std(axis=0), MIN_STD) / np.maximum(src.std(axis=0), MIN_STD), *STD_RATIO_LIMITS)
    matched = (lab - mean_s) * ratio + mean_r
    _write_jpeg(lab_to_rgb(lab + strength * (matched - lab)), out)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> CIELAB (..., 3), float64."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    f = _f(linear @ _RGB_TO_XYZ.T / _WHITE)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) -> uint8 sRGB, out-of-gamut colours clipped."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    linear = np.clip((_f_inv(f) * _WHITE) @ _XYZ_TO_RGB.T, 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA**3, np.cbrt(t), t / (3 * _DELTA**2) + 4 / 29)


def _f_inv(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4 / 29))


def _decode(image: Path, side: int | None, size: tuple[int, int] | None = None) -> np.ndarray:
    """The first frame as RGB: `side` x `side` (area-averaged), or at its own `size`."""
    w, h = size if size else (side, side)
    scale = [] if size else [f"scale={side}:{side}:flags=area"]
    with tempfile.TemporaryDirectory(prefix="sheetreel-drift-") as tmp:
        raw = Path(tmp) / "frame.rgb"
        ffmpeg.run(
            [ffmpeg.FFMPEG, "-i", str(image), "-map", "0:v:0", "-frames:v", "1",
             "-vf", ",".join([*scale, "format=rgb24"]), "-f", "rawvideo", str(raw)],
            what=f"reading colours of {image.name}",
        )
        return np.fromfile(raw, np.uint8).reshape(h, w, 3)


def _write_jpeg(rgb: np.ndarray, out: Path) -> None:
    h, w, _ = rgb.shape
    with tempfile.TemporaryDirectory(prefix="sheetreel-drift-") as tmp:
        raw = Path(tmp) / "frame.rgb"
        np.ascontiguousarray(rgb).tofile(raw)
        ffmpeg.run_to(
            out,
            lambda dst: [
                ffmpeg.FFMPEG, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", str(raw),
                "-frames:v", "1", *ffmpeg.JPEG_ARGS, str(dst),
            ],
            what=f"colour-corrected frame {out.name}",
        )
