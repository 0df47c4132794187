"""What a template needs from this host (a storyboard writer, a segment backend, a stock library,
TTS, ASR), what the host has, and what a row is told when something is missing.

A missing essential need keeps the template out of the 模板 options and refuses a row that still
picks it, before any work; a missing optional one (narration without TTS) makes the video without
it and says so in the row.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pipeline.templates import TemplateConfig, TemplateLibrary
from storage.errors import SheetReelError

# The setting that provides each backend, for the row's sentence.
PROVIDED_BY = {
    "llm": "LLM_API_KEY", "llm-images": "LLM_API_KEY", "diffusers": "DIFFUSERS_MODEL_DIR",
    "openai": "VIDEO_API_KEY", "wan": "DASHSCOPE_API_KEY", "seedance": "ARK_API_KEY",
    "kling": "KLING_ACCESS_KEY 和 KLING_SECRET_KEY", "stock": "STOCK_LIBRARY_DIR",
}


class Requirement(NamedTuple):
    need: str  # "storyboard:llm", "segments:wan", "stock", "tts", "asr"
    essential: bool  # without it the template cannot make its video; else it makes it with less
    without: str  # what the row says when this host lacks it


def _setting(backend: str) -> str:
    return f"：请设置 {PROVIDED_BY[backend]}" if backend in PROVIDED_BY else ""


def requirements(t: TemplateConfig, storyboard_default: str, segment_default: str) -> list[Requirement]:
    board = t.storyboard_backend or storyboard_default
    if board == "llm" and t.llm_images:
        board = "llm-images"
    shots = t.segment_backend or segment_default
    out = [Requirement(f"storyboard:{board}", True, f"模板“{t.id}”的分镜后端“{board}”未配置{_setting(board)}")]
    if t.ai_ratio > 0:
        out.append(Requirement(f"segments:{shots}", True, f"模板“{t.id}”的视频段后端“{shots}”未配置{_setting(shots)}"))
    if t.ai_ratio < 1:
        out.append(Requirement("stock", True, f"模板“{t.id}”要求部分镜头使用实拍素材（ai_ratio={t.ai_ratio:g}），"
                                              "但没有配置素材库：请设置 STOCK_LIBRARY_DIR"))
    if t.narration.enabled and not t.voiceover:
        out.append(_optional(t, "tts", "配音", "TTS_BASE_URL", "成片没有旁白和字幕"))
    if t.voiceover and t.subtitles.mode != "off":
        out.append(_optional(t, "asr", "语音识别", "ASR_MODEL_DIR", "配音没有字幕"))
    return out


def _optional(t: TemplateConfig, need: str, what: str, setting: str, without: str) -> Requirement:
    if need in t.requires:
        return Requirement(need, True, f"模板“{t.id}”需要{what}：请设置 {setting}")
    return Requirement(need, False, f"未配置{what}（{setting}）：{without}")


def capabilities(storyboarders: Iterable[str], generators: Iterable[str], tts: bool, asr: bool) -> frozenset[str]:
    have = {f"storyboard:{n}" for n in storyboarders} | {f"segments:{n}" for n in generators}
    if "segments:stock" in have:
        have.add("stock")
    return frozenset(have | ({"tts"} if tts else set()) | ({"asr"} if asr else set()))


def unmet(t: TemplateConfig, have: frozenset[str], storyboard_default: str, segment_default: str) -> list[Requirement]:
    return [r for r in requirements(t, storyboard_default, segment_default) if r.need not in have]


def offered(library: TemplateLibrary, have: frozenset[str], storyboard_default: str, segment_default: str
            ) -> tuple[list[str], dict[str, list[Requirement]]]:
    """The templates this host can make videos with, and why each of the others cannot."""
    ok: list[str] = []
    held_back: dict[str, list[Requirement]] = {}
    for template_id in library.ids():
        try:
            template = library.get(template_id)
        except SheetReelError as e:  # a template that does not load is offered to nobody
            held_back[template_id] = [Requirement("template", True, str(e))]
            continue
        blocking = [r for r in unmet(template, have, storyboard_default, segment_default) if r.essential]
        if blocking:
            held_back[template_id] = blocking
        else:
            ok.append(template_id)
    return ok, held_back
