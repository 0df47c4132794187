"""ObjectStore contract, run against every store; then OSS specifics against the local fake OSS."""

from __future__ import annotations

import functools
import http.server
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from connectors.store.local import LocalObjectStore
from connectors.store.oss import OssObjectStore
from connectors.store.protocol import ObjectStore
from storage.errors import (
    AuthFailed,
    BadInput,
    NotFound,
    Permanent,
    RateLimited,
    Transient,
    Unavailable,
)

from fake_oss import FakeOss, crc64_ecma

BUCKET, AK, SECRET = "sheetreel-test", "test-ak", "s3cr3t-Value-never-shown"
KB = 1024


class Clock:
    """The fake's notion of now; tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeOss]:
    with FakeOss(buckets=(BUCKET,), credentials={AK: SECRET}, clock=clock) as server:
        yield server


def oss_store(fake: FakeOss, tmp_path: Path, **overrides) -> OssObjectStore:
    settings = dict(endpoint=fake.endpoint, bucket=BUCKET, access_key_id=AK, access_key_secret=SECRET,
                    multipart_threshold=100 * KB, part_size=100 * KB, checkpoint_dir=tmp_path / "oss-ckpt")
    return OssObjectStore(**(settings | overrides))


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fetch(url: str) -> bytes:
    """What a user's browser would get for this URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path)).read_bytes()
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.content


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain web server over a directory, the way the local store is meant to be served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietStaticHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietStaticHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=["local-file", "local-http", "oss"])
def store(request, tmp_path: Path) -> ObjectStore:
    if request.param == "local-file":
        root = tmp_path / "objects"
        return LocalObjectStore(root, root.as_uri())
    if request.param == "local-http":
        root, url = request.getfixturevalue("static_server")
        return LocalObjectStore(root, url)
    return oss_store(request.getfixturevalue("fake"), tmp_path)


# ---- the contract: every ObjectStore ------------------------------------------------------


class TestObjectStoreContract:
    def test_put_returns_a_url_that_serves_the_same_bytes(self, store: ObjectStore, tmp_path: Path):
        data = payload(5000)
        url = store.put(write(tmp_path / "in" / "final.mp4", data), "2024-05-01/tiny/p1/final.mp4")
        assert fetch(url) == data

    def test_exists_before_and_after_put(self, store: ObjectStore, tmp_path: Path):
        assert not store.exists("p1/cover.jpg")
        store.put(write(tmp_path / "cover.jpg", b"jpeg bytes"), "p1/cover.jpg")
        assert store.exists("p1/cover.jpg")
        assert not store.exists("p1/other.jpg")

    def test_delete_removes_and_is_idempotent(self, store: ObjectStore, tmp_path: Path):
        store.put(write(tmp_path / "a.bin", b"abc"), "p1/a.bin")
        store.delete("p1/a.bin")
        assert not store.exists("p1/a.bin")
        store.delete("p1/a.bin")  # deleting what is gone is not an error
        store.delete("never/there.bin")

    def test_overwrite_replaces(self, store: ObjectStore, tmp_path: Path):
        store.put(write(tmp_path / "v1.bin", b"first version"), "p1/final.mp4")
        url = store.put(write(tmp_path / "v2.bin", b"second, longer version"), "p1/final.mp4")
        assert fetch(url) == b"second, longer version"

    def test_fetch_brings_back_the_bytes_and_says_when_there_is_nothing(self, store: ObjectStore, tmp_path: Path):
        data = payload(3000, seed=2)
        store.put(write(tmp_path / "frame.jpg", data), "p1/frames/seg_00_last.jpg")
        dest = tmp_path / "other-host" / "frames" / "seg_00_last.jpg"
        assert store.fetch("p1/frames/seg_00_last.jpg", dest) and dest.read_bytes() == data
        missing = tmp_path / "other-host" / "none.jpg"
        assert store.fetch("p1/frames/none.jpg", missing) is False and not missing.exists()
        assert [p.name for p in dest.parent.iterdir()] == ["seg_00_last.jpg"]  # no partial download left

    @pytest.mark.parametrize("key", ["../x", "a//b", "/abs", "", "a/../b", "a/", "a/b\\c", "x/..", "a b"])
    def test_bad_keys_are_refused(self, store: ObjectStore, tmp_path: Path, key: str):
        src = write(tmp_path / "f.bin", b"x")
        for call in (lambda: store.put(src, key), lambda: store.exists(key), lambda: store.delete(key)):
            with pytest.raises(BadInput):
                call()


# ---- OSS specifics ------------------------------------------------------------------------


def test_small_file_is_one_put_with_a_signed_url(fake: FakeOss, tmp_path: Path):
    store = oss_store(fake, tmp_path)
    url = store.put(write(tmp_path / "final.mp4", payload(50 * KB)), "p1/final.mp4")
    assert fake.counts["PutObject"] == 1 and fake.counts["InitiateMultipartUpload"] == 0
    query = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))
    assert query.keys() >= {"OSSAccessKeyId", "Expires", "Signature"}
    assert urlsplit(url).path == f"/{BUCKET}/p1/final.mp4"
    assert int(query["Expires"]) == pytest.approx(time.time() + 7 * 24 * 3600, abs=60)
    assert fake.objects[BUCKET]["p1/final.mp4"].content_type == "video/mp4"


