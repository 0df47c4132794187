"""A strict multipart/form-data reader for upload_all and upload_part.

Written by hand (not `email`) so binary file parts come back byte-for-byte; it
accepts what both SDK paths send: parts without filename or Content-Type (sync
requests_toolbelt) and `filename="upload"` octet-stream parts (async httpx).
"""
from __future__ import annotations

from dataclasses import dataclass
from email.message import Message


class MultipartError(ValueError):
    pass


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self) -> str:
        return self.data.decode("utf-8")


def _header_param(header_value: str, header: str, param: str) -> str | None:
    msg = Message()
    msg[header] = header_value
    value = msg.get_param(param, header=header)
    if isinstance(value, tuple):  # RFC 2231 encoded parameter
        return value[2]
    return value


def boundary_of(content_type: str) -> bytes:
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError("Content-Type is not multipart/form-data")
    boundary = _header_param(content_type, "Content-Type", "boundary")
    if not boundary:
        raise MultipartError("multipart boundary missing")
    return boundary.encode("latin-1")


def _parse_part(chunk: bytes) -> Part:
    head, sep, data = chunk.partition(b"\r\n\r\n")
    if not sep:
        raise MultipartError("part without header separator")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8").split("\r\n"):
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    name = _header_param(disposition, "Content-Disposition", "name")
    if not name:
        raise MultipartError("part without a name")
    filename = _header_param(disposition, "Content-Disposition", "filename")
    return Part(name, data, filename, headers.get("content-type"))


def parse_form(content_type: str, body: bytes) -> dict[str, Part]:
    """Split a form body into named parts; later duplicates win."""
    delimiter = b"\r\n--" + boundary_of(content_type)
    # Prefixing CRLF lets the first delimiter match like every other one.
    pieces = (b"\r\n" + body).split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        raise MultipartError("multipart body is truncated")
    parts: dict[str, Part] = {}
    for piece in pieces[1:-1]:
        if not piece.startswith(b"\r\n"):
            raise MultipartError("malformed multipart delimiter")
        part = _parse_part(piece[2:])
        parts[part.name] = part
    return parts
