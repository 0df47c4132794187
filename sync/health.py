"""`sheetreel health`'s checks of what this host's configuration needs: the CJK font of the
subtitles, the GPU and model folder of the diffusers backend, the LLM/TTS/OSS endpoints.
Only what is configured is checked; each answer is (ok, one line an operator can act on)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx

from connectors.feishu.protocol import RecordEvents
from sync.settings import Settings

Check = tuple[bool, str]
TIMEOUT = 10.0


def host_checks(settings: Settings) -> dict[str, Check]:
    out = {"cjk font": cjk_font()}
    if settings.segment_backend == "diffusers" or settings.diffusers_model_dir:
        out["diffusers model"] = model_dir(settings.diffusers_model_dir)
        if settings.diffusers_device.startswith("cuda"):
            out["cuda"] = cuda()
    if settings.llm_api_key.get_secret_value():
        out["llm endpoint"] = openai_endpoint(settings.llm_base_url, settings.llm_api_key.get_secret_value())
    if settings.tts_base_url:
        out["tts endpoint"] = openai_endpoint(settings.tts_base_url, settings.tts_api_key.get_secret_value())
    if settings.object_store == "oss":
        out["oss endpoint"] = reachable(settings.oss_endpoint)
    return out


def cjk_font() -> Check:
    """Burnt-in subtitles of Chinese text need a font that has the glyphs, or they render as boxes."""
    if shutil.which("fc-list") is None:
        return False, "fontconfig is not installed (apt-get install fontconfig fonts-noto-cjk)"
    found = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, timeout=60).stdout
    families = sorted({line.split(",")[0].strip() for line in found.splitlines() if line.strip()})
    if not families:
        return False, "no font with Chinese glyphs: subtitles would show boxes (apt-get install fonts-noto-cjk)"
    return True, f"{len(families)} Chinese font families, e.g. {families[0]}"


def model_dir(path: Path | None) -> Check:
    if path is None:
        return False, "SEGMENT_BACKEND=diffusers needs DIFFUSERS_MODEL_DIR (a local diffusers-format folder)"
    if not (path / "model_index.json").is_file():
        return False, f"{path} has no model_index.json: not a diffusers-format model folder"
    return True, str(path)


def cuda() -> Check:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (pip install -e '.[gpu]')"
    if not torch.cuda.is_available():
        return False, "no CUDA device visible to torch (check the driver, nvidia-smi, CUDA_VISIBLE_DEVICES)"
    name = torch.cuda.get_device_name(0)
    free, total = torch.cuda.mem_get_info(0)
    return True, f"{name}, {free / 1024**3:.1f} of {total / 1024**3:.1f} GiB free"


def openai_endpoint(base_url: str, key: str) -> Check:
    """GET /models: every OpenAI-compatible server has it, and it proves the key without cost."""
    try:
        resp = httpx.get(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"},
                         timeout=TIMEOUT)
    except httpx.HTTPError as e:
        return False, f"{base_url} unreachable ({type(e).__name__})"
    if resp.status_code in (401, 403):
        return False, f"{base_url} refused the key (HTTP {resp.status_code})"
    if resp.status_code >= 500:
        return False, f"{base_url} answers HTTP {resp.status_code}"
    return True, f"{base_url} answers (HTTP {resp.status_code})"


def reachable(url: str) -> Check:
    if not url:
        return False, "OBJECT_STORE=oss needs OSS_ENDPOINT"
    full = url if "://" in url else f"https://{url}"
    try:
        resp = httpx.head(full, timeout=TIMEOUT)
    except httpx.HTTPError as e:
        return False, f"{full} unreachable ({type(e).__name__})"
    return True, f"{full} answers (HTTP {resp.status_code})"


def record_events(events: RecordEvents, bases: int) -> Check:
    """FEISHU_EVENTS is on: can this app subscribe to every base's record changes?"""
    try:
        events.subscribe()
    except Exception as e:  # noqa: BLE001 - whatever refused it is what health reports
        return False, (f"{e} (the app needs manage permission on the base; polling still works, "
                       "only the instant pick-up is off)")
    return True, f"subscribed to record changes of {bases} base(s)"
