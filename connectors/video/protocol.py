"""The contract every segment backend (kenburns, stock, http, diffusers) fulfils."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storage.storyboard import Shot


class SegmentRequest(BaseModel):
    """One shot to render: start from `image`, move per `shot`, write `out` in the shared format."""

    model_config = ConfigDict(frozen=True)

    image: Path
    shot: Shot
    width: int = Field(ge=16, le=3840)
    height: int = Field(ge=16, le=3840)
    fps: int = Field(ge=1, le=60)
    out: Path
    seed: int = 0

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        # H.264 in yuv420p cannot encode odd dimensions.
        if v % 2:
            raise ValueError(f"video size must be even, got {v}")
        return v

    @property
    def frame_count(self) -> int:
        """Frames the segment must contain; at least one, so a very short shot still exists."""
        return max(1, round(self.shot.duration * self.fps))


class SegmentGenerator(Protocol):
    name: str

    def generate(self, req: SegmentRequest) -> None:
        """Write exactly `req.frame_count` frames of `req.width`x`req.height` H.264 to `req.out`.

        The file appears atomically (temp sibling, then rename) and uses
        `connectors.ffmpeg.encode_args(req.fps)`, so segments from any backend concatenate by
        stream copy. Failures raise SheetReelError subclasses (MediaError for media problems).
        """
        ...
