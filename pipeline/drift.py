"""Colour drift guard for chained image-to-video: each shot starts from the last frame of the one
before, so a slight colour cast per shot compounds over a video. Measure it, and pull a frame
back towards a reference (normally the opening image) before it seeds the next shot.

A cast is told apart from a change of framing by comparing what the two pictures share, not
their averages: a zoom into the green ground has a greener average than the whole photo, yet it
is the same ground. `match` finds where the frame sits in the reference (scale and offset, by
normalized cross-correlation of lightness, which a cast barely changes), and the cast is the
median CIELAB difference of the aligned pixels. A frame that cannot be placed (the picture has
changed too much) is never corrected: a guess would tint it. About 2.3 ΔE is a just-noticeable
difference; a cast is plainly visible by ~6.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import frames
from storage.errors import MediaError

REFERENCE_WIDTH = 96  # registration resolution: coarse is enough to place a frame, and fast
SCALES = np.geomspace(1.0, 4.0, 19)  # a chain of zooms can show a quarter of the opening image
MIN_CORRELATION = 0.6  # below this the frame is not a view of the reference
GAIN_LIMITS = (0.8, 1.25)

# Linear sRGB -> CIE XYZ (D65), and the D65 white point.
_RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6 / 29


@dataclass
class Match:
    """The frame's pixels and the reference's under them (Lab), or none if it could not be placed."""

    frame: np.ndarray
    reference: np.ndarray | None
    correlation: float

    @property
    def cast(self) -> np.ndarray:
        if self.reference is None:
            return np.zeros(3)
        return np.median(self.reference - self.frame, axis=0)


def colour_distance(a: Path, b: Path) -> float:
    """ΔE*ab (CIE76) of the colour cast of frame `a` against `b`; 0 means the same colours, however
    `a` is framed within `b`, and for a frame that is not a view of `b` at all."""
    return float(np.linalg.norm(match(a, b).cast))


def match(frame: Path, reference: Path) -> Match:
    return _match(_load(frame), reference)


def _match(picture: Image.Image, reference: Path) -> Match:
    ref_rgb = _resized(_load(reference), REFERENCE_WIDTH)
    ref = _Reference(_lightness(ref_rgb))
    best: tuple[float, int, int, np.ndarray] | None = None
    for scale in SCALES:
        rgb = _resized(picture, int(round(REFERENCE_WIDTH / scale)))
        fh, fw, _ = rgb.shape
        if fh > ref.lightness.shape[0] or fw < 8 or fh < 8:
            continue
        score, y, x = ref.best_position(_lightness(rgb))
        if best is None or score > best[0]:
            best = (score, y, x, rgb)
    if best is None:
        return Match(np.zeros((0, 3)), None, 0.0)
    score, y, x, rgb = best
    fh, fw, _ = rgb.shape
    frame_lab = rgb_to_lab(rgb).reshape(-1, 3)
    if score < MIN_CORRELATION:
        return Match(frame_lab, None, score)
    return Match(frame_lab, rgb_to_lab(ref_rgb[y : y + fh, x : x + fw]).reshape(-1, 3), score)


def _load(image: Path) -> Image.Image:
    """The picture as RGB, decoded in this process. Every picture the guard sees was written by
    SheetReel itself (frames by pipeline/frames.py, opening images re-encoded by pipeline/inputs.py), so only
    JPEG and PNG are read: an ffprobe and an ffmpeg per picture were most of a GPU host's CPU
    time between one shot and the next."""
    try:
        with Image.open(image, formats=("JPEG", "PNG")) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"cannot decode {image.name}: {e}") from e


def _resized(picture: Image.Image, width: int) -> np.ndarray:
    """Area-averaged to `width`, aspect kept."""
    height = max(1, int(round(width * picture.height / picture.width)))
    return np.asarray(picture.resize((max(1, width), height), Image.Resampling.BOX))


class _Reference:
    """The reference's lightness, ready for normalized cross-correlation with templates of any
    size up to its own: its spectrum and summed-area tables are computed once per match, not once
    per scale (a GPU host does this after every shot). The FFT is circular and only as large as
    the reference: a template placed where it fits never wraps around, and those are the only
    positions scored."""

    def __init__(self, lightness: np.ndarray):
        self.lightness = lightness
        ih, iw = lightness.shape
        self.shape = (_fast_length(ih), _fast_length(iw))
        self.spectrum = np.fft.rfft2(lightness, self.shape)
        self.sums, self.squares = _summed_area(lightness), _summed_area(lightness * lightness)

    def best_position(self, template: np.ndarray) -> tuple[float, int, int]:
        """Normalized cross-correlation of `template` at every position: the best one.

        Window sums come from the summed-area tables and the correlation from one FFT product,
        O(N log N) rather than O(positions x template)."""
        th, tw = template.shape
        ih, iw = self.lightness.shape
        t = template - template.mean()
        t_norm = np.sqrt((t**2).sum())
        sums, squares = _window(self.sums, th, tw), _window(self.squares, th, tw)
        spread = np.sqrt(np.maximum(squares - sums**2 / (th * tw), 1e-9))
        product = self.spectrum * np.conj(np.fft.rfft2(t, self.shape))
        correlation = np.fft.irfft2(product, self.shape)[: ih - th + 1, : iw - tw + 1]
        scores = correlation / (spread * max(t_norm, 1e-9))
        y, x = np.unravel_index(int(scores.argmax()), scores.shape)
        return float(scores[y, x]), int(y), int(x)


def _summed_area(a: np.ndarray) -> np.ndarray:
    table = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    table[1:, 1:] = a.cumsum(axis=0).cumsum(axis=1)
    return table


def _window(table: np.ndarray, th: int, tw: int) -> np.ndarray:
    """The sum of every th x tw window, from a summed-area table."""
    return table[th:, tw:] - table[:-th, tw:] - table[th:, :-tw] + table[:-th, :-tw]


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFTs of such sizes are the quick ones."""
    best = 2 * n
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB L* of uint8 sRGB: all registration needs, at a third of rgb_to_lab's cost."""
    return 116 * _f(_linear(rgb) @ _RGB_TO_XYZ[1]) - 16


