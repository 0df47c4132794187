"""The diffusers backend against a real (tiny, randomly initialised) Stable Video Diffusion pipeline.

The model is built from tiny configs, saved with save_pretrained, and then loaded only through
DiffusersGenerator's own loader, exactly as real local weights would be. Skipped when the
optional `gpu` extra (torch, diffusers, transformers) is not installed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the diffusers backend needs the optional gpu extra (torch)")
pytest.importorskip("diffusers", reason="the diffusers backend needs the optional gpu extra (diffusers)")
pytest.importorskip("transformers", reason="the diffusers backend needs the optional gpu extra (transformers)")
# diffusers' Euler scheduler trips a numpy 2 deprecation inside the library; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from connectors.video.diffusers_i2v import (
    DiffusersGenerator,
    _runtime_error,
    frame_indices,
    generation_size,
)
from connectors.video.kenburns import KenBurnsGenerator
from connectors.video.protocol import SegmentRequest, SharedGenerator, Tuning
from pipeline.frames import extract_first_last
from pipeline.segments import generate_segments
from pipeline.templates import TemplateLibrary
from storage.errors import Permanent, Transient
from storage.models import SegmentSource
from storage.paths import ProjectPaths
from storage.storyboard import Shot, Storyboard
from sync import backends
from sync.settings import Settings

from conftest import stream_info

W, H, FPS = 160, 288, 12
TINY_PIXELS = 48 * 88  # generate tiny frames; conform_filter scales them to W x H


def save_tiny_svd(folder: Path) -> Path:
    """A StableVideoDiffusionPipeline small enough to run two steps on a laptop CPU in a second."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    # GroupNorm uses 32 groups, so 32 channels is the floor; one layer per block keeps it small.
    unet = UNetSpatioTemporalConditionModel(
        sample_size=16, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=16, num_attention_heads=2,
        addition_time_embed_dim=16, projection_class_embeddings_input_dim=3 * 16, num_frames=4,
    )
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    )
    # The pipeline resizes the start image to 224x224 for CLIP, so the encoder must take that.
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=224, patch_size=32, hidden_size=16, projection_dim=16, intermediate_size=16,
        num_hidden_layers=1, num_attention_heads=2,
    ))
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
        interpolation_type="linear", sigma_min=0.002, sigma_max=700.0, steps_offset=1,
        timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(size=224, crop_size=224),
    )
    pipe.save_pretrained(folder)
    return folder


def save_tiny_i2vgen_xl(folder: Path) -> Path:
    """A text-conditioned I2VGenXLPipeline: the prompt goes through a CLIP tokenizer whose
    vocabulary is the alphabet (written here: no hub) and a one-layer text encoder."""
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    words = folder / "tokenizer-source"
    words.mkdir(parents=True)
    (words / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (words / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")  # no merges: one token per letter
    pipe = I2VGenXLPipeline(
        vae=AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                          down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
        text_encoder=CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)),
        tokenizer=CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=16),
        unet=I2VGenXLUNet(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16,
                          attention_head_dim=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                          up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")),
        scheduler=DDIMScheduler(),
        image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(
            image_size=224, patch_size=32, hidden_size=16, projection_dim=16, intermediate_size=16,
            num_hidden_layers=1, num_attention_heads=2)),
        feature_extractor=CLIPImageProcessor(size=224, crop_size=224),
    )
    pipe.save_pretrained(folder / "model")
    return folder / "model"


