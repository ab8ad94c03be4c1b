"""The ``pylrcore`` command line (also ``python -m pylrcore``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np

from . import __version__


def _load_curve(path: str) -> "tuple[np.ndarray, np.ndarray]":
    data = np.genfromtxt(path, delimiter=",", names=True)
    names = data.dtype.names or ()
    if "lr" not in names or "loss" not in names:
        raise SystemExit(f"{path}: expected a CSV with header columns 'lr' and 'loss', got {names}")
    # Fields of a structured array are strided views: copy them into plain contiguous curves.
    return np.ascontiguousarray(np.atleast_1d(data["lr"])), np.ascontiguousarray(np.atleast_1d(data["loss"]))


def _schedule_command(specs: List[str], steps: int, base_lr: float, png: str) -> int:
    from .schedules import Schedule

    try:
        schedules = [Schedule.parse(spec) for spec in specs]
        if steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        curves = [s(np.arange(steps), base_lr) for s in schedules]
    except (ValueError, TypeError) as exc:
        print(f"pylrcore: {exc}", file=sys.stderr)
        return 2
    marks = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})
    for schedule, curve in zip(schedules, curves):
        print(repr(schedule))
        print("  " + "  ".join(f"step {t}: {curve[t]:.4g}" for t in marks))
    if png:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("pylrcore: --png needs matplotlib (pip install 'pylrcore[plot]')", file=sys.stderr)
            return 2
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for schedule, curve in zip(schedules, curves):
            ax.plot(np.arange(steps), curve, label=repr(schedule), lw=1.6)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
        print(f"plot written to {png}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pylrcore", description="Learning-rate toolkit")
    parser.add_argument("--version", action="version", version=f"pylrcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a real LR range test on a built-in problem")
    demo.add_argument("--png", default="lr_finder.png", help="where to write the plot ('' for none)")
    demo.add_argument("--no-check", action="store_true", help="skip the short training runs that check the pick")

    sug = sub.add_parser("suggest", help="suggest an lr from a recorded range test (CSV with lr,loss columns)")
    sug.add_argument("csv")
    sug.add_argument("--method", default="steepest")

    sch = sub.add_parser("schedule", help="evaluate (and plot) schedules given in pylrcore's text form")
    sch.add_argument("specs", nargs="+", help='e.g. "warmup(500) >> cosine(9500, eta_min=1e-5)"')
    sch.add_argument("--steps", type=int, default=10_000, help="number of steps to evaluate")
    sch.add_argument("--base-lr", type=float, default=1e-3)
    sch.add_argument("--png", default="", help="write a plot of all the schedules to this file")

    args = parser.parse_args(argv)
    if args.command == "schedule":
        return _schedule_command(args.specs, args.steps, args.base_lr, args.png)
    if args.command == "demo":
        from .demo import run

        s = run(png=args.png or None, check=not args.no_check)
        return 0 if s.ok else 1
    if args.command == "suggest":
        from .suggestion import suggest

        lrs, losses = _load_curve(args.csv)
        try:
            s = suggest(lrs, losses, args.method)
        except (ValueError, TypeError) as exc:
            print(f"pylrcore: {exc}", file=sys.stderr)
            return 2
        print(s)
        return 0 if s.ok else 1
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
