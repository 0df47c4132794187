"""Secrets stay in settings; URLs from rows are fetched with limits; huge images are refused."""

from __future__ import annotations

import http.server
import logging
import subprocess
import threading
import time
from pathlib import Path

import pytest

from connectors.feishu.protocol import FieldType
from connectors.fetch import ImageFetcher
from storage.errors import BadInput, Transient
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
    # The database last: a WAL file listed above may be checkpointed into it and gone by now.
    for path in sorted(written, key=lambda p: p.name == "sheetreel.db"):
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            continue
        assert SECRET.encode() not in content, path
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


@pytest.mark.parametrize("address", [
    "100.64.0.1", "100.100.100.200",                 # shared address space, Alibaba Cloud metadata
    "169.254.169.254", "10.0.0.1", "127.0.0.1", "0.0.0.0", "192.168.1.1", "172.16.0.1",
    "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:100.100.100.200",
    "2002:7f00:1::1", "2002:6464:64c8::1",           # 6to4 of 127.0.0.1 and 100.100.100.200
    "64:ff9b::a9fe:a9fe",                            # NAT64 of 169.254.169.254
])
def test_internal_addresses_are_refused_in_every_form(tmp_path, address):
    fetcher = ImageFetcher(max_bytes=1000, resolver=lambda host, port: [address])
    with pytest.raises(BadInput, match="内网地址"):
        fetcher.fetch("https://images.example.com/a.jpg", tmp_path / "a.jpg")


@pytest.mark.parametrize("url", ["http://[::1/x.jpg", "http://[zz]/a.jpg", "ftp://example.com/a.jpg", "https:///a.jpg",
                                 "http://example.com:99999/a.jpg", "图片.jpg"])
def test_a_malformed_link_is_the_rows_error_not_a_crash(tmp_path, url):
    fetcher = ImageFetcher(max_bytes=1000, resolver=lambda host, port: ["8.8.8.8"])
    with pytest.raises(BadInput, match="首帧图片链接"):
        fetcher.fetch(url, tmp_path / "a.jpg")


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass_the_check(address):
    import ipaddress

    from connectors.fetch import blocked

    assert not blocked(ipaddress.ip_address(address))


def test_a_rebinding_name_cannot_reach_the_internal_address_it_turns_into(tmp_path, monkeypatch):
    """The name is public when checked and internal a moment later; the download still goes to
    the address that was checked. (127.0.0.1 plays the public site, 127.0.0.2 the internal one.)"""
    import socket

    def serve(host: str, port: int, body: bytes):
        class One(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append((host, self.headers["Host"]))
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer((host, port), One)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    hits: list = []
    public = serve("127.0.0.1", 0, b"public")
    port = public.server_address[1]
    internal = serve("127.0.0.2", port, b"internal secret")  # the same port: only the address differs
    answers = iter(["127.0.0.1"])
    real = socket.getaddrinfo

    def rebinding(host, *args, **kw):  # the first answer public, every later one internal
        if host == "rebind.example":
            return real(next(answers, "127.0.0.2"), *args, **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    fetcher = ImageFetcher(max_bytes=1000, is_blocked=lambda a: str(a) == "127.0.0.2")
    try:
        fetcher.fetch(f"http://rebind.example:{port}/a.jpg", tmp_path / "a.jpg")
    finally:
        public.shutdown()
        internal.shutdown()
    assert (tmp_path / "a.jpg").read_bytes() == b"public"
    assert hits == [("127.0.0.1", f"rebind.example:{port}")]


def test_a_server_trickling_bytes_hits_the_deadline_and_frees_the_worker(tmp_path, trickle):
    fetcher = ImageFetcher(max_bytes=10_000_000, allow_private=True, timeout=5, deadline=2)
    started = time.monotonic()
    with pytest.raises(Transient, match="2 秒仍未完成"):
        fetcher.fetch(f"{trickle}/slow.jpg", tmp_path / "slow.jpg")
    assert time.monotonic() - started < 2 + 5 + 30  # the deadline, one read timeout, a loaded machine
    assert not (tmp_path / "slow.jpg").exists()


def test_llm_and_speech_calls_have_a_total_deadline_too(trickle):
    from connectors.llm import OpenAIChat
    from connectors.tts import OpenAISpeech
    from storage.errors import Unavailable

    for call in (lambda: OpenAIChat(f"{trickle}/v1", "sk-test", "m", timeout=2).complete([{"role": "user", "content": "hi"}]),
                 lambda: OpenAISpeech(f"{trickle}/v1", "sk-test", timeout=2).synthesize("你好", Path("/nonexistent/x.mp3"),
                                                                                     voice="alloy", speed=1.0)):
        started = time.monotonic()
        with pytest.raises(Unavailable, match="超时"):
            call()
        assert time.monotonic() - started < 2 + 2 + 30


def test_signed_urls_and_tokens_are_redacted_in_log_lines():
    from sync.redact import redact

    line = ("GET https://b.oss-cn-hangzhou.aliyuncs.com/p/final.mp4?OSSAccessKeyId=LTAIabc&Expires=1&Signature=xyz%3D "
            "Authorization: Bearer t-g104abc.def POST https://open.feishu.cn/open-apis/bot/v2/hook/2f1e-99 ok")
    clean = redact(line)
    for secret in ("LTAIabc", "xyz%3D", "t-g104abc.def", "2f1e-99"):
        assert secret not in clean
    assert "Expires=1" in clean and "/p/final.mp4" in clean


def test_feishu_and_oss_calls_end_by_their_deadline_however_slowly_they_answer(trickle, tmp_path):
    from connectors.feishu.lark_client import LarkBitable, make_lark_client
    from connectors.store.oss import OssObjectStore
    from storage.errors import Unavailable

    table = LarkBitable(make_lark_client("cli_x", "secret", trickle, timeout=5), "bascnX", "tblX", deadline_seconds=2)
    store = OssObjectStore(trickle.removeprefix("http://"), "bucket", "ak", "sk", call_deadline=2)
    (tmp_path / "f.mp4").write_bytes(b"video")
    for call, said in ((table.list_fields, "飞书在 2 秒内没有答完"),
                       (lambda: store.put(tmp_path / "f.mp4", "p/f.mp4"), "OSS 在 2 秒内没有完成")):
        started = time.monotonic()
        with pytest.raises(Unavailable, match=said):
            call()
        assert time.monotonic() - started < 2 + 30  # the caller is free; the stuck thread is not its problem
