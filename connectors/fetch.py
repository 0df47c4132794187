"""Fetching a user-supplied image URL without trusting it: scheme, address, size and type limits."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from storage import atomic
from storage.errors import BadInput, NotFound, Transient

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif")


class ImageFetcher:
    def __init__(self, max_bytes: int, allow_private: bool = False, timeout: float = 20.0):
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.timeout = timeout

    def fetch(self, url: str, dest: Path) -> None:
        self._check_url(url)
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
                with client.stream("GET", url) as resp:
                    self._check_response(url, resp)
                    atomic.write_bytes(dest, self._read_limited(url, resp))
        except httpx.TimeoutException as e:
            raise Transient(f"下载首帧图片超时，稍后自动重试：{url}") from e
        except httpx.TransportError as e:
            raise Transient(f"无法连接首帧图片地址，稍后自动重试：{url} ({type(e).__name__})") from e

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"首帧图片链接“{url}”无效：请填写 http(s) 图片链接或上传附件")
        if self.allow_private:
            return
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise BadInput(f"首帧图片链接的域名无法解析：{parts.hostname}") from e
        for info in infos:
            addr = ipaddress.ip_address(info[4][0])
            if addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved or addr.is_multicast:
                raise BadInput(f"首帧图片链接指向内网地址，已拒绝：{parts.hostname} (set SHEETREEL_ALLOW_PRIVATE_URLS to allow)")

    def _check_response(self, url: str, resp: httpx.Response) -> None:
        if resp.status_code == 404 or resp.status_code == 410:
            raise NotFound(f"首帧图片链接打不开（HTTP {resp.status_code}）：请检查链接 {url}")
        if resp.is_redirect:
            raise BadInput(f"首帧图片链接发生跳转，请直接填写图片地址：{url}")
        if resp.status_code >= 500:
            raise Transient(f"首帧图片服务器出错（HTTP {resp.status_code}），稍后自动重试")
        if resp.status_code != 200:
            raise BadInput(f"首帧图片链接无法下载（HTTP {resp.status_code}）：{url}")
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES:
            raise BadInput(f"首帧图片链接不是图片（类型 {ctype or '未知'}）：请填写 jpg/png/webp 图片链接")
        length = resp.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            raise BadInput(f"首帧图片太大（{int(length) // 1024 // 1024} MB），上限 {self.max_bytes // 1024 // 1024} MB")

    def _read_limited(self, url: str, resp: httpx.Response) -> bytes:
        chunks, total = [], 0
        for chunk in resp.iter_bytes():
            total += len(chunk)
            if total > self.max_bytes:
                raise BadInput(f"首帧图片太大，上限 {self.max_bytes // 1024 // 1024} MB：{url}")
            chunks.append(chunk)
        return b"".join(chunks)
