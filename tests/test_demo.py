"""`sheetreel demo` end to end, then `sheetreel status` on what it left behind."""

from __future__ import annotations

import json
from pathlib import Path

from connectors import ffmpeg
from connectors.feishu.lark_client import LarkBitable, make_lark_client
from pipeline.storyboard import from_text
from sync.cli import main
from sync.demo import DEMO_APP_ID, DEMO_SECRET, ensure_demo_table, open_emulator
from sync.rows import text_of

from fake_openai import FakeOpenAI, chat_json


def test_demo_turns_three_rows_into_videos_and_the_rows_show_them(tmp_path, capsys):
    data = tmp_path / "demo"
    assert main(["demo", "--data-dir", str(data), "--rows", "3", "--shots", "2"]) == 0
    out = capsys.readouterr().out
    assert "feishu api calls:" in out and "records.batch_update=" in out
    assert out.count("已完成") >= 3  # the closing table shows the sheet's labels

    assert main(["status", "--data-dir", str(data), "--json"]) == 0
    projects = json.loads(capsys.readouterr().out)
    assert [p["state"] for p in projects] == ["completed"] * 3

    with open_emulator(data) as emu:
        ref = ensure_demo_table(emu, data)
        table = LarkBitable(make_lark_client(DEMO_APP_ID, DEMO_SECRET, emu.start()), ref.app_token, ref.table_id)
        rows = {r.record_id: r.fields for r in table.search()}
        for p in projects:
            cells = rows[p["record_id"]]
            board = from_text(text_of(cells["分镜脚本"]))
            info = ffmpeg.probe(Path(p["final_path"]))
            assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 720, 1280)
            assert abs(info.duration - board.total_duration) <= 0.2
            assert text_of(cells["状态"]) == "已完成" and text_of(cells["进度"]).startswith("100")
            assert text_of(cells["项目ID"]) == p["project_id"]
            assert cells["成片链接"]["link"] == p["final_url"]
            assert [cells[f"段{n}视频"]["link"] != "" for n in (1, 2)] == [True, True]
            (video,) = cells["成片"]
            assert table.download_media(video["file_token"]) == open(p["final_path"], "rb").read()
            assert len(cells["封面"]) == 1


def test_status_without_a_database_says_what_to_do(tmp_path, capsys):
    assert main(["status", "--data-dir", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: no database in ") and "Hint: pass --data-dir" in err


def test_once_without_settings_names_the_missing_ones(capsys):
    assert main(["once"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Error: missing settings: FEISHU_APP_ID, FEISHU_APP_SECRET, FEISHU_APP_TOKEN, FEISHU_TABLE_ID"
    assert err[1].startswith("Hint: ")


def test_every_command_has_help(capsys):
    from sync.cli import COMMANDS, build_parser

    parser = build_parser()
    for name in COMMANDS:
        try:
            parser.parse_args([name, "--help"])
        except SystemExit:
            pass
        text = capsys.readouterr().out
        assert f"usage: sheetreel {name}" in text and len(text.splitlines()) > 3


def test_demo_switches_to_the_llm_storyboard_and_tts_by_settings(tmp_path, capsys, monkeypatch):
    """The narrated template through the demo, with the storyboard and the voice from an
    OpenAI-compatible server named only in the environment."""
    with FakeOpenAI() as fake:
        board = {"shots": [{"index": i, "prompt": f"山谷镜头{i + 1}", "duration": 2.0, "camera": "zoom_in",
                            "narration": line, "stock_tags": ["landscape"]}
                           for i, line in enumerate(["清晨的山谷。", "溪水流过。"])]}
        fake.queue_chat(chat_json(board))
        for key, value in {"STORYBOARD_BACKEND": "llm", "LLM_BASE_URL": fake.url, "LLM_API_KEY": fake.api_key,
                           "TTS_BASE_URL": fake.url, "TTS_API_KEY": fake.api_key}.items():
            monkeypatch.setenv(key, value)
        data = tmp_path / "demo"
        assert main(["demo", "--data-dir", str(data), "--rows", "1", "--shots", "2",
                     "--template", "landscape-story"]) == 0
        assert "stock footage: synthetic clips" in capsys.readouterr().out
        assert len(fake.chat_requests()) == 1 and len(fake.speech_requests()) == 2

    assert main(["status", "--data-dir", str(data), "--json"]) == 0
    [project] = json.loads(capsys.readouterr().out)
    assert project["state"] == "completed"
    final = Path(project["final_path"])
    info = ffmpeg.probe(final)
    assert (info.width, info.height) == (1280, 720) and abs(info.duration - (2 * 2.0 - 0.5)) <= 0.2
    srt = (final.parent / "subtitles.srt").read_text(encoding="utf-8")
    assert "清晨的山谷。" in srt and "溪水流过。" in srt
