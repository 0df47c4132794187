"""Templates are data: templates/<id>/template.toml plus prompt files. This module reads them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.ffmpeg import EvenSize
from connectors.video.protocol import Tuning
from storage.errors import BadInput, Permanent
from storage.paths import safe_component
from storage.storyboard import Camera


class Strict(BaseModel):
    """A key the model does not know is an error: `shot_cont` or `[subtitle]` must not load and be ignored."""

    model_config = ConfigDict(extra="forbid")


class LogoConfig(Strict):
    file: str
    position: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-right"
    scale: float = Field(default=0.12, gt=0, le=1)
    opacity: float = Field(default=0.8, ge=0, le=1)
    margin: int = Field(default=24, ge=0)


class SubtitleConfig(Strict):
    mode: Literal["burn", "soft", "off"] = "off"
    font: str = "Noto Sans CJK SC"
    size: float = Field(default=0.045, gt=0, le=0.5)
    outline: float = Field(default=2.0, ge=0, le=20)
    margin_v: int = Field(default=48, ge=0)
    colour: str = Field(default="#FFFFFF", pattern=r"^#[0-9A-Fa-f]{6}$")


class NarrationConfig(Strict):
    enabled: bool = False
    voice: str = "alloy"
    speed: float = Field(default=1.0, ge=0.5, le=2.0)
    gap: float = Field(default=0.25, ge=0, le=2)


class TemplateConfig(Strict):
    id: str
    name: str
    shot_count: int = Field(default=7, ge=1, le=20)
    shot_duration: float = Field(default=5.0, gt=0, le=30)
    # Checked when the template loads, so a bad size refuses the template, not every row using it.
    width: EvenSize = 720
    height: EvenSize = 1280
    fps: int = Field(default=24, ge=1, le=60)
    storyboard_backend: str | None = None
    segment_backend: str | None = None
    # Scale-out mode: the work queue its shots run on (e.g. "gpu:ltx" for hosts that hold LTX),
    # when the segment backend's default queue (SHEETREEL_QUEUES) is not the right one.
    queue: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9:_-]*$")
    # Camera moves cycle over the shots of the offline storyboard.
    cameras: list[Camera] = Field(default_factory=lambda: [Camera.zoom_in])
    # Offline storyboard lines; "{scene}" is replaced by the row's scene description.
    shot_prompts: list[str] = Field(default_factory=lambda: ["{scene}"])
    narration_lines: list[str] = Field(default_factory=list)
    stock_tags: list[str] = Field(default_factory=list)
    music: str = ""
    music_volume_db: float = Field(default=-16.0, le=0)
    duck_db: float = Field(default=10.0, ge=0, le=60)
    loudness_lufs: float = Field(default=-14.0, ge=-40, le=-5)
    transition: str = "none"
    transition_duration: float = Field(default=0.5, gt=0, le=5)
    cover_at: float = Field(default=1.0, ge=0)
    # Share of shots made by the AI backend; the rest come from the stock library, so that no
    # finished video is 100% AI-generated when this is below 1.
    ai_ratio: float = Field(default=1.0, ge=0, le=1)
    # An AI shot after a stock clip starts from the clip's last frame (a cut that continues the
    # picture) instead of the last AI frame.
    chain_from_stock: bool = False
    # "opening": where the backend supports first+last frame conditioning (Wan kf2v, Seedance,
    # Kling), every AI shot ends on the opening image, so the video keeps coming back to it.
    end_frame: Literal["none", "opening"] = "none"
    # Colour distance (ΔE) of a chained frame to the opening image above which it is corrected.
    drift_threshold: float | None = Field(default=2.5, ge=0)
    # Pre-recorded speech in this folder, laid under the video and subtitled by ASR.
    voiceover: str = ""
    # Whether the storyboard model is sent the opening image.
    llm_images: bool = False
    logo: LogoConfig | None = None
    subtitles: SubtitleConfig = Field(default_factory=SubtitleConfig)
    narration: NarrationConfig = Field(default_factory=NarrationConfig)
    # [diffusion] steps / num_frames / guidance_scale: this template's AI shots, over the settings.
    diffusion: Tuning = Field(default_factory=Tuning)
    # Added to every shot's seed: another value gives every video of the template other takes.
    seed: int = Field(default=0, ge=0)
    prompt_file: str = "storyboard_prompt.md"
    # What the template would otherwise make without (narration "tts", voiceover subtitles "asr"),
    # named here when a video without it is not worth making: the template is then not offered.
    requires: list[Literal["tts", "asr"]] = Field(default_factory=list)
    folder: Path

    @property
    def orientation(self) -> str:
        return "portrait" if self.height > self.width else "landscape"

    @property
    def music_path(self) -> Path | None:
        return self.folder / self.music if self.music else None

    @property
    def logo_path(self) -> Path | None:
        return self.folder / self.logo.file if self.logo else None

    @property
    def voiceover_path(self) -> Path | None:
        return self.folder / self.voiceover if self.voiceover else None

    @model_validator(mode="after")
    def _lora_beside_the_template(self) -> TemplateConfig:
        lora = self.diffusion.lora
        if lora is not None and not lora.is_absolute():
            self.diffusion = self.diffusion.model_copy(update={"lora": self.folder / lora})
        if self.diffusion.lora is not None and not self.diffusion.lora.exists():
            raise ValueError(f"diffusion.lora 文件不存在：{self.diffusion.lora}")
        return self

    def prompt_text(self) -> str:
        return (self.folder / self.prompt_file).read_text(encoding="utf-8")


class TemplateLibrary:
    """Looks templates up by id in one or more folders (the bundled ones plus the user's)."""

    def __init__(self, *roots: Path):
        self.roots = [Path(r) for r in roots]

    def ids(self) -> list[str]:
        found = {p.parent.name for r in self.roots if r.is_dir() for p in r.glob("*/template.toml")}
        return sorted(found)

    def get(self, template_id: str) -> TemplateConfig:
        safe_component(template_id, "模板")
        for root in self.roots:
            folder = root / template_id
            if (folder / "template.toml").is_file():
                return self._load(folder)
        known = "、".join(self.ids()) or "无"
        raise BadInput(f"模板“{template_id}”不存在，请改为已有模板：{known} (unknown template)")

    @staticmethod
    def _load(folder: Path) -> TemplateConfig:
        try:
            raw = tomllib.loads((folder / "template.toml").read_text(encoding="utf-8"))
            if taken := sorted({"id", "folder"} & raw.keys()):  # the folder decides both
                raise Permanent(f"模板“{folder.name}”的配置文件有误：不能设置 {', '.join(taken)}（模板名就是文件夹名）")
            return TemplateConfig(id=folder.name, folder=folder, **raw)
        except tomllib.TOMLDecodeError as e:
            raise Permanent(f"模板“{folder.name}”的配置文件有误：{e}".splitlines()[0]) from e
        except UnicodeDecodeError as e:
            raise Permanent(f"模板“{folder.name}”的配置文件有误：不是 UTF-8 文本") from e
        except OSError as e:
            raise Permanent(f"模板“{folder.name}”的配置文件无法读取：{e.strerror}") from e
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
            raise Permanent(f"模板“{folder.name}”的配置文件有误：{problems}") from e


def bundled_templates_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "templates"
