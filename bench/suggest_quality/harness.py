"""Training at a constant lr, the raw range test, and the JSON cache of both.

Plain torch loops, deliberately independent of pylrcore's finder: the ground truth must not share
code with what it judges. One thread per process; jobs run in a small process pool.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from tasks import BY_NAME, PROTOCOL, Task, batches, build, criterion, load

CACHE = Path(__file__).resolve().parent / "results"


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def _val_loss(task: Task, model: torch.nn.Module) -> float:
    d = load(task.data)
    model.eval()
    with torch.no_grad():
        value = float(criterion(task)(model(d.x_val), d.y_val))
    model.train()
    return value if math.isfinite(value) else math.inf


def train(task_name: str, lr: float, seed: int) -> float:
    """Final validation loss after ``task.steps`` steps at constant ``lr`` (inf: diverged)."""
    torch.set_num_threads(1)
    task = BY_NAME[task_name]
    model, opt = build(task, seed)
    _set_lr(opt, lr)
    loss_fn = criterion(task)
    for x, y in batches(task, seed + 1000, task.steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            return math.inf
        loss.backward()
        opt.step()
    return _val_loss(task, model)


def range_lrs() -> np.ndarray:
    """The range test's lr at each step: torch-lr-finder's exponential ladder, both ends included."""
    n = PROTOCOL["range_iters"]
    start, end = PROTOCOL["range_start"], PROTOCOL["range_end"]
    return start * (end / start) ** (np.arange(n) / (n - 1))


def range_test(task_name: str, seed: int) -> List[float]:
    """The raw training loss at each step of the range test, from a fresh model. Ends at the first
    non-finite loss (included): every later step would train a NaN model."""
    torch.set_num_threads(1)
    task = BY_NAME[task_name]
    model, opt = build(task, seed)
    loss_fn = criterion(task)
    raw: List[float] = []
    for lr, (x, y) in zip(range_lrs(), batches(task, seed + 1000, PROTOCOL["range_iters"])):
        _set_lr(opt, float(lr))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        raw.append(float(loss.detach()))
        if not math.isfinite(raw[-1]):
            break
        loss.backward()
        opt.step()
    return raw


#: The confirmation sweep around a pick: pylrcore's LRFinder.confirm defaults (the design frozen from
#: confirm_designs.py: 6 copies at the pick x 1/10 .. 4.6, 300 steps, validation loss, 5% toward the
#: smaller lr). CONFIRM_TAG keys its records in the cache; records without a tag are the earlier
#: design's (5 copies at 1/3 .. 3, 100 steps, the best score), kept for the comparison.
def _confirm_design() -> Tuple[Tuple[float, ...], int, float]:
    from pylrcore.torch.finder import CONFIRM_FACTORS, CONFIRM_STEPS, CONFIRM_TOLERANCE

    return tuple(CONFIRM_FACTORS), CONFIRM_STEPS, CONFIRM_TOLERANCE


CONFIRM_FACTORS, CONFIRM_STEPS, CONFIRM_TOLERANCE = _confirm_design()
CONFIRM_TAG = f"{len(CONFIRM_FACTORS)}x{CONFIRM_STEPS}:{CONFIRM_FACTORS[0]:.3g}-{CONFIRM_FACTORS[-1]:.3g}:tol{CONFIRM_TOLERANCE:g}"


def confirm(task_name: str, base_lr: float, seed: int) -> Dict[str, Any]:
    """``pylrcore.sweep`` around ``base_lr`` as ``LRFinder.confirm`` runs it: each copy's lr and
    validation loss after CONFIRM_STEPS steps, and the confirmed lr (the sweep's ``best_lr``)."""
    import pylrcore

    torch.set_num_threads(1)
    task = BY_NAME[task_name]
    model, opt = build(task, seed)
    d = load(task.data)
    result = pylrcore.sweep(model, opt, criterion(task), batches(task, seed + 2000, CONFIRM_STEPS),
                            [base_lr * f for f in CONFIRM_FACTORS], CONFIRM_STEPS, val_loader=[(d.x_val, d.y_val)],
                            tolerance=CONFIRM_TOLERANCE)
    return {"best": math.nan if result.best_lr is None else float(result.best_lr),
            "lrs": [float(v) for v in result.lrs],
            "scores": [float(v) if math.isfinite(v) else "inf" for v in result.scores],
            "engine": result.engine}


# -- the cache --------------------------------------------------------------------------------------

def lr_key(lr: float) -> str:
    return f"{lr:.4g}"


class Store:
    """One JSON file per task: its spec, the trainings by lr and seed, the range-test curves.
    A task whose spec changed (model, data, budget, protocol, torch version) starts over."""

    def __init__(self, task: Task, directory: Path = CACHE) -> None:
        self.task = task
        self.path = directory / f"{task.name}.json"
        self.data: Dict[str, Any] = {"key": task.key(), "spec": task.spec(), "trainings": {}, "range_tests": {}}
        if self.path.exists():
            old = json.loads(self.path.read_text())
            if old.get("key") == self.data["key"]:
                self.data = old

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def training(self, lr: float, seed: int) -> Optional[float]:
        v = self.data["trainings"].get(lr_key(lr), {}).get(str(seed))
        return None if v is None else (math.inf if v == "inf" else float(v))

    def put_training(self, lr: float, seed: int, value: float) -> None:
        self.data["trainings"].setdefault(lr_key(lr), {})[str(seed)] = "inf" if math.isinf(value) else value

    def curve(self, seed: int) -> Optional[List[float]]:
        return self.data["range_tests"].get(str(seed))

    def put_curve(self, seed: int, raw: List[float]) -> None:
        self.data["range_tests"][str(seed)] = [v if math.isfinite(v) else repr(v) for v in raw]

    @staticmethod
    def _confirm_key(seed: int, base_lr: float, tag: Optional[str]) -> str:
        tag = CONFIRM_TAG if tag is None else tag
        return f"{seed}:{lr_key(base_lr)}" + (f":{tag}" if tag else "")

    def confirmation(self, seed: int, base_lr: float, tag: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The confirmation sweep's record: best lr, the copies' lrs and validation losses.
        ``tag``: the design (default the current one; "" the first design's untagged records)."""
        v = self.data.setdefault("confirms", {}).get(self._confirm_key(seed, base_lr, tag))
        return v if isinstance(v, dict) else None  # a bare float: recorded before the scores were kept

    def confirmed(self, seed: int, base_lr: float, tag: Optional[str] = None) -> Optional[float]:
        v = self.confirmation(seed, base_lr, tag)
        return None if v is None else float(v["best"])

    def put_confirmed(self, seed: int, base_lr: float, record: Dict[str, Any]) -> None:
        self.data.setdefault("confirms", {})[self._confirm_key(seed, base_lr, None)] = record

    def mean_loss(self, lr: float) -> Optional[float]:
        vals = [self.training(lr, s) for s in PROTOCOL["train_seeds"]]
        if any(v is None for v in vals):
            return None
        return float(np.mean(vals))  # inf if any seed diverged


def load_curve(values: Iterable[Any]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


def _run(job: Tuple[str, str, float, int]) -> Tuple[Tuple[str, str, float, int], Any]:
    kind, name, lr, seed = job
    if kind == "train":
        return job, train(name, lr, seed)
    if kind == "confirm":
        return job, confirm(name, lr, seed)
    return job, range_test(name, seed)


def run_jobs(stores: Dict[str, Store], jobs: List[Tuple[str, str, float, int]], workers: int, log: Any = print) -> None:
    """Run missing trainings / range tests, saving each task's file as its results come in."""
    if not jobs:
        return
    log(f"  {len(jobs)} jobs on {workers} process(es)")
    done = 0
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    results = map(_run, jobs) if pool is None else pool.map(_run, jobs, chunksize=1)
    for (kind, name, lr, seed), value in results:
        store = stores[name]
        if kind == "train":
            store.put_training(lr, seed, value)
        elif kind == "confirm":
            store.put_confirmed(seed, lr, value)
        else:
            store.put_curve(seed, value)
        store.save()
        done += 1
        if done % 25 == 0 or done == len(jobs):
            log(f"  {done}/{len(jobs)}")
    if pool is not None:
        pool.shutdown()
    for store in stores.values():
        store.save()
