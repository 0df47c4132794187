"""Every module of the package imports on this Python, without the optional GPU stack.

CI runs this file (with the CLI and demo tests) on the highest supported Python as well, where a
dependency that dropped a version (pydub's audioop on 3.13) fails at import, not in a user's hands.
"""

from __future__ import annotations

import pkgutil
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["connectors", "pipeline", "storage", "sync", "templates", "scripts"]
# Alembic loads the revisions by path (their names start with digits) and env.py runs migrations
# when imported; __main__ modules run when imported. Those are only compiled.



def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if not (info.name.startswith("storage.migrations") or info.name.endswith(".__main__")):
                names.append(info.name)
    return sorted(names)


def test_every_module_imports():
    # In a fresh interpreter: this process may already hold modules other tests imported.
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    names = modules()
    assert len(names) > 100  # the walk found the package, not an empty folder
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_every_file_compiles(tmp_path):
    files = [f for package in PACKAGES for f in (ROOT / package).rglob("*.py")]
    for f in files:
        py_compile.compile(str(f), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.parametrize("name", ["sync.cli", "sync.demo"])
def test_the_entry_points_do_not_need_the_gpu_stack(name):
    code = f"import importlib, sys\nimportlib.import_module({name!r})\nprint(sorted({{'torch', 'diffusers', 'funasr'}} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
