"""Several tables, one service: SHEETREEL_CONNECTIONS names two bases whose tables use different
column names, default templates and chats; `sheetreel once` makes both tables' videos side by side,
each row written in its own table's names and announced in its own chat."""

from __future__ import annotations

import json

import pytest

from sync.cli import main
from sync.columns import Columns
from sync.rows import text_of

from conftest import APP_ID, SECRET, TEST_TEMPLATES, stream_info, table_schema

RENAMED = {"title": "视频标题", "image": "首图", "status": "处理状态", "progress": "处理进度", "error": "问题",
           "final_url": "视频链接", "template": "风格"}


def table_section(columns: dict[str, str] | None = None, **keys: str) -> str:
    """One [[table]] of a connections file, with its [table.columns] renames."""
    lines = ["[[table]]", *(f'{k} = "{v}"' for k, v in keys.items())]
    if columns:
        lines += ["[table.columns]", *(f'{k} = "{v}"' for k, v in columns.items())]
    return "\n".join(lines) + "\n"


def renamed_schema() -> list[tuple]:
    names = Columns().model_dump()
    mapping = {names[k]: v for k, v in RENAMED.items()}
    return [(mapping.get(name, name), *rest) for name, *rest in table_schema()]


@pytest.fixture
def two_tables(emulator, tmp_path, monkeypatch):
    a_app = emulator.create_app("账号A", advanced_permissions=True)
    a_table = emulator.create_table(a_app, "视频", table_schema())
    b_app = emulator.create_app("账号B")
    b_table = emulator.create_table(b_app, "短片", renamed_schema())
    path = tmp_path / "connections.toml"
    path.write_text(
        table_section(name="抖音", app_token=a_app, table_id=a_table, default_template="tiny", chat_id="oc_douyin")
        + table_section(RENAMED, name="视频号", app_token=b_app, table_id=b_table, default_template="photo-chain",
                        chat_id="oc_channels", sheet_url=f"https://x.feishu.cn/base/{b_app}"),
        encoding="utf-8")
    for key, value in {"FEISHU_APP_ID": APP_ID, "FEISHU_APP_SECRET": SECRET, "FEISHU_BASE_URL": emulator.url,
                       "SHEETREEL_CONNECTIONS": str(path), "SHEETREEL_DATA_DIR": str(tmp_path / "data"),
                       "SHEETREEL_TEMPLATES_DIR": str(TEST_TEMPLATES), "SHEETREEL_ALLOW_PRIVATE_URLS": "true",
                       "SHEETREEL_RETRY_BASE_SECONDS": "0"}.items():
        monkeypatch.setenv(key, value)
    return (a_app, a_table), (b_app, b_table), path


def image(emulator, app: str) -> list[dict]:
    from conftest import ASSETS

    return [{"file_token": emulator.upload_media(app, "a.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")}]


def final_of(record_id: str):
    from sync.app import make_stores
    from sync.settings import Settings

    store = make_stores(Settings()).projects
    return store.paths(next(p for p in store.projects() if p.record_id == record_id)).final_video


def test_two_tables_with_different_column_names_run_side_by_side(emulator, two_tables, capsys):
    (a_app, a_table), (b_app, b_table), _ = two_tables
    [a_row] = emulator.add_records(a_app, a_table, [{"标题": "甲", "首帧图片": image(emulator, a_app), "段数": 2}])
    [b_row] = emulator.add_records(b_app, b_table, [{"视频标题": "乙", "首图": image(emulator, b_app), "段数": 2}])

    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "[抖音]" in out and "[视频号]" in out and out.count("columns OK") == 2

    assert main(["once"]) == 0
    a = emulator.get_record(a_app, a_table, a_row)["fields"]
    b = emulator.get_record(b_app, b_table, b_row)["fields"]
    assert text_of(a["状态"]) == "已完成" and "错误信息" not in a
    assert text_of(b["处理状态"]) == "已完成" and "状态" not in b and "问题" not in b
    assert text_of(b["视频链接"]) and b["成片"] and text_of(b["处理进度"]).startswith("100%")
    # Each video comes from its table's default template: tiny is 180x320, photo-chain 240x320.
    sizes = {r: (stream_info(p)["width"], stream_info(p)["height"])
             for r, p in (("甲", final_of(a_row)), ("乙", final_of(b_row)))}
    assert sizes == {"甲": (180, 320), "乙": (240, 320)}
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    rows = {r["title"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["甲"]["table"] == "抖音" and rows["乙"]["table"] == "视频号"
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("表") and "视频号" in table

    chats = {m["receive_id"]: m for m in emulator.messages if m["kind"] == "im"}
    assert set(chats) == {"oc_douyin", "oc_channels"}
    assert "乙" in json.dumps(chats["oc_channels"]["content"], ensure_ascii=False)
    assert "甲" in json.dumps(chats["oc_douyin"]["content"], ensure_ascii=False)

    assert main(["verify-consistency"]) == 0
    assert "2 projects checked, 0 differences" in capsys.readouterr().out
    assert main(["compare-feishu-and-db"]) == 0
    assert "2 projects compared, 0 differences, 0 unknown rows" in capsys.readouterr().out

    assert main(["health"]) in (0, 1)
    health = capsys.readouterr().out
    assert "ok   sheet 抖音" in health and "ok   columns 视频号" in health


@pytest.mark.parametrize("text,message", [
    ("[[table]]\nname = 'a'\napp_token = 'x'\n", "table 1: table_id: Field required"),
    ("[[table]]\nname = 'a'\napp_token = 'x'\ntable_id = 't'\ncolums = {}\n", "table 1: colums: Extra inputs"),
    ("[[table]]\nname = 'a'\napp_token = 'x'\ntable_id = 't'\n[[table]]\nname = 'a'\napp_token = 'y'\ntable_id = 'u'\n",
     "two tables with the name a"),
    ("table = 3", "must hold one or more [[table]] sections"),
    ("[[table]\n", "is not valid TOML"),
])
def test_a_bad_connections_file_is_one_line_naming_what_is_wrong(two_tables, capsys, text, message):
    _, _, path = two_tables
    path.write_text(text, encoding="utf-8")
    assert main(["once"]) == 1
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.startswith("Error:")]
    assert message in line and "SHEETREEL_CONNECTIONS" in line and "Traceback" not in err


def test_a_table_that_cannot_be_read_does_not_hold_up_the_others(emulator, two_tables, capsys):
    (a_app, _), (b_app, b_table), path = two_tables
    # The first base is gone (deleted, or the app was removed from it).
    path.write_text(path.read_text(encoding="utf-8").replace(f'app_token = "{a_app}"', 'app_token = "bascnGone"'),
                    encoding="utf-8")
    [b_row] = emulator.add_records(b_app, b_table, [{"视频标题": "乙", "首图": image(emulator, b_app), "段数": 1}])
    assert main(["once"]) == 1
    err = capsys.readouterr().err
    assert any(line.startswith("Error: 飞书找不到对象") for line in err.splitlines()) and "Traceback" not in err
    assert text_of(emulator.get_record(b_app, b_table, b_row)["fields"]["处理状态"]) == "已完成"
