"""Shared set-up for the benches: an emulated table with SheetReel's columns, and settings for it."""

from __future__ import annotations

from pathlib import Path

from connectors.feishu.emulator import Emulator
from sync.columns import Columns
from sync.settings import Settings

APP_ID, SECRET = "cli_bench", "bench-secret"
ASSETS = Path(__file__).resolve().parent.parent / "sync" / "demo_assets"
BENCH_TEMPLATES = Path(__file__).resolve().parent / "templates"


def schema(previews: bool = True) -> list[tuple]:
    """The table SheetReel's `init --create` makes; without the optional 预览 / 分镜预览 columns
    (and so without the previews drawn for them) unless `previews`."""
    out = []
    cols = Columns()
    for name, ftype, options in cols.schema(["bench-gpu", "bench-small"]):
        if not previews and name in (cols.preview, cols.animatic):
            continue
        out.append((name, ftype, {"options": [{"name": o} for o in options]}) if options else (name, ftype))
    return out


def bench_table(emu: Emulator, data_dir: Path, previews: bool = True, **overrides) -> tuple[str, str, Settings]:
    app_token = emu.create_app(name="bench")
    table_id = emu.create_table(app_token, name="bench", fields=schema(previews))
    settings = Settings(
        FEISHU_APP_ID=APP_ID,
        FEISHU_APP_SECRET=SECRET,
        FEISHU_APP_TOKEN=app_token,
        FEISHU_TABLE_ID=table_id,
        FEISHU_BASE_URL=emu.url,
        SHEETREEL_DATA_DIR=data_dir,
        SHEETREEL_TEMPLATES_DIR=BENCH_TEMPLATES,
        SHEETREEL_DEFAULT_TEMPLATE="bench-gpu",
        SHEETREEL_ALLOW_PRIVATE_URLS=True,
        **overrides,
    )
    return app_token, table_id, settings
