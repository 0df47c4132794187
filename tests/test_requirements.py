"""Templates declare what they need: a template this host cannot make is refused before any work
with the setting to set, and one that can do without something says in the row what it left out."""

from __future__ import annotations

import shutil

from storage.models import ProjectState
from sync.rows import text_of

from conftest import TEST_TEMPLATES, Sheet


def test_a_template_that_requires_tts_is_refused_without_it_and_made_with_it(emulator, tmp_path):
    from fake_openai import FakeOpenAI

    templates = tmp_path / "templates"
    shutil.copytree(TEST_TEMPLATES / "tiny", templates / "spoken")
    toml = templates / "spoken" / "template.toml"
    toml.write_text(toml.read_text().replace('storyboard_backend = "template"',
                                             'storyboard_backend = "template"\nrequires = ["tts"]\n'
                                             'narration_lines = ["你好。"]')
                    + "\n[narration]\nenabled = true\n", encoding="utf-8")
    sheet = Sheet(emulator, tmp_path / "d", SHEETREEL_TEMPLATES_DIR=templates)
    cols = sheet.cols
    [rid] = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "spoken", cols.shot_count: 1}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.failed and project.storyboard_json is None
    assert text_of(sheet.row(rid)["fields"][cols.error]) == "模板“spoken”需要配音：请设置 TTS_BASE_URL"

    with FakeOpenAI() as fake:
        sheet = Sheet(emulator, tmp_path / "d2", SHEETREEL_TEMPLATES_DIR=templates, TTS_BASE_URL=fake.url,
                      TTS_API_KEY=fake.api_key)
        [rid] = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "spoken", cols.shot_count: 1}])
        app = sheet.app()
        app.once()
        project = app.store.by_record(sheet.table_id, rid)
        assert project.state == ProjectState.completed, project.error
        assert cols.error not in sheet.row(rid)["fields"]
