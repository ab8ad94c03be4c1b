"""The scripts in examples/ run, in their tiny configuration, so they cannot rot."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from procs import pylrcore_env

# slow: each example script runs in a subprocess with its framework; CI runs it (pytest -m "not slow" leaves it out)
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--tiny", *args], cwd=cwd, env=pylrcore_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_lightning_finder_guard(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_lightning")
    out = run("lightning_finder_guard.py", cwd=tmp_path)
    assert "range test: suggested lr" in out
    assert "1 non-finite loss (skipped)" in out


def test_plain_loop_guard(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    has_tb = True
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        has_tb = False
    out = run("plain_loop_guard.py", *(["--logdir", str(tmp_path / "runs")] if has_tb else []), cwd=tmp_path)
    assert "1 step with non-finite gradients (skipped) at step 30" in out
    if has_tb:
        assert any((tmp_path / "runs").iterdir())


def test_transformers_guard(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    out = run("transformers_guard.py", cwd=tmp_path)
    assert "range test: use about" in out and "guard: 20 steps checked" in out


def test_optuna_sweep(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    out = run("optuna_sweep.py", "--trials", "3", "--storage", str(tmp_path / "sweep.journal"), cwd=tmp_path)
    assert "3 trials:" in out and "best: validation loss" in out


def test_keras_finder(tmp_path: Path) -> None:
    # Not imported here: keras picks its backend at its first import (the example sets torch).
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    out = run("keras_finder.py", cwd=tmp_path)
    assert "range test: suggested lr" in out and "guard: 0 events" in out


@pytest.mark.slow  # starts a local Ray instance (~30 s)
def test_ray_tune_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.tune")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no network beyond loopback
    out = run("ray_tune_sweep.py", "--storage", str(tmp_path / "results"), cwd=tmp_path)
    assert "4 trials:" in out and "0 errors" in out and "best: loss" in out
