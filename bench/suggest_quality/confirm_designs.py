"""Confirmation designs (issue 16, item 4), compared on one lattice of trainings around each pick.

    python bench/suggest_quality/confirm_designs.py            # train what is missing, then report
    python bench/suggest_quality/confirm_designs.py --report-only

A confirmation sweep trains K copies of the model at factors of the range test's pick, every copy
from the same initial weights (the range test's seed) on the same batches, and keeps the best. Each
copy of ``pylrcore.sweep`` is bitwise equal to training that copy alone (tests/test_parallel_sweep),
so every design -- its window, its steps, its score, its tie rule, coarse-to-fine -- can be read off
one lattice of single trainings: per (task, range test) the pick x 10^(k/6), k = -8..8 (sixth-decade
steps, 1/21.5 .. 21.5), each trained once for 300 steps (the ground truth's budget) with its
validation loss and its mean training loss over the last tenth of the steps recorded at 25, 50,
100, 150, 200 and 300 steps. A design's confirmed lr is then scored like explore.py's candidates
(the grid's validation loss interpolated at that lr, / the best grid lr's); the design finally
adopted is re-run through the real ``pylrcore.sweep`` by run.py and trained at its picks.

Cost of a design = sum over its passes of copies x steps / the range test's 100 steps (the range
test's own cost, 1, not included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import CACHE, Store, load_curve, lr_key, range_lrs  # noqa: E402
from report import HIT, best, bracketed  # noqa: E402
from tasks import BY_NAME, DEV, FRESH, HELD_OUT, PROTOCOL, batches, build, criterion, load  # noqa: E402

CHECKPOINTS = (25, 50, 100, 150, 200, 300)
LATTICE = range(-8, 9)  # pick x 10^(k/6)
DIR = CACHE / "confirm_lattice"


def lattice_lr(base: float, k: int) -> float:
    return float(f"{base * 10 ** (k / 6):.4g}")


def train_checkpoints(task_name: str, lr: float, seed: int) -> Dict[str, Any]:
    """One confirmation copy: build(task, seed), batches(task, seed + 2000, ...), constant lr.
    Validation loss and mean training loss over the last tenth of the steps at each checkpoint."""
    torch.set_num_threads(1)
    task = BY_NAME[task_name]
    model, opt = build(task, seed)
    for g in opt.param_groups:
        g["lr"] = lr
    loss_fn = criterion(task)
    d = load(task.data)
    horizon = max(CHECKPOINTS)
    train: List[float] = []
    val: Dict[str, Any] = {}
    tail: Dict[str, Any] = {}
    dead = False
    for t, (x, y) in enumerate(batches(task, seed + 2000, horizon), start=1):
        if not dead:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                dead = True
            else:
                train.append(float(loss.detach()))
                loss.backward()
                opt.step()
        if t in CHECKPOINTS:
            if dead:
                val[str(t)] = tail[str(t)] = "inf"
                continue
            model.eval()
            with torch.no_grad():
                v = float(loss_fn(model(d.x_val), d.y_val))
            model.train()
            val[str(t)] = v if math.isfinite(v) else "inf"
            n = max(1, t // 10)
            m = float(np.mean(train[t - n:t]))
            tail[str(t)] = m if math.isfinite(m) else "inf"
    return {"val": val, "train_tail": tail}


class Lattice:
    def __init__(self, task_name: str) -> None:
        self.task = BY_NAME[task_name]
        self.path = DIR / f"{task_name}.json"
        self.data: Dict[str, Any] = {"key": self.task.key(), "runs": {}}
        if self.path.exists():
            old = json.loads(self.path.read_text())
            if old.get("key") == self.data["key"]:
                self.data = old

    def get(self, seed: int, lr: float) -> Optional[Dict[str, Any]]:
        return self.data["runs"].get(f"{seed}:{lr_key(lr)}")

    def put(self, seed: int, lr: float, rec: Dict[str, Any]) -> None:
        self.data["runs"][f"{seed}:{lr_key(lr)}"] = rec

    def save(self) -> None:
        DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, sort_keys=True))
        os.replace(tmp, self.path)

    def score(self, seed: int, lr: float, steps: int, by: str) -> float:
        rec = self.get(seed, lr)
        if rec is None:
            raise KeyError((self.task.name, seed, lr))
        v = rec["val" if by == "val" else "train_tail"][str(steps)]
        return math.inf if v == "inf" else float(v)


def _job(job: Tuple[str, int, float]) -> Tuple[Tuple[str, int, float], Dict[str, Any]]:
    name, seed, lr = job
    return job, train_checkpoints(name, lr, seed)


def base_pick(store: Store, seed: int, rule: str) -> Optional[float]:
    from contenders import picks

    return picks(range_lrs(), load_curve(store.curve(seed)), [rule])[rule]


# -- designs ----------------------------------------------------------------------------------------

def choose(lat: Lattice, seed: int, base: float, ks: List[int], steps: int, by: str, tol: float) -> Optional[int]:
    """The lattice index kept: the smallest lr whose score is within ``tol`` of the best."""
    scores = [lat.score(seed, lattice_lr(base, k), steps, by) for k in ks]
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return None
    b = min(finite)
    for k, s in zip(ks, scores):  # ks ascending: the smallest lr first
        if math.isfinite(s) and s <= b + tol * abs(b):
            return k
    return None


class Design:
    def __init__(self, name: str, passes: List[Tuple[List[int], int]], by: str = "val", tol: float = 0.0,
                 fine: Optional[Tuple[List[int], int]] = None) -> None:
        """passes: one coarse pass (lattice offsets, steps); fine: offsets around the coarse winner
        and their steps (the winner itself is re-scored at the fine steps if they differ)."""
        self.name, self.passes, self.by, self.tol, self.fine = name, passes, by, tol, fine

    def cost(self) -> float:
        ks, steps = self.passes[0]
        c = len(ks) * steps
        if self.fine is not None:
            fks, fsteps = self.fine
            extra = [d for d in fks if d != 0 or fsteps != steps]
            c += len(extra) * fsteps
        return c / PROTOCOL["range_iters"]

    def needed(self, ks_coarse_winner: Optional[int]) -> List[int]:
        if self.fine is None or ks_coarse_winner is None:
            return []
        return [ks_coarse_winner + d for d in self.fine[0]]

    def pick(self, lat: Lattice, seed: int, base: float) -> Optional[float]:
        ks, steps = self.passes[0]
        k = choose(lat, seed, base, ks, steps, self.by, self.tol if self.fine is None else 0.0)
        if k is None:
            return None
        if self.fine is not None:
            fks, fsteps = self.fine
            k = choose(lat, seed, base, sorted(k + d for d in fks), fsteps, self.by, self.tol)
            if k is None:
                return None
        return lattice_lr(base, k)


def designs() -> List[Design]:
    out: List[Design] = []
    half = [-6, -3, 0, 3, 6]  # 1/10 .. 10, half-decade
    third = [-6, -4, -2, 0, 2, 4, 6]  # 1/10 .. 10, third-decade
    narrow_third = [-2, 0, 2]  # 1/2.15 .. 2.15
    for steps in (100, 300):
        for by in ("val", "train"):
            for tol in (0.0, 0.02, 0.05):
                t = f" tie{int(tol * 100)}%" if tol else ""
                out.append(Design(f"half-dec 1/10..10 x{steps} {by}{t}", [(half, steps)], by, tol))
                out.append(Design(f"third-dec 1/10..10 x{steps} {by}{t}", [(third, steps)], by, tol))
                out.append(Design(f"third-dec 1/2..2 x{steps} {by}{t}", [(narrow_third, steps)], by, tol))
    for c_steps, f_steps in ((100, 300), (300, 300), (100, 100), (50, 300)):
        for tol in (0.0, 0.02, 0.05):
            t = f" tie{int(tol * 100)}%" if tol else ""
            out.append(Design(f"c2f half-dec x{c_steps} -> ±1/6,±1/3 dec x{f_steps} val{t}",
                              [(half, c_steps)], "val", tol, fine=([-2, -1, 0, 1, 2], f_steps)))
            out.append(Design(f"c2f half-dec x{c_steps} -> ±1/6 dec x{f_steps} val{t}",
                              [(half, c_steps)], "val", tol, fine=([-1, 0, 1], f_steps)))
    # Round 2 of the designs: windows that reach further down than up (a too-high lr can blow up on
    # another seed, a too-low one only trains slower): 1/10 .. 2.15, 1/10 .. 4.6, 1/10 .. 3.16.
    for tol in (0.0, 0.02, 0.05):
        t = f" tie{int(tol * 100)}%" if tol else ""
        out.append(Design(f"third-dec 1/10..2.15 x300 val{t}", [([-6, -4, -2, 0, 2], 300)], "val", tol))
        out.append(Design(f"third-dec 1/10..4.6 x300 val{t}", [([-6, -4, -2, 0, 2, 4], 300)], "val", tol))
        out.append(Design(f"half-dec 1/10..3.16 x300 val{t}", [([-6, -3, 0, 3], 300)], "val", tol))
        out.append(Design(f"c2f half-dec 1/10..3.16 x300 -> ±1/6 dec x300 val{t}", [([-6, -3, 0, 3], 300)], "val", tol,
                          fine=([-1, 0, 1], 300)))
        out.append(Design(f"third-dec 1/10..2.15 x100 val{t}", [([-6, -4, -2, 0, 2], 100)], "val", tol))
        out.append(Design(f"third-dec 1/10..2.15 x200 val{t}", [([-6, -4, -2, 0, 2], 200)], "val", tol))
        out.append(Design(f"third-dec 1/10..10 x200 val{t}", [([-6, -4, -2, 0, 2, 4, 6], 200)], "val", tol))
    return out


#: The design frozen (commit 95637cf) and made LRFinder.confirm's default.
FROZEN = "third-dec 1/10..4.6 x300 val tie5%"

#: The library's confirm before this study: factors 1/3, 1/sqrt(3), 1, sqrt(3), 3, 100 steps, best
#: score. Read from run.py's cached real sweeps (results/<task>.json "confirms"), not the lattice.
CURRENT = "current: 1/3..3 (5 copies) x100 val [real sweep]"


def evaluate(tasks: List[str], rule: str = "pylrcore capped") -> Dict[str, Dict[str, Dict[str, float]]]:
    """{design: {split: metrics}} with interpolated regret (explore.py's reading of the grid)."""
    from explore import interpolated_loss

    ds = designs()
    by_split = {"dev": [t.name for t in DEV], "held": [t.name for t in HELD_OUT], "fresh": [t.name for t in FRESH]}
    regrets: Dict[str, Dict[str, List[float]]] = {d.name: {s: [] for s in by_split} for d in ds}
    regrets["pick alone"] = {s: [] for s in by_split}
    regrets[CURRENT] = {s: [] for s in by_split}
    split_of = {t: s for s, ts in by_split.items() for t in ts}
    made_bracketed: Dict[str, List[float]] = {key: [] for key in regrets}  # the picks made, optimum bracketed
    for name in tasks:
        store = Store(BY_NAME[name])
        lat = Lattice(name)
        best_lr, best_loss = best(store)
        sp = split_of[name]
        n_before = {key: sum(len(v) for v in per.values()) for key, per in regrets.items()}
        for seed in PROTOCOL["range_seeds"]:
            base = base_pick(store, seed, rule)
            if base is None:
                for key in regrets:
                    regrets[key][sp].append(math.inf)
                continue
            regrets["pick alone"][sp].append(interpolated_loss(store, base) / best_loss)
            cur = store.confirmed(seed, base, tag="")
            regrets[CURRENT][sp].append(math.inf if cur is None or math.isnan(cur)
                                        else interpolated_loss(store, cur) / best_loss)
            for d in ds:
                try:
                    lr = d.pick(lat, seed, base)
                except KeyError:
                    lr = math.nan
                if lr is None:
                    regrets[d.name][sp].append(math.inf)
                elif math.isnan(lr):
                    regrets[d.name][sp].append(math.nan)
                else:
                    regrets[d.name][sp].append(interpolated_loss(store, lr) / best_loss)
        if bracketed(best_lr):
            for key, per in regrets.items():
                new = per[sp][n_before[key] - sum(len(v) for k, v in per.items() if k != sp):]
                made_bracketed[key] += [r for r in new if math.isfinite(r) or math.isnan(r)]
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for key, per in regrets.items():
        out[key] = {}
        allr: List[float] = []
        for sp, r in per.items():
            allr += r
            out[key][sp] = _metrics(r)
        out[key]["all"] = _metrics(allr)
        out[key]["bracketed"] = _metrics(made_bracketed[key])
    return out


def _metrics(r: List[float]) -> Dict[str, float]:
    a = np.array(r, dtype=float)
    if len(a) == 0 or np.isnan(a).any():
        return {"n": len(a), "median": math.nan, "worst": math.nan, "hit": math.nan}
    return {"n": len(a), "median": float(np.median(a)), "worst": float(a.max()), "hit": float(np.mean(a <= HIT))}


def missing_jobs(names: List[str], rule: str, extra: bool) -> List[Tuple[str, int, float]]:
    jobs = []
    for name in names:
        store = Store(BY_NAME[name])
        lat = Lattice(name)
        for seed in PROTOCOL["range_seeds"]:
            base = base_pick(store, seed, rule)
            if base is None:
                continue
            ks = set(range(-6, 7))
            if extra:  # the coarse-to-fine designs' fine points beyond 1/10..10
                for d in designs():
                    if d.fine is None:
                        continue
                    ks0, steps0 = d.passes[0]
                    try:
                        k = choose(lat, seed, base, ks0, steps0, d.by, 0.0)
                    except KeyError:
                        continue
                    ks.update(d.needed(k))
            for k in sorted(ks):
                lr = lattice_lr(base, k)
                if lat.get(seed, lr) is None:
                    jobs.append((name, seed, lr))
    return sorted(set(jobs), key=lambda j: (j[0], j[1], j[2]))


def run(jobs: List[Tuple[str, int, float]], workers: int) -> None:
    lats: Dict[str, Lattice] = {}
    print(f"{len(jobs)} trainings on {workers} process(es)", flush=True)
    pool = ProcessPoolExecutor(workers)
    done = 0
    try:
        for (name, seed, lr), rec in pool.map(_job, jobs, chunksize=1):
            lat = lats.setdefault(name, Lattice(name))
            lat.put(seed, lr, rec)
            lat.save()
            done += 1
            if done % 20 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)}", flush=True)
    finally:
        pool.shutdown()
        for lat in lats.values():
            lat.save()


