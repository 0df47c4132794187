"""One poll: read the rows changed since the last poll, turn them into project changes, and say
which projects can run now."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from connectors.feishu.protocol import BitableClient, FieldType, Record
from pipeline.templates import TemplateLibrary
from storage.errors import BadInput, SheetReelError, Transient
from storage.locks import ProjectLocks
from storage.models import Project
from storage.outbox import SheetUpdate
from storage.stores import Stores
from sync import lifecycle
from sync.actions import Actions, parse_action
from sync.columns import Action, Columns
from sync.intake import apply_inputs, new_project, remove_outputs
from sync.lifecycle import Change, Lifecycle
from sync.rows import RowInput, parse_row

log = logging.getLogger(__name__)
# New rows whose opening images the gateway fetches at once (each a download and a re-encode):
# a batch pasted into the sheet is queued in about the time of its slowest images, not their sum.
STAGING_AT_ONCE = 4
UNREADABLE = "读取这一行时出错：请检查各列内容是否正常（例如删掉异常字符后重新填写），仍不行请联系工程师查看日志"


def queue_rank(p: Project) -> tuple:
    return (-p.priority, p.created_at, p.id)


@dataclass(frozen=True)
class _Staging:
    """A new row's project, made before its turn so that its image is fetched meanwhile."""

    row: RowInput
    project: Project
    today: date
    problems: Future[list[str]]


