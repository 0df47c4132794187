"""The open image-to-video models operators run on a GPU host, through the real DiffusersGenerator:
Wan 2.1/2.2 (I2V, A14B two experts, TI2V-5B, FLF2V), LTX-Video (I2V and condition), CogVideoX-I2V
and HunyuanVideo-I2V, each a tiny random-weight pipeline saved to disk and loaded by our loader;
and the GPU-host speed settings (step caches, compiled blocks, LoRAs, VAE tiling) applied to them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the diffusers backend needs the optional gpu extra (torch)")
pytest.importorskip("diffusers", reason="the diffusers backend needs the optional gpu extra (diffusers)")
pytest.importorskip("peft", reason="LoRA loading needs the optional gpu extra (peft)")
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:FasterCache is a purely experimental:UserWarning"),
              # Raised inside torch and the models' own code, not ours to fix.
              pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]

from connectors.video.diffusers_accel import Acceleration
from connectors.video.diffusers_i2v import snap_frames
from connectors.video.protocol import Tuning
from pipeline.templates import TemplateLibrary
from storage.errors import Permanent
from sync import backends
from sync.settings import Settings

from conftest import stream_info
from test_diffusers_i2v import FPS, H, W, make_image, request, single_threaded_torch, tiny_generator
from tiny_video_models import BUILDERS, save_tiny_wan_lora

EXPECTED_CLASS = {
    "wan21_i2v": "WanImageToVideoPipeline", "wan_flf2v": "WanImageToVideoPipeline",
    "wan22_a14b": "WanImageToVideoPipeline", "wan22_ti2v_5b": "WanImageToVideoPipeline",
    "ltx_i2v": "LTXImageToVideoPipeline", "ltx_condition": "LTXConditionPipeline",
    "cogvideox_i2v": "CogVideoXImageToVideoPipeline", "hunyuan_i2v": "HunyuanVideoImageToVideoPipeline",
}


class Models:
    """Each tiny model is built on first use and shared by the module's tests."""

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.built:
            self.built[name] = BUILDERS[name](self.root / name)
        return self.built[name]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Iterator[Models]:
    with single_threaded_torch():
        yield Models(tmp_path_factory.mktemp("open-models"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    return {"open": make_image(folder / "open.png"),
            "red": make_image(folder / "red.png", "color=c=red:s=320x240"),
            "blue": make_image(folder / "blue.png", "color=c=blue:s=320x240")}


def generator(model_dir: Path, **overrides):
    return tiny_generator(model_dir, **{"num_frames": 9, **overrides})


def rgb(video: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3).astype(np.int16)


def shot(gen, image: Path, out: Path, duration: float = 1.0, **changes) -> np.ndarray:
    req = request(image, out, 0, duration).model_copy(update=changes)
    with single_threaded_torch():
        gen.generate(req)
    return rgb(req.out)


def differ(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_open_model_makes_a_shot_in_the_shared_format(models, images, tmp_path, name):
    gen = generator(models[name])
    end = {"end_image": images["blue"]} if name == "wan_flf2v" else {}
    req = request(images["open"], tmp_path / "seg.mp4", 0).model_copy(update=end)
    with single_threaded_torch():
        gen.generate(req)
    assert type(gen.load()).__name__ == EXPECTED_CLASS[name]
    info = stream_info(req.out)
    assert int(info["nb_read_frames"]) == req.frame_count == FPS
    assert (info["width"], info["height"], info["codec_name"]) == (W, H, "h264")


def test_frame_counts_snap_to_the_models_latent_grid():
    assert [snap_frames(n, 4) for n in (1, 9, 10, 12, 81, 84)] == [5, 9, 9, 13, 81, 85]
    assert [snap_frames(n, 8) for n in (9, 12, 13, 121, 161)] == [9, 9, 17, 121, 161]
    assert snap_frames(7, 1) == 7


def test_frame_rules_come_from_the_pipeline(models, images, tmp_path):
    """Wan's VAE packs 4 frames per latent frame and LTX's 8: asked for 12 frames at the output
    rate, Wan makes 13 and LTX 9, so the shot holds a model frame from there on."""
    for name, made in (("wan21_i2v", 13), ("ltx_i2v", 9)):
        gen = generator(models[name], num_frames=12, model_fps=FPS)
        frames = shot(gen, images["open"], tmp_path / f"{name}.mp4", duration=2.0)
        held = frames[made:]
        assert len(frames) == 2 * FPS
        assert max(differ(f, held[0]) for f in held) < 1.0, name  # everything after the clip is its last frame
        assert differ(frames[made - 2], frames[made - 1]) > 0.0, name


def test_flf2v_ends_on_the_template_end_frame_and_refuses_without_one(models, images, tmp_path):
    gen = generator(models["wan_flf2v"])
    with pytest.raises(Permanent, match="end_frame"):
        shot(gen, images["open"], tmp_path / "none.mp4")
    to_red = shot(gen, images["open"], tmp_path / "red.mp4", end_image=images["red"])
    to_blue = shot(gen, images["open"], tmp_path / "blue.mp4", end_image=images["blue"])
    assert differ(to_red[-1], to_blue[-1]) > 0.1  # the last image conditions the clip


def test_ltx_condition_pipeline_conditions_on_first_and_last_frame(models, images, tmp_path):
    gen = generator(models["ltx_condition"])
    plain = shot(gen, images["open"], tmp_path / "plain.mp4")
    ended = shot(gen, images["open"], tmp_path / "ended.mp4", end_image=images["red"])
    assert differ(plain[-1], ended[-1]) > 0.1


def test_distilled_lora_goes_into_both_wan22_experts(models, images, tmp_path):
    model = models["wan22_a14b"]
    lora = save_tiny_wan_lora(model, tmp_path / "lightx2v")
    base = shot(generator(model), images["open"], tmp_path / "base.mp4")
    gen = generator(model, accel=Acceleration(lora=lora))
    fast = shot(gen, images["open"], tmp_path / "lora.mp4")
    assert gen.load().get_list_adapters() == {"transformer": ["speed"], "transformer_2": ["speed"]}
    assert differ(base, fast) > 0.05


def test_template_style_lora_switches_per_shot_on_the_resident_model(models, images, tmp_path):
    model = models["wan21_i2v"]
    style = save_tiny_wan_lora(model, tmp_path / "style", seed=3)
    gen = generator(model)
    plain = shot(gen, images["open"], tmp_path / "plain.mp4")
    pipe = gen.load()
    styled = shot(gen, images["open"], tmp_path / "styled.mp4", tuning=Tuning(lora=style))
    faint = shot(gen, images["open"], tmp_path / "faint.mp4", tuning=Tuning(lora=style, lora_scale=0.0))
    again = shot(gen, images["open"], tmp_path / "again.mp4")
    assert gen.load() is pipe  # loaded once, adapters switched in place
    assert differ(plain, styled) > 0.05
    assert differ(plain, faint) < 0.05 and differ(plain, again) < 0.05


def test_a_template_names_its_lora_beside_it(tmp_path):
    folder = tmp_path / "templates" / "styled"
    folder.mkdir(parents=True)
    (folder / "ink.safetensors").write_bytes(b"weights")
    (folder / "template.toml").write_text('name = "s"\n[diffusion]\nlora = "ink.safetensors"\nlora_scale = 0.7\n',
                                          encoding="utf-8")
    (tmp_path / "templates" / "broken").mkdir()
    (tmp_path / "templates" / "broken" / "template.toml").write_text('name = "b"\n[diffusion]\nlora = "gone.safetensors"\n',
                                                                      encoding="utf-8")
    library = TemplateLibrary(tmp_path / "templates")
    assert library.get("styled").diffusion == Tuning(lora=folder / "ink.safetensors", lora_scale=0.7)
    with pytest.raises(Permanent, match="broken"):
        library.get("broken")


def test_first_block_cache_reuses_steps_and_needs_two_blocks(models, images, tmp_path):
    model = models["wan21_i2v"]
    many_steps = {"steps": 4, "guidance_scale": 5.0}
    base = shot(generator(model, **many_steps), images["open"], tmp_path / "base.mp4")
    gen = generator(model, **many_steps, accel=Acceleration(cache="first_block", cache_threshold=0.5))
    cached = shot(gen, images["open"], tmp_path / "cached.mp4")
    assert gen.load().transformer.is_cache_enabled
    assert differ(base, cached) > 0.05  # later steps reused the first step's residual
    with pytest.raises(Permanent, match="DIFFUSERS_CACHE=first_block"):
        generator(models["ltx_i2v"], accel=Acceleration(cache="first_block")).load()  # one block: nothing to skip


def test_faster_cache_on_cogvideox_and_a_clear_error_on_wan(models, images, tmp_path):
    model = models["cogvideox_i2v"]
    guided = {"steps": 4, "guidance_scale": 5.0}
    base = shot(generator(model, **guided), images["open"], tmp_path / "base.mp4")
    cached = shot(generator(model, **guided, accel=Acceleration(cache="faster")), images["open"], tmp_path / "fc.mp4")
    assert differ(base, cached) > 0.05
    wan = generator(models["wan21_i2v"], **guided, accel=Acceleration(cache="faster"))
    with pytest.raises(Permanent, match="DIFFUSERS_CACHE=first_block"):
        shot(wan, images["open"], tmp_path / "wan.mp4")


def test_compile_wraps_the_repeated_blocks_of_each_expert(models):
    """torch.compile is lazy: loading marks the blocks, the first shot compiles them (seconds
    on a GPU; measured by bench/gpu_i2v.py, not here)."""
    pipe = generator(models["wan22_a14b"], accel=Acceleration(compile="blocks")).load()
    for expert in (pipe.transformer, pipe.transformer_2):
        assert all(block._compiled_call_impl is not None for block in expert.blocks)
        assert expert._compiled_call_impl is None
    whole = generator(models["cogvideox_i2v"], accel=Acceleration(compile="blocks")).load()
    assert whole.transformer._compiled_call_impl is not None  # no repeated blocks named: the whole network


def test_vae_tiling_is_switched_on(models):
    assert generator(models["wan21_i2v"], vae_tiling=True).load().vae.use_tiling
    assert not generator(models["wan21_i2v"]).load().vae.use_tiling


def test_cpu_offload_hooks_each_model_and_still_makes_the_shot(models, images, tmp_path):
    """Offload moves each sub-model to the device only while it runs (accelerate's hooks); on
    this CPU-only machine the device is the CPU itself, which still proves the hooks are set."""
    gen = generator(models["wan21_i2v"], cpu_offload=True)
    frames = shot(gen, images["open"], tmp_path / "offload.mp4")
    pipe = gen.load()
    assert type(pipe.transformer._hf_hook).__name__ == "CpuOffload"
    assert type(pipe.vae._hf_hook).__name__ == "CpuOffload"
    assert len(frames) == FPS


def test_speed_settings_reach_the_generator(models, tmp_path):
    lora = tmp_path / "speed.safetensors"
    settings = Settings(DIFFUSERS_MODEL_DIR=models["wan21_i2v"], DIFFUSERS_CACHE="first_block",
                        DIFFUSERS_CACHE_THRESHOLD=0.1, DIFFUSERS_COMPILE="blocks", DIFFUSERS_LORA=lora,
                        DIFFUSERS_LORA_2=tmp_path / "low.safetensors", DIFFUSERS_LORA_SCALE=0.8)
    assert backends.generators(settings)["diffusers"].accel == Acceleration(
        cache="first_block", cache_threshold=0.1, compile="blocks", lora=lora, lora_2=tmp_path / "low.safetensors",
        lora_scale=0.8)
    with pytest.raises(ValueError, match="DIFFUSERS_CACHE"):
        Settings(DIFFUSERS_CACHE="fbc")


def test_a_missing_lora_file_is_permanent(models, images, tmp_path):
    gen = generator(models["wan21_i2v"], accel=Acceleration(lora=tmp_path / "gone.safetensors"))
    with pytest.raises(Permanent, match="LoRA 文件不存在"):
        gen.load()
