"""Colour drift: the measure sees a colour cast, and the correction removes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from connectors import ffmpeg
from pipeline.drift import colour_distance, correct_towards, guard, lab_to_rgb, rgb_to_lab
from storage.errors import MediaError

THRESHOLD = 6.0  # a plainly visible cast; what the pipeline would act on


def still(out: Path, source: str = "testsrc2=s=320x240", vf: str | None = None) -> Path:
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", source, "-frames:v", "1"]
    if out.suffix == ".jpg":  # written the way pipeline/frames.py writes frames
        argv += ["-vf", ",".join(filter(None, [vf, ffmpeg.JPEG_ARGS[1]])), *ffmpeg.JPEG_ARGS[2:]]
    elif vf:
        argv += ["-vf", vf]
    subprocess.run([*argv, str(out)], check=True)
    return out


@pytest.fixture
def original(tmp_path) -> Path:
    return still(tmp_path / "original.jpg")


@pytest.fixture
def shifted(tmp_path) -> Path:
    # A warm cast through shadows, mid-tones and highlights: what a few drifting shots look like.
    return still(tmp_path / "shifted.jpg", vf="colorbalance=rs=0.3:bs=-0.3:rm=0.3:bm=-0.3:rh=0.2:bh=-0.2")


def test_lab_round_trip_is_exact_enough():
    rgb = np.random.default_rng(0).integers(0, 256, size=(50, 3), dtype=np.uint8)
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1
    white = rgb_to_lab(np.array([255, 255, 255], np.uint8))
    assert white == pytest.approx([100, 0, 0], abs=0.01)


def test_identical_frames_have_no_distance(original, tmp_path):
    assert colour_distance(original, original) == pytest.approx(0.0, abs=1e-9)
    again = still(tmp_path / "again.png")  # the same picture, another format
    assert colour_distance(original, again) < 1.0


def test_a_colour_cast_is_far(original, shifted):
    assert colour_distance(original, shifted) > THRESHOLD


def test_the_guard_measures_and_corrects_only_above_its_threshold(original, shifted, tmp_path):
    out = tmp_path / "seed.jpg"
    assert guard(original, original, out, THRESHOLD) == pytest.approx(0.0, abs=1e-9)
    assert not out.exists()  # nothing to correct: the frame seeds the next shot as it is
    distance = guard(shifted, original, out, THRESHOLD)
    assert distance == pytest.approx(colour_distance(shifted, original)) and distance > THRESHOLD
    assert colour_distance(out, original) < THRESHOLD / 2
    out.unlink()
    assert guard(shifted, original, out, None) == pytest.approx(distance)  # no threshold: measure only
    assert not out.exists()


def test_motion_without_a_cast_is_near(original, tmp_path):
    later = still(tmp_path / "later.jpg", source="testsrc2=s=320x240,trim=start_frame=10")
    assert colour_distance(original, later) < THRESHOLD / 2


def test_correction_removes_the_cast(original, shifted, tmp_path):
    out = tmp_path / "corrected.jpg"
    correct_towards(shifted, original, out)
    before, after = colour_distance(original, shifted), colour_distance(original, out)
    assert after < 2.5 and after < before / 4  # not 0: clipping at the gamut edge remains
    with Image.open(out) as img:  # a JPEG of the frame's own size, like pipeline/frames.py writes
        assert (img.format, img.size) == ("JPEG", (320, 240))


def test_strength_scales_the_correction(original, shifted, tmp_path):
    half, none = tmp_path / "half.jpg", tmp_path / "none.jpg"
    correct_towards(shifted, original, half, strength=0.5)
    correct_towards(shifted, original, none, strength=0.0)
    full = colour_distance(original, shifted)
    assert colour_distance(original, none) == pytest.approx(full, abs=1.0)
    assert full / 4 < colour_distance(original, half) < full * 3 / 4


def test_undecodable_frame_leaves_no_output(original, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 nope")
    with pytest.raises(MediaError):
        correct_towards(broken, original, tmp_path / "out.jpg")
    with pytest.raises(MediaError):
        colour_distance(broken, original)
    assert not (tmp_path / "out.jpg").exists() and not list(tmp_path.glob(".*partial*"))


def test_a_zoom_into_one_part_of_the_picture_is_not_drift_and_is_left_alone(tmp_path):
    # Mostly green ground below a blue sky: a zoom into the ground has a far greener average.
    photo = tmp_path / "photo.png"
    im = Image.new("RGB", (640, 960), (70, 130, 220))
    im.paste((60, 150, 50), (0, 500, 640, 960))
    im.paste((255, 255, 255), (100, 350, 540, 430))
    im.save(photo)
    crop = tmp_path / "crop.jpg"
    still(crop, source=f"movie={photo}", vf="crop=320:480:160:420,scale=320:480")
    assert colour_distance(crop, photo) < 1.5
    out = tmp_path / "out.jpg"
    correct_towards(crop, photo, out)
    a = np.asarray(Image.open(crop).convert("RGB"), dtype=int)
    b = np.asarray(Image.open(out).convert("RGB"), dtype=int)
    assert np.abs(a - b).mean() < 2 and np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max() < 2


def test_a_frame_that_is_not_a_view_of_the_reference_is_never_tinted(original, tmp_path):
    other = still(tmp_path / "other.jpg", source="color=c=0xC08040:s=320x240")
    out = tmp_path / "out.jpg"
    correct_towards(other, original, out)
    a = np.asarray(Image.open(other).convert("RGB"), dtype=int)
    b = np.asarray(Image.open(out).convert("RGB"), dtype=int)
    assert np.abs(a - b).max() <= 2


def test_registration_scores_every_position_as_the_direct_formula_does():
    from pipeline.drift import _Reference

    rng = np.random.default_rng(5)
    image = rng.random((40, 30)) * 100
    template = image[7:7 + 25, 4:4 + 18] * 0.9 + rng.random((25, 18)) * 3  # a darker, noisy view
    # Normalized cross-correlation written out window by window.
    t = template - template.mean()
    best = max(
        (float((w := image[y:y + 25, x:x + 18]) .ravel() @ t.ravel() / (np.sqrt(((w - w.mean()) ** 2).sum()) * np.sqrt((t ** 2).sum()))), y, x)
        for y in range(40 - 25 + 1) for x in range(30 - 18 + 1)
    )
    reference = _Reference(image)
    score, y, x = reference.best_position(template)
    assert (y, x) == (best[1], best[2]) == (7, 4)
    assert score == pytest.approx(best[0], abs=1e-9)
    # The reference is prepared once and serves templates of every size up to its own.
    assert reference.best_position(image)[1:] == (0, 0)
    assert reference.best_position(image[20:28, 10:18])[1:] == (20, 10)
