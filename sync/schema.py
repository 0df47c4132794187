"""Compare the table's fields with the configured columns, and add what is missing."""

from __future__ import annotations

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