class Poller:
    def __init__(
        self,
        table: BitableClient,
        stores: Stores,
        life: Lifecycle,
        locks: ProjectLocks,
        columns: Columns,
        templates: TemplateLibrary,
        tz,
        clock: Callable[[], datetime],
        default_template: str,
        full_scan_every: timedelta = timedelta(hours=1),
        stage: Callable[[Project], None] | None = None,
    ):
        self.table, self.stores, self.store, self.life = table, stores, stores.projects, life
        self.locks, self.cols = locks, columns
        self.templates, self.tz, self.clock, self.default_template = templates, tz, clock, default_template
        self.actions = Actions(stores.projects, templates)
        self.full_scan_every = full_scan_every
        # The gateway of the scale-out mode fetches a new opening image before the project is
        # queued, so workers (which never talk to Feishu) find it in the object store.
        self.stage = stage
        self._fields: dict[str, int] | None = None

    def poll(self) -> list[Project]:
        table_id = self.table.table_id
        watermark = self.stores.sync.watermark(table_id)
        now = self.clock()
        last = self.stores.sync.full_scan(table_id)
        full = watermark == 0 or last is None or not timedelta(0) <= now - last < self.full_scan_every
        if full:
            # A periodic full read catches anything an incremental read could miss (a row whose
            # modified time lagged behind its visibility); in between, polls cost one call, in
            # this process or the next (the time is kept in the database, for cron's `once`).
            watermark = 0
        newest, deferred = watermark, []
        # Oldest change first: rows new in one poll become projects in the order they were added,
        # which is the queue's order among equal priorities.
        records = sorted(self._changed_since(watermark), key=lambda r: r.last_modified_time or 0)
        with ThreadPoolExecutor(STAGING_AT_ONCE, thread_name_prefix="staging") as pool:
            staging = self._stage_new_rows(records, pool)
            for record in records:
                modified = record.last_modified_time or 0
                newest = max(newest, modified)
                if not self._take_in(record, staging.get(record.record_id)):
                    deferred.append(modified)
        # A row we could not handle now (its project is busy) must be read again next time.
        self.stores.sync.set_watermark(table_id, min([newest, *(m - 1 for m in deferred)]))
        if full:
            self.stores.sync.set_full_scan(table_id, now)
        return self.runnable()

    def _take_in(self, record: Record, staging: _Staging | None) -> bool:
        """One changed row into its project; False when it must be read again next poll."""
        try:
            row = staging.row if staging else parse_row(record, self.cols, self.default_template, self.tz)
            done = self._intake(row, staging)
        except SheetReelError as e:
            # The database was busy, or the project moved on between reading and committing
            # (another host): read the row again next poll.
            if e.retryable or isinstance(e, lifecycle.Refused):
                log.warning("row deferred record=%s error=%s", record.record_id, e)
                return False
            log.warning("row refused record=%s error=%s", record.record_id, e)
            self._unreadable(record, str(e))
            return True
        except Exception:  # noqa: BLE001 - one row we cannot handle must not stop the table
            log.exception("row failed record=%s", record.record_id)
            self._unreadable(record)
            return True
        return done

    def _stage_new_rows(self, records: list[Record], pool: ThreadPoolExecutor) -> dict[str, _Staging]:
        """Start fetching the images of the rows that have no project yet, several at once. The
        projects are still created one by one in the rows' order, each when its image is in."""
        if self.stage is None or len(records) < 2:
            return {}
        known = self.store.record_ids(self.table.table_id)
        today = self.clock().astimezone(self.tz).date()
        staging = {}
        for record in records:
            if record.record_id in known:
                continue
            try:
                row = parse_row(record, self.cols, self.default_template, self.tz)
            except Exception:  # noqa: BLE001 - the row's own turn reports it
                continue
            project = new_project(row, self.table.table_id)
            staging[record.record_id] = _Staging(row, project, today, pool.submit(self._staged, project, row, today))
        return staging

    def runnable(self) -> list[Project]:
        """This table's projects that can run now, in the order they should: higher priority, then oldest."""
        now, table_id = self.clock(), self.table.table_id
        due = [p for p in self.store.projects(lifecycle.ALL - lifecycle.FINAL)
               if p.table_id == table_id and lifecycle.due(p, now)]
        return sorted(due, key=queue_rank)

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
            self.stores.sync.set_shows_previews(self.table.table_id,
                                                bool(self._fields.keys() & {self.cols.preview, self.cols.animatic}))
        return self._fields

    # -- one row ----------------------------------------------------------------------------------

    def _intake(self, row: RowInput, staging: _Staging | None = None) -> bool:
        """Apply one row's news. False when its project is busy and the row must be read again."""
        project = self.store.by_record(self.table.table_id, row.record_id)
        try:
            if project is None:
                self._create(row, staging)
                return True
            with self.locks.hold(project.id) as got:
                if not got:
                    return self._while_busy(project, row)
                project = self.store.get(project.id)
                transitions, _ = self._news(project, row)
                if transitions:
                    self.life.commit(project.id, lambda q: [t(q) for t in transitions])
                return True
        except Transient as e:  # the image could not be fetched for now: read the row again
            log.warning("opening image not staged record=%s error=%s", row.record_id, e)
            return False

    def _unreadable(self, record: Record, message: str = UNREADABLE) -> None:
        """The row could not be taken in (`message` says why, else it broke something we did not
        foresee): it shows a Chinese error instead of silently never moving, and it is not read
        again until the user edits it."""
        project = self.store.by_record(self.table.table_id, record.record_id)
        try:
            if project is None:
                project = new_project(RowInput(record_id=record.record_id), self.table.table_id)
                self.life.create(project, lambda q: [lifecycle.inputs_changed(q, [message])])
            elif message not in (project.error, project.notice):  # the newest row is read again each poll
                self.life.commit(project.id, lambda q: lifecycle.action_refused(q, message))
        except Exception:  # noqa: BLE001 - the log line above is all we can do then
            log.exception("row error not recorded record=%s", record.record_id)

    def _create(self, row: RowInput, staging: _Staging | None = None) -> None:
        project = staging.project if staging else new_project(row, self.table.table_id)
        _, changes = self._news(project, row, new=True, staging=staging)
        if self.life.create(project, lambda q: changes):
            log.info("new project project=%s record=%s state=%s", project.id, row.record_id, project.state.value)

    def _news(self, p: Project, row: RowInput, new: bool = False,
              staging: _Staging | None = None) -> tuple[list[lifecycle.Transition], list[Change]]:
        """What the row asks of `p`: the transitions to commit, already applied to `p` (so each
        check sees the state the previous one left) with their outcomes."""
        transitions: list[lifecycle.Transition] = []
        changes: list[Change] = []

        def take(transition: lifecycle.Transition) -> None:
            transitions.append(transition)
            changes.append(transition(p))

        if new or p.input_hash != row.input_hash:
            if not new:
                remove_outputs(self.store, p)
                log.info("inputs changed project=%s record=%s", p.id, row.record_id)
            today = staging.today if staging else self.clock().astimezone(self.tz).date()
            staged = staging.problems.result() if staging else self._staged(p, row, today)
            take(lambda q: lifecycle.inputs_changed(q, apply_inputs(q, row, self.templates, today) + staged))
        if self._action_is_new(p, row):
            take(self._action(p, row))
        if p.priority != row.priority:
            take(lambda q: lifecycle.reprioritised(q, row.priority))
        return transitions, changes

    def _staged(self, p: Project, row: RowInput, today) -> list[str]:
        """Stage the new inputs' image; the problem it has, as the row's error (none when the row
        has other problems: it fails on those). A passing failure propagates: next poll tries again."""
        if self.stage is None:
            return []
        probe = Project(**p.model_dump())
        if apply_inputs(probe, row, self.templates, today):
            return []
        try:
            self.stage(probe)
        except Transient:
            raise
        except SheetReelError as e:
            return [str(e)]
        return []

    def _action(self, p: Project, row: RowInput) -> lifecycle.Transition:
        """The transition for the row's 操作: what it asks, or the notice that explains a refusal."""
        stamp = row.modified_ms
        try:
            act = self.actions.prepare(p, parse_action(row.action), row)
            log.info("action taken project=%s record=%s action=%s", p.id, row.record_id, row.action)
        except Exception as e:  # noqa: BLE001 - whatever the cell holds, the row says why and the table goes on
            if isinstance(e, BadInput):
                message = str(e)
                log.info("action refused project=%s record=%s action=%s", p.id, row.record_id, row.action)
            else:
                log.exception("action failed project=%s record=%s action=%s", p.id, row.record_id, row.action)
                message = (f"操作“{row.action}”无法执行：请检查「{self.cols.storyboard}」等列的内容后重新选择，"
                           "仍不行请联系工程师查看日志")

            def act(q: Project) -> Change:
                return lifecycle.action_refused(q, message)

        def transition(q: Project) -> Change:
            # The row's modified time when we consumed its 操作: a re-read of the same edit is not a new action.
            q.action_stamp = stamp
            return act(q)

        return transition

    def _while_busy(self, project: Project, row: RowInput) -> bool:
        """A worker holds the project: only 取消 is taken now; the rest waits for the step to end."""
        # A new priority waits too: it orders the project's next stage.
        inputs_changed = project.input_hash != row.input_hash or project.priority != row.priority
        if not self._action_is_new(project, row):
            return not inputs_changed
        if row.action != Action.cancel.value:
            return False
        self.store.request_cancel(project.id)
        self.stores.outbox.add(project, SheetUpdate(fields={self.cols.action: None}))
        log.info("cancel requested project=%s record=%s", project.id, row.record_id)
        return not inputs_changed

    def _action_is_new(self, project: Project, row: RowInput) -> bool:
        if not row.action:
            return False
        if project.action_stamp is not None and (row.modified_ms or 0) <= project.action_stamp:
            return False
        # Our clearing of the cell has not landed yet: this is the same action seen again.
        return not self.stores.outbox.pending_for(row.record_id, self.cols.action)

