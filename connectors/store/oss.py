"""Aliyun OSS behind the ObjectStore protocol: resumable multipart uploads, signed GET URLs.

oss2 errors are translated here, once, into the project's error tree. Messages carry the OSS
error code and request id (what Aliyun support asks for), never the AccessKey secret.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import oss2
from oss2 import exceptions as oss_errors

from connectors import deadline
from storage.errors import AuthFailed, BadInput, NotFound, Permanent, RateLimited, SheetReelError, Transient, Unavailable
from storage.paths import safe_component

log = logging.getLogger(__name__)

_RATE_LIMIT_CODES = frozenset({"SlowDown", "QpsLimitExceeded", "TooManyRequests", "RequestRateExceeded"})


def object_key(key: str) -> str:
    """Validate `key` the way LocalObjectStore does: relative, `/`-separated, no empty or `..` parts."""
    return "/".join(safe_component(part, "object key part") for part in key.split("/"))


class OssObjectStore:
    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key_id: str,
        access_key_secret: str,
        prefix: str = "",
        url_expiry_seconds: int = 7 * 24 * 3600,
        multipart_threshold: int = 100 * 1024 * 1024,
        part_size: int = 10 * 1024 * 1024,
        checkpoint_dir: Path | None = None,
        public_base_url: str | None = None,
        upload_threads: int = 3,
        connect_timeout: float = 30.0,
        call_deadline: float = 60.0,
    ):
        if url_expiry_seconds <= 0:
            raise Permanent(f"OSS_URL_EXPIRY_SECONDS must be positive, got {url_expiry_seconds}")
        if part_size < oss2.defaults.min_part_size or multipart_threshold < part_size:
            raise Permanent("OSS part size must be at least 100 KB and not above the multipart threshold")
        self.prefix = _checked_prefix(prefix)
        self.url_expiry_seconds = int(url_expiry_seconds)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.upload_threads = upload_threads
        self.call_deadline = call_deadline
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        # Resume records hold the upload id and file path (no secrets); they must outlive the
        # process so that a restart resumes instead of re-sending every part.
        self.checkpoint_dir = Path(checkpoint_dir or Path(tempfile.gettempdir()) / "sheetreel-oss-upload")
        with _translated(f"配置 OSS bucket “{bucket}”"):
            # The secret goes into oss2.Auth only; this object keeps no copy of it.
            self._bucket = oss2.Bucket(
                oss2.Auth(access_key_id, access_key_secret), endpoint, bucket, connect_timeout=connect_timeout
            )

    def __repr__(self) -> str:
        return f"OssObjectStore(bucket={self._bucket.bucket_name!r}, endpoint={self._bucket.endpoint!r})"

    def _full_key(self, key: str) -> str:
        return f"{self.prefix}{object_key(key)}"

    def put(self, local: Path, key: str) -> str:
        full = self._full_key(key)
        local = Path(local)
        if not local.is_file():
            raise NotFound(f"要上传的文件不存在：{local} (file to upload is missing)")
        size = local.stat().st_size
        with _translated(f"上传 {full} 到 OSS"):
            if size >= self.multipart_threshold:
                self._bounded(lambda: self._put_multipart(local, full), f"上传 {full}", size)
            else:
                self._bounded(lambda: self._bucket.put_object_from_file(full, str(local)), f"上传 {full}", size)
        return self._url(full)

    def _bounded(self, call, doing: str, size: int = 0):
        """oss2 bounds each read only: the whole call ends within `call_deadline` plus 256 KB/s of
        data (a resumed upload picks up from its checkpoint)."""
        seconds = self.call_deadline + size / (256 * 1024)
        return deadline.within(seconds, call, lambda: Unavailable(
            f"{doing}失败：OSS 在 {seconds:.0f} 秒内没有完成，稍后自动重试"))

    def link(self, key: str) -> str:
        return self._url(self._full_key(key))

    def expires_at(self, url: str) -> datetime | None:
        """From the signature's own fields: V1 `Expires` (epoch seconds), V4 `x-oss-date` plus
        `x-oss-expires`. None for a public URL (OSS_PUBLIC_BASE_URL)."""
        query = dict(parse_qsl(urlsplit(url).query))
        try:
            if "Expires" in query:
                return datetime.fromtimestamp(int(query["Expires"]), UTC)
            if "x-oss-date" in query and "x-oss-expires" in query:
                signed = datetime.strptime(query["x-oss-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                return signed + timedelta(seconds=int(query["x-oss-expires"]))
        except (ValueError, OverflowError, OSError):
            return datetime.fromtimestamp(0, UTC)  # unreadable: treat as expired, sign anew
        return None

    def _put_multipart(self, local: Path, full_key: str) -> None:
        log.info("uploading %s to OSS in parts of %d bytes", full_key, self.part_size)
        store = oss2.ResumableStore(root=str(self.checkpoint_dir), dir="checkpoints")
        oss2.resumable_upload(
            self._bucket,
            full_key,
            str(local),
            store=store,
            multipart_threshold=self.multipart_threshold,
            part_size=self.part_size,
            num_threads=self.upload_threads,
        )

    def _url(self, full_key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(full_key)}"
        with _translated(f"生成 {full_key} 的签名链接"):
            return self._bucket.sign_url("GET", full_key, self.url_expiry_seconds, slash_safe=True)

    def exists(self, key: str) -> bool:
        full = self._full_key(key)
        with _translated(f"查询 OSS 对象 {full}"):
            return bool(self._bounded(lambda: self._bucket.object_exists(full), f"查询 {full}"))

    def fetch(self, key: str, dest: Path) -> bool:
        full, dest = self._full_key(key), Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.download")
        try:
            with _translated(f"下载 OSS 对象 {full}"):
                try:
                    self._bounded(lambda: self._bucket.get_object_to_file(full, str(tmp)), f"下载 {full}")
                except oss2.exceptions.NoSuchKey:
                    return False
            os.replace(tmp, dest)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        with _translated(f"删除 OSS 对象 {full}"):
            self._bounded(lambda: self._bucket.delete_object(full), f"删除 {full}")


def _checked_prefix(prefix: str) -> str:
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    try:
        return object_key(stripped) + "/"
    except BadInput as e:
        raise Permanent(f"OSS_PREFIX “{prefix}” is not a valid key prefix: use letters, digits, -, _, . and /") from e


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    """The one place where oss2 exceptions become SheetReel errors."""
    try:
        yield
    except SheetReelError:
        raise
    except oss_errors.ServerError as e:
        raise _from_server_error(doing, e) from e
    except oss_errors.RequestError as e:
        raise Unavailable(f"{doing}失败：连不上 OSS，稍后自动重试 ({type(e.exception).__name__})") from e
    except oss_errors.InconsistentError as e:
        raise Transient(f"{doing}失败：CRC 校验不一致，数据在传输中损坏，稍后自动重试") from e
    except oss_errors.ClientError as e:
        raise Permanent(f"{doing}失败：OSS 客户端参数错误，检查 OSS_ENDPOINT / OSS_BUCKET ({e.body})") from e
    except oss_errors.OssError as e:
        raise Permanent(f"{doing}失败：OSS 错误 {e.status} {e.code}".strip()) from e


def _from_server_error(doing: str, e: oss_errors.ServerError) -> SheetReelError:
    where = f"OSS {e.status} {e.code or ''}".strip() + (f", request id {e.request_id}" if e.request_id else "")
    if e.status == 403:
        return AuthFailed(
            f"{doing}被拒绝 ({where})：检查 OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET 是否正确，"
            "以及该 AccessKey 的 RAM 权限或 bucket 授权策略是否允许读写此 bucket"
        )
    if e.status == 404 and e.code == "NoSuchBucket":
        return NotFound(f"{doing}失败：bucket 不存在 ({where})，检查 OSS_BUCKET 与 OSS_ENDPOINT 的地域")
    if e.status == 404:
        return NotFound(f"{doing}失败：对象不存在 ({where})")
    if e.status == 429 or e.code in _RATE_LIMIT_CODES:
        return RateLimited(f"{doing}被限流 ({where})，稍后自动重试", retry_after=_retry_after(e))
    if e.status >= 500 or e.status == 408:
        return Unavailable(f"{doing}失败：OSS 服务端错误 ({where})，稍后自动重试")
    return Permanent(f"{doing}失败 ({where})：{e.message or '请求被 OSS 拒绝'}")


def _retry_after(e: oss_errors.ServerError) -> float | None:
    value = (e.headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
