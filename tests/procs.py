"""Subprocesses in the tests import the pylrcore under test (installed, or an in-place build), never
an unbuilt source tree: its parent directory goes first on PYTHONPATH, and `python -c` runs in a
scratch directory (its current directory comes first on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List


def pylrcore_env() -> Dict[str, str]:
    import pylrcore

    return {**os.environ, "PYTHONPATH": str(Path(pylrcore.__file__).resolve().parents[1])}


def scratch_dir() -> str:
    return tempfile.gettempdir()


# The head of a run_ranks worker on torch.distributed: its arguments, a file rendezvous (no TCP port
# to pick and release: another process could take it in between), the gloo group and a fixed seed.
DDP_HEAD = r"""
import json, os, sys
import torch
import torch.distributed as dist

rank, world, rendezvous, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
torch.manual_seed(0)
"""


def run_ranks(worker_source: str, tmp_path: Path, world: int = 2, timeout: float = 240) -> List[Any]:
    """Run ``worker_source`` as ``world`` processes (argv: rank, world, rendezvous file, output
    file; one thread each) and return the JSON each rank wrote to its output file."""
    script = tmp_path / "worker.py"
    script.write_text(worker_source)
    rendezvous = tmp_path / "rendezvous"  # a file store: no TCP port to pick and release
    env = dict(pylrcore_env(), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, str(script), str(rank), str(world), str(rendezvous),
                          str(tmp_path / f"r{rank}.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for rank in range(world)
    ]
    outputs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    return [json.loads((tmp_path / f"r{rank}.json").read_text()) for rank in range(world)]
