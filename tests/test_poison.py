"""Poison cells: whatever a cell holds, the outcome is that row's error in Chinese, and every
other row goes on. Property tests throw arbitrary Bitable cell values at the parsers and at
action handling; the end-to-end test puts one poison row of each kind beside a good row."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.feishu.protocol import Record
from pipeline.llm_storyboard import ReplyError, parse_storyboard
from pipeline.storyboard import from_text, to_text
from pipeline.templates import TemplateLibrary
from storage.db import make_engine
from storage.errors import BadInput
from storage.locks import FileLocks
from storage.models import Project, ProjectState
from storage.projects import Effects
from storage.stores import Stores
from storage.storyboard import Camera, Shot, Storyboard
from sync.columns import Columns
from sync.lifecycle import Lifecycle
from sync.poller import Poller
from sync.rows import parse_row, text_of

from conftest import TEST_TEMPLATES, Sheet

TZ = ZoneInfo("Asia/Shanghai")
CJK = re.compile(r"[\u4e00-\u9fff]")
COLS = Columns()
# What Bitable sends for each column type, and what a hostile or broken client could send instead.
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                    st.sampled_from(["5.5.5s", ".s", "0001-01-01", "2026-13-01", "-1", "1e309", "NaN", "重做第N段"]))
cell_parts = st.fixed_dictionaries({"text": st.one_of(st.text(max_size=20), st.integers())},
                                   optional={"type": st.sampled_from(["text", "url", "mention"]),
                                             "link": st.one_of(st.text(max_size=20), st.none(), st.integers())})
attachments = st.lists(st.fixed_dictionaries({"file_token": st.one_of(st.text(min_size=1, max_size=12), st.integers())},
                                             optional={"name": st.one_of(st.text(max_size=12), st.none(), st.integers())}),
                       max_size=3)
cells = st.recursive(st.one_of(scalars, cell_parts, attachments),
                     lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                     max_leaves=8)
timestamps = st.integers(min_value=-(2**63), max_value=2**63)  # ms, as the date picker stores them


def _chinese(message: str) -> None:
    assert CJK.search(message), message
    assert "Traceback" not in message and "ValidationError" not in message and "should" not in message


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(COLS.read_columns()), st.one_of(cells, timestamps), max_size=9))
def test_any_cell_values_parse_to_a_row_or_chinese_problems(fields):
    row = parse_row(Record(record_id="rec1", fields=fields, last_modified_time=1), COLS, "tiny", TZ)
    for problem in row.problems:
        _chinese(problem)
        # Every shape is foreseen: the catch-all sentence is for what nobody foresaw.
        assert "无法读取" not in problem


@pytest.mark.parametrize("ms", [-62135596800000 - 8 * 3600 * 1000, -(2**63), 2**63, 253402300800000 * 10])
def test_dates_outside_the_calendar_are_the_cells_problem(ms):
    row = parse_row(Record(record_id="r", fields={COLS.publish_date: ms}), COLS, "tiny", TZ)
    assert row.publish_date is None
    assert len(row.problems) == 1 and "发布日期" in row.problems[0]


def test_an_overlong_scene_is_refused_in_a_sentence_naming_the_cell_and_the_limit():
    row = parse_row(Record(record_id="r", fields={COLS.scene: "猫" * 50_000}), COLS, "tiny", TZ)
    assert row.problems == ["「场景描述」太长（50000 字）：最多 2000 字，请删减"]


valid_cameras = st.sampled_from([c.value for c in Camera])
cameras = st.one_of(valid_cameras, valid_cameras, valid_cameras, st.text(alphabet="abz_", min_size=1, max_size=8))
durations = st.one_of(st.sampled_from(["5", "5.5.5", ".", "0", "31", "1e3", "00.5", "999999999999"]),
                      st.text(alphabet="0123456789.", min_size=1, max_size=6))
extra_lines = st.one_of(st.text(max_size=60), st.builds("旁白：{}".format, st.text(max_size=600)),
                        st.builds("素材：{}".format, st.text(max_size=80)))


def _numbered(shots: list) -> str:
    """Shots numbered the way users number them (mostly right), each with its extra lines."""
    blocks = []
    for i, (skew, camera, duration, prompt, extras) in enumerate(shots):
        blocks.append("\n".join([f"{i + 1 + skew}. [{camera} {duration}s] {prompt}", *extras]))
    return "\n\n".join(blocks)


boards = st.one_of(
    st.lists(st.tuples(st.sampled_from([0, 0, 0, 0, 1, -1]), cameras, durations, st.text(max_size=30),
                       st.lists(extra_lines, max_size=2)), max_size=22).map(_numbered),
    st.lists(extra_lines, max_size=5).map("\n".join),
)


@settings(max_examples=300, deadline=None)
@given(boards)
def test_any_storyboard_text_parses_or_names_what_to_fix_in_chinese(text):
    try:
        board = from_text(text)
    except BadInput as e:
        _chinese(str(e))
    else:
        assert from_text(to_text(board)) == board  # what we write back reads the same


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
shot_objects = st.fixed_dictionaries({}, optional={"index": json_values, "prompt": st.one_of(st.text(max_size=2100), json_values),
                                                   "duration": st.one_of(json_values, st.sampled_from(["5s", "5.5.5s", "inf"])),
                                                   "camera": json_values, "narration": st.one_of(st.text(max_size=600), json_values),
                                                   "stock_tags": json_values})


@settings(max_examples=300, deadline=None)
@given(st.lists(shot_objects, min_size=2, max_size=2))
def test_any_model_reply_is_a_board_or_a_chinese_reason(shots):
    import json

    reply = json.dumps({"shots": shots}, ensure_ascii=False)
    try:
        parse_storyboard(reply, 2, 5.0, list(Camera))
    except ReplyError as e:
        _chinese(e.reason)


@pytest.fixture(scope="module")
def resting(tmp_path_factory):
    """A real store holding one step-mode project resting after its storyboard."""
    data = tmp_path_factory.mktemp("poison")
    stores = Stores.open(make_engine(f"sqlite:///{data / 'db.sqlite'}"), data)
    life = Lifecycle(stores.projects, lambda p, segs, changes: Effects())
    poller = Poller(SimpleNamespace(table_id="tbl"), stores, life, FileLocks(data / "locks"), COLS,
                    TemplateLibrary(TEST_TEMPLATES), TZ, lambda: datetime.now(UTC), "tiny")
    return stores, poller, data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.one_of(st.just("继续"), st.just("继续"), cells,
                        st.sampled_from(["重做第N段", "重做第0段", "重做第99999999999999999999段", "重做第2段", "合成", "开始"])),
       board=st.one_of(boards, boards, cells))
def test_any_action_and_storyboard_cell_is_taken_or_explained_in_chinese(resting, caplog, action, board):
    stores, poller, data = resting
    shots = [Shot(index=i, prompt=f"镜头{i}", duration=1) for i in range(3)]
    record = f"rec{len(stores.projects.projects()) + 1}"
    project = Project(id=f"p{record}", table_id="tbl", record_id=record, state=ProjectState.storyboard_ready,
                      template="tiny", shot_count=3, storyboard_json=Storyboard(shots=shots).model_dump_json())
    stores.projects.create(project)
    fields = {COLS.action: action, COLS.storyboard: board}
    row = parse_row(Record(record_id=record, fields=fields, last_modified_time=10), COLS, "tiny", TZ)
    row = row.model_copy(update={"input_hash": project.input_hash})  # only the action is news
    poller._intake(row)
    after = stores.projects.get(project.id)
    if after.notice:
        _chinese(after.notice)
        assert "联系工程师" not in after.notice, after.notice  # each refusal is a specific sentence
    assert "action failed" not in caplog.text


def test_poison_rows_beside_a_good_row_do_not_stop_it(sheet: Sheet):
    """One poison row of each kind, and the good row still completes in the same `once`."""
    cols = sheet.cols
    (step,) = sheet.add_rows([{cols.title: "分步", cols.image: sheet.image_cell(), cols.template: "tiny",
                               cols.mode: "分步", cols.shot_count: 2}])
    app = sheet.app()
    app.once()
    assert app.store.by_record(sheet.table_id, step).state == ProjectState.storyboard_ready
    # The storyboard edited into a duration no one can read, then 继续.
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, step, {cols.action: "继续",
                                                                cols.storyboard: "1. [zoom_in 5.5.5s] 小狗\n\n2. [static .s] 猫"})
    year_one = int(datetime(1, 1, 1, tzinfo=TZ).timestamp() * 1000)
    poison = {
        "year-one": {cols.publish_date: year_one},
        "long-scene": {cols.scene: "长" * 50_000},
        "unknown-action": {cols.action: "重做第N段"},
    }
    ids = sheet.add_rows([{cols.title: name, cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1, **cells}
                          for name, cells in poison.items()])
    (good,) = sheet.add_rows([{cols.title: "good", cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app.once()

    assert text_of(sheet.row(good)["fields"][cols.status]) == "已完成"
    errors = {name: text_of(sheet.row(rid)["fields"].get(cols.error)) for name, rid in zip(poison, ids, strict=True)}
    assert "发布日期" in errors["year-one"]
    assert "「场景描述」太长" in errors["long-scene"]
    assert "请把 N 换成要重做的段号" in errors["unknown-action"]
    step_row = sheet.row(step)["fields"]
    assert "第1个镜头的时长“5.5.5s”无效" in text_of(step_row[cols.error])
    assert cols.action not in step_row  # the 操作 was consumed and explained, not left to loop
    for message in errors.values():
        _chinese(message)
    assert app.store.by_record(sheet.table_id, step).state == ProjectState.storyboard_ready
    assert datetime.now(UTC) - timedelta(hours=1) < app.store.by_record(sheet.table_id, good).updated_at


def test_a_broken_template_file_is_the_rows_error_and_the_other_rows_complete(emulator, tmp_path, database_url):
    templates = tmp_path / "templates"
    shutil.copytree(TEST_TEMPLATES / "tiny", templates / "tiny")
    broken = {"broken": b"shot_count = [", "named": b'id = "tiny"\n', "latin1": b'title = "caf\xe9"\n'}
    for name, text in broken.items():
        (templates / name).mkdir()
        (templates / name / "template.toml").write_bytes(text)
    sheet = Sheet(emulator, tmp_path / "data", database_url=database_url, SHEETREEL_TEMPLATES_DIR=templates)
    cols = sheet.cols
    ids = sheet.add_rows([{cols.title: name, cols.image: sheet.image_cell(), cols.template: name, cols.shot_count: 1}
                          for name in [*broken, "tiny"]])
    sheet.app().once()

    *poisoned, good = (sheet.row(rid)["fields"] for rid in ids)
    assert text_of(good[cols.status]) == "已完成"
    errors = [text_of(row.get(cols.error)) for row in poisoned]
    assert all(e.startswith(f"模板“{name}”的配置文件有误") for e, name in zip(errors, broken, strict=True)), errors
    assert "不能设置 id" in errors[1] and "不是 UTF-8" in errors[2]

    # The operator fixes the file (the row itself does not change) and picks 重试: the row is made.
    (templates / "broken" / "template.toml").write_text((TEST_TEMPLATES / "tiny" / "template.toml").read_text())
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, ids[0], {cols.action: "重试"})
    sheet.app().once()
    assert text_of(sheet.row(ids[0])["fields"][cols.status]) == "已完成"
