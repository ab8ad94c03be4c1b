"""Subprocesses in the tests import the pylrcore under test (installed, or an in-place build), never
an unbuilt source tree: its parent directory goes first on PYTHONPATH, and `python -c` runs in a
scratch directory (its current directory comes first on sys.path)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict


def pylrcore_env() -> Dict[str, str]:
    import pylrcore

    return {**os.environ, "PYTHONPATH": str(Path(pylrcore.__file__).resolve().parents[1])}


def scratch_dir() -> str:
    return tempfile.gettempdir()
