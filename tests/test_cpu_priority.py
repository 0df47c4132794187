"""Composing and the soundtrack mixed ahead yield the CPU to the work that feeds the GPU, and
previews yield it to everything: seen as the nice value of every ffmpeg and ffprobe a real project
starts."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from storage.models import ProjectState
from sync.background import NICE, PICTURES_NICE, in_background

from conftest import record_starts

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the nice value is per thread on Linux only")


def test_compose_and_pictures_run_niced_and_the_shots_do_not(sheet, tmp_path, monkeypatch):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    log = record_starts(tmp_path / "bin", monkeypatch)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: "优先级", cols.image: sheet.image_cell(), cols.template: "tiny",
                              cols.shot_count: 2}])
    app = sheet.app()
    app.once()
    assert app.store.by_record(sheet.table_id, rid).state == ProjectState.completed

    starts = [line.split(" ", 2) for line in log.read_text().splitlines()]
    nice_of = {(int(nice), program, args) for nice, program, args in starts}
    # A shot being made (Ken Burns here; its first and last frames are read in this process).
    shots = [n for n, program, args in nice_of if "/segments/" in args]
    # Compose, its cover and its check; a loudness measurement is the premix's or compose's own.
    final = [n for n, program, args in nice_of if "/final/" in args and ".premix-" not in args and "loudness." not in args]
    ahead = [n for n, program, args in nice_of if ".premix-" in args]  # writing the soundtrack mixed ahead
    previews = [n for n, program, args in nice_of if "/preview/" in args]  # the plan and shots sheets
    assert shots and final and ahead and previews
    assert set(shots) == {base}
    assert set(final) == set(ahead) == {min(19, base + NICE)}
    assert set(previews) == {min(19, base + PICTURES_NICE)}  # below everything: nobody waits for them


def test_background_work_returns_its_result_and_raises_its_error():
    def nice_here() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice_here()
    assert in_background(nice_here) == min(19, before + NICE)
    assert nice_here() == before  # the caller's thread keeps its priority
    with pytest.raises(ZeroDivisionError):
        in_background(lambda: 1 / 0)
