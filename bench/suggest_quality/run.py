"""Suggestion-quality benchmark: which range-test rule picks the lr that trains best?

    python bench/suggest_quality/run.py               # the whole suite (cached results are reused)
    python bench/suggest_quality/run.py --tasks digits_mlp_sgd --workers 2
    python bench/suggest_quality/run.py --report-only  # tables and figures from the cache

For every task: train at a grid of constant lrs (4 per decade, 1e-5..10, 2 seeds) for the task's
budget -- the ground truth --; run 3 range tests (1e-7..10, 100 steps, different seeds); take every
contender's pick from each; train at each pick with the grid's seeds. Regret = validation loss at
the pick / the best grid lr's. Results are cached in results/<task>.json (keyed by the task's spec,
the protocol and the torch version); figures go to results/figures/, the table to results/summary.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from contenders import CONTENDERS, picks  # noqa: E402
from harness import CACHE, Store, load_curve, range_lrs, run_jobs  # noqa: E402
from report import evaluate, figure, summary_markdown  # noqa: E402
from tasks import ALL, BY_NAME, DEV, FRESH, HELD_OUT, NEW, PROTOCOL, Task  # noqa: E402

from pylrcore import DEFAULT_METHOD  # noqa: E402


def ground_truth_jobs(store: Store) -> List[Tuple[str, str, float, int]]:
    jobs = []
    name = store.task.name
    for seed in PROTOCOL["range_seeds"]:
        if store.curve(seed) is None:
            jobs.append(("range", name, 0.0, seed))
    for lr in PROTOCOL["grid"]:
        for seed in PROTOCOL["train_seeds"]:
            if store.training(lr, seed) is None:
                jobs.append(("train", name, lr, seed))
    return jobs


#: The default's pick confirmed by a parallel sweep as LRFinder.confirm runs it (pylrcore.sweep: 6
#: copies at pick x 1/10 .. 4.6, 300 steps each, ranked by validation loss, 5% toward the smaller lr):
#: 18x the range test's cost on top of it.
CONFIRMED = f"pylrcore {DEFAULT_METHOD} + confirm"


DEFAULT = f"pylrcore {DEFAULT_METHOD}"


def default_pick(store: Store, seed: int) -> Optional[float]:
    """The default rule's pick on one range test: what the confirmation sweep is centred on."""
    return picks(range_lrs(), load_curve(store.curve(seed)), [DEFAULT])[DEFAULT]


def all_picks(store: Store, names: List[str]) -> Dict[int, Dict[str, Optional[float]]]:
    lrs = range_lrs()
    out = {}
    for seed in PROTOCOL["range_seeds"]:
        out[seed] = picks(lrs, load_curve(store.curve(seed)), [n for n in names if n != CONFIRMED])
        if CONFIRMED in names:
            base = out[seed][DEFAULT] if DEFAULT in out[seed] else default_pick(store, seed)
            confirmed = None if base is None else store.confirmed(seed, base)
            out[seed][CONFIRMED] = None if confirmed is None or math.isnan(confirmed) else float(f"{confirmed:.4g}")
    return out


def confirm_jobs(store: Store) -> List[Tuple[str, str, float, int]]:
    jobs = []
    for seed in PROTOCOL["range_seeds"]:
        base = default_pick(store, seed)
        if base is not None and store.confirmed(seed, base) is None:
            jobs.append(("confirm", store.task.name, base, seed))
    return jobs


def pick_jobs(store: Store, chosen: Dict[int, Dict[str, float]]) -> List[Tuple[str, str, float, int]]:
    jobs = set()
    for by_name in chosen.values():
        for lr in by_name.values():
            if lr is None:
                continue
            for seed in PROTOCOL["train_seeds"]:
                if store.training(lr, seed) is None:
                    jobs.add(("train", store.task.name, lr, seed))
    return sorted(jobs)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="*", help="task names (default: all)")
    ap.add_argument("--contenders", nargs="*", help="contender names (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="no training: report what is cached")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)
    tasks: List[Task] = [BY_NAME[n] for n in args.tasks] if args.tasks else ALL
    names = args.contenders or [*CONTENDERS, CONFIRMED]
    stores = {t.name: Store(t) for t in tasks}
    t0 = time.time()
    if not args.report_only:
        print("ground truth and range tests")
        run_jobs(stores, [j for s in stores.values() for j in ground_truth_jobs(s)], args.workers)
        if CONFIRMED in names:
            print("confirmation sweeps")
            run_jobs(stores, [j for s in stores.values() for j in confirm_jobs(s)], args.workers)
        print("trainings at the picks")
        chosen = {n: all_picks(s, names) for n, s in stores.items()}
        run_jobs(stores, [j for n, s in stores.items() for j in pick_jobs(s, chosen[n])], args.workers)
    results = {n: evaluate(s, all_picks(s, names)) for n, s in stores.items()}
    if not args.no_figures:
        for n, s in stores.items():
            figure(s, results[n], CACHE / "figures" / f"{n}.png")
    text = summary_markdown(results, names, [t.name for t in DEV], [t.name for t in HELD_OUT], [t.name for t in FRESH],
                            [t.name for t in NEW])
    designs = CACHE / "confirm_designs.md"
    if designs.exists():  # confirm_designs.py's table (interpolated regret, all designs and their costs)
        text += "\n### Confirmation designs (confirm_designs.py)\n\n" + designs.read_text()
    (CACHE / "summary.md").write_text(text)
    print(text)
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
