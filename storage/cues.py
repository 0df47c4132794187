"""A subtitle cue: shared by ASR (connectors/) and subtitle writing (pipeline/), so it lives here."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator


class Cue(BaseModel):
    # A position, not the SRT number: to_srt numbers cues itself, so 0-based shot indexes fit too.
    index: int = Field(ge=0)
    start: float = Field(ge=0, description="seconds from the start of the audio")
    end: float = Field(description="seconds; strictly after start")
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @model_validator(mode="after")
    def _ordered(self) -> Cue:
        if not self.text:
            raise ValueError("cue text is empty")
        if self.end <= self.start:
            raise ValueError(f"cue {self.index} ends at {self.end}s, not after its start {self.start}s")
        return self
