"""Image-to-video on the GPU host: a diffusers pipeline from local weights, loaded once, kept resident.

torch and diffusers are the optional `gpu` extra, so they are imported inside the loader only.
Everything model-specific is discovered from the loaded pipeline (its call signature, its VAE's
spatial and temporal compression, the denoiser's patch size and positional embeddings), which
is what lets one class drive Wan 2.1/2.2 (I2V, A14B, TI2V-5B, FLF2V), LTX-Video, CogVideoX,
HunyuanVideo-I2V, SVD and I2VGen-XL without a table of model names.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from connectors import ffmpeg
from connectors.video.diffusers_accel import Acceleration, Adapters, apply_cache, compile_denoisers
from connectors.video.protocol import SegmentRequest, SharedGenerator
from storage.atomic import temp_path_for
from storage.errors import MediaError, Permanent, Transient

log = logging.getLogger(__name__)

GPU_EXTRA_HINT = "pip install 'sheetreel[gpu]'"
DTYPES = ("float16", "bfloat16", "float32")
# When the pipeline states no default resolution, generate about this many pixels per frame.
FALLBACK_PIXELS = 512 * 512
# Pixel sizes are rounded to a multiple of at least this (the smallest VAE downsampling factor).
MIN_ALIGN = 8
# SVD decodes every frame at once unless told otherwise; 8 at a time is its documented VRAM saver.
DECODE_CHUNK = 8
FPS_PARAMS = ("fps", "target_fps", "frame_rate")  # SVD, I2VGen-XL, LTX
OOM_HINT = "set DIFFUSERS_CPU_OFFLOAD=true and/or DIFFUSERS_VAE_TILING=true, or lower DIFFUSERS_NUM_FRAMES"


class DiffusersGenerator(SharedGenerator):
    name = "diffusers"
    uses_gpu = True

    def __init__(
        self,
        model_dir: Path,
        pipeline_class: str = "auto",
        dtype: str = "float16",
        device: str = "cuda",
        cpu_offload: bool = False,
        vae_tiling: bool = False,
        steps: int = 25,
        guidance_scale: float | None = None,
        num_frames: int | None = None,
        model_fps: int | None = None,
        seed: int = 0,
        max_pixels: int | None = None,
        accel: Acceleration = Acceleration(),
    ):
        self.model_dir = Path(model_dir)
        self.pipeline_class = pipeline_class
        self.dtype = dtype
        self.device = device
        self.cpu_offload = cpu_offload
        self.vae_tiling = vae_tiling
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.num_frames = num_frames
        self.model_fps = model_fps
        self.seed = seed
        self.max_pixels = max_pixels
        self.accel = accel
        self._adapters = Adapters()
        self._pipe: Any = None
        self._load_lock = threading.Lock()
        # One pipeline object is not safe to call from two threads (its scheduler holds state).
        self._run_lock = threading.Lock()

    def load(self) -> Any:
        """The resident pipeline, loaded from `model_dir` on first use (call it early to fail fast)."""
        if self._pipe is None:
            with self._load_lock:
                if self._pipe is None:
                    self._pipe = self._load()
        return self._pipe

    def prepare(self, req: SegmentRequest) -> tuple[Any, dict[str, Any]]:
        """The resident pipeline and the arguments this shot's call gets (bench/gpu_i2v.py times
        the bare call with exactly these)."""
        pipe = self.load()
        params = inspect.signature(pipe.__call__).parameters
        size = _native_size(pipe) or generation_size(
            req.width, req.height, self._pixel_budget(pipe, params), _alignment(pipe))
        return pipe, self._call_kwargs(pipe, params, req, _start_image(req.image, size), size)

    def generate(self, req: SegmentRequest) -> None:
        pipe, kwargs = self.prepare(req)
        with self._run_lock:
            self._adapters.activate(pipe, req.tuning.lora, req.tuning.lora_scale)
            frames = self._infer(pipe, kwargs, req)
        indices = frame_indices(len(frames), req.frame_count, self.model_fps, req.fps)
        encode_frames(frames, indices, req, what=f"diffusers segment for shot {req.shot.index + 1}")

    # ---- loading ---------------------------------------------------------------------------

    def _load(self) -> Any:
        torch, diffusers = _import_stack()
        _check_model_dir(self.model_dir)
        cls = _pipeline_class(diffusers, self.pipeline_class)
        dtype_kw = "dtype" if _version(diffusers.__version__) >= (0, 40) else "torch_dtype"
        log.info("loading %s from %s (%s on %s)", self.pipeline_class, self.model_dir, self.dtype, self.device)
        torch_dtype = _torch_dtype(torch, self.dtype)
        try:
            pipe = cls.from_pretrained(str(self.model_dir), local_files_only=True, **{dtype_kw: torch_dtype})
            self._place(pipe, torch)
            # LoRAs first: compiling or caching a network and then changing its layers would
            # throw the compiled graphs away.
            self._adapters.load_speed(pipe, self.accel)
            apply_cache(pipe, self.accel.cache, self.accel.cache_threshold)
            compile_denoisers(pipe, self.accel.compile)
        except RuntimeError as e:
            raise _runtime_error(e, "loading the model") from e
        except (OSError, ValueError, TypeError, KeyError, AttributeError, ImportError) as e:
            raise Permanent(
                f"扩散模型无法加载：{_first_line(e)} (check DIFFUSERS_MODEL_DIR={self.model_dir} "
                f"and DIFFUSERS_PIPELINE={self.pipeline_class})"
            ) from e
        if "image" not in inspect.signature(pipe.__call__).parameters:
            raise Permanent(
                f"{type(pipe).__name__} 不是图生视频模型 (it takes no start image; point DIFFUSERS_MODEL_DIR "
                "at an image-to-video pipeline or set DIFFUSERS_PIPELINE)"
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _place(self, pipe: Any, torch: Any) -> None:
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise Permanent(f"DIFFUSERS_DEVICE={self.device} 但本机没有可用的 CUDA GPU (set DIFFUSERS_DEVICE=cpu to run slowly)")
        # Offload moves each sub-model to the GPU only while it runs; it replaces .to(device).
        if self.cpu_offload and hasattr(pipe, "enable_model_cpu_offload"):
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if self.vae_tiling:
            _enable_vae_tiling(pipe)

    # ---- inference -------------------------------------------------------------------------

    def _call_kwargs(self, pipe: Any, params: Any, req: SegmentRequest, image: Any, size: tuple[int, int]) -> dict[str, Any]:
        import torch

        # A CPU generator gives the same noise on any device, so a seed reproduces across hosts.
        tuning = req.tuning
        num_frames = self._num_frames(pipe, params, req)
        guidance = tuning.guidance_scale if tuning.guidance_scale is not None else self.guidance_scale
        kwargs: dict[str, Any] = {
            "image": image,
            "num_inference_steps": tuning.steps or self.steps,
            "generator": torch.Generator(device="cpu").manual_seed(self.seed + req.seed),
            "output_type": "np",
        }
        if "height" in params and "width" in params:
            kwargs["width"], kwargs["height"] = size
        if "prompt" in params:
            kwargs["prompt"] = req.shot.prompt
        if num_frames is not None and "num_frames" in params:
            kwargs["num_frames"] = num_frames
        _add_end_frame(pipe, params, kwargs, req, size, num_frames)
        if self.model_fps is not None:
            kwargs.update({p: self.model_fps for p in FPS_PARAMS if p in params})
        if guidance is not None:
            # SVD ramps guidance from min to max over the frames; the others take one value.
            key = "guidance_scale" if "guidance_scale" in params else "max_guidance_scale"
            if key in params:
                kwargs[key] = guidance
        if "decode_chunk_size" in params and params["decode_chunk_size"].default is None:
            kwargs["decode_chunk_size"] = DECODE_CHUNK
        return kwargs

    def _infer(self, pipe: Any, kwargs: dict[str, Any], req: SegmentRequest) -> np.ndarray:
        import torch

        try:
            with torch.inference_mode():
                result = pipe(**kwargs)
        except (RuntimeError, IndexError) as e:
            _free_cuda_cache(torch)
            if self.accel.cache == "faster" and "out of memory" not in str(e).lower():
                # diffusers' FasterCache is experimental: it assumes a batched guidance pass
                # (CogVideoX), and breaks on pipelines that run the two passes apart (Wan).
                raise Permanent(f"DIFFUSERS_CACHE=faster 不适用于 {type(pipe).__name__}：{_first_line(e)} "
                                "(set DIFFUSERS_CACHE=first_block)") from e
            if isinstance(e, IndexError):
                raise Permanent(f"扩散模型运行出错（generating shot {req.shot.index + 1}）：{_first_line(e)}") from e
            raise _runtime_error(e, f"generating shot {req.shot.index + 1}") from e
        except (ValueError, TypeError) as e:
            raise Permanent(
                f"扩散模型拒绝了参数：{_first_line(e)} (check DIFFUSERS_NUM_FRAMES, DIFFUSERS_STEPS, "
                "DIFFUSERS_GUIDANCE_SCALE for this model)"
            ) from e
        except (AttributeError, ImportError) as e:
            # The pipeline reaching into a library that moved on under it, e.g. the deprecated
            # I2VGenXLPipeline with transformers 5: no retry will help, a version pin will.
            raise Permanent(
                f"扩散模型管线 {type(pipe).__name__} 与已安装的 diffusers/transformers 版本不兼容："
                f"{type(e).__name__}: {_first_line(e)} (install the versions this model names, or use another "
                "DIFFUSERS_PIPELINE)"
            ) from e
        return to_uint8_frames(result.frames[0])

    def _num_frames(self, pipe: Any, params: Any, req: SegmentRequest) -> int | None:
        """The frames to ask for: the template's or the setting's count, else (with
        DIFFUSERS_MODEL_FPS) the shot's duration at the model's rate, else the pipeline's default;
        always snapped to what the VAE can encode (Wan/Hunyuan/CogVideoX 4k+1, LTX 8k+1)."""
        wanted = req.tuning.num_frames or self.num_frames
        if wanted is None and self.model_fps:
            wanted = round(req.shot.duration * self.model_fps) + 1
        if wanted is None:
            return None
        return snap_frames(wanted, _temporal_compression(pipe))

    def _pixel_budget(self, pipe: Any, params: Any) -> int:
        if self.max_pixels:
            return self.max_pixels
        h, w = params.get("height"), params.get("width")
        if h is not None and w is not None and isinstance(h.default, int) and isinstance(w.default, int):
            return h.default * w.default
        return _config_pixels(pipe) or FALLBACK_PIXELS


# ---- pure helpers (tested without a model) ---------------------------------------------------


def generation_size(width: int, height: int, budget: int, align: int) -> tuple[int, int]:
    """The request's aspect ratio at no more pixels than `budget` (nor than the request), each
    side a multiple of `align`; conform_filter scales the result to the exact request size."""
    area = min(width * height, budget)
    aspect = width / height
    w = (area * aspect) ** 0.5
    h = w / aspect
    return max(align, round(w / align) * align), max(align, round(h / align) * align)


def snap_frames(wanted: int, step: int) -> int:
    """The nearest frame count of the form step*k + 1 (k >= 1): a causal video VAE encodes the
    first frame alone and every `step` frames after it into one latent frame."""
    if step <= 1:
        return max(1, wanted)
    return step * max(1, round((wanted - 1) / step)) + 1


def frame_indices(model_frames: int, frame_count: int, model_fps: int | None, fps: int) -> list[int]:
    """Which model frame to show at each output frame (duplication only, never interpolation).

    Without `model_fps` the clip is stretched over the shot, first frame to first and last to
    last, so the next shot continues from what the model actually ended on. With it, the clip
    plays at its natural speed and holds its last frame when the shot is longer.
    """
    last = model_frames - 1
    if model_fps is None:
        if frame_count == 1:
            return [0]
        # Integer round-half-up: exact, and free of Python round()'s ties-to-even.
        span = frame_count - 1
        return [(2 * i * last + span) // (2 * span) for i in range(frame_count)]
    return [min(last, i * model_fps // fps) for i in range(frame_count)]


def to_uint8_frames(frames: Any) -> np.ndarray:
    """A pipeline's frames (float array in [0, 1], or PIL images) as an (N, H, W, 3) uint8 array."""
    if isinstance(frames, np.ndarray):
        arr = frames
    else:
        arr = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise MediaError(f"diffusers pipeline returned frames of unexpected shape {arr.shape}")
    return np.ascontiguousarray(arr)


