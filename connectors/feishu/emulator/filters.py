"""Search filter and sort (FEISHU_API §2.4), compiled into plain Python callables.

Each condition compares by the field's type: text as a string, numbers
numerically, selects by option name, checkboxes as "true"/"false", and dates as
day ranges in the base's timezone (Asia/Shanghai, which has no DST).
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from . import model as m
from .errors import INVALID_FILTER, INVALID_SORT, ApiError, field_not_found
from .values import stored_value

Predicate = Callable[[m.Record], bool]
SHANGHAI = timezone(timedelta(hours=8))
MAX_CONDITIONS = 50
MAX_VALUES = 10
OPERATORS = frozenset({
    "is", "isNot", "contains", "doesNotContain", "isEmpty", "isNotEmpty",
    "isGreater", "isGreaterEqual", "isLess", "isLessEqual",
})
_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "isGreater": operator.gt,
    "isGreaterEqual": operator.ge,
    "isLess": operator.lt,
    "isLessEqual": operator.le,
}


def invalid(detail: str) -> ApiError:
    return ApiError(INVALID_FILTER, f"InvalidFilter: {detail}")


def compile_filter(spec: Any, table: m.Table, now_s: float) -> Predicate:
    if spec is None or spec == {}:
        return lambda _r: True
    return _group(spec, table, now_s, nested=False)


def _group(spec: Any, table: m.Table, now_s: float, nested: bool) -> Predicate:
    if not isinstance(spec, dict) or spec.get("conjunction") not in ("and", "or"):
        raise invalid("conjunction must be 'and' or 'or'")
    conditions = spec.get("conditions") or []
    children = spec.get("children") or []
    if not isinstance(conditions, list) or not isinstance(children, list):
        raise invalid("conditions and children must be lists")
    if len(conditions) > MAX_CONDITIONS:
        raise invalid(f"more than {MAX_CONDITIONS} conditions")
    if children and nested:
        raise invalid("children may only be nested one level")
    preds = [_condition(c, table, now_s) for c in conditions]
    preds += [_group(c, table, now_s, nested=True) for c in children]
    if not preds:
        return lambda _r: True
    combine = all if spec["conjunction"] == "and" else any
    return lambda r: combine(p(r) for p in preds)


def _condition(cond: Any, table: m.Table, now_s: float) -> Predicate:
    if not isinstance(cond, dict) or cond.get("operator") not in OPERATORS:
        raise invalid(f"bad condition {cond!r}")
    field = table.field_by_name(cond.get("field_name", ""))
    if field is None:
        raise field_not_found(str(cond.get("field_name")))
    op, values = cond["operator"], cond.get("value")
    if op in ("isEmpty", "isNotEmpty"):
        if not isinstance(values, list):  # Feishu insists on "value": []
            raise invalid(f"{op} requires value: []")
        want_empty = op == "isEmpty"
        return lambda r: _is_empty(field, stored_value(field, r)) == want_empty
    if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
        raise invalid(f"{op} needs 1..{MAX_VALUES} values")
    if not all(isinstance(v, str) for v in values):
        raise invalid("filter values must be strings")
    builder = _BUILDERS.get(field.type)
    if builder is None:
        raise invalid(f"field {field.name!r} supports only isEmpty/isNotEmpty")
    test = builder(field, op, values, now_s)
    return lambda r: test(stored_value(field, r))


def _is_empty(field: m.Field, stored: Any) -> bool:
    if field.type == m.CHECKBOX:
        return stored is not True
    return stored is None or stored == "" or stored == []


def cell_text(field: m.Field, stored: Any) -> str:
    if stored is None:
        return ""
    if field.type == m.URL:
        return stored.get("text") or ""
    if field.type == m.MULTI_SELECT:
        return ",".join(stored)
    return str(stored)


Test = Callable[[Any], bool]


def _any_of(values: list[str], haystack: Callable[[Any], Any], negate: bool) -> Test:
    """contains / doesNotContain: does any wanted value occur in the cell?"""
    def test(stored: Any) -> bool:
        return any(v in haystack(stored) for v in values) != negate
    return test


def _text_test(field: m.Field, op: str, values: list[str], _now: float) -> Test:
    target = values[0]
    if op in ("contains", "doesNotContain"):
        return _any_of(values, lambda s: cell_text(field, s), negate=op == "doesNotContain")
    if op in ("is", "isNot"):
        return lambda s: (cell_text(field, s) == target) == (op == "is")
    cmp = _ORDERED[op]
    return lambda s: s is not None and cmp(cell_text(field, s), target)


def _number_test(field: m.Field, op: str, values: list[str], _now: float) -> Test:
    try:
        target = float(values[0])
    except ValueError:
        raise invalid(f"{values[0]!r} is not a number") from None
    if op in ("is", "isNot"):
        return lambda s: (s is not None and float(s) == target) == (op == "is")
    if op not in _ORDERED:
        raise invalid(f"{op} is not supported on number field {field.name!r}")
    cmp = _ORDERED[op]
    return lambda s: s is not None and cmp(float(s), target)


def _select_test(field: m.Field, op: str, values: list[str], _now: float) -> Test:
    def chosen(s: Any) -> list[str]:
        return [] if s is None else ([s] if isinstance(s, str) else list(s))

    if op == "is":
        if field.type == m.MULTI_SELECT:
            return lambda s: set(chosen(s)) == set(values)
        return lambda s: s == values[0]
    if op == "isNot":
        if field.type == m.MULTI_SELECT:
            return lambda s: set(chosen(s)) != set(values)
        return lambda s: s != values[0]
    if op in ("contains", "doesNotContain"):
        return _any_of(values, chosen, negate=op == "doesNotContain")
    raise invalid(f"{op} is not supported on select field {field.name!r}")


def _checkbox_test(field: m.Field, op: str, values: list[str], _now: float) -> Test:
    wanted = values[0].lower()
    if op not in ("is", "isNot") or wanted not in ("true", "false"):
        raise invalid(f"checkbox field {field.name!r} takes is ['true'|'false']")
    target = wanted == "true"
    return lambda s: ((s is True) == target) == (op == "is")


def _date_test(field: m.Field, op: str, values: list[str], now_s: float) -> Test:
    start, end = date_range(values, now_s)
    tests: dict[str, Callable[[int], bool]] = {
        "is": lambda v: start <= v < end,
        "isGreater": lambda v: v >= end,
        "isGreaterEqual": lambda v: v >= start,
        "isLess": lambda v: v < start,
        "isLessEqual": lambda v: v < end,
    }
    if op == "isNot":
        return lambda s: s is None or not (start <= s < end)
    if op not in tests:
        raise invalid(f"{op} is not supported on date field {field.name!r}")
    test = tests[op]
    return lambda s: s is not None and test(s)


def _day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).timestamp() * 1000)


def _days(first: date, count: int) -> tuple[int, int]:
    return _day_start_ms(first), _day_start_ms(first + timedelta(days=count))


def _month(year: int, month: int) -> tuple[int, int]:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return _day_start_ms(date(year, month, 1)), _day_start_ms(nxt)


def date_range(values: list[str], now_s: float) -> tuple[int, int]:
    """Resolve a date filter value to a [start, end) range of epoch ms."""
    today = datetime.fromtimestamp(now_s, SHANGHAI).date()
    monday = today - timedelta(days=today.weekday())
    first_of_month = today.replace(day=1)
    last_month = first_of_month - timedelta(days=1)
    relative = {
        "Today": lambda: _days(today, 1),
        "Yesterday": lambda: _days(today - timedelta(days=1), 1),
        "Tomorrow": lambda: _days(today + timedelta(days=1), 1),
        "CurrentWeek": lambda: _days(monday, 7),
        "LastWeek": lambda: _days(monday - timedelta(days=7), 7),
        "TheLastWeek": lambda: _days(today - timedelta(days=6), 7),
        "TheNextWeek": lambda: _days(today, 7),
        "CurrentMonth": lambda: _month(today.year, today.month),
        "LastMonth": lambda: _month(last_month.year, last_month.month),
        "TheLastMonth": lambda: _days(today - timedelta(days=29), 30),
        "TheNextMonth": lambda: _days(today, 30),
    }
    if values[0] == "ExactDate":
        try:
            day = datetime.fromtimestamp(int(values[1]) / 1000, SHANGHAI).date()
        except (IndexError, ValueError, OverflowError):
            raise invalid("ExactDate needs a millisecond timestamp string") from None
        return _days(day, 1)
    if values[0] not in relative:
        raise invalid(f"unknown date value {values[0]!r}")
    return relative[values[0]]()


_BUILDERS: dict[int, Callable[[m.Field, str, list[str], float], Test]] = {
    m.TEXT: _text_test,
    m.URL: _text_test,
    m.NUMBER: _number_test,
    m.SINGLE_SELECT: _select_test,
    m.MULTI_SELECT: _select_test,
    m.CHECKBOX: _checkbox_test,
    m.DATETIME: _date_test,
    m.CREATED_TIME: _date_test,
    m.MODIFIED_TIME: _date_test,
}


def _sort_key(field: m.Field, stored: Any) -> Any:
    if field.type in (m.NUMBER, *m.DATE_TYPES):
        return float(stored)
    if field.type == m.CHECKBOX:
        return int(stored is True)
    if field.type == m.ATTACHMENT:
        return len(stored)
    return cell_text(field, stored)


def sort_records(records: list[m.Record], spec: Any, table: m.Table) -> list[m.Record]:
    """Stable multi-key sort; empty cells go last whatever the direction."""
    if not spec:
        return list(records)
    well_formed = isinstance(spec, list) and all(
        isinstance(s, dict) and isinstance(s.get("field_name"), str) for s in spec
    )
    if not well_formed:
        raise ApiError(INVALID_SORT, "InvalidSort: sort must be a list of {field_name, desc}")
    keys = []
    for item in spec:
        field = table.field_by_name(item["field_name"])
        if field is None:
            raise field_not_found(item["field_name"])
        keys.append((field, bool(item.get("desc", False))))
    out = list(records)
    for field, desc in reversed(keys):  # last key first: Python's sort is stable
        present = [r for r in out if stored_value(field, r) is not None]
        missing = [r for r in out if stored_value(field, r) is None]
        present.sort(key=lambda r: _sort_key(field, stored_value(field, r)), reverse=desc)
        out = present + missing
    return out
