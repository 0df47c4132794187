"""`sheetreel demo`: the whole loop offline. Emulated Bitable on loopback, real SDK, real MP4s."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connectors import ffmpeg
from connectors.feishu.emulator import Emulator
from connectors.feishu.protocol import FieldType
from storage import atomic
from storage.paths import safe_component
from sync import lifecycle
from sync.app import App, make_table, template_library
from sync.backends import offered_templates
from sync.cli_support import CliError
from sync.columns import Columns
from sync.progress import PlainLines, ProgressView
from sync.schema import check_columns, create_missing
from sync.settings import Settings

DEFAULT_TEMPLATE = "pet-eating"
# ffmpeg generators that move like footage: a zooming fractal, drifting sky and meadow
# gradients, cellular life.
STOCK_SOURCES = ("mandelbrot=s=640x360", "gradients=s=640x360:speed=0.02:c0=0x87CEEB:c1=0xFFB347:n=2",
                 "gradients=s=640x360:speed=0.03:c0=0x2E8B57:c1=0xF0E68C:n=2",
                 "life=s=640x360:mold=10:ratio=0.1:life_color=0x9ACD32:death_color=0x1E3A2A")
DEMO_APP_ID = "cli_sheetreel_demo"
DEMO_SECRET = "sheetreel-demo-secret"
DEMO_CHAT_ID = "oc_sheetreel_demo"
ASSETS = Path(__file__).resolve().parent / "demo_assets"
SAMPLES = [
    ("橘猫吃鱼", "一只橘猫在木地板上吃一碗鲜鱼，阳光从窗户照进来", "sample_1.jpg"),
    ("柯基吃西瓜", "柯基犬在草地上啃一块冰西瓜，夏日午后", "sample_2.jpg"),
    ("仓鼠嗑瓜子", "小仓鼠捧着瓜子在木屑里认真地嗑，镜头很近", "sample_3.jpg"),
]


@dataclass
class DemoTable:
    app_token: str
    table_id: str


def demo_settings(data_dir: Path, base_url: str, table: DemoTable, **overrides) -> Settings:
    return Settings(
        FEISHU_APP_ID=DEMO_APP_ID,
        FEISHU_APP_SECRET=DEMO_SECRET,
        FEISHU_APP_TOKEN=table.app_token,
        FEISHU_TABLE_ID=table.table_id,
        FEISHU_BASE_URL=base_url,
        SHEETREEL_DATA_DIR=data_dir,
        SHEETREEL_ALLOW_PRIVATE_URLS=True,
        FEISHU_CHAT_ID=DEMO_CHAT_ID,
        POLL_INTERVAL_SECONDS=1.0,
        FLUSH_INTERVAL_SECONDS=0.5,
        **overrides,
    )


def open_emulator(data_dir: Path) -> Emulator:
    """The demo's table lives in its data dir, so scripts can inspect it after the demo ends."""
    try:
        return Emulator(app_id=DEMO_APP_ID, app_secret=DEMO_SECRET, state_path=data_dir / "emulator" / "state.json")
    except (ValueError, TypeError, KeyError, OSError) as e:  # a truncated or hand-edited state.json
        raise _damaged(data_dir, e) from None


def read_demo_table(data_dir: Path) -> DemoTable | None:
    """Which emulated table the demo in `data_dir` made; None if it made none."""
    ids = data_dir / "emulator" / "demo_table.json"
    if not ids.is_file():
        return None
    try:
        return DemoTable(**json.loads(ids.read_text(encoding="utf-8")))
    except (ValueError, TypeError, OSError) as e:
        raise _damaged(data_dir, e) from None


def _damaged(data_dir: Path, e: Exception) -> CliError:
    return CliError(f"the demo's emulated sheet in {data_dir / 'emulator'} is damaged: {str(e).splitlines()[0]}",
                    f"move {data_dir / 'emulator'} away and run `sheetreel demo --data-dir {data_dir}` again "
                    "(the database and videos stay; the emulated sheet starts anew)")


