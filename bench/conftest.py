"""Benchmarks compare pylrcore with what a user would otherwise run, in the same group and run."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))  # benchutil
sys.path.insert(0, str(here.parent / "tests"))  # curves, numpy_reference