def encode_frames(frames: np.ndarray, indices: list[int], req: SegmentRequest, *, what: str) -> None:
    """Pipe the chosen RGB frames into ffmpeg at the output rate; the file appears atomically.

    Frames go through stdin one by one, so a long shot never needs its duplicated frames in
    memory; stderr goes to a file so a chatty ffmpeg cannot block on a full pipe.
    """
    _, h, w, _ = frames.shape
    tmp = temp_path_for(req.out)
    argv = [
        ffmpeg.FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(req.fps), "-i", "-",
        "-vf", ffmpeg.conform_filter(req.width, req.height), "-frames:v", str(len(indices)),
        *ffmpeg.encode_args(req.fps), str(tmp),
    ]
    try:
        with tempfile.TemporaryFile() as errors:
            code = _feed(argv, frames, indices, errors, what)
            errors.seek(0)
            if code != 0:
                raise MediaError(f"{what} failed", ffmpeg.stderr_tail(errors.read()))
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise MediaError(f"{what} failed: ffmpeg wrote no output")
        os.replace(tmp, req.out)
    finally:
        tmp.unlink(missing_ok=True)


def _feed(argv: list[str], frames: np.ndarray, indices: list[int], errors: Any, what: str) -> int:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
    except FileNotFoundError as e:
        raise MediaError(f"{what} failed: {argv[0]} not found; {ffmpeg.INSTALL_HINT}") from e
    try:
        for i in indices:
            proc.stdin.write(frames[i].tobytes())
    except BrokenPipeError:
        pass  # ffmpeg stopped reading; its exit code and stderr say why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    return proc.wait()