def test_prefix_is_prepended_and_public_base_url_skips_signing(fake: FakeOss, tmp_path: Path):
    store = oss_store(fake, tmp_path, prefix="/sheetreel/prod/", public_base_url="https://cdn.example.com/")
    url = store.put(write(tmp_path / "c.jpg", b"img"), "p1/cover.jpg")
    assert url == "https://cdn.example.com/sheetreel/prod/p1/cover.jpg"
    assert "sheetreel/prod/p1/cover.jpg" in fake.objects[BUCKET]
    assert store.exists("p1/cover.jpg")


def test_large_file_goes_multipart(fake: FakeOss, tmp_path: Path):
    data = payload(350 * KB, seed=7)
    store = oss_store(fake, tmp_path)
    url = store.put(write(tmp_path / "big.mp4", data), "p1/big.mp4")
    assert fetch(url) == data
    assert (fake.counts["InitiateMultipartUpload"], fake.counts["UploadPart"],
            fake.counts["CompleteMultipartUpload"], fake.counts["PutObject"]) == (1, 4, 1, 0)
    assert fake.objects[BUCKET]["p1/big.mp4"].etag.endswith("-4")
    assert fake.objects[BUCKET]["p1/big.mp4"].crc == crc64_ecma(data)
    assert fake.objects[BUCKET]["p1/big.mp4"].content_type == "video/mp4"
    assert not fake.uploads
    assert not any(p.is_file() for p in (tmp_path / "oss-ckpt").rglob("*")), "checkpoint kept after success"


def test_interrupted_multipart_upload_resumes_with_only_missing_parts(fake: FakeOss, tmp_path: Path):
    data = payload(350 * KB, seed=3)
    src = write(tmp_path / "big.mp4", data)
    fake.fail("UploadPart", status=500, code="InternalError", nth=2)

    with pytest.raises(Transient) as err:
        oss_store(fake, tmp_path, upload_threads=1).put(src, "p1/big.mp4")
    assert not isinstance(err.value, RateLimited)
    assert fake.part_numbers() == [1, 2]  # part 2 failed on the wire; 3 and 4 never left
    assert any(p.is_file() for p in (tmp_path / "oss-ckpt").rglob("*")), "no checkpoint to resume from"
    before = len(fake.calls)

    # A new store object, as after a process restart: the checkpoint on disk is what resumes.
    url = oss_store(fake, tmp_path, upload_threads=1).put(src, "p1/big.mp4")
    resumed = fake.calls[before:]
    assert [int(c.params["partNumber"]) for c in resumed if c.op == "UploadPart"] == [2, 3, 4]
    assert not any(c.op == "InitiateMultipartUpload" for c in resumed)
    assert any(c.op == "ListParts" for c in resumed)
    assert fake.counts["CompleteMultipartUpload"] == 1
    assert fetch(url) == data
    assert not fake.uploads


def test_parallel_upload_resumes_only_the_part_that_failed(fake: FakeOss, tmp_path: Path):
    data = payload(450 * KB, seed=5)
    src = write(tmp_path / "big.mp4", data)
    fake.fail("UploadPart", status=503, code="ServiceUnavailable", nth=3)
    with pytest.raises(Transient):
        oss_store(fake, tmp_path, upload_threads=3).put(src, "p1/big.mp4")
    (upload,) = fake.uploads.values()
    missing = sorted(set(range(1, 6)) - set(upload.parts))
    assert len(missing) == 1  # the other threads finished their parts
    before = len(fake.calls)

    url = oss_store(fake, tmp_path, upload_threads=3).put(src, "p1/big.mp4")
    assert [int(c.params["partNumber"]) for c in fake.calls[before:] if c.op == "UploadPart"] == missing
    assert fetch(url) == data


def test_signed_url_expires(fake: FakeOss, tmp_path: Path, clock: Clock):
    store = oss_store(fake, tmp_path, url_expiry_seconds=600)
    url = store.put(write(tmp_path / "f.mp4", b"video"), "p1/f.mp4")
    assert fetch(url) == b"video"
    clock.now = time.time() + 601
    resp = httpx.get(url)
    assert resp.status_code == 403
    assert "<Code>AccessDenied</Code>" in resp.text and "expired" in resp.text


def test_tampered_or_unsigned_url_is_refused(fake: FakeOss, tmp_path: Path):
    url = oss_store(fake, tmp_path).put(write(tmp_path / "f.mp4", b"video"), "p1/f.mp4")
    other_key = url.replace("/p1/f.mp4?", "/p1/g.mp4?")
    assert httpx.get(other_key).status_code == 403
    assert "SignatureDoesNotMatch" in httpx.get(other_key).text
    assert httpx.get(url.split("?")[0]).status_code == 403


