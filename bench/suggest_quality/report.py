"""Metrics, the summary table and one figure per task.

Per (task, range test, contender): the pick; its regret = mean validation loss of the trainings
at the pick / that of the best grid lr (1.0: as good as the best of the grid; a pick between
grid points can score below 1); its distance to the best lr in decades, signed; a hit when the
regret is <= 1.10 (the pick lies in the band of lrs within 10% of the best loss); failures: no
pick, or a training at the pick that diverged. A failure's regret is infinite: it is a worst case.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from harness import Store, load_curve, range_lrs
from tasks import PROTOCOL

HIT = 1.10


def grid_curve(store: Store) -> tuple:
    lrs = np.array(PROTOCOL["grid"])
    losses = np.array([store.mean_loss(lr) for lr in lrs], dtype=float)
    return lrs, losses


def best(store: Store) -> tuple:
    lrs, losses = grid_curve(store)
    i = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))
    return float(lrs[i]), float(losses[i])


def bracketed(best_lr: float) -> bool:
    """Whether a task's best grid lr lies inside the grid, not at its bottom or top (at the edge the
    optimum is not bracketed: the true best may lie beyond it)."""
    return best_lr not in (min(PROTOCOL["grid"]), max(PROTOCOL["grid"]))


def band(store: Store) -> tuple:
    """The contiguous run of grid lrs around the best whose loss is within 10% of it."""
    lrs, losses = grid_curve(store)
    b = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))
    lo = hi = b
    while lo > 0 and losses[lo - 1] <= HIT * losses[b]:
        lo -= 1
    while hi < len(lrs) - 1 and losses[hi + 1] <= HIT * losses[b]:
        hi += 1
    return float(lrs[lo]), float(lrs[hi])


def evaluate(store: Store, chosen: Dict[int, Dict[str, Optional[float]]]) -> Dict[str, Any]:
    best_lr, best_loss = best(store)
    rows: List[Dict[str, Any]] = []
    for seed, by_name in chosen.items():
        for name, lr in by_name.items():
            row: Dict[str, Any] = {"seed": seed, "contender": name, "lr": lr}
            if lr is None:
                row.update(regret=math.inf, failure="no pick", decades=None)
            else:
                loss = store.mean_loss(lr)
                if loss is None:
                    row.update(regret=None, failure="not trained", decades=None)  # run without --report-only
                else:
                    row["regret"] = loss / best_loss
                    row["failure"] = "diverged" if math.isinf(loss) else None
                    row["decades"] = math.log10(lr / best_lr)
            rows.append(row)
    return {"task": store.task.name, "best_lr": best_lr, "best_loss": best_loss, "band": band(store), "rows": rows}


def metrics(results: Dict[str, Dict[str, Any]], contender: str, tasks: List[str]) -> Dict[str, Any]:
    rows = [r for t in tasks for r in results[t]["rows"] if r["contender"] == contender and r["regret"] is not None]
    regrets = np.array([r["regret"] for r in rows])
    dec = np.array([r["decades"] for r in rows if r["decades"] is not None])
    return {
        "n": len(rows),
        "median": float(np.median(regrets)) if len(rows) else math.nan,
        "worst": float(np.max(regrets)) if len(rows) else math.nan,
        "worst_made": float(max((r["regret"] for r in rows if r["failure"] != "no pick"), default=math.nan)),
        "decades": float(np.median(np.abs(dec))) if len(dec) else math.nan,
        "bias": float(np.median(dec)) if len(dec) else math.nan,
        "hit": float(np.mean(regrets <= HIT)) if len(rows) else math.nan,
        "failures": sum(r["failure"] not in (None, "not trained") for r in rows),
    }


def _fmt(x: float, spec: str = ".2f") -> str:
    return "inf" if x == math.inf else ("-" if math.isnan(x) else format(x, spec))


def table(results: Dict[str, Dict[str, Any]], contenders: List[str], tasks: List[str]) -> str:
    lines = ["| contender | median regret | worst regret | worst, picks made | median decades off | bias (decades) | "
             "hit rate | failures |", "|---|---|---|---|---|---|---|---|"]
    stats = {c: metrics(results, c, tasks) for c in contenders}
    for c in sorted(contenders, key=lambda c: (stats[c]["median"], stats[c]["worst"])):
        m = stats[c]
        lines.append(f"| {c} | {_fmt(m['median'], '.3f')} | {_fmt(m['worst'])} | {_fmt(m['worst_made'])} | {_fmt(m['decades'])} | "
                     f"{_fmt(m['bias'], '+.2f')} | {m['hit']:.0%} | {m['failures']}/{m['n']} |")
    return "\n".join(lines)


def per_task(results: Dict[str, Dict[str, Any]], contenders: List[str], tasks: List[str]) -> str:
    head = "| task | best lr | " + " | ".join(contenders) + " |"
    lines = [head, "|---" * (len(contenders) + 2) + "|"]
    for t in tasks:
        res = results[t]
        cells = []
        for c in contenders:
            rows = [r for r in res["rows"] if r["contender"] == c]
            cells.append(" ".join("-" if r["lr"] is None else f"{r['lr']:.2g}" for r in rows)
                         + " (" + _fmt(float(np.median([r["regret"] for r in rows if r["regret"] is not None] or [math.nan]))) + ")")
        lines.append(f"| {t} | {res['best_lr']:.2g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(results: Dict[str, Dict[str, Any]], contenders: List[str], dev: List[str], held: List[str],
                     fresh: List[str], new: Optional[List[str]] = None) -> str:
    dev = [t for t in dev if t in results]
    held = [t for t in held if t in results]
    fresh = [t for t in fresh if t in results]
    new = [t for t in (new or []) if t in results]
    unbracketed = [t for t in results if not bracketed(results[t]["best_lr"])]
    parts = []
    if unbracketed:
        parts.append("Optimum not bracketed (best grid lr at the grid's edge, the true best may lie beyond it): "
                     + ", ".join(unbracketed) + ". Reported separately below and included in the split tables.")
    for title, tasks in (("New held-out tasks (built after round 2's freeze; never used to compare rules)", new),
                         ("New held-out tasks, optimum bracketed", [t for t in new if t not in unbracketed]),
                         ("Round 2's development set: all 20 earlier tasks", dev + held + fresh),
                         ("Round 2's development set, optimum bracketed", [t for t in dev + held + fresh if t not in unbracketed]),
                         ("Tasks whose optimum is not bracketed", unbracketed),
                         ("Fresh tasks (round 1: added after the first freeze; round 2's dev)", fresh),
                         ("Held-out tasks (round 1: not tuned on, but seen while choosing; round 2's dev)", held),
                         ("Dev tasks (round 1: the rules were compared on these)", dev)):
        if tasks and "bracketed" in title and all(t not in unbracketed for t in tasks) and \
                len(tasks) == len([t for t in (new if title.startswith("New") else dev + held + fresh)]):
            parts.append(f"### {title}: the same tasks as above (every optimum bracketed)")
            continue
        if tasks:
            parts.append(f"### {title}: {len(tasks)} tasks x {len(PROTOCOL['range_seeds'])} range tests\n\n"
                         + table(results, contenders, tasks))
    parts.append("### Picks per task (lr of each range test; median regret)\n\n"
                 + per_task(results, contenders, dev + held + fresh + new))
    return "\n\n".join(parts) + "\n"


def figure(store: Store, result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 7), constrained_layout=True)
    lrs = range_lrs()
    for seed in PROTOCOL["range_seeds"]:
        raw = load_curve(store.curve(seed))
        top.plot(lrs[: len(raw)], raw, lw=0.8, alpha=0.7, label=f"range test, seed {seed}")
    top.set_ylabel("training loss (raw)")
    finite = np.concatenate([load_curve(store.curve(s)) for s in PROTOCOL["range_seeds"]])
    finite = finite[np.isfinite(finite)]
    top.set_ylim(finite.min() * 0.9 if finite.min() > 0 else finite.min() - 0.1, np.percentile(finite, 95) * 1.3)
    g_lrs, g_loss = grid_curve(store)
    bottom.plot(g_lrs, np.where(np.isfinite(g_loss), g_loss, np.nan), "k.-", label="constant-lr training (grid)")
    lo, hi = result["band"]
    for ax in (top, bottom):
        ax.axvspan(lo, hi, color="green", alpha=0.12)
        ax.axvline(result["best_lr"], color="green", lw=1)
        ax.set_xscale("log")
    contenders = sorted({r["contender"] for r in result["rows"]})
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(contenders), 2)))
    for c, color in zip(contenders, colors):
        rows = [r for r in result["rows"] if r["contender"] == c and r["lr"] is not None]
        xs = [r["lr"] for r in rows]
        ys = [r["regret"] * result["best_loss"] if r["regret"] not in (None, math.inf) else np.nan for r in rows]
        bottom.scatter(xs, ys, color=color, s=25, label=c, zorder=3)
        for x in xs:
            top.axvline(x, color=color, lw=0.6, alpha=0.6)
    bottom.set_yscale("log")
    bottom.set_xlabel("learning rate")
    bottom.set_ylabel("validation loss after training")
    top.set_title(f"{store.task.name}: picks (lines, dots) vs the best grid lr (green) and the 10% band")
    top.legend(fontsize=7, loc="upper left")
    bottom.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=80)
    plt.close(fig)
