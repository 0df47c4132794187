"""Sync cost vs table size: API calls and wall time of SheetReel's poll and write-back, next to a
naive strategy (read the whole table every poll, one update call per record) in the same process.

    python bench/sync.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where this file would shadow the sync package.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from lark_oapi.api.bitable.v1 import AppTableRecord, UpdateAppTableRecordRequest  # noqa: E402

from bench.common import APP_ID, ASSETS, SECRET, bench_table  # noqa: E402
from connectors.feishu.emulator import Emulator  # noqa: E402
from storage.models import ProjectState  # noqa: E402
from sync import sheet_view  # noqa: E402
from sync.app import App, make_table  # noqa: E402


def measure(emu: Emulator, fn) -> tuple[int, float, dict]:
    emu.reset_calls()
    start = time.perf_counter()
    fn()
    return sum(emu.calls.values()), time.perf_counter() - start, dict(emu.calls)


def naive_poll(table) -> None:
    for _ in table.search():
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Emulator(app_id=APP_ID, app_secret=SECRET) as emu:
        emu.start()
        app_token, table_id, settings = bench_table(emu, Path(tmp) / "data")
        cols = settings.columns
        image = [{"file_token": emu.upload_media(app_token, "a.jpg", (ASSETS / "sample_2.jpg").read_bytes(), "image/jpeg")}]
        row = {cols.image: image, cols.scene: "bench", cols.template: "bench-gpu", cols.mode: "分步"}
        emu.add_records(app_token, table_id, [dict(row, **{cols.title: f"r{i}"}) for i in range(args.rows)])
        app = App(settings, make_table(settings))
        table = app.table

        calls, secs, _ = measure(emu, app.poller.poll)
        print(f"first sight of {args.rows} rows: {calls} calls, {secs:.1f}s (creates {len(app.store.projects())} projects)")
        app.drain_outbox(600)
        app.poller.poll()  # reads back our own first writes once

        ours_calls, ours_secs, detail = measure(emu, app.poller.poll)
        naive_calls, naive_secs, _ = measure(emu, lambda: naive_poll(table))
        print(f"idle poll:        ours {ours_calls} call(s) {ours_secs * 1000:.0f} ms {detail} | "
              f"naive full read {naive_calls} calls {naive_secs * 1000:.0f} ms | ratio {naive_calls / ours_calls:.0f}x calls, "
              f"{naive_secs / ours_secs:.0f}x time")

        emu.add_records(app_token, table_id, [dict(row, **{cols.title: f"new{i}"}) for i in range(100)])
        ours_calls, ours_secs, detail = measure(emu, app.poller.poll)
        print(f"100 new rows:     ours {ours_calls} call(s) {ours_secs:.2f}s {detail} | naive would read all "
              f"{args.rows + 100} rows again: {naive_calls} calls")

        write_back(app, emu, table, cols)


def write_back(app: App, emu: Emulator, table, cols) -> None:
    """100 finished projects: each row gets status, progress, URLs and its final video attachment."""
    projects = app.store.projects()[:100]
    final = Path(tempfile.mkdtemp()) / "final.mp4"
    updates = []
    for i, p in enumerate(projects):
        video = final.with_name(f"final_{i}.mp4")
        video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + i.to_bytes(4, "big") * 64)
        sheet = sheet_view.render(p, [], cols, app.clock(), {cols.final_video: [str(video)]})
        sheet.fields |= {cols.status: ProjectState.completed.label, cols.progress: "100% 已完成",
                         cols.final_url: {"text": "成片", "link": f"https://example.com/{p.id}/final.mp4"}}
        app.stores.outbox.add(p, sheet)
        updates.append((p.record_id, {k: v for k, v in sheet.fields.items() if v is not None}, video))
    ours_calls, ours_secs, detail = measure(emu, app.writer.flusher.flush)
    batch_calls = detail.get("records.batch_update", 0)
    uploads = detail.get("media.upload_all", 0)

    def naive() -> None:
        for rid, fields, video in updates:
            fields = {**fields, cols.final_video: [{"file_token": table.upload_attachment(video)}]}
            req = (UpdateAppTableRecordRequest.builder().app_token(table.app_token).table_id(table.table_id)
                   .record_id(rid).request_body(AppTableRecord.builder().fields(fields).build()).build())
            table.client.bitable.v1.app_table_record.update(req)

    naive_calls, naive_secs, _ = measure(emu, naive)
    print(f"100 write-backs:  ours {batch_calls} batch call(s) + {uploads} attachment uploads "
          f"(+{ours_calls - batch_calls - uploads} other) = {ours_calls} calls, {ours_secs:.2f}s | naive: upload + "
          f"update per record {naive_calls} calls {naive_secs:.2f}s | row writes {naive_calls - uploads} vs {batch_calls}, "
          f"all calls {naive_calls / ours_calls:.2f}x")


if __name__ == "__main__":
    main()
