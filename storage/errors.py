"""The project's error tree. Vendor errors are translated into these at each boundary.

    SheetReelError           message is shown to the sheet user in 错误信息
    ├── BadInput             the row itself is wrong; fix the row, then pick 重试
    ├── NotFound             something the row points to does not exist
    ├── AuthFailed           credentials or permissions; an engineer must act
    ├── Permanent            will fail the same way again (missing column, bad value)
    │   └── DatabaseUnusable the database URL cannot be used (bad form, driver not installed)
    ├── Transient            try again later (broken bodies, CUDA out of memory)
    │   └── Unavailable      the service is down or busy (connection, timeout, 5xx): waiting on
    │       │                it never uses up a step's attempts
    │       └── RateLimited  try again after `retry_after` seconds
    └── MediaError           ffmpeg failed; carries the tail of stderr

Only the project runner decides whether to retry (Transient) or fail (everything else).
"""

from __future__ import annotations


class SheetReelError(Exception):
    """Base class; `str(err)` is a sentence a user can act on."""

    retryable = False


class BadInput(SheetReelError):
    pass


class NotFound(SheetReelError):
    pass


class AuthFailed(SheetReelError):
    pass


class Permanent(SheetReelError):
    pass


class DatabaseUnusable(Permanent):
    pass


class Transient(SheetReelError):
    retryable = True


class Unavailable(Transient):
    """The outside service, not this project, is the problem: an outage must not fail the work."""


class RateLimited(Unavailable):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class MediaError(SheetReelError):
    def __init__(self, message: str, stderr_tail: str = ""):
        super().__init__(f"{message}: {stderr_tail}" if stderr_tail else message)
        self.stderr_tail = stderr_tail


class Cancelled(SheetReelError):
    """Raised at a safe point when the user picked 取消."""
