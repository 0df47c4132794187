"""Credentials that live inside URLs never reach a log line: a custom bot's webhook id (whoever
has it can post to the chat), signed-URL signatures, bearer tokens. Libraries log URLs at INFO
(httpx: "HTTP Request: POST https://…/hook/<id>"), so the filter sits on the handlers, where
every record passes, not on our own loggers."""

from __future__ import annotations

import logging
import re

PATTERNS = [
    (re.compile(r"(/bot/v2/hook/)[^\s/?#\"']+"), r"\1***"),
    (re.compile(r"(?i)([?&](?:signature|sign|access_?key(?:_?id)?|ossaccesskeyid|token|x-oss-signature|"
                r"x-oss-credential|security-token)=)[^&\s\"']+"), r"\1***"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
]


def redact(text: str) -> str:
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of `logger` (the root by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, Redact) for f in handler.filters):
            handler.addFilter(Redact())
