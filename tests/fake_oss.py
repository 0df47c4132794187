"""A local Aliyun OSS that speaks enough of the real wire for oss2 and signed-URL downloads.

Pointing oss2 at it: oss2 builds virtual-host URLs (`http://<bucket>.<endpoint>/<key>`) only for
domain endpoints. For an IP or `localhost` endpoint it switches to path style on its own
(`http://127.0.0.1:<port>/<bucket>/<key>`), so `oss2.Bucket(auth, fake.endpoint, bucket)` works with
no `is_cname` and no DNS tricks. (`is_cname=True` would drop the bucket from the path while the V1
signature still covers `/<bucket>/<key>`, which would tie the fake to one bucket.)

What it checks like OSS does: the V1 signature (header `Authorization: OSS ak:sig` and URL query
`OSSAccessKeyId/Expires/Signature`, with URL expiry against an injectable clock), bucket existence,
upload ids, part ETags and order, the 100 KB minimum for non-last parts. What it does not: the
15-minute Date skew check (tests move the clock to expire URLs), ACLs, versions, ranges.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

MIN_PART_SIZE = 100 * 1024

# Query parameters that OSS V1 signs as part of the resource (a subset of OSS's list: the ones a
# client of this fake can send). Anything else (OSSAccessKeyId, Expires, Signature, max-parts...)
# stays out of the string to sign.
SUBRESOURCES = frozenset({
    "acl", "uploads", "uploadId", "partNumber", "objectMeta", "security-token", "append", "position",
    "symlink", "tagging", "delete", "versionId", "x-oss-process", "response-content-type",
    "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding",
})


def crc64_ecma(data: bytes, table: list[int] | None = None) -> int:
    """CRC-64/XZ, the checksum OSS returns in x-oss-hash-crc64ecma; oss2 verifies it."""
    table = table or _crc_table()
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xC96C5795D7870F42 if crc & 1 else crc >> 1
        table.append(crc)
    return table


def _md5_etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def _iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _http_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


@dataclass
class Blob:
    data: bytes
    etag: str
    crc: int
    modified: float
    content_type: str = "application/octet-stream"


@dataclass
class Upload:
    bucket: str
    key: str
    content_type: str
    parts: dict[int, Blob] = field(default_factory=dict)


@dataclass
class Fault:
    op: str
    status: int
    code: str
    nth: int | None  # the nth request for `op` (1-based); None = every one


@dataclass(frozen=True)
class Call:
    op: str
    bucket: str
    key: str
    params: dict[str, str]


class OssError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeOss:
    """In-memory OSS on 127.0.0.1. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        buckets: tuple[str, ...] = ("sheetreel-test",),
        credentials: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.objects: dict[str, dict[str, Blob]] = {b: {} for b in buckets}
        self.uploads: dict[str, Upload] = {}
        self.credentials = credentials or {"test-ak": "test-secret"}
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self._crc_table = _crc_table()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeOss:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-oss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> FakeOss:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- test controls -----------------------------------------------------------------

    def fail(self, op: str, status: int = 500, code: str = "InternalError", nth: int | None = None) -> None:
        """Answer the nth `op` request (or every one) with an OSS error instead of serving it."""
        with self.lock:
            self.faults.append(Fault(op, status, code, nth))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def part_numbers(self, op: str = "UploadPart") -> list[int]:
        return [int(c.params["partNumber"]) for c in self.calls if c.op == op]

    # ---- request handling (called from server threads) ----------------------------------

    def handle(self, method: str, path: str, query: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        bucket, key = _split_path(path)
        params = dict(parse_qsl(query, keep_blank_values=True))
        op = _operation(method, params)
        with self.lock:
            self.counts[op] += 1
            self.calls.append(Call(op, bucket, key, params))
            nth = self.counts[op]
            fault = next((f for f in self.faults if f.op == op and f.nth in (None, nth)), None)
        if bucket not in self.objects:
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
        self._authenticate(method, bucket, key, params, headers)
        if fault:
            raise OssError(fault.status, fault.code, f"injected fault on {op} #{nth}")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            raise OssError(501, "NotImplemented", f"{op} is not implemented by the fake")
        with self.lock:
            return handler(bucket, key, params, headers, body)

    def _authenticate(self, method: str, bucket: str, key: str, params: dict, headers) -> None:
        if "Signature" in params:
            ak, given, date = params.get("OSSAccessKeyId", ""), params["Signature"], params.get("Expires", "")
            if not date.isdigit() or int(date) < self.clock():
                raise OssError(403, "AccessDenied", "Request has expired.")
        else:
            auth = headers.get("Authorization", "")
            if not auth.startswith("OSS ") or ":" not in auth:
                raise OssError(403, "AccessDenied", "You have no right to access this object because of bucket acl.")
            ak, given = auth[4:].rsplit(":", 1)
            date = headers.get("Date", "")
        secret = self.credentials.get(ak)
        if secret is None:
            raise OssError(403, "InvalidAccessKeyId",
                           "The OSS Access Key Id you provided does not exist in our records.")
        expected = _signature(secret, method, headers, date, bucket, key, params)
        if not hmac.compare_digest(expected, given):
            raise OssError(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you provided.")

    # ---- operations (hold self.lock) ---------------------------------------------------

    def _blob(self, data: bytes, content_type: str = "application/octet-stream") -> Blob:
        return Blob(data, _md5_etag(data), crc64_ecma(data, self._crc_table), self.clock(), content_type)

    def _object(self, bucket: str, key: str) -> Blob:
        blob = self.objects[bucket].get(key)
        if blob is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.")
        return blob

    def _upload(self, params: dict) -> Upload:
        upload = self.uploads.get(params.get("uploadId", ""))
        if upload is None:
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.")
        return upload

    def _op_PutObject(self, bucket, key, params, headers, body):
        blob = self._blob(body, headers.get("Content-Type") or "application/octet-stream")
        self.objects[bucket][key] = blob
        return 200, _blob_headers(blob), b""

    def _op_HeadObject(self, bucket, key, params, headers, body):
        blob = self._object(bucket, key)
        return 200, {**_blob_headers(blob), "Content-Length": str(len(blob.data))}, b""

    def _op_GetObject(self, bucket, key, params, headers, body):
        blob = self._object(bucket, key)
        return 200, {**_blob_headers(blob), "Content-Type": blob.content_type}, blob.data

    def _op_DeleteObject(self, bucket, key, params, headers, body):
        self.objects[bucket].pop(key, None)  # OSS answers 204 for a missing key too
        return 204, {}, b""

    def _op_InitiateMultipartUpload(self, bucket, key, params, headers, body):
        upload_id = uuid.uuid4().hex.upper()
        self.uploads[upload_id] = Upload(bucket, key, headers.get("Content-Type") or "application/octet-stream")
        return 200, {}, _xml("InitiateMultipartUploadResult", Bucket=bucket, Key=key, UploadId=upload_id)

    def _op_UploadPart(self, bucket, key, params, headers, body):
        upload = self._upload(params)
        number = int(params["partNumber"])
        if not 1 <= number <= 10000:
            raise OssError(400, "InvalidArgument", "Part number must be an integer between 1 and 10000.")
        upload.parts[number] = self._blob(body)
        return 200, _blob_headers(upload.parts[number]), b""

    def _op_ListParts(self, bucket, key, params, headers, body):
        upload = self._upload(params)
        marker, limit = int(params.get("part-number-marker") or 0), int(params.get("max-parts") or 1000)
        numbers = sorted(n for n in upload.parts if n > marker)
        page, truncated = numbers[:limit], len(numbers) > limit
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><LastModified>{_iso8601(upload.parts[n].modified)}</LastModified>"
            f"<ETag>\"{upload.parts[n].etag}\"</ETag><HashCrc64ecma>{upload.parts[n].crc}</HashCrc64ecma>"
            f"<Size>{len(upload.parts[n].data)}</Size></Part>"
            for n in page
        )
        head = _xml_fields(Bucket=bucket, Key=key, UploadId=params["uploadId"], PartNumberMarker=marker,
                           NextPartNumberMarker=page[-1] if page else marker, MaxParts=limit,
                           IsTruncated=str(truncated).lower())
        return 200, {}, _doc("ListPartsResult", head + parts)

    def _op_CompleteMultipartUpload(self, bucket, key, params, headers, body):
        upload = self._upload(params)
        chosen = _completed_parts(upload, body)
        data = b"".join(p.data for p in chosen)
        blob = self._blob(data, upload.content_type)
        blob.etag = _md5_etag(b"".join(bytes.fromhex(p.etag) for p in chosen)) + f"-{len(chosen)}"
        self.objects[bucket][key] = blob
        del self.uploads[params["uploadId"]]
        result = _xml("CompleteMultipartUploadResult", Location=f"{self.endpoint}/{bucket}/{key}",
                      Bucket=bucket, Key=key, ETag=f'"{blob.etag}"')
        return 200, _blob_headers(blob), result

    def _op_AbortMultipartUpload(self, bucket, key, params, headers, body):
        self._upload(params)
        del self.uploads[params["uploadId"]]
        return 204, {}, b""


def _completed_parts(upload: Upload, body: bytes) -> list[Blob]:
    try:
        listed = [(int(p.findtext("PartNumber")), (p.findtext("ETag") or "").strip('"').upper())
                  for p in ET.fromstring(body).findall("Part")]
    except (ET.ParseError, TypeError, ValueError) as e:
        raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.") from e
    numbers = [n for n, _ in listed]
    if not listed or numbers != sorted(set(numbers)):
        raise OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
    chosen = []
    for number, etag in listed:
        part = upload.parts.get(number)
        if part is None or part.etag != etag:
            raise OssError(400, "InvalidPart", f"Part {number} was not uploaded or its ETag does not match.")
        chosen.append(part)
    if any(len(p.data) < MIN_PART_SIZE for p in chosen[:-1]):
        raise OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size.")
    return chosen


def _signature(secret: str, method: str, headers, date: str, bucket: str, key: str, params: dict) -> str:
    oss_headers = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-oss-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    sub = sorted((k, v) for k, v in params.items() if k in SUBRESOURCES)
    resource = f"/{bucket}/{key}" + ("?" + "&".join(f"{k}={v}" if v else k for k, v in sub) if sub else "")
    to_sign = "\n".join([method, headers.get("Content-MD5", ""), headers.get("Content-Type", ""), date,
                         canonical_headers + resource])
    digest = hmac.new(secret.encode(), to_sign.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _operation(method: str, params: dict) -> str:
    if method == "PUT":
        return "UploadPart" if "partNumber" in params and "uploadId" in params else "PutObject"
    if method == "POST":
        return "InitiateMultipartUpload" if "uploads" in params else (
            "CompleteMultipartUpload" if "uploadId" in params else "PostObject")
    if method == "GET":
        return "ListParts" if "uploadId" in params else "GetObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    return "HeadObject" if method == "HEAD" else method


def _split_path(path: str) -> tuple[str, str]:
    bucket, _, key = path.lstrip("/").partition("/")
    return unquote(bucket), unquote(key)


def _blob_headers(blob: Blob) -> dict[str, str]:
    return {"ETag": f'"{blob.etag}"', "x-oss-hash-crc64ecma": str(blob.crc),
            "Last-Modified": _http_date(blob.modified)}


def _xml_fields(**fields: object) -> str:
    return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields.items())


def _doc(root: str, inner: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>{inner}</{root}>'.encode()


def _xml(root: str, **fields: object) -> bytes:
    return _doc(root, _xml_fields(**fields))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOss


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections must not outlive the test by much
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _serve(self) -> None:
        body = self._read_body()  # always drain it, so keep-alive stays in sync even on errors
        url = urlsplit(self.path)
        request_id = uuid.uuid4().hex[:24].upper()
        try:
            status, headers, payload = self.server.fake.handle(self.command, url.path, url.query, self.headers, body)
        except OssError as e:
            status, headers, payload = self._error(e, request_id)
        except Exception as e:  # a bug in the fake: say so in the body instead of dropping the connection
            status, headers, payload = self._error(OssError(500, "FakeOssBug", repr(e)), request_id)
        self.send_response(status)
        headers = {"x-oss-request-id": request_id, "Server": "AliyunOSS", **headers}
        if payload and "Content-Type" not in headers:
            headers["Content-Type"] = "application/xml"
        headers.setdefault("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, e: OssError, request_id: str) -> tuple[int, dict, bytes]:
        xml = _xml("Error", Code=e.code, Message=e.message, RequestId=request_id, HostId="127.0.0.1")
        if self.command == "HEAD":
            # HEAD has no body, so OSS puts the error document, base64, in x-oss-err.
            return e.status, {"x-oss-err": base64.b64encode(xml).decode(), "Content-Length": "0"}, b""
        return e.status, {}, xml

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean; the fake's `calls` is the record
