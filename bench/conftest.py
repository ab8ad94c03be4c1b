"""Benchmarks compare pylrcore with what a user would otherwise run, in the same group and run."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))  # benchutil
sys.path.insert(0, str(here.parent / "tests"))  # curves, numpy_reference


import pytest  # noqa: E402


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the duration of a benchmark (the reference measurements' setting)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
