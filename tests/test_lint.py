"""The linter's rules (pyproject's [tool.ruff]) hold for the whole tree: import order, unused names,
zip() with strict=, no closures over late-bound loop variables."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    assert Path(ruff).exists(), "ruff comes with the test extra: pip install -e '.[test]'"
    done = subprocess.run([ruff, "check", "--no-cache", "stylecap", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
