"""The tables (sqlmodel) and the enums for every state they hold. Their history is in
storage/migrations: a change here needs a revision there (tests/test_migrations.py checks)."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

from sqlalchemy import BigInteger, Column, Enum, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


class AwareDateTime(TypeDecorator):
    """Stores UTC ISO-8601 text and always hands back timezone-aware datetimes.

    SQLite has no timezone type; without this a naive datetime would silently round-trip.
    """

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass a timezone-aware value")
        return value.astimezone(UTC).isoformat()

    def process_result_value(self, value: str | None, dialect) -> datetime | None:
        return datetime.fromisoformat(value) if value else None


def utcnow() -> datetime:
    return datetime.now(UTC)


def state_column(kind: type[enum.Enum], **kw) -> Column:
    """An enum kept as plain text: no database enum type to create (two processes starting at
    once on PostgreSQL would race on CREATE TYPE) or to alter when a state is added."""
    return Column(Enum(kind, native_enum=False, length=32), nullable=False, **kw)


class ProjectState(str, enum.Enum):
    pending = "pending"
    storyboarding = "storyboarding"
    storyboard_ready = "storyboard_ready"
    generating = "generating"
    segments_ready = "segments_ready"
    composing = "composing"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def label(self) -> str:
        return STATE_LABELS[self]


STATE_LABELS = {
    ProjectState.pending: "待处理",
    ProjectState.storyboarding: "生成分镜中",
    ProjectState.storyboard_ready: "分镜完成",
    ProjectState.generating: "生成中",
    ProjectState.segments_ready: "视频段完成",
    ProjectState.composing: "合成中",
    ProjectState.completed: "已完成",
    ProjectState.failed: "失败",
    ProjectState.cancelled: "已取消",
}
# Which sets of states mean what, and every move between them, live in sync/lifecycle.py.


class Mode(str, enum.Enum):
    auto = "auto"
    step = "step"


class SegmentState(str, enum.Enum):
    pending = "pending"
    generating = "generating"
    done = "done"
    failed = "failed"


class SegmentSource(str, enum.Enum):
    ai = "ai"
    stock = "stock"


class StepOutcome(str, enum.Enum):
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"  # SIGTERM: checkpointed, resumes on the next start
    crashed = "crashed"  # the process died mid-step; closed by whoever resumed it


# Optimistic concurrency: every UPDATE says WHERE version = <the version read> and bumps it, so a
# save from a stale copy fails (StaleDataError) in any process on any host instead of overwriting.
_PROJECT_VERSION = Column("version", Integer, nullable=False, server_default="1")


class Project(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("table_id", "record_id", name="uq_project_row"),)
    __mapper_args__ = {"version_id_col": _PROJECT_VERSION}

    id: str = Field(primary_key=True)
    table_id: str = Field(index=True)
    record_id: str
    state: ProjectState = Field(default=ProjectState.pending, sa_column=state_column(ProjectState, index=True))
    # The stage to resume from on 重试 or after a crash; only ever a state with complete outputs.
    last_good: ProjectState = Field(default=ProjectState.pending, sa_column=state_column(ProjectState))
    mode: Mode = Field(default=Mode.auto, sa_column=state_column(Mode))
    # The row's 优先级: higher runs first, then the oldest (a waiting project is reordered when it changes).
    priority: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    title: str = ""
    template: str = ""
    shot_count: int | None = None
    publish_date: date | None = None
    scene: str = Field(default="", sa_column=Column(Text))
    image_ref: str = Field(default="", sa_column=Column(Text))
    input_hash: str = ""
    progress: int = 0
    progress_text: str = ""
    error: str = Field(default="", sa_column=Column(Text))
    # Why the last 操作 was not taken. Kept apart from `error`, which each step start clears, so the
    # explanation stays in the row until the user picks another 操作 or edits the inputs.
    notice: str = Field(default="", sa_column=Column(Text))
    storyboard_json: str | None = Field(default=None, sa_column=Column(Text))
    final_url: str | None = None
    cover_url: str | None = None
    final_duration: float | None = None
    # What the provider shots of this row have cost so far, redone ones included (the price table's unit).
    cost: float | None = None
    attempts: int = 0
    # Waits on a service that was down or busy: backed off on their own, never counted as attempts.
    outage_waits: int = 0
    # `cleanup` removed the intermediates (segments, frames, inputs) on purpose: not drift to repair.
    cleaned_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime))
    retry_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime))
    # The row was deleted from the sheet: the project is kept, but nothing is written back any more.
    row_deleted: bool = False
    # Set by 继续/重试/合成 in step mode: run the next stage once, then rest again.
    advance_once: bool = False
    # The row's modified time when we last consumed its 操作 cell: a re-read of the same edit is not a new action.
    action_stamp: int | None = Field(default=None, sa_column=Column(BigInteger))
    # Times 重做第N段 was asked for: part of every generation seed, so a redo is a new take
    # rather than the same video again, while a crash-resume still reproduces the current one.
    takes: int = 0
    # Times a worker found this project mid-step with nobody holding it (its process died): a row
    # that kills the worker (out of memory, a segfaulting model) must not crash-loop the service.
    crash_resumes: int = 0
    version: int = Field(default=1, sa_column=_PROJECT_VERSION)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))


class Segment(SQLModel, table=True):
    project_id: str = Field(primary_key=True, foreign_key="project.id")
    index: int = Field(primary_key=True)
    state: SegmentState = Field(default=SegmentState.pending, sa_column=state_column(SegmentState))
    source: SegmentSource = Field(default=SegmentSource.ai, sa_column=state_column(SegmentSource))
    backend: str = ""
    duration: float | None = None
    url: str | None = None
    drift: float | None = None
    clip: str | None = None  # stock shots: the library clip it was cut from (kept out of later shots)
    # Cloud shots: the provider task (connectors.video.protocol.RemoteTask as JSON), kept from before
    # the submit so a restart polls it instead of paying twice; and what it cost, by the price table.
    task: str | None = Field(default=None, sa_column=Column(Text))
    cost: float | None = None
    # The segment file's ffprobe facts and digest (connectors.ffmpeg.ProbedFile as JSON): compose
    # reuses them while the file is unchanged instead of probing every segment again.
    media: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))


class StepRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, foreign_key="project.id")
    step: str
    attempt: int = 1
    host: str = ""
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime))
    ok: bool | None = None
    outcome: StepOutcome | None = Field(default=None, sa_column=Column(Enum(StepOutcome, native_enum=False, length=32)))
    error: str | None = Field(default=None, sa_column=Column(Text))


class Timing(SQLModel, table=True):
    """How long one piece of work took on one host: the history that 进度's time estimate reads."""

    id: int | None = Field(default=None, primary_key=True)
    work: str = Field(index=True)  # storyboard, shot or compose
    backend: str = ""  # what did it: the storyboard or shot backend, or ffmpeg
    host: str = ""
    media_seconds: float  # the seconds of video it planned or made
    wall_seconds: float
    finished_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))


