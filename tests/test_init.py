"""`sheetreel init`: clear messages for each set-up problem, and --create adds what is missing."""

from __future__ import annotations

import pytest

from connectors.feishu.protocol import FieldType
from storage.models import ProjectState
from sync.cli import main
from sync.rows import text_of

from conftest import TEST_TEMPLATES, Sheet


def env_for(monkeypatch, sheet: Sheet, **override) -> None:
    s = sheet.settings
    values = {"FEISHU_APP_ID": s.feishu_app_id, "FEISHU_APP_SECRET": s.feishu_app_secret.get_secret_value(),
              "FEISHU_APP_TOKEN": s.feishu_app_token, "FEISHU_TABLE_ID": s.feishu_table_id,
              "FEISHU_BASE_URL": s.feishu_base_url, "SHEETREEL_DATA_DIR": str(s.data_dir)} | override
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_init_lists_missing_and_wrongly_typed_columns_and_creates_the_missing(emulator, tmp_path, monkeypatch, capsys):
    sheet = Sheet(emulator, tmp_path / "d", overrides={"段数": FieldType.text})
    sheet.table_id = emulator.create_table(sheet.app_token, name="partial", fields=[("标题", 1), ("段数", 1)])
    env_for(monkeypatch, sheet, FEISHU_TABLE_ID=sheet.table_id)

    assert main(["init"]) == 1
    out = capsys.readouterr().out
    assert "missing column 首帧图片 (附件)" in out and "wrong type: 段数: is 文本, should be 数字" in out
    assert "hint: run `sheetreel init --create`" in out

    assert main(["init", "--create"]) == 1  # the wrong type still needs a person
    out = capsys.readouterr().out
    assert "created column 首帧图片" in out and "created column 最后修改时间" in out
    fields = {f["field_name"] for f in emulator_fields(emulator, sheet)}
    assert {"首帧图片", "状态", "段20视频", "最后修改时间"} <= fields


def emulator_fields(emulator, sheet):
    from sync.app import make_table

    return [{"field_name": f.name} for f in make_table(sheet.settings.model_copy(update={"feishu_table_id": sheet.table_id})).list_fields()]


@pytest.mark.parametrize("override,message", [
    ({"FEISHU_APP_SECRET": "wrong"}, "Error: 获取飞书 tenant_access_token 失败"),
    ({"FEISHU_TABLE_ID": "tblDoesNotExist"}, "Error: 飞书找不到对象"),
])
def test_init_says_what_is_wrong_with_the_setup(sheet, monkeypatch, capsys, override, message):
    env_for(monkeypatch, sheet, **override)
    assert main(["init"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(message) and err[1].startswith("Hint: ")


def test_a_column_the_table_lacks_is_named_in_the_row_and_the_rest_still_flows(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d")
    # A table that lacks the 进度 column: Feishu would refuse every write that has it (1254045).
    from conftest import table_schema

    schema = [c for c in table_schema() if c[0] != "进度"]
    sheet.table_id = emulator.create_table(sheet.app_token, name="no-progress", fields=schema)
    sheet.settings = sheet.settings.model_copy(update={"feishu_table_id": sheet.table_id})
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed
    assert not project.error and "「进度」" in project.notice and "sheetreel init" in project.notice
    row = sheet.row(rid)["fields"]
    assert text_of(row[cols.status]) == ProjectState.completed.label and "「进度」" in text_of(row[cols.error])
    assert app.stores.outbox.size() == 0


def template_options(emulator, sheet) -> list[str]:
    from sync.app import make_table

    return next(f.options for f in make_table(sheet.settings).list_fields() if f.name == sheet.cols.template)


def test_the_template_column_offers_what_this_host_can_make_and_keeps_options_rows_still_pick(
        sheet, monkeypatch, capsys, tmp_path):
    cols = sheet.cols
    [picked] = sheet.add_rows([{cols.title: "旧行", cols.template: "tiny-story"}])
    [gone] = sheet.add_rows([{cols.title: "删掉的行", cols.template: "旧模板"}])
    sheet.emu.delete_record(sheet.app_token, sheet.table_id, gone)
    env_for(monkeypatch, sheet, SHEETREEL_TEMPLATES_DIR=str(TEST_TEMPLATES))
    assert template_options(sheet.emu, sheet) == ["tiny", "pet-eating", "tiny-story", "旧模板"]

    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "templates offered in 模板: cloud, pet-eating, photo-chain, tiny" in out
    assert ("template tiny-story not offered: 模板“tiny-story”要求部分镜头使用实拍素材（ai_ratio=0.5），"
            "但没有配置素材库：请设置 STOCK_LIBRARY_DIR") in out
    assert "template landscape-story not offered" in out
    assert "模板 option cloud: to add" in out and "模板 option 旧模板: to remove (no row picks it)" in out
    assert "模板 option tiny-story: kept although not offered, 1 row(s) pick it" in out
    assert "hint: run `sheetreel init --create` to bring the 模板 options up to date" in out
    assert template_options(sheet.emu, sheet) == ["tiny", "pet-eating", "tiny-story", "旧模板"]  # nothing applied

    assert main(["init", "--create"]) == 0
    capsys.readouterr()
    assert template_options(sheet.emu, sheet) == ["tiny", "pet-eating", "tiny-story", "cloud", "photo-chain"]
    assert text_of(sheet.row(picked)["fields"][cols.template]) == "tiny-story"  # the row keeps its choice

    # A stock library makes the stock templates runnable here: they are offered from then on.
    (tmp_path / "stock").mkdir()
    monkeypatch.setenv("STOCK_LIBRARY_DIR", str(tmp_path / "stock"))
    assert main(["init", "--create"]) == 0
    assert "template landscape-story not offered" not in capsys.readouterr().out
    assert template_options(sheet.emu, sheet) == ["tiny", "pet-eating", "tiny-story", "cloud", "photo-chain",
                                                  "landscape-story"]
