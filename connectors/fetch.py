"""Fetching a user-supplied image URL without trusting it: scheme, address, size and type limits."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from storage import atomic
from storage.errors import BadInput, NotFound, Transient

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif")


# Ranges that reach something other than the public internet although `is_global` may say so:
# 6to4 and NAT64 carry an arbitrary IPv4 address (127.0.0.1, 100.100.100.200) inside.
TUNNELS = [ipaddress.ip_network(n) for n in ("2002::/16", "64:ff9b::/96", "64:ff9b:1::/48")]
Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def blocked(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is anything but the public internet: private, loopback, link-local,
    shared (100.64.0.0/10, incl. the Alibaba Cloud metadata 100.100.100.200), reserved, or a tunnel."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return blocked(addr.ipv4_mapped)
        if any(addr in net for net in TUNNELS):
            return True
    return not addr.is_global or addr.is_multicast


class ImageFetcher:
    """Downloads an opening image from a row's link.

    The name is resolved once, every address it gives is checked, and the connection goes to the
    checked address (the Host header and TLS name stay the link's): a DNS answer that changes
    between the check and the connect (rebinding) cannot reach an internal address. The whole
    download has a deadline, not just each read, so a server trickling bytes cannot hold a worker.
    Its failures count as the step's attempts (Transient, not Unavailable): the link is the row's
    input, and a dead one should fail the row, not be waited on for a day.
    """

    def __init__(self, max_bytes: int, allow_private: bool = False, timeout: float = 20.0, deadline: float = 60.0,
                 resolver: Resolver = resolve, is_blocked: Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool] = blocked):
        self.max_bytes, self.allow_private = max_bytes, allow_private
        self.timeout, self.deadline = min(timeout, deadline), deadline
        self.resolver, self.is_blocked = resolver, is_blocked

    def fetch(self, url: str, dest: Path) -> None:
        parts = self._check_url(url)
        address = self._address(parts)
        target, headers, extensions = self._pinned(parts, address)
        deadline = time.monotonic() + self.deadline
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
                with client.stream("GET", target, headers=headers, extensions=extensions) as resp:
                    self._check_response(url, resp)
                    atomic.write_bytes(dest, self._read_limited(url, resp, deadline))
        except httpx.TimeoutException as e:
            raise Transient(f"下载首帧图片超时，稍后自动重试：{url}") from e
        except httpx.TransportError as e:
            raise Transient(f"无法连接首帧图片地址，稍后自动重试：{url} ({type(e).__name__})") from e

    def _check_url(self, url: str) -> SplitResult:
        invalid = BadInput(f"首帧图片链接“{url}”无效：请填写 http(s) 图片链接或上传附件")
        try:
            parts = urlsplit(url)
            host = parts.hostname  # raises for a bracketed host that is not an IPv6 address
        except ValueError:
            raise invalid from None
        if parts.scheme not in ("http", "https") or not host:
            raise invalid
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError as e:
            raise BadInput(f"首帧图片链接“{url}”的端口无效") from e
        return parts

    def _address(self, parts: SplitResult) -> str:
        host = parts.hostname or ""
        try:
            addresses = self.resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
        except (socket.gaierror, UnicodeError) as e:
            raise BadInput(f"首帧图片链接的域名无法解析：{host}") from e
        if not addresses:
            raise BadInput(f"首帧图片链接的域名无法解析：{host}")
        if not self.allow_private:
            for raw in addresses:
                if self.is_blocked(ipaddress.ip_address(raw.split("%")[0])):
                    raise BadInput(f"首帧图片链接指向内网地址，已拒绝：{host} (set SHEETREEL_ALLOW_PRIVATE_URLS to allow)")
        return addresses[0]

    @staticmethod
    def _pinned(parts: SplitResult, address: str) -> tuple[str, dict, dict]:
        """The URL with the checked address in place of the name, and what keeps it the same site."""
        literal = f"[{address}]" if ":" in address else address
        port = f":{parts.port}" if parts.port else ""
        target = urlunsplit((parts.scheme, literal + port, parts.path or "/", parts.query, ""))
        host = parts.hostname or ""
        headers = {"Host": (f"[{host}]" if ":" in host else host) + port}
        return target, headers, ({"sni_hostname": host} if parts.scheme == "https" else {})

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

    def _read_limited(self, url: str, resp: httpx.Response, deadline: float) -> bytes:
        chunks, total = [], 0
        for chunk in resp.iter_bytes():
            if time.monotonic() > deadline:  # at most one read timeout late
                raise Transient(f"首帧图片下载超过 {self.deadline:g} 秒仍未完成（对方服务器太慢）：{url}")
            total += len(chunk)
            if total > self.max_bytes:
                raise BadInput(f"首帧图片太大，上限 {self.max_bytes // 1024 // 1024} MB：{url}")
            chunks.append(chunk)
        return b"".join(chunks)
