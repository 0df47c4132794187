"""The GPU host's speed and style knobs for a resident diffusers pipeline: step caching,
compiled transformer blocks, and LoRA adapters (a step-distilled one for speed, a template's
for style), each applied once to the loaded model and switched per shot without reloading.

Only diffusers' own mechanisms are used (CacheMixin.enable_cache, compile_repeated_blocks,
the LoRA loader mixins with peft), so a pipeline gains each knob as soon as diffusers gives
it one; a pipeline without one gets a clear Permanent error, never a silent no-op.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from storage.errors import Permanent

log = logging.getLogger(__name__)

CacheKind = Literal["none", "first_block", "faster"]
CompileKind = Literal["off", "blocks", "full"]
SPEED_ADAPTER = "speed"


@dataclass(frozen=True)
class Acceleration:
    cache: CacheKind = "none"
    # First Block Cache: reuse the rest of the network while the first block's output changed
    # less than this (relative L1); 0.05-0.1 is diffusers' documented range for a visible win.
    cache_threshold: float = 0.08
    compile: CompileKind = "off"
    # A step-distilled LoRA (e.g. 4-step lightx2v for Wan), always on; loaded into every expert.
    lora: Path | None = None
    lora_scale: float = 1.0
    # Wan 2.2 ships its distilled LoRA as a high-noise and a low-noise file: this one goes
    # into transformer_2 (the low-noise expert) instead of `lora`.
    lora_2: Path | None = None


def denoisers(pipe: Any) -> list[tuple[str, Any]]:
    """The pipeline's denoising networks: one, or Wan 2.2 A14B's two experts."""
    found = [(n, getattr(pipe, n, None)) for n in ("transformer", "transformer_2", "unet")]
    return [(n, m) for n, m in found if m is not None]


def apply_cache(pipe: Any, kind: CacheKind, threshold: float) -> None:
    if kind == "none":
        return
    from diffusers.hooks import FasterCacheConfig, FirstBlockCacheConfig

    for name, model in denoisers(pipe):
        if not hasattr(model, "enable_cache"):
            raise Permanent(f"DIFFUSERS_CACHE={kind}: {type(model).__name__} 不支持缓存加速 (set DIFFUSERS_CACHE=none)")
        if kind == "first_block":
            config: Any = FirstBlockCacheConfig(threshold=threshold)
        else:
            # FasterCache skips attention on alternate steps and reuses the unconditional branch;
            # it needs the pipeline's current timestep, which every flow pipeline exposes.
            config = FasterCacheConfig(
                spatial_attention_block_skip_range=2,
                current_timestep_callback=lambda: pipe.current_timestep,
                attention_weight_callback=lambda _: 0.3,
                is_guidance_distilled=getattr(model.config, "guidance_embeds", False),
            )
        try:
            model.enable_cache(config)
        except (ValueError, TypeError, NotImplementedError, IndexError) as e:
            # IndexError: First Block Cache needs at least two blocks to split head from tail.
            raise Permanent(f"DIFFUSERS_CACHE={kind} 无法用于 {name}：{e or type(e).__name__} (set DIFFUSERS_CACHE=none)") from e
        log.info("diffusers cache=%s enabled on %s", kind, name)


def compile_denoisers(pipe: Any, kind: CompileKind) -> None:
    """Compile each expert's repeated blocks (one graph reused by every block: a short compile
    that keeps most of the speed of compiling the whole network), or the whole network."""
    if kind == "off":
        return
    for name, model in denoisers(pipe):
        if kind == "blocks" and getattr(model, "_repeated_blocks", None):
            model.compile_repeated_blocks(fullgraph=True)
        else:
            if kind == "blocks":
                log.warning("%s names no repeated blocks; compiling the whole network instead", type(model).__name__)
            model.compile(fullgraph=False)
        log.info("diffusers compile=%s on %s", kind, name)


@dataclass
class Adapters:
    """Which LoRA files are loaded into the resident pipeline, and which are active now.

    Loading a LoRA costs seconds, switching the active set costs milliseconds, so every file is
    loaded once under a name derived from its path and the per-shot set is chosen by name.
    """

    speed_scale: float | None = None  # set once the speed LoRA is loaded
    loaded: dict[Path, str] = field(default_factory=dict)
    active: tuple[tuple[str, float], ...] | None = None

    def load_speed(self, pipe: Any, accel: Acceleration) -> None:
        if accel.lora is None:
            return
        _load(pipe, accel.lora, SPEED_ADAPTER, second=accel.lora_2)
        self.speed_scale = accel.lora_scale
        self.activate(pipe, None, 0.0)

    def activate(self, pipe: Any, style: Path | None, style_scale: float) -> None:
        wanted: list[tuple[str, float]] = []
        if self.speed_scale is not None:
            wanted.append((SPEED_ADAPTER, self.speed_scale))
        if style is not None:
            if style not in self.loaded:
                name = "style_" + hashlib.sha1(str(style).encode()).hexdigest()[:10]
                _load(pipe, style, name)
                self.loaded[style] = name
            wanted.append((self.loaded[style], style_scale))
        if tuple(wanted) == self.active:
            return
        if wanted:
            pipe.enable_lora()
            pipe.set_adapters([n for n, _ in wanted], [w for _, w in wanted])
        elif self.active:
            pipe.disable_lora()
        self.active = tuple(wanted)


def _load(pipe: Any, path: Path, name: str, second: Path | None = None) -> None:
    if not hasattr(pipe, "load_lora_weights"):
        raise Permanent(f"{type(pipe).__name__} 不支持 LoRA (remove DIFFUSERS_LORA or the template's diffusion.lora)")
    if not path.exists():
        raise Permanent(f"LoRA 文件不存在：{path} (check DIFFUSERS_LORA or the template's diffusion.lora)")
    try:
        import peft  # noqa: F401  (diffusers needs it for adapters; say so before it does, less clearly)
    except ImportError as e:
        raise Permanent(f"LoRA 需要 peft：pip install 'sheetreel[gpu]' ({e})") from e
    try:
        pipe.load_lora_weights(str(path), adapter_name=name)
        if getattr(pipe, "transformer_2", None) is not None:
            pipe.load_lora_weights(str(second or path), adapter_name=name, load_into_transformer_2=True)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise Permanent(f"LoRA {path.name} 无法加载到 {type(pipe).__name__}：{str(e).splitlines()[0][:200]} "
                        "(is it made for this model?)") from e
    log.info("diffusers lora %s loaded as %s", path.name, name)
