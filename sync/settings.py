"""The one validated settings object. Built once at the edge (CLI), then passed in."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.retry import RetryPolicy
from sync.columns import Columns


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    feishu_app_id: str = Field(default="", alias="FEISHU_APP_ID")
    feishu_app_secret: SecretStr = Field(default=SecretStr(""), alias="FEISHU_APP_SECRET")
    feishu_app_token: str = Field(default="", alias="FEISHU_APP_TOKEN")
    feishu_table_id: str = Field(default="", alias="FEISHU_TABLE_ID")
    feishu_base_url: str = Field(default="https://open.feishu.cn", alias="FEISHU_BASE_URL")
    feishu_timeout: float = Field(default=30.0, alias="FEISHU_TIMEOUT_SECONDS", gt=0)
    # The whole of one Feishu call, however slowly the answer trickles in.
    feishu_deadline: float = Field(default=300.0, alias="FEISHU_DEADLINE_SECONDS", gt=0)

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
    templates_dir: Path | None = Field(default=None, alias="SHEETREEL_TEMPLATES_DIR")
    default_template: str = Field(default="pet-eating", alias="SHEETREEL_DEFAULT_TEMPLATE")
    timezone: str = Field(default="Asia/Shanghai", alias="SHEETREEL_TIMEZONE")

    storyboard_backend: str = Field(default="template", alias="STORYBOARD_BACKEND")
    segment_backend: str = Field(default="kenburns", alias="SEGMENT_BACKEND")

    poll_interval_seconds: float = Field(default=30.0, alias="POLL_INTERVAL_SECONDS", gt=0)
    full_scan_minutes: float = Field(default=60.0, alias="POLL_FULL_SCAN_MINUTES", gt=0)
    flush_interval_seconds: float = Field(default=2.0, alias="FLUSH_INTERVAL_SECONDS", gt=0)
    workers: int = Field(default=2, alias="SHEETREEL_WORKERS", ge=1, le=64)
    gpu_slots: int = Field(default=1, alias="SHEETREEL_GPU_SLOTS", ge=1, le=16)
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

    # A remote image-to-video API (submit, poll, download).
    video_api_base_url: str = Field(default="", alias="VIDEO_API_BASE_URL")
    video_api_key: SecretStr = Field(default=SecretStr(""), alias="VIDEO_API_KEY")
    video_api_model: str = Field(default="", alias="VIDEO_API_MODEL")

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
        return self.data_dir / "public"

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
            "FEISHU_APP_TOKEN": self.feishu_app_token,
            "FEISHU_TABLE_ID": self.feishu_table_id,
        }
        return [k for k, v in pairs.items() if not v]
