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

    args = parser.parse_args(argv)
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
