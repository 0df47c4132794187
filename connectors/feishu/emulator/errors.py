"""The one exception the emulator raises for a Feishu business error.

Handlers raise it anywhere; the server turns it into the JSON envelope the real
Open Platform sends, so the SDK sees `code`/`msg` exactly as in production.
"""
from __future__ import annotations

# Codes used in more than one module; one-off codes stay next to their use.
WRONG_REQUEST_BODY = 1254001
GENERIC_FAIL = 1254002
BAD_PAGE_SIZE = 1254011
FIELD_NAME_DUPLICATED = 1254014
INVALID_SORT = 1254016
INVALID_FILTER = 1254018
INVALID_FIELD_NAMES = 1254024
BASE_NOT_FOUND = 1254040
TABLE_NOT_FOUND = 1254041
RECORD_NOT_FOUND = 1254043
FIELD_NAME_NOT_FOUND = 1254045
FIELD_ID_NOT_FOUND = 1254046
TOO_MANY_RECORDS = 1254104
TOO_MANY_REQUESTS = 1254290
WRITE_CONFLICT = 1254291
ATTACHMENT_NOT_IN_BASE = 1254303
DRIVE_PARAMS = 1061002
DRIVE_FORBIDDEN = 1061004  # no permission on the file (e.g. a base with advanced permissions)
DRIVE_TOO_LARGE = 1061043
DRIVE_PARENT_MISSING = 1061044
RATE_LIMITED = 99991400
TOKEN_MISSING = 99991661
TOKEN_INVALID = 99991663


class ApiError(Exception):
    """A non-zero `code` reply; `status` is the HTTP status it travels with."""

    def __init__(self, code: int, msg: str, status: int = 200) -> None:
        super().__init__(f"code={code} msg={msg}")
        self.code = code
        self.msg = msg
        self.status = status


def field_not_found(name: str) -> ApiError:
    return ApiError(FIELD_NAME_NOT_FOUND, f"FieldNameNotFound: {name}")


def record_not_found(record_id: str) -> ApiError:
    return ApiError(RECORD_NOT_FOUND, f"RecordIdNotFound: {record_id}")


def bad_body(detail: str) -> ApiError:
    return ApiError(WRONG_REQUEST_BODY, f"WrongRequestBody: {detail}")
