"""Secrets stay in settings; URLs from rows are fetched with limits; huge images are refused."""

from __future__ import annotations

import logging
import subprocess

import pytest

from connectors.feishu.protocol import FieldType
from connectors.fetch import ImageFetcher
from storage.errors import BadInput
from storage.models import ProjectState
from sync.rows import text_of

from conftest import ASSETS, SECRET, Sheet


def test_the_app_secret_is_never_written_to_db_meta_or_logs(sheet: Sheet, caplog):
    caplog.set_level(logging.DEBUG)
    cols = sheet.cols
    sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1},
                    {cols.template: "tiny"}])
    sheet.app().once()
    data = sheet.settings.data_dir
    written = [p for p in data.rglob("*") if p.is_file() and p.suffix in ("", ".db", ".json", ".db-wal")]
    assert any(p.name == "meta.json" for p in written) and any(p.name == "sheetreel.db" for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    assert SECRET not in repr(sheet.settings)


def image_sheet(emulator, tmp_path, **settings) -> Sheet:
    return Sheet(emulator, tmp_path / "d", overrides={"首帧图片": FieldType.url}, **settings)


def test_loopback_image_urls_are_refused_unless_allowed(emulator, tmp_path, file_server):
    www, base = file_server
    (www / "cat.jpg").write_bytes((ASSETS / "sample_1.jpg").read_bytes())
    sheet = image_sheet(emulator, tmp_path, SHEETREEL_ALLOW_PRIVATE_URLS=False)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: {"text": "x", "link": f"{base}/cat.jpg"}, cols.template: "tiny"}])
    app = sheet.app()
    app.once()
    assert app.store.by_record(sheet.table_id, rid).state == ProjectState.failed
    assert "内网地址" in text_of(sheet.row(rid)["fields"][cols.error])


def test_an_image_larger_than_the_limit_is_refused_before_it_is_all_read(tmp_path, file_server):
    www, base = file_server
    (www / "big.jpg").write_bytes(b"\xff\xd8" + b"0" * 300_000)
    fetcher = ImageFetcher(max_bytes=100_000, allow_private=True)
    with pytest.raises(BadInput, match="太大"):
        fetcher.fetch(f"{base}/big.jpg", tmp_path / "out.jpg")
    assert not (tmp_path / "out.jpg").exists()


def test_an_image_too_large_to_decode_safely_fails_the_row(emulator, tmp_path, file_server):
    www, base = file_server
    huge = www / "huge.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=blue:s=9000x6000", "-frames:v", "1", str(huge)],
                   check=True)
    sheet = image_sheet(emulator, tmp_path)
    cols = sheet.cols
    good, bad = sheet.add_rows([
        {cols.image: {"text": "ok", "link": f"{base}/huge.png".replace("huge.png", "ok.jpg")}, cols.template: "tiny", cols.shot_count: 1},
        {cols.image: {"text": "huge", "link": f"{base}/huge.png"}, cols.template: "tiny"},
    ])
    (www / "ok.jpg").write_bytes((ASSETS / "sample_2.jpg").read_bytes())
    app = sheet.app()
    app.once()
    assert app.store.by_record(sheet.table_id, good).state == ProjectState.completed
    assert app.store.by_record(sheet.table_id, bad).state == ProjectState.failed
    assert "首帧图片太大（9000x6000）" in text_of(sheet.row(bad)["fields"][cols.error])


def test_non_http_schemes_are_refused(tmp_path):
    fetcher = ImageFetcher(max_bytes=1000, allow_private=True)
    for url in ("file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x"):
        with pytest.raises(BadInput, match="无效"):
            fetcher.fetch(url, tmp_path / "x.jpg")