class OutboxEntry(SQLModel, table=True):
    """One pending write of a row's system cells; flushed to the sheet, then deleted."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True)
    table_id: str
    record_id: str = Field(index=True)
    # JSON object of column name -> cell value in the sheet's write format (null clears).
    fields: str = Field(sa_column=Column(Text, nullable=False))
    # JSON object of column name -> list of local file paths to upload into that attachment cell.
    attachments: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    # Owed from before the chat was turned on (or too long ago): kept for the record, never sent.
    skipped: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))


class UploadedFile(SQLModel, table=True):
    """Remembers which local file (by path and content hash) became which Feishu file token,
    so a retried flush never uploads the same video twice."""

    sha256: str = Field(primary_key=True)
    app_token: str = Field(primary_key=True)
    file_token: str
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))


class CancelRequest(SQLModel, table=True):
    """取消 for a project some worker holds: a row of its own, so the worker's saves cannot erase it."""

    project_id: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))


class PollState(SQLModel, table=True):
    """How far the poller has read a table, so a restart does not rescan it."""

    table_id: str = Field(primary_key=True)
    watermark_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class Notification(SQLModel, table=True):
    """A chat message owed for one event; written with the transition, sent once, then marked."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True)
    event: str
    title: str = ""
    body: str = Field(default="", sa_column=Column(Text))
    # The finished video's cover (a local file, shown in the card when it is still there) and the row.
    image: str | None = Field(default=None, sa_column=Column(Text))
    link: str | None = Field(default=None, sa_column=Column(Text))
    sent_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime))
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    # Owed from before the chat was turned on (or too long ago): kept for the record, never sent.
    skipped: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(AwareDateTime, nullable=False))
