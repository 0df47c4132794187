"""Opening images as users really upload them (HEIC, transparent PNG) and as attackers might
(a playlist posing as a picture, a strip that is small on disk and huge in memory)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image

from pipeline.inputs import MAX_SIDE, prepare_opening_image
from storage.errors import BadInput
from storage.models import ProjectState
from sync.rows import text_of

from conftest import Sheet

RED = (200, 30, 40)


def colour_at(path: Path, xy: tuple[int, int]) -> tuple[int, ...]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel(xy)


def close(a, b, tolerance: int = 6) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def test_an_iphone_heic_photo_is_decoded(tmp_path):
    from pillow_heif import register_heif_opener

    register_heif_opener()
    Image.new("RGB", (320, 240), RED).save(tmp_path / "IMG_0001.HEIC")
    prepare_opening_image(tmp_path / "IMG_0001.HEIC", tmp_path / "opening.jpg")
    with Image.open(tmp_path / "opening.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (320, 240))
    assert close(colour_at(tmp_path / "opening.jpg", (100, 100)), RED)


def test_transparent_png_parts_show_on_white_not_on_their_stored_colour(tmp_path):
    im = Image.new("RGBA", (200, 200), (0, 0, 0, 0))  # transparent black: dropped alpha shows black
    im.paste((*RED, 255), (50, 50, 150, 150))
    im.save(tmp_path / "cutout.png")
    prepare_opening_image(tmp_path / "cutout.png", tmp_path / "opening.jpg")
    assert close(colour_at(tmp_path / "opening.jpg", (10, 10)), (255, 255, 255))
    assert close(colour_at(tmp_path / "opening.jpg", (100, 100)), RED)


def test_a_photo_taken_sideways_is_turned_upright(tmp_path):
    im = Image.new("RGB", (300, 200), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    im.save(tmp_path / "side.jpg", exif=exif)
    prepare_opening_image(tmp_path / "side.jpg", tmp_path / "opening.jpg")
    with Image.open(tmp_path / "opening.jpg") as out:
        assert out.size == (200, 300)


def test_a_strip_small_on_disk_but_huge_in_memory_is_refused_by_its_side(tmp_path):
    bomb = tmp_path / "strip.png"
    Image.new("L", (50_000, 1000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 1_000_000 and 50_000 * 1000 <= 50_000_000  # under the area cap
    with pytest.raises(BadInput, match=f"每边最多 {MAX_SIDE} 像素"):
        prepare_opening_image(bomb, tmp_path / "opening.jpg")
    assert not (tmp_path / "opening.jpg").exists()


@pytest.mark.parametrize("content", [
    b"ffconcat version 1.0\nfile '/etc/hostname'\n",
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    b"\x00" * 64,
])
def test_files_that_are_not_pictures_are_refused(tmp_path, content):
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(BadInput, match="首帧图片无法识别"):
        prepare_opening_image(tmp_path / "x.jpg", tmp_path / "opening.jpg")


def test_an_image_that_is_a_playlist_of_another_projects_video_is_refused(sheet: Sheet, tmp_path):
    # Someone else's finished video, and an HLS playlist pointing at it by absolute path.
    secret = tmp_path / "other" / "final.mp4"
    secret.parent.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=green:s=180x320:d=1", "-c:v", "libx264",
                    "-f", "hls", "-hls_time", "1", "-hls_segment_filename", str(secret.parent / "final%d.ts"),
                    str(secret.with_suffix(".m3u8"))], check=True)
    playlist = secret.with_suffix(".m3u8").read_text().replace("final0.ts", str(secret.parent / "final0.ts"))
    cols = sheet.cols
    token = sheet.emu.upload_media(sheet.app_token, "cat.jpg", playlist.encode(), "image/jpeg")
    evil, good = sheet.add_rows([
        {cols.image: [{"file_token": token}], cols.template: "tiny", cols.shot_count: 1},
        {cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1},
    ])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, evil)
    assert project.state == ProjectState.failed and project.final_url is None
    assert "首帧图片无法识别" in text_of(sheet.row(evil)["fields"][cols.error])
    assert not app.store.paths(project).opening_image.exists()
    assert app.store.by_record(sheet.table_id, good).state == ProjectState.completed
