"""Rows become projects: validate the user's inputs once and record them on the project."""

from __future__ import annotations

import shutil
import uuid
from datetime import date

from pipeline.templates import TemplateLibrary
from storage.errors import BadInput, Permanent
from storage.models import Project
from storage.projects import ProjectStore
from sync.rows import RowInput


def new_project(row: RowInput, table_id: str) -> Project:
    return Project(id=f"p{uuid.uuid4().hex[:12]}", table_id=table_id, record_id=row.record_id)


def apply_inputs(p: Project, row: RowInput, templates: TemplateLibrary, today: date) -> list[str]:
    """Copy the row's inputs onto `p`; returns the problems found, each a sentence for the user.

    All problems are reported together so the user can fix the row in one go.
    """
    problems: list[str] = []
    p.title, p.scene, p.mode, p.input_hash = row.title, row.scene, row.mode, row.input_hash
    p.image_ref = row.image.model_dump_json() if row.image else ""
    p.template = ""
    default_shots = 7
    try:
        template = templates.get(row.template)
        p.template, default_shots = template.id, template.shot_count
    except (BadInput, Permanent) as e:  # no such template, or its file is broken: the row says so
        problems.append(str(e))
    problems += row.problems
    p.shot_count, p.publish_date = row.shot_count or default_shots, row.publish_date or today
    if row.image is None:
        problems.append("首帧图片为空：请在「首帧图片」列上传一张图片，或填写图片链接 (opening image missing)")
    return problems


def remove_outputs(store: ProjectStore, p: Project) -> None:
    """The user changed an input: every file and segment made from the old inputs is stale.
    (The project's own fields are reset by lifecycle.inputs_changed.)"""
    old_root = store.paths(p).root
    if old_root.is_dir():
        shutil.rmtree(old_root)
    store.delete_segments_from(p.id, 0)