def test_wrong_secret_is_auth_failed_without_leaking_secrets(fake: FakeOss, tmp_path: Path, caplog):
    wrong = "wrong-Secret-Value-123"
    store = oss_store(fake, tmp_path, access_key_secret=wrong)
    caplog.set_level(logging.DEBUG)
    for call in (lambda: store.put(write(tmp_path / "f.bin", b"x"), "p1/f.bin"), lambda: store.exists("p1/f.bin")):
        with pytest.raises(AuthFailed) as err:
            call()
        shown = "".join(traceback.format_exception(err.value)) + repr(err.value.__cause__)
        assert "SignatureDoesNotMatch" in str(err.value)
        assert "OSS_ACCESS_KEY_SECRET" in str(err.value)
        assert wrong not in shown and SECRET not in shown
    assert wrong not in caplog.text and wrong not in repr(store)


def test_injected_403_is_auth_failed(fake: FakeOss, tmp_path: Path):
    fake.fail("PutObject", status=403, code="AccessDenied")
    with pytest.raises(AuthFailed, match="bucket"):
        oss_store(fake, tmp_path).put(write(tmp_path / "f.bin", b"x"), "p1/f.bin")


def test_missing_bucket_is_not_found(fake: FakeOss, tmp_path: Path):
    store = oss_store(fake, tmp_path, bucket="no-such-bucket")
    with pytest.raises(NotFound, match="OSS_BUCKET"):
        store.exists("p1/f.bin")
    with pytest.raises(NotFound, match="OSS_BUCKET"):
        store.put(write(tmp_path / "f.bin", b"x"), "p1/f.bin")


@pytest.mark.parametrize(("status", "code", "expected"), [
    (503, "ServiceUnavailable", Unavailable), (500, "InternalError", Unavailable),
    (429, "TooManyRequests", RateLimited), (503, "SlowDown", RateLimited),
    (400, "InvalidArgument", Permanent),
])
def test_server_errors_are_translated(fake: FakeOss, tmp_path: Path, status: int, code: str, expected: type):
    fake.fail("PutObject", status=status, code=code)
    with pytest.raises(expected) as err:
        oss_store(fake, tmp_path).put(write(tmp_path / "f.bin", b"x"), "p1/f.bin")
    assert type(err.value) is expected
    assert code in str(err.value)


def test_unreachable_endpoint_is_transient(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = OssObjectStore(f"http://127.0.0.1:{port}", BUCKET, AK, SECRET, checkpoint_dir=tmp_path)
    with pytest.raises(Transient):
        store.exists("p1/f.bin")


def test_missing_local_file_is_not_found(fake: FakeOss, tmp_path: Path):
    with pytest.raises(NotFound):
        oss_store(fake, tmp_path).put(tmp_path / "nope.mp4", "p1/nope.mp4")
    assert fake.counts.total() == 0


@pytest.mark.parametrize("overrides", [
    {"bucket": "Bad_Bucket"}, {"prefix": "../up"}, {"url_expiry_seconds": 0}, {"part_size": 1024},
])
def test_bad_settings_are_permanent(fake: FakeOss, tmp_path: Path, overrides: dict):
    with pytest.raises(Permanent):
        oss_store(fake, tmp_path, **overrides)


def test_crc64_matches_the_published_check_value():
    assert crc64_ecma(b"123456789") == 0x995DC9BBDF1939FA


def test_signed_links_in_the_sheet_are_renewed_before_they_expire(emulator, fake: FakeOss, clock: Clock,
                                                                  tmp_path: Path, monkeypatch):
    import types

    import oss2

    from storage.models import ProjectState
    from sync.app import App, make_table

    from conftest import Sheet

    sheet = Sheet(emulator, tmp_path / "d", OBJECT_STORE="oss", OSS_ENDPOINT=fake.endpoint, OSS_BUCKET=BUCKET,
                  OSS_ACCESS_KEY_ID=AK, OSS_ACCESS_KEY_SECRET=SECRET, OSS_URL_EXPIRY_SECONDS=3600)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 2}])
    sheet.app().once()
    row = sheet.row(rid)["fields"]
    old = [row[cols.final_url]["link"], row[cols.segment(1)]["link"], row[cols.segment(2)]["link"]]
    assert all(fetch(url) for url in old)

    # 50 minutes on: less than a third of the hour is left. (oss2 signs with its module's clock.)
    later = time.time() + 3000
    monkeypatch.setattr(oss2.auth, "time", types.SimpleNamespace(time=lambda: later))
    clock.now = later
    app = App(sheet.settings, make_table(sheet.settings),
              clock=lambda: datetime.fromtimestamp(later, UTC))
    assert app.renew_links() == 1
    assert app.drain_outbox(60)
    assert app.renew_links() == 0  # fresh for another hour: nothing to do

    clock.now = later + 1200  # the first links have expired by now
    row = sheet.row(rid)["fields"]
    new = [row[cols.final_url]["link"], row[cols.segment(1)]["link"], row[cols.segment(2)]["link"]]
    for before, after in zip(old, new, strict=True):
        assert httpx.get(before, timeout=10).status_code == 403
        assert fetch(after) and after != before
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed and project.final_url == new[0]
    assert [s.url for s in app.store.segments(project.id)] == new[1:]