# ---- internals -------------------------------------------------------------------------------


def _import_stack() -> tuple[Any, Any]:
    try:
        import diffusers
        import torch
    except ImportError as e:
        raise Permanent(f"diffusers 后端需要 GPU 依赖：{GPU_EXTRA_HINT} ({e})") from e
    return torch, diffusers


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise Permanent(f"扩散模型目录不存在：{model_dir} (set DIFFUSERS_MODEL_DIR to a local diffusers model folder)")
    if not (model_dir / "model_index.json").is_file():
        raise Permanent(
            f"{model_dir} 不是 diffusers 模型目录，缺少 model_index.json "
            "(set DIFFUSERS_MODEL_DIR to a folder saved with save_pretrained or downloaded from the Hub)"
        )


def _pipeline_class(diffusers: Any, name: str) -> Any:
    if name == "auto":
        return diffusers.DiffusionPipeline
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise Permanent(
            f"DIFFUSERS_PIPELINE={name} 不是 diffusers 的流水线类 (use auto or a class name such as "
            "StableVideoDiffusionPipeline, I2VGenXLPipeline, CogVideoXImageToVideoPipeline, LTXImageToVideoPipeline)"
        )
    return cls


def _torch_dtype(torch: Any, name: str) -> Any:
    if name not in DTYPES:
        raise Permanent(f"DIFFUSERS_DTYPE={name} 无效 (use one of {', '.join(DTYPES)})")
    return getattr(torch, name)


