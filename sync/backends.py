"""Settings -> the storyboard writers, segment generators, speech, ASR and object store.

Only what is configured is built; heavy libraries load inside the connectors on first use.
"""

from __future__ import annotations

from connectors.asr import FunAsrTranscriber, Transcriber
from connectors.store.local import LocalObjectStore
from connectors.store.protocol import ObjectStore
from connectors.tts import OpenAISpeech, Speech
from connectors.video.kenburns import KenBurnsGenerator
from connectors.video.protocol import SegmentGenerator
from connectors.video.stock import StockGenerator, StockLibrary
from pipeline.storyboard import Storyboarder, TemplateStoryboarder
from pipeline.templates import TemplateLibrary
from sync.settings import Settings


def storyboarders(settings: Settings) -> dict[str, Storyboarder]:
    out: dict[str, Storyboarder] = {"template": TemplateStoryboarder()}
    if settings.llm_api_key.get_secret_value():
        from connectors.llm import OpenAIChat
        from pipeline.llm_storyboard import LLMStoryboarder

        chat = OpenAIChat(settings.llm_base_url, settings.llm_api_key.get_secret_value(), settings.llm_model,
                          timeout=settings.llm_timeout)
        for images in (False, True):
            # The template decides whether the model is sent the opening image.
            out["llm-images" if images else "llm"] = LLMStoryboarder(
                chat, settings.data_dir / "cache" / "storyboard", supports_images=images, json_mode=settings.llm_json_mode)
    return out


def generators(settings: Settings) -> dict[str, SegmentGenerator]:
    out: dict[str, SegmentGenerator] = {"kenburns": KenBurnsGenerator()}
    if settings.diffusers_model_dir:
        from connectors.video.diffusers_accel import Acceleration
        from connectors.video.diffusers_i2v import DiffusersGenerator

        out["diffusers"] = DiffusersGenerator(
            settings.diffusers_model_dir, pipeline_class=settings.diffusers_pipeline, dtype=settings.diffusers_dtype,
            device=settings.diffusers_device, cpu_offload=settings.diffusers_cpu_offload,
            vae_tiling=settings.diffusers_vae_tiling, steps=settings.diffusers_steps,
            num_frames=settings.diffusers_num_frames, model_fps=settings.diffusers_model_fps,
            guidance_scale=settings.diffusers_guidance_scale, seed=settings.diffusers_seed,
            max_pixels=settings.diffusers_max_pixels,
            accel=Acceleration(
                cache=settings.diffusers_cache, cache_threshold=settings.diffusers_cache_threshold,
                compile=settings.diffusers_compile, lora=settings.diffusers_lora, lora_2=settings.diffusers_lora_2,
                lora_scale=settings.diffusers_lora_scale),
        )
    out.update(cloud_generators(settings))
    if settings.stock_library_dir:
        out["stock"] = StockGenerator(StockLibrary(settings.stock_library_dir))
    return out


def cloud_generators(settings: Settings) -> dict[str, SegmentGenerator]:
    """A backend per cloud provider whose key is set; each with its own slots and submit spacing."""
    from connectors.video.remote import RemoteGenerator

    s = settings

    def remote(provider, concurrency: int, per_minute: float | None) -> SegmentGenerator:
        return RemoteGenerator(provider, concurrency=concurrency, submits_per_minute=per_minute,
                               poll_interval=s.video_poll_seconds, timeout=s.video_task_timeout_seconds)

    out: dict[str, SegmentGenerator] = {}
    if key := s.video_api_key.get_secret_value():
        from connectors.video.openai_videos import OpenAIVideos

        out["openai"] = remote(OpenAIVideos(s.video_api_base_url, key, s.video_api_model, sizes=s.video_api_sizes,
                                            durations=s.video_api_durations),
                               s.video_api_concurrency, s.video_api_submits_per_minute)
    if key := s.dashscope_api_key.get_secret_value():
        from connectors.video.dashscope_wan import DashScopeWan

        out["wan"] = remote(DashScopeWan(key, s.wan_model, base_url=s.dashscope_base_url, resolution=s.wan_resolution,
                                         durations=s.wan_durations),
                            s.wan_concurrency, s.wan_submits_per_minute)
    if key := s.ark_api_key.get_secret_value():
        from connectors.video.ark_seedance import ArkSeedance

        out["seedance"] = remote(ArkSeedance(key, s.seedance_model, base_url=s.ark_base_url,
                                             resolution=s.seedance_resolution, durations=s.seedance_durations),
                                 s.seedance_concurrency, s.seedance_submits_per_minute)
    if s.kling_access_key and (secret := s.kling_secret_key.get_secret_value()):
        from connectors.video.kling import Kling

        out["kling"] = remote(Kling(s.kling_access_key, secret, s.kling_model, base_url=s.kling_base_url,
                                    mode=s.kling_mode, durations=s.kling_durations),
                              s.kling_concurrency, s.kling_submits_per_minute)
    return out


def speech(settings: Settings) -> Speech | None:
    if not settings.tts_base_url:
        return None
    return OpenAISpeech(settings.tts_base_url, settings.tts_api_key.get_secret_value() or "none", settings.tts_model)


def transcriber(settings: Settings) -> Transcriber | None:
    if not settings.asr_model_dir:
        return None
    return FunAsrTranscriber(settings.asr_model_dir, device=settings.asr_device,
                             vad_model_dir=settings.asr_vad_model_dir, punc_model_dir=settings.asr_punc_model_dir)


def object_store(settings: Settings) -> ObjectStore:
    if settings.object_store == "oss":
        from connectors.store.oss import OssObjectStore

        return OssObjectStore(
            settings.oss_endpoint, settings.oss_bucket, settings.oss_access_key_id,
            settings.oss_access_key_secret.get_secret_value(), prefix=settings.oss_prefix,
            url_expiry_seconds=settings.oss_url_expiry_seconds, checkpoint_dir=settings.data_dir / ".oss-upload",
            public_base_url=settings.oss_public_base_url or None,
        )
    return LocalObjectStore(settings.public_dir, settings.public_url)


def host_capabilities(settings: Settings) -> frozenset[str]:
    """What this host's settings provide, in the terms of `sync.requirements`."""
    from sync.requirements import capabilities

    return capabilities(storyboarders(settings), generators(settings), bool(settings.tts_base_url),
                        bool(settings.asr_model_dir))


def offered_templates(settings: Settings, library: TemplateLibrary) -> tuple[list[str], dict[str, list[str]]]:
    """The templates the 模板 column should offer on this host, and why each other one is not offered."""
    from sync.requirements import offered

    ok, held_back = offered(library, host_capabilities(settings), settings.storyboard_backend,
                            settings.segment_backend)
    return ok, {t: [r.without for r in reasons] for t, reasons in held_back.items()}
