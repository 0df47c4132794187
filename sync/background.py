"""Work that can wait runs at a lower CPU priority than the work that keeps a GPU busy.

A host that renders shots also composes finished videos and draws previews. A compose can take
every core for many seconds (x264, subtitles); meanwhile the next shot of another project waits
for its seed frame to be extracted and checked, and the GPU, the expensive part, sits idle.
Linux keeps the nice value per thread and a child process inherits its thread's, so such work
runs in a thread of its own, niced, and every ffmpeg it starts is niced with it. The thread is
new each time because a process may lower its priority but not raise it back.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

NICE = 10


def in_background(work: Callable[[], T]) -> T:
    """`work()`'s result (or its exception), computed at a lower CPU priority. Waits for it."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _lower_this_thread()
            outcome.append(work())
        except BaseException as e:  # handed to the caller, which decides
            failure.append(e)

    worker = threading.Thread(target=body, name=f"{threading.current_thread().name}-background", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _lower_this_thread() -> None:
    if sys.platform != "linux":  # elsewhere the nice value is the whole process's: leave it
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE))
    except OSError:
        pass  # a sandbox that forbids it: the work still runs, only not behind the GPU's
