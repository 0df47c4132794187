"""The one validated settings object. Built once at the edge (CLI), then passed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from connectors.video.diffusers_accel import CacheKind, CompileKind
from storage.retry import RetryPolicy
from sync.columns import Columns


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    feishu_app_id: str = Field(default="", alias="FEISHU_APP_ID")
    feishu_app_secret: SecretStr = Field(default=SecretStr(""), alias="FEISHU_APP_SECRET")
    feishu_app_token: str = Field(default="", alias="FEISHU_APP_TOKEN")
    feishu_table_id: str = Field(default="", alias="FEISHU_TABLE_ID")
    # A TOML file of [[table]] sections: one service, several tables (see sync/connections.py).
    connections_file: Path | None = Field(default=None, alias="SHEETREEL_CONNECTIONS")
    feishu_base_url: str = Field(default="https://open.feishu.cn", alias="FEISHU_BASE_URL")
    feishu_timeout: float = Field(default=30.0, alias="FEISHU_TIMEOUT_SECONDS", gt=0)
    # The whole of one Feishu call, however slowly the answer trickles in.
    feishu_deadline: float = Field(default=300.0, alias="FEISHU_DEADLINE_SECONDS", gt=0)

    # Long connection (lark.ws): a row edit wakes the poll within a second; polling still catches all.
    feishu_events: bool = Field(default=False, alias="FEISHU_EVENTS")
    feishu_chat_id: str = Field(default="", alias="FEISHU_CHAT_ID")
    feishu_webhook_url: str = Field(default="", alias="FEISHU_WEBHOOK_URL")
    feishu_webhook_secret: SecretStr = Field(default=SecretStr(""), alias="FEISHU_WEBHOOK_SECRET")
    # The base's web address (https://xxx.feishu.cn/base/<app_token>), for row links in messages.
    feishu_sheet_url: str = Field(default="", alias="FEISHU_SHEET_URL")
    # Messages owed longer than this (e.g. while the bot was down) are not sent late.
    chat_backlog_hours: float = Field(default=24, alias="FEISHU_CHAT_BACKLOG_HOURS", gt=0)

    data_dir: Path = Field(default=Path("./data"), alias="SHEETREEL_DATA_DIR")
    database_url: str = Field(default="", alias="SHEETREEL_DATABASE_URL")
    public_base_url: str = Field(default="", alias="SHEETREEL_PUBLIC_BASE_URL")
    # The local object store's folder (when OSS is not configured): <data dir>/public by default;
    # several hosts without OSS point this at one shared path.
    store_dir: Path | None = Field(default=None, alias="SHEETREEL_STORE_DIR")
    templates_dir: Path | None = Field(default=None, alias="SHEETREEL_TEMPLATES_DIR")
    default_template: str = Field(default="pet-eating", alias="SHEETREEL_DEFAULT_TEMPLATE")
    timezone: str = Field(default="Asia/Shanghai", alias="SHEETREEL_TIMEZONE")

    # One of the names below; a misspelt name stops the service at start (not every row, one by one).
    storyboard_backend: Literal["template", "llm", "llm-images"] = Field(default="template", alias="STORYBOARD_BACKEND")
    segment_backend: Literal["kenburns", "diffusers", "openai", "wan", "seedance", "kling", "stock"] = Field(
        default="kenburns", alias="SEGMENT_BACKEND")

    poll_interval_seconds: float = Field(default=30.0, alias="POLL_INTERVAL_SECONDS", gt=0)
    full_scan_minutes: float = Field(default=60.0, alias="POLL_FULL_SCAN_MINUTES", gt=0)
    flush_interval_seconds: float = Field(default=2.0, alias="FLUSH_INTERVAL_SECONDS", gt=0)
    workers: int = Field(default=2, alias="SHEETREEL_WORKERS", ge=1, le=64)
    gpu_slots: int = Field(default=1, alias="SHEETREEL_GPU_SLOTS", ge=1, le=16)
    # Scale-out mode (PostgreSQL): the queue each segment backend's shots run on, as JSON, e.g.
    # {"diffusers": "gpu:wan"}; unset ones go to cpu (kenburns), gpu:diffusers, api:<backend>.
    queues: dict[str, str] = Field(default_factory=dict, alias="SHEETREEL_QUEUES")
    # A worker silent this long (no heartbeat) is taken for dead and its job handed to another.
    stalled_seconds: float = Field(default=30.0, alias="SHEETREEL_STALLED_SECONDS", ge=5)
    # /metrics (Prometheus) and /healthz of run, gateway and worker; unset: not served.
    metrics_port: int | None = Field(default=None, alias="SHEETREEL_METRICS_PORT", ge=1, le=65535)
    metrics_host: str = Field(default="127.0.0.1", alias="SHEETREEL_METRICS_HOST")
    outbox_backoff_base_seconds: float = Field(default=2.0, alias="OUTBOX_BACKOFF_BASE_SECONDS", ge=0)
    outbox_backoff_cap_seconds: float = Field(default=300.0, alias="OUTBOX_BACKOFF_CAP_SECONDS", gt=0)
    max_attempts: int = Field(default=3, alias="SHEETREEL_MAX_ATTEMPTS", ge=1)
    retry_base_seconds: float = Field(default=5.0, alias="SHEETREEL_RETRY_BASE_SECONDS", ge=0)
    # A service that is down (Feishu, the LLM, a video provider): waited on, backed off to 10 min, for
    # about a day at the default before the project gives up.
    max_outage_waits: int = Field(default=150, alias="SHEETREEL_MAX_OUTAGE_WAITS", ge=1)
    # A step that kills its worker process this many times in a row fails instead of looping.
    max_crash_resumes: int = Field(default=3, alias="SHEETREEL_MAX_CRASH_RESUMES", ge=1)

    # Storyboard LLM (OpenAI-compatible chat; DeepSeek by default).
    llm_base_url: str = Field(default="https://api.deepseek.com", alias="LLM_BASE_URL")
    llm_api_key: SecretStr = Field(default=SecretStr(""), alias="LLM_API_KEY")
    llm_model: str = Field(default="deepseek-chat", alias="LLM_MODEL")
    llm_json_mode: bool = Field(default=True, alias="LLM_JSON_MODE")
    llm_timeout: float = Field(default=60.0, alias="LLM_TIMEOUT_SECONDS", gt=0)

    # Narration (OpenAI-compatible text-to-speech).
    tts_base_url: str = Field(default="", alias="TTS_BASE_URL")
    tts_api_key: SecretStr = Field(default=SecretStr(""), alias="TTS_API_KEY")
    tts_model: str = Field(default="tts-1", alias="TTS_MODEL")

    # Image-to-video on the GPU host (diffusers, local weights only).
    diffusers_model_dir: Path | None = Field(default=None, alias="DIFFUSERS_MODEL_DIR")
    diffusers_pipeline: str = Field(default="auto", alias="DIFFUSERS_PIPELINE")
    diffusers_dtype: str = Field(default="float16", alias="DIFFUSERS_DTYPE")
    diffusers_device: str = Field(default="cuda", alias="DIFFUSERS_DEVICE")
    diffusers_cpu_offload: bool = Field(default=False, alias="DIFFUSERS_CPU_OFFLOAD")
    diffusers_vae_tiling: bool = Field(default=False, alias="DIFFUSERS_VAE_TILING")
    diffusers_steps: int = Field(default=25, alias="DIFFUSERS_STEPS", ge=1)
    diffusers_num_frames: int | None = Field(default=None, alias="DIFFUSERS_NUM_FRAMES")
    diffusers_model_fps: int | None = Field(default=None, alias="DIFFUSERS_MODEL_FPS")
    diffusers_guidance_scale: float | None = Field(default=None, alias="DIFFUSERS_GUIDANCE_SCALE", ge=0)
    diffusers_seed: int = Field(default=0, alias="DIFFUSERS_SEED", ge=0)
    diffusers_max_pixels: int | None = Field(default=None, alias="DIFFUSERS_MAX_PIXELS", ge=64 * 64)
    # GPU-host speed: diffusers' step caches, compiled transformer blocks, a step-distilled LoRA.
    diffusers_cache: CacheKind = Field(default="none", alias="DIFFUSERS_CACHE")
    diffusers_cache_threshold: float = Field(default=0.08, alias="DIFFUSERS_CACHE_THRESHOLD", gt=0, le=1)
    diffusers_compile: CompileKind = Field(default="off", alias="DIFFUSERS_COMPILE")
    diffusers_lora: Path | None = Field(default=None, alias="DIFFUSERS_LORA")
    diffusers_lora_2: Path | None = Field(default=None, alias="DIFFUSERS_LORA_2")
    diffusers_lora_scale: float = Field(default=1.0, alias="DIFFUSERS_LORA_SCALE", ge=0, le=4)

    # Cloud image-to-video. Each provider is offered as a segment backend once its key is set.
    # OpenAI videos API (`openai`): Sora 2, or a gateway serving other models on /v1/videos.
    video_api_base_url: str = Field(default="https://api.openai.com/v1", alias="VIDEO_API_BASE_URL")
    video_api_key: SecretStr = Field(default=SecretStr(""), alias="VIDEO_API_KEY")
    video_api_model: str = Field(default="sora-2", alias="VIDEO_API_MODEL")
    video_api_sizes: Annotated[list[str], NoDecode] = Field(
        default=["720x1280", "1280x720", "1024x1792", "1792x1024"], alias="VIDEO_API_SIZES")
    video_api_durations: Annotated[list[int], NoDecode] = Field(default=[4, 8, 12], alias="VIDEO_API_DURATIONS")
    video_api_concurrency: int = Field(default=2, alias="VIDEO_API_CONCURRENCY", ge=1, le=64)
    video_api_submits_per_minute: float | None = Field(default=None, alias="VIDEO_API_SUBMITS_PER_MINUTE", gt=0)
    # Alibaba Bailian / DashScope Wan (`wan`); a "kf2v" model takes first and last frames.
    dashscope_api_key: SecretStr = Field(default=SecretStr(""), alias="DASHSCOPE_API_KEY")
    dashscope_base_url: str = Field(default="https://dashscope.aliyuncs.com/api/v1", alias="DASHSCOPE_BASE_URL")
    wan_model: str = Field(default="wan2.5-i2v-preview", alias="WAN_MODEL")
    wan_resolution: str = Field(default="720P", alias="WAN_RESOLUTION")
    wan_durations: Annotated[list[int], NoDecode] = Field(default=[5, 10], alias="WAN_DURATIONS")
    wan_concurrency: int = Field(default=2, alias="WAN_CONCURRENCY", ge=1, le=64)
    wan_submits_per_minute: float | None = Field(default=None, alias="WAN_SUBMITS_PER_MINUTE", gt=0)
    # Volcengine Ark Seedance (`seedance`).
    ark_api_key: SecretStr = Field(default=SecretStr(""), alias="ARK_API_KEY")
    ark_base_url: str = Field(default="https://ark.cn-beijing.volces.com/api/v3", alias="ARK_BASE_URL")
    seedance_model: str = Field(default="doubao-seedance-1-0-pro-250528", alias="SEEDANCE_MODEL")
    seedance_resolution: str = Field(default="720p", alias="SEEDANCE_RESOLUTION")
    seedance_durations: Annotated[list[int], NoDecode] = Field(default=[5, 10], alias="SEEDANCE_DURATIONS")
    seedance_concurrency: int = Field(default=2, alias="SEEDANCE_CONCURRENCY", ge=1, le=64)
    seedance_submits_per_minute: float | None = Field(default=None, alias="SEEDANCE_SUBMITS_PER_MINUTE", gt=0)
    # Kling (`kling`): access key + secret key, signed into a JWT per request.
    kling_access_key: str = Field(default="", alias="KLING_ACCESS_KEY")
    kling_secret_key: SecretStr = Field(default=SecretStr(""), alias="KLING_SECRET_KEY")
    kling_base_url: str = Field(default="https://api-beijing.klingai.com", alias="KLING_BASE_URL")
    kling_model: str = Field(default="kling-v2-1", alias="KLING_MODEL")
    kling_mode: str = Field(default="std", alias="KLING_MODE", pattern="^(std|pro)$")
    kling_durations: Annotated[list[int], NoDecode] = Field(default=[5, 10], alias="KLING_DURATIONS")
    kling_concurrency: int = Field(default=2, alias="KLING_CONCURRENCY", ge=1, le=64)
    kling_submits_per_minute: float | None = Field(default=None, alias="KLING_SUBMITS_PER_MINUTE", gt=0)
    # Every provider: how often a task is read, and how long one read-through waits before the
    # step steps back (it is resumed, never resubmitted).
    video_poll_seconds: float = Field(default=5.0, alias="VIDEO_POLL_SECONDS", gt=0)
    video_task_timeout_seconds: float = Field(default=1800.0, alias="VIDEO_TASK_TIMEOUT_SECONDS", gt=0)
    # Price per generated second by model name, as JSON: '{"sora-2": 0.7, "wan2.5-i2v-preview": 0.5}'.
    # Costs go to the segment, the project, meta.json, `status` and the optional 费用 column.
    video_prices: dict[str, float] = Field(default_factory=dict, alias="SHEETREEL_VIDEO_PRICES")

    # Stock footage library: folders of clips, tagged by folder name or sidecar JSON.
    stock_library_dir: Path | None = Field(default=None, alias="STOCK_LIBRARY_DIR")

    # Where finished files get their URLs: "local" (the data dir's public/) or "oss".
    object_store: str = Field(default="local", alias="OBJECT_STORE", pattern="^(local|oss)$")
    oss_endpoint: str = Field(default="", alias="OSS_ENDPOINT")
    oss_bucket: str = Field(default="", alias="OSS_BUCKET")
    oss_access_key_id: str = Field(default="", alias="OSS_ACCESS_KEY_ID")
    oss_access_key_secret: SecretStr = Field(default=SecretStr(""), alias="OSS_ACCESS_KEY_SECRET")
    oss_prefix: str = Field(default="", alias="OSS_PREFIX")
    oss_url_expiry_seconds: int = Field(default=7 * 24 * 3600, alias="OSS_URL_EXPIRY_SECONDS", gt=0)
    oss_public_base_url: str = Field(default="", alias="OSS_PUBLIC_BASE_URL")

    # Subtitles for speech we did not synthesize (FunASR, local model dirs).
    asr_model_dir: Path | None = Field(default=None, alias="ASR_MODEL_DIR")
    asr_vad_model_dir: Path | None = Field(default=None, alias="ASR_VAD_MODEL_DIR")
    asr_punc_model_dir: Path | None = Field(default=None, alias="ASR_PUNC_MODEL_DIR")
    asr_device: str = Field(default="cuda", alias="ASR_DEVICE")

    image_max_bytes: int = Field(default=20 * 1024 * 1024, alias="SHEETREEL_IMAGE_MAX_BYTES", gt=0)
    # The whole download of an opening image, however slowly the server sends it.
    image_deadline_seconds: float = Field(default=60, alias="SHEETREEL_IMAGE_DEADLINE_SECONDS", gt=0)
    # Row image URLs pointing at loopback/private hosts are refused unless allowed (the emulator is).
    allow_private_urls: bool = Field(default=False, alias="SHEETREEL_ALLOW_PRIVATE_URLS")

    # Column names, as JSON: SHEETREEL_COLUMNS='{"status": "Status", "segment_pattern": "Seg {n}"}'.
    # Prefixed like every setting: a bare COLUMNS is the terminal width (`watch` exports it).
    columns: Columns = Field(default_factory=Columns, alias="SHEETREEL_COLUMNS")

    @field_validator("video_api_sizes", "video_api_durations", "wan_durations", "seedance_durations",
                     "kling_durations", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        # Written as "5,10" (or JSON "[5, 10]") in the environment.
        if isinstance(v, str):
            text = v.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return v

    @field_validator("video_api_durations", "wan_durations", "seedance_durations", "kling_durations")
    @classmethod
    def _some_durations(cls, v: list[int]) -> list[int]:
        if not v or any(d <= 0 or d > 60 for d in v):
            raise ValueError("durations are whole seconds between 1 and 60, e.g. 5,10")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:  # not found is a KeyError, not a ValueError
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Asia/Shanghai") from e
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'sheetreel.db'}"

    @property
    def public_dir(self) -> Path:
        return self.store_dir or self.data_dir / "public"

    @property
    def public_url(self) -> str:
        return self.public_base_url or self.public_dir.resolve().as_uri()

    def step_retry(self) -> RetryPolicy:
        """A failed step: tried again after 5 s, 10 s, ... while attempts are left."""
        return RetryPolicy(attempts=self.max_attempts, base=self.retry_base_seconds, cap=3600.0)

    def outage_retry(self) -> RetryPolicy:
        """A step that met a service outage or rate limit: waited on without using up attempts."""
        return RetryPolicy(attempts=self.max_outage_waits, base=self.retry_base_seconds, cap=600.0, jitter=0.5)

    def sheet_retry(self) -> RetryPolicy:
        """Sheet writes and chat messages: never given up on a temporary error, backed off to the cap."""
        return RetryPolicy(attempts=5, base=self.outbox_backoff_base_seconds, cap=self.outbox_backoff_cap_seconds, jitter=0.5)

    def missing_feishu(self) -> list[str]:
        pairs = {
            "FEISHU_APP_ID": self.feishu_app_id,
            "FEISHU_APP_SECRET": self.feishu_app_secret.get_secret_value(),
        }
        if self.connections_file is None:  # else each table of the file names its own
            pairs |= {"FEISHU_APP_TOKEN": self.feishu_app_token, "FEISHU_TABLE_ID": self.feishu_table_id}
        return [k for k, v in pairs.items() if not v]
