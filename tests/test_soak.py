"""The guard's soak suite: real, healthy training runs under ``Guard(optimizer, model)`` with the
default settings raise nothing, skip nothing and take no action, and ``diagnose()`` never calls them
exploding or unstable (issue 11, item 3); real faults injected into the same runs are still caught
at their steps.

Six tasks (tests/soak_runs.py: classification and regression MLPs, a CNN on 8x8 digits, a BatchNorm
MLP, a character-level language model on the standard library's source, a memorising run on random
labels whose loss goes to ~0) x SGD, SGD+momentum, Adam, AdamW x 3 seeds, 10,000 steps each, plus
the runs of repros 03 (20,000 steps, in full) and 15. The runs are spread over a process pool of
min(2, CPUs) workers (one torch thread each). ``PYLRCORE_SOAK_TABLE=path`` writes the soak table.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Tuple

import pytest

torch = pytest.importorskip("torch")

import soak_runs  # noqa: E402
from soak_runs import OPTIMIZERS, SEEDS, STEPS, TASKS  # noqa: E402

pytestmark = pytest.mark.slow

# (opt_kind, lr, steps, batch, label_noise, seed): repro 03 in full, repro 15's other runs at 10,000 steps.
REPROS = [
    ("sgd", 0.05, 20_000, 32, 0.0, 0),  # repro 03: TrainingDiverged at 5,131 steps before
    ("adam", 1e-3, 10_000, 32, 0.0, 0),
    ("sgd", 0.05, 10_000, 32, 0.5, 0),
    ("adam", 3e-4, 10_000, 8, 0.0, 0),
    ("sgd", 0.01, 10_000, 128, 0.0, 0),
]
# Actions other than record, and events that are never acceptable on a healthy run.
FORBIDDEN = {"explosion", "nonfinite_loss", "nonfinite_grad", "skip_limit"}
MAX_SPIKES = 5  # record-only spike events per run (the default policy only records them)


@pytest.fixture(scope="module")
def soak() -> Dict[Tuple[str, str, int], Dict[str, Any]]:
    jobs: List[Tuple[Any, ...]] = [("summary", t, o, s, STEPS) for t in TASKS for o in OPTIMIZERS for s in SEEDS]
    jobs = [("repro",) + r for r in REPROS] + jobs  # the longest first
    workers = max(1, min(2, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(getattr(soak_runs, job[0]), *job[1:]) for job in jobs]
        rows = [f.result() for f in futures]
    path = os.environ.get("PYLRCORE_SOAK_TABLE")
    if path:
        with open(path, "w") as out:
            out.write(soak_runs.table(rows) + "\n")
    return {(r["task"], r["optimizer"], r["seed"]): r for r in rows}


def check_healthy(row: Dict[str, Any]) -> None:
    name = f"{row['task']}/{row['optimizer']}/seed {row['seed']}"
    assert not row["raised"], f"{name}: {row['raised']}"
    kinds = {kind for _, kind, _ in row["events"]}
    assert not kinds & FORBIDDEN, f"{name}: {row['events']}"
    assert all(action == "record" for _, _, action in row["events"]) and row["skipped"] == 0, f"{name}: {row['events']}"
    spikes = [e for e in row["events"] if e[1].endswith("spike")]
    assert len(spikes) <= MAX_SPIKES, f"{name}: {len(spikes)} spike events: {spikes}"
    assert row["diagnosis"] not in ("exploding", "unstable", "oscillating"), f"{name}: {row['message']}"
    assert "Adam" not in row["message"], f"{name}: {row['message']}"
    assert row["end"] < 0.7 * row["start"], f"{name}: did not train ({row['start']:.3g} -> {row['end']:.3g})"


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("task", TASKS)
def test_healthy_runs_raise_nothing_skip_nothing_and_diagnose_healthy(soak, task, optimizer):
    for seed in SEEDS:
        row = soak[(task, optimizer, seed)]
        assert row["steps"] == STEPS
        check_healthy(row)


@pytest.mark.parametrize("repro", REPROS, ids=["repro03-sgd-20000", "repro15-adam", "repro15-label-noise",
                                                "repro15-adam-batch8", "repro15-sgd-batch128"])
def test_the_repro_runs_are_healthy_for_the_guard_and_diagnose(soak, repro):
    opt_kind, lr, steps, batch, noise, seed = repro
    task = f"repro-{opt_kind}-{lr:g}-bs{batch}" + (f"-noise{noise:g}" if noise else "")
    row = soak[(task, opt_kind, seed)]
    assert row["steps"] == steps
    check_healthy(row)
    assert row["diagnosis"] in ("healthy", "plateau"), row["message"]


# --- faults injected into the same runs are still caught at their steps ----------------------------


def lr_times(at: int, factor: float):
    def inject(step, task, opt):
        if step == at:
            for group in opt.param_groups:
                group["lr"] *= factor
    return inject


@pytest.mark.parametrize("task, optimizer, factor, within", [
    ("mlp-classify", "sgd-momentum", 100, 30),
    ("mlp-classify", "adam", 100, 35),
    ("mlp-classify", "adamw", 10, 70),
    ("char-lm", "sgd", 10, 35),
    ("char-lm", "adam", 100, 35),
    ("mlp-regress", "adam", 100, 35),
    ("memorise", "adam", 100, 40),
])
def test_a_real_lr_blow_up_mid_run_is_caught_within_a_few_dozen_steps(task, optimizer, factor, within):
    """The lr multiplied by `factor` at step 3000 of a healthy run: the loss leaves its level for good.
    The default policy stops the run (explosion) or skips the overflow (non-finite) soon after."""
    r = soak_runs.run(task, optimizer, 0, 4000, inject=lr_times(3000, factor))
    decisive = [e for e in r.events if e.kind in FORBIDDEN]
    assert decisive, f"not caught: {[(e.step, e.kind) for e in r.events][:10]}"
    first = decisive[0]
    assert 3000 < first.step <= 3000 + within, (first.step, first.kind)
    assert "raised" in r.extra or first.kind.startswith("nonfinite")
    assert all(e.step > 3000 for e in r.events if e.kind in FORBIDDEN)  # nothing before the fault


@pytest.mark.parametrize("task", ["mlp-classify", "memorise", "cnn-digits"])
def test_nan_inf_and_spikes_late_in_long_runs_are_found_at_their_steps(task):
    """Late in a run (loss near 0), a NaN and an Inf loss, an Inf gradient and two loss spikes (a
    batch at chance level, 2.5) are each found at exactly their step, and nothing else happens."""
    faults = {6000: math.nan, 6500: math.inf, 7500: "grad", 8000: 2.5, 9000: 2.5}  # 2.5: a batch at chance level

    def inject(step, task_, opt):
        fault = faults.get(step)
        if fault is None:
            return None
        if fault == "grad":
            next(task_.model.parameters()).grad.view(-1)[0] = math.inf
            return None
        return fault

    r = soak_runs.run(task, "adam", 1, 9500, inject=inject)
    got = [(e.step, e.kind, e.action) for e in r.events if e.kind != "grad_spike"]
    assert got == [(6000, "nonfinite_loss", "skip"), (6500, "nonfinite_loss", "skip"),
                   (7500, "nonfinite_grad", "skip"), (8000, "loss_spike", "record"),
                   (9000, "loss_spike", "record")], got
    assert "raised" not in r.extra
