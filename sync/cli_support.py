"""Helpers shared by the CLI modules: errors, settings, and reaching the sheet (real or demo)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic_settings import SettingsError

from sync.settings import Settings

# Exit codes beyond 0 (ok), 1 (error) and 2 (usage, argparse's): the command worked, and what it
# found needs a look. Scripts and cron tell these apart from a failure.
DIFFERENCES = 3  # verify-consistency / compare-feishu-and-db found disagreements
PENDING_WRITES = 3  # `once` finished, but some sheet writes are still waiting for the table


class CliError(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def load_settings(data_dir: Path | None) -> Settings:
    try:
        return Settings(**({"SHEETREEL_DATA_DIR": data_dir} if data_dir else {}))
    except SettingsError as e:  # a JSON setting that is not JSON; the message names it, not its value
        raise CliError(f"invalid setting: {e}", "SHEETREEL_QUEUES, SHEETREEL_COLUMNS and SHEETREEL_VIDEO_PRICES "
                                                "take a JSON object, e.g. SHEETREEL_QUEUES='{\"kenburns\": \"cpu\"}'") from None
    except UnicodeDecodeError:
        raise CliError(".env cannot be read: it is not UTF-8 text", "save .env as UTF-8") from None


def require_db(settings: Settings) -> None:
    if not settings.database_url and not (settings.data_dir / "sheetreel.db").exists():
        raise CliError(f"no database in {settings.data_dir}", "pass --data-dir (the demo uses ./demo-data)")


@contextmanager
def sheet_settings(settings: Settings) -> Iterator[Settings | None]:
    """Settings that reach the sheet: the configured table, or the demo's emulated table when the
    data dir came from `sheetreel demo`. None when neither is available."""
    if not settings.missing_feishu():
        yield settings
        return
    if not (settings.data_dir / "emulator" / "demo_table.json").is_file():
        yield None
        return
    from sync.demo import demo_settings, open_emulator, read_demo_table

    table = read_demo_table(settings.data_dir)
    with open_emulator(settings.data_dir.resolve()) as emu:
        url = emu.start()
        yield demo_settings(settings.data_dir, url, table)


def need_sheet(settings: Settings | None) -> Settings:
    if settings is None:
        raise CliError(
            "no sheet configured: FEISHU_APP_ID, FEISHU_APP_SECRET, FEISHU_APP_TOKEN, FEISHU_TABLE_ID are not set",
            "set them in .env, or point --data-dir at a `sheetreel demo` data dir",
        )
    return settings


def emit(data, as_json: bool, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str) if as_json else text)
