"""Compare the table's fields with the configured columns, and add what is missing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from connectors.feishu.protocol import BitableClient, FieldType

TYPE_NAMES = {
    FieldType.text: "文本",
    FieldType.number: "数字",
    FieldType.single_select: "单选",
    FieldType.multi_select: "多选",
    FieldType.datetime: "日期",
    FieldType.checkbox: "复选框",
    FieldType.url: "超链接",
    FieldType.attachment: "附件",
}
# A column the user may fill in more than one way (首帧图片: an attachment or a link).
ALTERNATIVE_TYPES = {FieldType.attachment: {FieldType.url, FieldType.text}}


@dataclass
class ColumnReport:
    missing: list[tuple[str, int, list[str]]] = field(default_factory=list)
    wrong_type: list[tuple[str, int, int]] = field(default_factory=list)  # name, expected, actual

    @property
    def ok(self) -> bool:
        return not self.missing and not self.wrong_type


def check_columns(table: BitableClient, schema: list[tuple[str, int, list[str]]]) -> ColumnReport:
    existing = {f.name: f.type for f in table.list_fields()}
    report = ColumnReport()
    for name, ftype, options in schema:
        actual = existing.get(name)
        if actual is None:
            report.missing.append((name, ftype, options))
        elif actual != ftype and actual not in ALTERNATIVE_TYPES.get(ftype, set()):
            report.wrong_type.append((name, ftype, actual))
    return report


def create_missing(table: BitableClient, report: ColumnReport) -> list[str]:
    created = []
    for name, ftype, options in report.missing:
        table.create_field(name, ftype, options or None)
        created.append(name)
    return created


@dataclass
class OptionsPlan:
    """How a select column's options move to `wanted`: what is added, what goes, and what stays
    although unwanted, because rows still pick it (Feishu would clear their cells)."""

    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # option -> rows that use it

    @property
    def changes(self) -> bool:
        return bool(self.add or self.remove)

    def result(self, current: list[str]) -> list[str]:
        return [o for o in current if o not in self.remove] + self.add


def plan_options(current: list[str], wanted: list[str], used: Counter[str]) -> OptionsPlan:
    plan = OptionsPlan(add=[o for o in wanted if o not in current])
    for option in current:
        if option in wanted:
            continue
        if used[option]:
            plan.kept[option] = used[option]
        else:
            plan.remove.append(option)
    return plan


def options_in_use(table: BitableClient, column: str) -> Counter[str]:
    """How many rows pick each option of a select column (one read of that column)."""
    from sync.rows import text_of

    return Counter(text for r in table.search(field_names=[column]) if (text := text_of(r.fields.get(column))))


def sync_options(table: BitableClient, column: str, wanted: list[str], apply: bool) -> OptionsPlan | None:
    """Bring a select column's options to `wanted` (when `apply`); None when the table lacks it."""
    found = next((f for f in table.list_fields() if f.name == column and f.type == FieldType.single_select), None)
    if found is None:
        return None
    # Reading every row is needed only to know whether an unwanted option is still picked.
    unwanted = any(o not in wanted for o in found.options)
    plan = plan_options(found.options, wanted, options_in_use(table, column) if unwanted else Counter())
    if apply and plan.changes:
        table.set_options(found, plan.result(found.options))
    return plan