def correct_towards(frame: Path, reference: Path, out: Path, strength: float = 1.0) -> None:
    """Write `frame` with its colour cast against `reference` removed (`strength` of it).

    The correction is fitted on aligned pixels only (per channel, gain and offset), so a faithful
    frame comes out as it went in whatever part of the reference it shows, and a frame that is not
    a view of the reference is left alone. The result is a JPEG written like pipeline/frames.py
    writes frames, atomically.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    picture = _load(frame)  # decoded once: matched at low resolution, corrected at its own
    _write_corrected(picture, _match(picture, reference), out, strength)


def guard(frame: Path, reference: Path, out: Path, threshold: float | None) -> float:
    """The colour distance of `frame` to `reference` (as `colour_distance`); above `threshold`,
    the corrected frame is written to `out` too. One decode and one match for both."""
    picture = _load(frame)
    m = _match(picture, reference)
    distance = float(np.linalg.norm(m.cast))
    if threshold is not None and distance > threshold:
        _write_corrected(picture, m, out, 1.0)
    return distance


def _write_corrected(picture: Image.Image, m: Match, out: Path, strength: float) -> None:
    lab = rgb_to_lab(np.asarray(picture))
    if m.reference is not None:
        gains, offsets = _fit(m.frame, m.reference)
        lab = lab + strength * ((lab * gains + offsets) - lab)
    frames.write_jpeg(lab_to_rgb(lab), out)


def _fit(frame: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, reference ≈ gain × frame + offset, robust to the few pixels that moved."""
    gains, offsets = np.ones(3), np.zeros(3)
    for c in range(3):
        x, y = frame[:, c], reference[:, c]
        keep = np.abs((y - x) - np.median(y - x)) <= 3 * (np.median(np.abs((y - x) - np.median(y - x))) + 1)
        if keep.sum() >= 16 and np.ptp(x[keep]) > 1:
            gain, offset = np.polyfit(x[keep], y[keep], 1)
            if GAIN_LIMITS[0] <= gain <= GAIN_LIMITS[1]:
                gains[c], offsets[c] = gain, offset
                continue
        offsets[c] = float(np.median(y[keep] - x[keep])) if keep.any() else 0.0
    return gains, offsets


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> CIELAB (..., 3), float64."""
    f = _f(_linear(rgb) @ _RGB_TO_XYZ.T / _WHITE)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def _linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> linear light in [0, 1]."""
    c = rgb.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


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