def _enable_vae_tiling(pipe: Any) -> None:
    vae = getattr(pipe, "vae", None)
    try:
        vae.enable_tiling()
    except (AttributeError, NotImplementedError):
        log.warning("DIFFUSERS_VAE_TILING is set but %s's VAE does not support tiling; ignored", type(pipe).__name__)


def _alignment(pipe: Any) -> int:
    """Pixels per latent cell times the denoiser's own downsampling: sizes must divide by it."""
    vae_scale = next(
        (int(v) for a in ("vae_spatial_compression_ratio", "vae_scale_factor_spatial", "vae_scale_factor")
         if isinstance(v := getattr(pipe, a, None), (int, float)) and v > 0),
        8,
    )
    unet, transformer = getattr(pipe, "unet", None), getattr(pipe, "transformer", None)
    if unet is not None and getattr(unet.config, "block_out_channels", None):
        return max(MIN_ALIGN, vae_scale * 2 ** (len(unet.config.block_out_channels) - 1))
    patch = getattr(getattr(transformer, "config", None), "patch_size", 1) or 1
    patch = patch[-1] if isinstance(patch, (list, tuple)) else patch
    return max(MIN_ALIGN, vae_scale * int(patch))


def _temporal_compression(pipe: Any) -> int:
    for attr in ("vae_scale_factor_temporal", "vae_temporal_compression_ratio"):
        value = getattr(pipe, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1


def _native_size(pipe: Any) -> tuple[int, int] | None:
    """(width, height) a denoiser with learned positional embeddings is fixed to (CogVideoX-5B-I2V
    only makes 720x480); None when any aligned size works."""
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    if not getattr(config, "use_learned_positional_embeddings", False):
        return None
    h, w = getattr(config, "sample_height", None), getattr(config, "sample_width", None)
    scale = getattr(pipe, "vae_scale_factor_spatial", None) or 8
    return (w * scale, h * scale) if isinstance(h, int) and isinstance(w, int) else None


def _needs_last_image(pipe: Any) -> bool:
    # Wan FLF2V's transformer has position embeddings for two images' CLIP tokens.
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    return getattr(config, "pos_embed_seq_len", None) is not None


def _add_end_frame(pipe: Any, params: Any, kwargs: dict[str, Any], req: SegmentRequest, size: tuple[int, int],
                   num_frames: int | None) -> None:
    """End the shot on `req.end_image` where the pipeline can: Wan's `last_image`, or an LTX
    condition on the last frame; a first+last-frame model without one is refused, not guessed."""
    if req.end_image is None:
        if _needs_last_image(pipe):
            raise Permanent(
                f"模型 {type(pipe).__name__}（首尾帧模型）需要尾帧：请在模板中设置 end_frame = \"opening\"，"
                "或改用图生视频模型 (this first+last-frame model needs an end frame)")
        return
    end = _start_image(req.end_image, size)
    if "last_image" in params:
        kwargs["last_image"] = end
    elif "conditions" in params:
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        last = (num_frames or params["num_frames"].default) - 1
        kwargs["conditions"] = [LTXVideoCondition(image=kwargs.pop("image"), frame_index=0),
                                LTXVideoCondition(image=end, frame_index=last)]
    else:
        log.info("%s cannot end on a given frame; end_frame ignored for shot %d", type(pipe).__name__, req.shot.index + 1)


def _config_pixels(pipe: Any) -> int | None:
    """Native resolution from the denoiser's config (CogVideoX states no default in its signature)."""
    config = getattr(getattr(pipe, "transformer", None) or getattr(pipe, "unet", None), "config", None)
    scale = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", None) or 8
    h, w = getattr(config, "sample_height", None), getattr(config, "sample_width", None)
    if isinstance(h, int) and isinstance(w, int):
        return h * w * scale * scale
    side = getattr(config, "sample_size", None)
    return side * side * scale * scale if isinstance(side, int) else None


def _start_image(path: Path, size: tuple[int, int]) -> Any:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            upright = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise MediaError(f"image {path.name} cannot be decoded: {_first_line(e)}") from e
    # Cover and centre-crop, as conform_filter does, so nothing is stretched.
    return ImageOps.fit(upright, size, method=Image.Resampling.LANCZOS)


def _runtime_error(err: RuntimeError, doing: str) -> Exception:
    if "out of memory" in str(err).lower():
        return Transient(f"显存不足（{doing}），稍后自动重试 (CUDA out of memory: {OOM_HINT})")
    return Permanent(f"扩散模型运行出错（{doing}）：{_first_line(err)}")


def _free_cuda_cache(torch: Any) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _version(text: str) -> tuple[int, int]:
    major, _, rest = text.partition(".")
    minor = "".join(c for c in rest.split(".")[0] if c.isdigit())
    return int(major or 0), int(minor or 0)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
