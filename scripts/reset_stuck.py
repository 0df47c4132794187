"""`python scripts/reset_stuck.py ...` is `sheetreel reset-stuck ...`; see `--help`."""

import sys
from pathlib import Path

# Run as a script, Python puts scripts/ first on the path; the repo root is what we want.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sync.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["reset-stuck", *sys.argv[1:]]))
