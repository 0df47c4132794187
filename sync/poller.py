"""One poll: read the rows changed since the last poll, turn them into project changes, and say
which projects can run now."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from connectors.feishu.protocol import BitableClient, FieldType, Record
from pipeline.templates import TemplateLibrary
from storage.errors import BadInput, SheetReelError
from storage.locks import ProjectLocks
from storage.models import Mode, Project, ProjectState
from storage.repo import ProjectStore, SheetUpdate
from sync import sheet_view
from sync.actions import Actions, parse_action
from sync.columns import Action, Columns
from sync.intake import apply_inputs, new_project, reset_for_new_inputs
from sync.messages import announcement
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
        locks: ProjectLocks,
        columns: Columns,
        templates: TemplateLibrary,
        tz,
        clock: Callable[[], datetime],
        default_template: str,
        full_scan_every: timedelta = timedelta(hours=1),
        sheet_url: str = "",
    ):
        self.table, self.store, self.locks, self.cols = table, store, locks, columns
        self.templates, self.tz, self.clock, self.default_template = templates, tz, clock, default_template
        self.actions = Actions(store)
        self.full_scan_every, self.sheet_url = full_scan_every, sheet_url
        self._fields: dict[str, int] | None = None
        self._last_full_scan: datetime | None = None

    def poll(self) -> list[str]:
        watermark = self.store.watermark(self.table.table_id)
        now = self.clock()
        if self._last_full_scan is None or now - self._last_full_scan >= self.full_scan_every:
            # A periodic full read catches anything an incremental read could miss (a row whose
            # modified time lagged behind its visibility); in between, polls cost one call.
            watermark, self._last_full_scan = 0, now
        newest, deferred = watermark, []
        for record in self._changed_since(watermark):
            modified = record.last_modified_time or 0
            newest = max(newest, modified)
            try:
                done = self._intake(parse_row(record, self.cols, self.default_template))
            except SheetReelError as e:
                log.warning("row skipped record=%s error=%s", record.record_id, e)
                continue
            if not done:
                deferred.append(modified)
        # A row we could not handle now (its project is busy) must be read again next time.
        self.store.set_watermark(self.table.table_id, min([newest, *(m - 1 for m in deferred)]))
        return self.runnable()

    def runnable(self) -> list[str]:
        now = self.clock()
        out = []
        for p in self.store.projects(RUNNABLE):
            if p.retry_at and p.retry_at > now:
                continue
            if p.mode == Mode.step and p.state in (ProjectState.storyboard_ready, ProjectState.segments_ready) and not p.advance_once:
                continue
            out.append(p.id)
        return out

    # -- reading ----------------------------------------------------------------------------------

    def _changed_since(self, watermark: int) -> Iterator[Record]:
        fields = self._table_fields()
        names = [c for c in self.cols.read_columns() if c in fields]
        if fields.get(self.cols.modified_time) != FieldType.modified_time:
            if self._fields is not None and watermark == 0:
                log.warning("table has no %r ModifiedTime column: every poll reads the whole table; "
                            "run `sheetreel init --create` to add it", self.cols.modified_time)
            yield from self.table.search(field_names=names)
            return
        newest_first = [{"field_name": self.cols.modified_time, "desc": True}]
        for record in self.table.search(sort=newest_first, field_names=names):
            # Rows at exactly the watermark are read again: two edits can share a millisecond.
            if (record.last_modified_time or 0) < watermark:
                return
            yield record

    def _table_fields(self) -> dict[str, int]:
        if self._fields is None:
            self._fields = {f.name: f.type for f in self.table.list_fields()}
        return self._fields

    # -- one row ----------------------------------------------------------------------------------

    def _intake(self, row: RowInput) -> bool:
        """Apply one row's news. False when its project is busy and the row must be read again."""
        project = self.store.by_record(self.table.table_id, row.record_id)
        if project is None:
            self._create(row)
            return True
        with self.locks.hold(project.id) as got:
            if not got:
                return self._while_busy(project, row)
            project = self.store.get(project.id)
            changed = False
            if project.input_hash != row.input_hash():
                reset_for_new_inputs(self.store, project)
                self._apply_inputs(project, row)
                log.info("inputs changed project=%s record=%s", project.id, row.record_id)
                changed = True
            cleared = self._take_action(project, row)
            if changed or cleared:
                self.store.save(project, sheet=self._view(project, clear_action=cleared), notify=self._owed(project, changed))
            return True

    def _create(self, row: RowInput) -> None:
        project = new_project(row, self.table.table_id)
        self._apply_inputs(project, row)
        cleared = self._take_action(project, row)
        if self.store.create(project, self._view(project, clear_action=cleared), self._owed(project, True)):
            log.info("new project project=%s record=%s state=%s", project.id, row.record_id, project.state.value)

    def _while_busy(self, project: Project, row: RowInput) -> bool:
        """A worker holds the project: only 取消 is taken now; the rest waits for the step to end."""
        inputs_changed = project.input_hash != row.input_hash()
        if not self._action_is_new(project, row):
            return not inputs_changed
        if row.action != Action.cancel.value:
            return False
        self.store.request_cancel(project.id)
        self.store.add_outbox(project, SheetUpdate(fields={self.cols.action: None}))
        log.info("cancel requested project=%s record=%s", project.id, row.record_id)
        return not inputs_changed

    def _take_action(self, project: Project, row: RowInput) -> bool:
        """Apply the row's 操作 if it is one we have not taken yet. True if the cell must be cleared."""
        if not self._action_is_new(project, row):
            return False
        project.action_stamp = row.modified_ms
        try:
            self.actions.apply(project, parse_action(row.action), row)
            log.info("action taken project=%s record=%s action=%s state=%s", project.id, row.record_id, row.action, project.state.value)
        except BadInput as e:
            project.error = str(e)
            log.info("action refused project=%s record=%s action=%s", project.id, row.record_id, row.action)
        return True

    def _action_is_new(self, project: Project, row: RowInput) -> bool:
        if not row.action:
            return False
        if project.action_stamp is not None and (row.modified_ms or 0) <= project.action_stamp:
            return False
        # Our clearing of the cell has not landed yet: this is the same action seen again.
        return not self.store.outbox_pending_for(row.record_id, self.cols.action)

    def _apply_inputs(self, project: Project, row: RowInput) -> None:
        today = self.clock().astimezone(self.tz).date()
        problems = apply_inputs(project, row, self.templates, self.tz, today)
        if problems:
            project.state, project.error, project.progress_text = ProjectState.failed, "；".join(problems), "输入有误"
        else:
            project.state, project.progress_text = ProjectState.pending, "排队中"

    def _owed(self, project: Project, inputs_checked: bool):
        """Rows whose inputs fail validation are failed projects too, and get announced."""
        failed = inputs_checked and project.state == ProjectState.failed
        return announcement(project, self.sheet_url) if failed else None

    def _view(self, project: Project, clear_action: bool = False) -> SheetUpdate:
        view = sheet_view.render(project, self.store.segments(project.id), self.cols, self.clock())
        if clear_action:
            view.fields[self.cols.action] = None
        return view
