"""The contract every segment backend (kenburns, stock, http, diffusers) fulfils."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from connectors.ffmpeg import EvenSize
from storage.storyboard import Shot


class Tuning(BaseModel):
    """A template's generation settings; each one set replaces the backend's own for its shots."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int | None = Field(default=None, ge=1, le=200)
    num_frames: int | None = Field(default=None, ge=1, le=1000)
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    # A style LoRA for this template's shots (diffusers backend), over the resident model.
    lora: Path | None = None
    lora_scale: float = Field(default=1.0, ge=0, le=4)


class View(BaseModel):
    """Where the camera looks in the opening image (covered to the output's aspect): the left/top
    corner and the side, as fractions of the whole. The full picture is (0, 0, 1)."""

    model_config = ConfigDict(frozen=True)

    x: float = Field(default=0.0, ge=0, le=1)
    y: float = Field(default=0.0, ge=0, le=1)
    size: float = Field(default=1.0, gt=0, le=1)


class RemoteTask(BaseModel):
    """One submission to a provider, as the journal keeps it."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    key: str  # ours, stable for the same shot, take and prompt: what a lost answer is looked up by
    submitted_at: datetime
    id: str | None = None  # the provider's task id; None while the submit's answer is unknown
    seconds: float | None = None  # seconds of video the provider made (and bills), once done


@runtime_checkable
class TaskJournal(Protocol):
    """Where the runner keeps a shot's provider task (the segment in the DB and meta.json)."""

    def saved(self) -> RemoteTask | None: ...

    def save(self, task: RemoteTask | None) -> None:
        """Durably record `task` (None: nothing is outstanding) before the caller goes on."""
        ...

    def checkpoint(self) -> None:
        """Between polls: raises when the step must stop (取消, shutdown); the task stays saved."""
        ...


class SegmentRequest(BaseModel):
    """One shot to render: start from `image`, move per `shot`, write `out` in the shared format."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    image: Path
    shot: Shot
    width: EvenSize
    height: EvenSize
    fps: int = Field(ge=1, le=60)
    out: Path
    seed: int = 0
    tuning: Tuning = Tuning()
    # For a backend that moves one camera over the opening image (moves_over_origin): the picture
    # and where the shot starts looking, so a chain never re-samples a frame of a frame.
    origin: Path | None = None
    view: View | None = None
    # For a backend that can end a shot on a given frame (first+last frame models).
    end_image: Path | None = None
    # Where a backend that gets the clip's last frame from the provider at full quality puts it.
    last_frame: Path | None = None
    # For a backend whose work outlives the process (a provider task): where the task is kept.
    journal: TaskJournal | None = None

    @property
    def frame_count(self) -> int:
        """Frames the segment must contain; at least one, so a very short shot still exists."""
        return max(1, round(self.shot.duration * self.fps))


class SegmentGenerator(Protocol):
    name: str
    # Generation holds one of the host's GPU slots (the runner takes it around `generate`).
    uses_gpu: bool
    # Renders from `origin` and `view` instead of `image` when given (see SegmentRequest).
    moves_over_origin: bool

    def for_project(self, project_id: str, used_clips: Iterable[str] = ()) -> SegmentGenerator:
        """The generator for one project's shots. A backend with per-project state (the stock
        library keeps clips already in this video, `used_clips`, out of later shots) returns a
        bound copy; the others return themselves."""
        ...

    def generate(self, req: SegmentRequest) -> str | None:
        """Write exactly `req.frame_count` frames of `req.width`x`req.height` H.264 to `req.out`.

        The file appears atomically (temp sibling, then rename) and uses
        `connectors.ffmpeg.encode_args(req.fps)`, so segments from any backend concatenate by
        stream copy. Failures raise SheetReelError subclasses (MediaError for media problems).
        Returns the library clip the shot was cut from, for a backend that cuts clips, else None.
        """
        ...


class SharedGenerator:
    """Base for backends without per-project state: one instance serves every project."""

    uses_gpu = False
    moves_over_origin = False

    def for_project(self, project_id: str, used_clips: Iterable[str] = ()) -> SharedGenerator:
        return self