def tiny_generator(model_dir: Path, **overrides) -> DiffusersGenerator:
    # Guidance 1.0 turns classifier-free guidance off: one UNet pass per step instead of two.
    settings = {"dtype": "float32", "device": "cpu", "steps": 2, "num_frames": 4, "guidance_scale": 1.0,
                "max_pixels": TINY_PIXELS}
    return DiffusersGenerator(model_dir, **{**settings, **overrides})


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """On tensors this small, torch's worker threads cost more than they save: on a busy
    2-core runner a step takes ~10x longer with two threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Iterator[Path]:
    with single_threaded_torch():
        yield save_tiny_svd(tmp_path_factory.mktemp("tiny-svd"))


def make_image(out: Path, source: str = "testsrc2=s=320x240") -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", source,
                    "-frames:v", "1", str(out)], check=True)
    return out


def request(image: Path, out: Path, index: int, duration: float = 1.0) -> SegmentRequest:
    shot = Shot(index=index, prompt="a cat turns its head", duration=duration)
    return SegmentRequest(image=image, shot=shot, width=W, height=H, fps=FPS, out=out, seed=index)


# ---- the real pipeline, loaded through our loader --------------------------------------------


def test_two_chained_shots_load_the_model_once(tiny_model, tmp_path):
    gen = tiny_generator(tiny_model)
    first = request(make_image(tmp_path / "open.png"), tmp_path / "seg_00.mp4", 0, duration=1.0)
    gen.generate(first)
    pipe = gen.load()
    assert type(pipe).__name__ == "StableVideoDiffusionPipeline"  # "auto" resolved from model_index.json

    extract_first_last(first.out, tmp_path / "f0.jpg", tmp_path / "l0.jpg")
    second = request(tmp_path / "l0.jpg", tmp_path / "seg_01.mp4", 1, duration=0.5)
    gen.generate(second)

    assert gen.load() is pipe  # the same resident object served both shots
    for req in (first, second):
        info = stream_info(req.out)
        assert int(info["nb_read_frames"]) == req.frame_count
        assert (info["width"], info["height"]) == (W, H)
        assert (info["codec_name"], info["pix_fmt"]) == ("h264", "yuv420p")
    assert not list(tmp_path.glob(".*partial*"))


def pictures(video: Path) -> list[np.ndarray]:
    """Decoded frames (grey), and how many distinct pictures they show: a held model frame
    re-encoded by x264 differs from its copy by compression noise only, a new one by far more."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "gray",
                          "-"], capture_output=True, check=True).stdout
    return list(np.frombuffer(raw, np.uint8).reshape(-1, H, W).astype(np.int16))


def distinct(frames: list[np.ndarray]) -> int:
    return 1 + sum(np.abs(b - a).mean() > 2 for a, b in zip(frames, frames[1:]))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.abs(x - y).mean() < 0.5 for x, y in zip(a, b))


def test_template_tuning_and_seeds_shape_the_film(tiny_model, tmp_path):
    """DIFFUSERS_SEED and a template's [diffusion] settings change what is generated, and the
    same inputs give the same film."""
    image = make_image(tmp_path / "open.png")
    gen = tiny_generator(tiny_model)  # num_frames=4 from the settings

    def film(name: str, generator: DiffusersGenerator = gen, **changes) -> list[np.ndarray]:
        req = request(image, tmp_path / f"{name}.mp4", 0).model_copy(update=changes)
        generator.generate(req)
        return pictures(req.out)

    base = film("base")
    assert len(base) == round(1.0 * FPS) and distinct(base) == 4  # 4 model frames held over 12
    assert same(film("again"), base)
    assert distinct(film("two", tuning=Tuning(num_frames=2))) == 2  # the template asks for fewer
    assert not same(film("take", seed=1000), base)
    assert not same(film("other-seed", tiny_generator(tiny_model, seed=5)), base)


def test_named_pipeline_class_loads_too(tiny_model):
    gen = tiny_generator(tiny_model, pipeline_class="StableVideoDiffusionPipeline")
    assert type(gen.load()).__name__ == "StableVideoDiffusionPipeline"


def test_a_text_conditioned_pipeline_gets_the_prompt_or_a_clear_error(tmp_path):
    """I2VGen-XL takes the shot's prompt. diffusers deprecated it and it breaks with
    transformers 5; either way the row must end with a segment or with an actionable error."""
    with single_threaded_torch():
        gen = tiny_generator(save_tiny_i2vgen_xl(tmp_path / "i2vgen"))
        req = request(make_image(tmp_path / "open.png"), tmp_path / "seg.mp4", 0, duration=0.5)
        try:
            gen.generate(req)
        except Permanent as e:
            assert "I2VGenXLPipeline" in str(e) and "transformers" in str(e)
            assert not req.out.exists()
        else:
            assert int(stream_info(req.out)["nb_read_frames"]) == req.frame_count


def test_undecodable_start_image_leaves_no_file(tiny_model, tmp_path):
    from storage.errors import MediaError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    req = request(broken, tmp_path / "seg.mp4", 0)
    with pytest.raises(MediaError, match="cannot be decoded"):
        tiny_generator(tiny_model).generate(req)
    assert list(tmp_path.iterdir()) == [broken]


# ---- settings errors name the setting to fix -------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"pipeline_class": "NoSuchPipeline"}, "DIFFUSERS_PIPELINE"),
        ({"pipeline_class": "AutoencoderKL"}, "DIFFUSERS_PIPELINE"),
        ({"dtype": "float8"}, "DIFFUSERS_DTYPE"),
    ],
)
def test_bad_settings_are_permanent(tiny_model, overrides, setting):
    with pytest.raises(Permanent, match=setting):
        tiny_generator(tiny_model, **overrides).load()