def table(results: Dict[str, Dict[str, Dict[str, float]]], costs: Dict[str, float]) -> str:
    lines = ["| design | cost (× range test) | dev median / worst / hit | held-out median / worst / hit | "
             "fresh median / worst / hit | all 20 median / worst / hit | optimum bracketed, picks made: median / worst / hit |",
             "|---|---|---|---|---|---|---|"]

    def cell(m: Dict[str, float]) -> str:
        if math.isnan(m["median"]):
            return "—"
        return f"{m['median']:.3f} / {m['worst']:.2f} / {m['hit']:.0%}"

    order = sorted(results, key=lambda k: (results[k]["all"]["median"], results[k]["all"]["worst"]))
    for k in order:
        r = results[k]
        name = f"**{k} (the default)**" if k == FROZEN else k
        lines.append(f"| {name} | {costs.get(k, 0):g} | {cell(r['dev'])} | {cell(r['held'])} | {cell(r['fresh'])} | "
                     f"{cell(r['all'])} | {cell(r['bracketed'])} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="*")
    ap.add_argument("--rule", default="pylrcore capped", help="the contender whose pick is confirmed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", default=str(CACHE / "confirm_designs.md"))
    args = ap.parse_args(argv)
    # The designs were compared on round 2's development set only; NEW tasks are judged by run.py's
    # real sweep of the frozen design, not by this lattice.
    names = args.tasks or [t.name for t in DEV + HELD_OUT + FRESH]
    if not args.report_only:
        run(missing_jobs(names, args.rule, extra=False), args.workers)
        run(missing_jobs(names, args.rule, extra=True), args.workers)
    results = evaluate(names, args.rule)
    costs = {d.name: d.cost() for d in designs()}
    costs[CURRENT] = 5.0
    text = (f"Confirmation designs around `{args.rule}` (interpolated regret, {len(names)} tasks x 3 range tests; "
            "cost = copies x steps / 100, the range test's steps, on top of the range test)\n\n"
            + table(results, costs) + "\n")
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
