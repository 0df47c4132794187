"""One poll: read the table, turn new and changed rows into projects, say which projects to run."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from connectors.feishu.protocol import BitableClient
from pipeline.templates import TemplateLibrary
from storage.models import Mode, Project, ProjectState
from storage.repo import ProjectStore
from sync import sheet_view
from sync.columns import Columns
from sync.intake import apply_inputs, new_project, reset_for_new_inputs
from sync.rows import RowInput, parse_row

log = logging.getLogger(__name__)

RUNNABLE = (
    ProjectState.pending,
    ProjectState.storyboard_ready,
    ProjectState.segments_ready,
    ProjectState.storyboarding,
    ProjectState.generating,
    ProjectState.composing,
)


class Poller:
    def __init__(
        self,
        table: BitableClient,
        store: ProjectStore,
        columns: Columns,
        templates: TemplateLibrary,
        tz,
        clock: Callable[[], datetime],
        default_template: str,
    ):
        self.table, self.store, self.cols, self.templates = table, store, columns, templates
        self.tz, self.clock, self.default_template = tz, clock, default_template

    def poll(self) -> list[str]:
        for record in self.table.search():
            self._intake(parse_row(record, self.cols, self.default_template))
        return self.runnable()

    def runnable(self) -> list[str]:
        now = self.clock()
        out = []
        for p in self.store.projects(RUNNABLE):
            if p.retry_at and p.retry_at > now:
                continue
            if p.mode == Mode.step and p.state in (ProjectState.storyboard_ready, ProjectState.segments_ready):
                continue
            out.append(p.id)
        return out

    def _intake(self, row: RowInput) -> None:
        project = self.store.by_record(self.table.table_id, row.record_id)
        if project is None:
            project = new_project(row, self.table.table_id)
            self._apply(project, row)
            if self.store.create(project, self._view(project)):
                log.info("new project project=%s record=%s state=%s", project.id, row.record_id, project.state.value)
            return
        if project.input_hash != row.input_hash() and not project.state.is_running:
            reset_for_new_inputs(self.store, project)
            self._apply(project, row)
            self.store.save(project, sheet=self._view(project))
            log.info("inputs changed project=%s record=%s state=%s", project.id, row.record_id, project.state.value)

    def _apply(self, project: Project, row: RowInput) -> None:
        today = self.clock().astimezone(self.tz).date()
        problems = apply_inputs(project, row, self.templates, self.tz, today)
        if problems:
            project.state, project.error, project.progress_text = ProjectState.failed, "；".join(problems), "输入有误"
        else:
            project.state, project.progress_text = ProjectState.pending, "排队中"

    def _view(self, project: Project):
        return sheet_view.render(project, [], self.cols, self.clock())