def test_missing_or_foreign_model_dir_is_permanent(tmp_path):
    with pytest.raises(Permanent, match="DIFFUSERS_MODEL_DIR"):
        tiny_generator(tmp_path / "nowhere").load()
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(Permanent, match="model_index.json"):
        tiny_generator(tmp_path).load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a host without CUDA")
def test_cuda_device_without_gpu_is_permanent(tiny_model):
    with pytest.raises(Permanent, match="DIFFUSERS_DEVICE"):
        tiny_generator(tiny_model, device="cuda").load()


def test_out_of_memory_is_transient_with_a_hint():
    err = _runtime_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "generating")
    assert isinstance(err, Transient)
    assert "DIFFUSERS_CPU_OFFLOAD" in str(err) and "DIFFUSERS_VAE_TILING" in str(err)
    assert isinstance(_runtime_error(RuntimeError("shape mismatch"), "generating"), Permanent)


# ---- sizing and retiming ---------------------------------------------------------------------


def test_generation_size_keeps_aspect_within_the_model_budget():
    # SVD's own default is 1024x576; a portrait 720x1280 request becomes the same area, upright.
    assert generation_size(720, 1280, 1024 * 576, 64) == (576, 1024)
    assert generation_size(1280, 720, 1024 * 576, 64) == (1024, 576)
    # A request smaller than the budget is not upscaled; sides stay multiples of the alignment.
    w, h = generation_size(160, 288, 10**7, 16)
    assert (w % 16, h % 16) == (0, 0) and abs(w * h - 160 * 288) < 160 * 288 * 0.1


def test_frame_indices_stretch_or_hold():
    assert frame_indices(4, 7, None, 24) == [0, 1, 1, 2, 2, 3, 3]  # first to first, last to last
    assert frame_indices(14, 1, None, 24) == [0]
    assert frame_indices(3, 6, 12, 24) == [0, 0, 1, 1, 2, 2]  # natural speed
    assert frame_indices(2, 6, 12, 24) == [0, 0, 1, 1, 1, 1]  # then hold the last frame


def test_settings_reach_the_generator(tiny_model, tmp_path):
    """The DIFFUSERS_* settings build the same generator the tests build by hand."""
    settings = Settings(DIFFUSERS_MODEL_DIR=tiny_model, DIFFUSERS_DTYPE="float32", DIFFUSERS_DEVICE="cpu",
                        DIFFUSERS_STEPS=2, DIFFUSERS_NUM_FRAMES=4, DIFFUSERS_GUIDANCE_SCALE=1.0, DIFFUSERS_SEED=5,
                        DIFFUSERS_MAX_PIXELS=TINY_PIXELS)
    image = make_image(tmp_path / "open.png")
    films = []
    for name, gen in (("settings", backends.generators(settings)["diffusers"]),
                      ("by-hand", tiny_generator(tiny_model, seed=5))):
        req = request(image, tmp_path / f"{name}.mp4", 0)
        with single_threaded_torch():
            gen.generate(req)
        films.append(pictures(req.out))
    assert same(*films)


def test_a_template_sets_seed_and_diffusion_for_its_shots(tmp_path):
    folder = tmp_path / "templates" / "tuned"
    folder.mkdir(parents=True)
    (folder / "template.toml").write_text('name = "t"\nseed = 7\n\n[diffusion]\nsteps = 3\nnum_frames = 2\n',
                                          encoding="utf-8")
    template = TemplateLibrary(tmp_path / "templates").get("tuned")
    asked: list[SegmentRequest] = []

    class Recording(SharedGenerator):  # the generator protocol, keeping what it was asked for
        name = "recording"

        def generate(self, req: SegmentRequest) -> None:
            asked.append(req)
            KenBurnsGenerator().generate(req)

    board = Storyboard(shots=[Shot(index=i, prompt="p", duration=0.25) for i in range(2)])
    paths = ProjectPaths.of(tmp_path / "data", None, "tuned", "p1")
    paths.make_dirs()
    make_image(paths.opening_image)
    generate_segments(board, paths, template, [SegmentSource.ai] * 2, lambda k, s: Recording(), set(),
                      lambda k: None, lambda r: None, seed=1000)
    assert [(r.seed, r.tuning) for r in asked] == [(1007, Tuning(steps=3, num_frames=2)),
                                                  (1008, Tuning(steps=3, num_frames=2))]
