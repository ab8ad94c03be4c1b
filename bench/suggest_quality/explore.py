"""Candidate rules, scored cheaply on the cached range tests and grids (no training).

    python bench/suggest_quality/explore.py [--split dev|held|all|all20|new|all30] [--bracketed]

A candidate's loss at its pick is read off the grid: log(loss) interpolated linearly in log(lr)
between the two grid lrs around it (4 per decade); next to a diverged grid point the nearer point
decides. This is how the default rule was chosen, on the dev tasks only; the final tables in
summary.md come from real trainings at every pick, not from this interpolation.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pylrcore  # noqa: E402
from contenders import picks  # noqa: E402
from harness import Store, load_curve, range_lrs  # noqa: E402
from report import HIT, best, bracketed, grid_curve  # noqa: E402
from tasks import DEV, FRESH, HELD_OUT, NEW, PROTOCOL  # noqa: E402


def interpolated_loss(store: Store, lr: float) -> float:
    lrs, losses = grid_curve(store)
    x = np.log(lrs)
    t = math.log(lr)
    if t <= x[0]:
        return float(losses[0])
    if t >= x[-1]:
        return float(losses[-1])
    j = int(np.searchsorted(x, t))
    a, b = losses[j - 1], losses[j]
    w = (t - x[j - 1]) / (x[j] - x[j - 1])
    if not (math.isfinite(a) and math.isfinite(b)):
        return float(a if w < 0.5 else b)
    return float(math.exp((1 - w) * math.log(a) + w * math.log(b)))


def _s(lrs: np.ndarray, raw: np.ndarray, **kw) -> pylrcore.Suggestion:
    return pylrcore.suggest(lrs[: len(raw)], raw, "steepest", **kw)


def _zone_hi(k: float, frac: float = 0.9) -> Callable:
    def rule(lrs, raw):
        s = _s(lrs, raw, zone=(0.1, frac))
        return None if s.zone is None else s.zone[1] / k
    return rule


def _min_over(k: float) -> Callable:
    def rule(lrs, raw):
        s = _s(lrs, raw)
        return None if s.min_index is None or s.lr is None else float(lrs[s.min_index]) / k
    return rule


def _cut_over(k: float) -> Callable:
    def rule(lrs, raw):
        s = _s(lrs, raw)
        return None if s.lr is None else float(lrs[s.analysed - 1]) / k
    return rule


def _steepest_times(k: float) -> Callable:
    def rule(lrs, raw):
        s = _s(lrs, raw)
        return None if s.lr is None else s.lr * k
    return rule


def _geo_steep_min10(lrs, raw):
    s = _s(lrs, raw)
    if s.lr is None:
        return None
    return math.sqrt(s.lr * float(lrs[s.min_index]) / 10)


def _cap(s: pylrcore.Suggestion, lrs: np.ndarray, k: float = 10, c: float = 1.0) -> float:
    """min(steepest x c, minimum / k) of a suggestion with a pick; k=10, c=1 is pylrcore capped."""
    return min(s.lr * c, float(lrs[s.min_index]) / k)


def _steep_cap(k: float, c: float = 1.0) -> Callable:
    """min(steepest x c, minimum / k)."""
    def rule(lrs, raw):
        s = _s(lrs, raw)
        return None if s.lr is None else _cap(s, lrs, k, c)
    return rule


_capped = _steep_cap(10)  # pylrcore capped: min(steepest, minimum / 10)


def _geo_capped_min(k: float) -> Callable:
    """Geometric mean of capped and minimum / k."""
    def rule(lrs, raw):
        s = _s(lrs, raw)
        return None if s.lr is None else math.sqrt(_cap(s, lrs) * float(lrs[s.min_index]) / k)
    return rule


def _capped_floor(k: float) -> Callable:
    """capped, but never below minimum / k."""
    def rule(lrs, raw):
        s = _s(lrs, raw)
        return None if s.lr is None else max(_cap(s, lrs), float(lrs[s.min_index]) / k)
    return rule


def _capped_times(c: float) -> Callable:
    def rule(lrs, raw):
        v = _capped(lrs, raw)
        return None if v is None else v * c
    return rule


def _steep_cap_zone(k: float) -> Callable:
    """min(steepest, usable range's top / k)."""
    def rule(lrs, raw):
        s = _s(lrs, raw)
        return None if s.lr is None or s.zone is None else min(s.lr, s.zone[1] / k)
    return rule


def _median3(lrs, raw):
    """The median of steepest, minimum / 10 and the usable range's top / 4 (in log lr)."""
    s = _s(lrs, raw)
    if s.lr is None or s.zone is None:
        return None
    return float(np.median([s.lr, float(lrs[s.min_index]) / 10, s.zone[1] / 4]))


def _zone_geo(lrs, raw):
    s = _s(lrs, raw)
    return None if s.zone is None else math.sqrt(s.zone[0] * s.zone[1])


CANDIDATES: Dict[str, Callable[[np.ndarray, np.ndarray], Optional[float]]] = {
    **{f"zone_hi(0.9)/{k}": _zone_hi(k) for k in (2, 3, 4, 6)},
    **{f"zone_hi(0.75)/{k}": _zone_hi(k, 0.75) for k in (2, 3)},
    **{f"zone_hi(0.5)/{k}": _zone_hi(k, 0.5) for k in (1, 2)},
    **{f"min/{k}": _min_over(k) for k in (3, 5, 10)},
    **{f"cut/{k}": _cut_over(k) for k in (10, 30, 100)},
    **{f"steepest*{k}": _steepest_times(k) for k in (2, 3)},
    "geo(steepest, min/10)": _geo_steep_min10,
    "zone geometric middle": _zone_geo,
    # Round 2 (all 20 tasks as the development set, after the fresh tasks had been seen):
    **{f"geo(capped, min/{k})": _geo_capped_min(k) for k in (10, 30)},
    **{f"capped floor min/{k}": _capped_floor(k) for k in (30, 100)},
    **{f"min(steepest, min/{k})": _steep_cap(k) for k in (5, 20)},
    **{f"min(steepest*{c}, min/10)": _steep_cap(10, c) for c in (1.5, 2)},
    **{f"capped*{c}": _capped_times(c) for c in (0.7, 1.5, 2)},
    **{f"min(steepest, zone_hi/{k})": _steep_cap_zone(k) for k in (3, 4, 6)},
    "median(steepest, min/10, zone_hi/4)": _median3,
}


def score(stores: List[Store], contenders: Dict[str, Callable]) -> Dict[str, Dict[str, float]]:
    lrs = range_lrs()
    regrets: Dict[str, List[float]] = {c: [] for c in contenders}
    picked: Dict[str, List[float]] = {c: [] for c in contenders}  # regrets of the picks made
    decades: Dict[str, List[float]] = {c: [] for c in contenders}
    for store in stores:
        best_lr, best_loss = best(store)
        for seed in PROTOCOL["range_seeds"]:
            raw = load_curve(store.curve(seed))
            for c, rule in contenders.items():
                lr = rule(lrs, raw)
                if lr is None:
                    regrets[c].append(math.inf)
                    continue
                regrets[c].append(interpolated_loss(store, lr) / best_loss)
                picked[c].append(regrets[c][-1])
                decades[c].append(math.log10(lr / best_lr))
    out = {}
    for c in contenders:
        r = np.array(regrets[c])
        d = np.array(decades[c]) if decades[c] else np.array([math.nan])
        out[c] = {"median": float(np.median(r)), "worst": float(r.max()), "hit": float(np.mean(r <= HIT)),
                  "worst_pick": float(max(picked[c])) if picked[c] else math.nan, "no_pick": len(r) - len(picked[c]),
                  "decades": float(np.median(np.abs(d))), "bias": float(np.median(d))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", choices=("dev", "held", "all", "all20", "new", "all30"), default="dev")
    ap.add_argument("--bracketed", action="store_true",
                    help="only tasks whose best grid lr is inside the grid (not at its top or bottom)")
    ap.add_argument("--by-task", nargs="*", default=[], help="also print these rules' regret per task")
    args = ap.parse_args()
    tasks = {"dev": DEV, "held": HELD_OUT, "all": DEV + HELD_OUT, "all20": DEV + HELD_OUT + FRESH,
             "new": NEW, "all30": DEV + HELD_OUT + FRESH + NEW}[args.split]
    stores = [Store(t) for t in tasks]
    stores = [s for s in stores if all(s.curve(k) for k in PROTOCOL["range_seeds"])
              and all(s.mean_loss(lr) is not None for lr in PROTOCOL["grid"])]
    if args.bracketed:
        dropped = [s.task.name for s in stores if not bracketed(best(s)[0])]
        stores = [s for s in stores if bracketed(best(s)[0])]
        print(f"left out, best grid lr at the grid's edge (optimum not bracketed): {', '.join(dropped) or 'none'}")
    existing = {name: (lambda name: lambda lrs, raw: picks(lrs, raw, [name])[name])(name)
                for name in picks(range_lrs(), load_curve(stores[0].curve(PROTOCOL["range_seeds"][0])))}
    results = score(stores, {**existing, **CANDIDATES})
    everything = {**existing, **CANDIDATES}
    for rule in args.by_task:
        print(f"-- {rule}: regret per task (3 range tests), best grid lr")
        for store in stores:
            r = score([store], {rule: everything[rule]})[rule]
            b = best(store)[0]
            top = "  [best lr = grid top: optimum not bracketed]" if b == max(PROTOCOL["grid"]) else ""
            print(f"  {store.task.name:30s} median {r['median']:7.3f} worst {r['worst']:7.2f} best lr {b:.3g}{top}")
    print(f"{len(stores)} tasks ({args.split}): interpolated regret")
    print("(worst pick: the worst regret among the picks made, i.e. with the no-picks left out)")
    print(f"{'rule':36s} {'median':>7s} {'worst':>7s} {'wpick':>7s} {'nopick':>6s} {'hit':>5s} {'|dec|':>6s} {'bias':>6s}")
    for c, m in sorted(results.items(), key=lambda kv: (kv[1]["median"], kv[1]["worst_pick"])):
        print(f"{c:36s} {m['median']:7.3f} {m['worst']:7.2f} {m['worst_pick']:7.2f} {m['no_pick']:6d} {m['hit']:5.0%} "
              f"{m['decades']:6.2f} {m['bias']:+6.2f}")


if __name__ == "__main__":
    main()