def ensure_demo_table(emu: Emulator, data_dir: Path) -> DemoTable:
    ids = data_dir / "emulator" / "demo_table.json"
    if (known := read_demo_table(data_dir)) is not None:
        return known
    app_token = emu.create_app(name="SheetReel demo")
    table_id = emu.create_table(app_token, name="短视频生产", fields=[(Columns().title, FieldType.text)])
    atomic.write_text(ids, json.dumps({"app_token": app_token, "table_id": table_id}))
    return DemoTable(app_token, table_id)


def seed_rows(settings: Settings, count: int, shots: int | None, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Add sample rows through the SDK, as an operator would fill the sheet."""
    table = make_table(settings)
    cols = settings.columns
    rows = []
    for i in range(count):
        title, scene, image = SAMPLES[i % len(SAMPLES)]
        token = table.upload_attachment(ASSETS / image, image=True)
        row = {
            cols.title: f"{title} #{i + 1}" if count > len(SAMPLES) else title,
            cols.image: [{"file_token": token}],
            cols.scene: scene,
            cols.template: template,
            cols.mode: "自动",
        }
        if shots:
            row[cols.shot_count] = shots
        rows.append(row)
    return table.batch_create(rows)


def run_demo(
    data_dir: Path,
    rows: int = 3,
    shots: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    on_progress: Callable[[str], None] = print,
    timeout: float = 1800,
    view: ProgressView | None = None,
) -> list[dict]:
    """`view`: how the rows' progress is shown (default: plain lines through `on_progress`)."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with open_emulator(data_dir) as emu:
        base_url = emu.start()
        table_ref = ensure_demo_table(emu, data_dir)
        settings = demo_settings(data_dir, base_url, table_ref)
        chosen = template_library(settings).get(template)
        if chosen.ai_ratio < 1 and settings.stock_library_dir is None:
            library = demo_stock_library(data_dir / "stock", chosen.stock_tags)
            on_progress(f"stock footage: synthetic clips in {library} (set STOCK_LIBRARY_DIR for real ones)")
            settings = demo_settings(data_dir, base_url, table_ref, STOCK_LIBRARY_DIR=library)
        app = App(settings, make_table(settings))
        offered, _ = offered_templates(settings, app.templates)
        create_missing(app.table, check_columns(app.table, settings.columns.schema(offered)))
        seed_rows(settings, rows, shots, template)
        stop = threading.Event()
        worker = threading.Thread(target=app.run, args=(stop,), name="sheetreel-demo", daemon=True)
        worker.start()
        view = view or PlainLines(on_progress)
        try:
            _watch(app, view, timeout)
        finally:
            view.close()
            stop.set()
            worker.join()
        emu.stop()
        calls = dict(emu.calls)
        messages = [m for m in emu.messages if m.get("receive_id") == DEMO_CHAT_ID]
    on_progress(f"chat messages sent: {len(messages)}")
    on_progress("feishu api calls: " + ", ".join(f"{k}={v}" for k, v in sorted(calls.items())))
    from sync.report import project_rows

    return project_rows(app.store)


def demo_stock_library(root: Path, tags: list[str]) -> Path:
    """A few moving clips made by ffmpeg's own generators, filed under the template's first tags,
    so a template that mixes in stock footage runs without a real library. Made once."""
    for i, (tag, source) in enumerate(zip((tags or ["stock"]) * len(STOCK_SOURCES), STOCK_SOURCES)):
        clip = root / safe_component(tag, "素材标签") / f"{i + 1}-{source.split('=')[0]}.mp4"
        if not clip.is_file():
            clip.parent.mkdir(parents=True, exist_ok=True)
            ffmpeg.run_to(clip, lambda tmp, s=source: [
                ffmpeg.FFMPEG, "-f", "lavfi", "-i", f"{s}:r=24", "-t", "6", *ffmpeg.encode_args(24), str(tmp),
            ], what="demo stock clip")
    return root


def _watch(app: App, view: ProgressView, timeout: float) -> None:
    """Show each project's progress as it changes, until every project rests and all is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        projects = app.store.projects()
        view.show(projects)
        settled = projects and all(lifecycle.is_final(p.state) for p in projects)
        if settled and app.pool.busy() == 0 and app.stores.outbox.size() == 0 and not app.stores.notes.due():
            return
        time.sleep(0.3)
    raise TimeoutError(f"demo did not finish within {timeout:.0f}s")
