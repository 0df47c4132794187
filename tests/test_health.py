"""`sheetreel health` checks what this host's configuration needs, and fails when the sheet
refuses writes: each check one line, exit 1 on any failure."""

from __future__ import annotations

import json

import pytest

from storage.outbox import SheetUpdate
from sync.cli import main

from conftest import Sheet
from fake_openai import FakeOpenAI


@pytest.fixture
def healthy(sheet: Sheet, monkeypatch):
    sheet.use_env(monkeypatch)
    cols = sheet.cols
    sheet.add_rows([{cols.title: "体检", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    assert app.once()
    return sheet, app


def health(capsys) -> tuple[int, dict]:
    code = main(["health", "--json"])
    return code, json.loads(capsys.readouterr().out)["checks"]


def test_a_host_with_a_cjk_font_and_nothing_else_configured_is_healthy(healthy, capsys):
    code, checks = health(capsys)
    assert code == 0, checks
    assert checks["cjk font"]["ok"] and "Chinese font" in checks["cjk font"]["detail"]
    assert checks["sheet writes"] == {"ok": True, "detail": "none refused"}
    assert "diffusers model" not in checks and "llm endpoint" not in checks  # only what is configured


def test_the_llm_endpoint_and_its_key_are_checked(healthy, monkeypatch, capsys):
    with FakeOpenAI() as fake:
        monkeypatch.setenv("LLM_BASE_URL", fake.url)
        monkeypatch.setenv("LLM_API_KEY", fake.api_key)
        code, checks = health(capsys)
        assert code == 0 and checks["llm endpoint"]["ok"], checks
        monkeypatch.setenv("LLM_API_KEY", "sk-wrong")
        code, checks = health(capsys)
        assert code == 1 and "refused the key (HTTP 401)" in checks["llm endpoint"]["detail"]
        assert "sk-wrong" not in json.dumps(checks)
    code, checks = health(capsys)  # the server is gone
    assert code == 1 and "unreachable" in checks["llm endpoint"]["detail"]


def test_the_diffusers_backend_needs_a_model_folder(healthy, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEGMENT_BACKEND", "diffusers")
    monkeypatch.setenv("DIFFUSERS_DEVICE", "cpu")  # no GPU here: the CUDA check is for cuda devices
    monkeypatch.setenv("DIFFUSERS_MODEL_DIR", str(tmp_path / "wan"))
    code, checks = health(capsys)
    assert code == 1 and "no model_index.json" in checks["diffusers model"]["detail"] and "cuda" not in checks
    (tmp_path / "wan").mkdir()
    (tmp_path / "wan" / "model_index.json").write_text("{}")
    code, checks = health(capsys)
    assert code == 0 and checks["diffusers model"]["ok"], checks
    monkeypatch.setenv("DIFFUSERS_DEVICE", "cuda")
    code, checks = health(capsys)
    assert "cuda" in checks  # on this CPU machine it fails and says why; on a GPU host it names the card
    assert checks["cuda"]["ok"] or "CUDA" in checks["cuda"]["detail"] or "torch" in checks["cuda"]["detail"]


def test_a_sheet_refusing_writes_fails_health(healthy, capsys):
    sheet, app = healthy
    project = app.store.projects()[0]
    app.stores.outbox.add(project, SheetUpdate(fields={"x": "y"}))
    [entry] = app.stores.outbox.entries()
    app.stores.outbox.postpone([entry.id], "飞书拒绝写入：字段类型不匹配 (code=1254045)", app.clock())
    code, checks = health(capsys)
    assert code == 1 and not checks["sheet writes"]["ok"]
    assert "1 refused by the table" in checks["sheet writes"]["detail"] and "1254045" in checks["sheet writes"]["detail"]


def test_with_feishu_events_health_checks_that_the_base_can_be_subscribed(healthy, monkeypatch, capsys):
    sheet, _ = healthy
    assert "events" not in health(capsys)[1]  # off by default
    monkeypatch.setenv("FEISHU_EVENTS", "true")
    code, checks = health(capsys)
    assert code == 0 and checks["events"] == {"ok": True, "detail": "subscribed to record changes of 1 base(s)"}
    assert sheet.app_token in sheet.emu.events.subscriptions

    monkeypatch.setenv("FEISHU_APP_TOKEN", "bascnNotThere")
    code, checks = health(capsys)
    assert code == 1 and not checks["events"]["ok"]
    assert "bascnNotThere" in checks["events"]["detail"] and "manage permission" in checks["events"]["detail"]
