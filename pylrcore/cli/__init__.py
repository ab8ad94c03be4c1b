"""The ``pylrcore`` command line (also ``python -m pylrcore``).

    pylrcore demo [--quadratic [--steps N]] [--png PATH] [--no-check]
    pylrcore suggest CSV [--method NAME]
    pylrcore diagnose FILE [--lr LR] [--column NAME]
    pylrcore schedule SPEC... [--steps N] [--base-lr LR] [--png/--plot PATH]

A usage error in any subcommand (missing or unreadable file, bad CSV/JSON, unknown column, bad
schedule spec or method, invalid number) prints one line ``pylrcore: <message>`` on stderr and
exits with status 2; ``--debug`` (before or after the subcommand) re-raises it with its traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from typing import Any, Callable, List, NoReturn, Optional

import numpy as np

from .. import __version__
from ..suggestion import DEFAULT_METHOD, DIVERGE_FACTOR, METHODS
from .._checks import check_int


class _UsageError(ValueError):
    """A bad command line (argparse's complaint), reported like every other usage error."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)  # --help shows defaults
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _read_text(path: str) -> str:
    """A text file as UTF-8; "utf-8-sig" drops the byte-order mark Excel writes in front of a CSV."""
    with open(path, encoding="utf-8-sig") as fh:
        return fh.read()


def _csv_rows(path: str, text: str) -> List[List[str]]:
    """Non-blank rows of a CSV (quoted cells unquoted by the csv module), cells stripped."""
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text)) if row and any(c.strip() for c in row)]
    if not rows:
        raise ValueError(f"{path}: the file holds no rows")
    return rows


def _load_curve(path: str) -> "tuple[np.ndarray, np.ndarray]":
    """A recorded range test: a CSV with header columns 'lr' and 'loss', read like ``diagnose`` reads
    its files (quotes, a BOM; a cell that is not a number is an error naming its row)."""
    rows = _csv_rows(path, _read_text(path))
    header = rows[0]
    if "lr" not in header or "loss" not in header:
        raise ValueError(f"{path}: expected a CSV with header columns 'lr' and 'loss', got {tuple(header)}")
    lr_at, loss_at = header.index("lr"), header.index("loss")
    lrs, losses = [], []
    for line, row in enumerate(rows[1:], start=2):
        if max(lr_at, loss_at) >= len(row):
            raise ValueError(f"{path}: row {line} has {len(row)} fields, expected {len(header)}")
        lrs.append(_number(row[lr_at], f"{path}: row {line}, column 'lr'"))
        losses.append(_number(row[loss_at], f"{path}: row {line}, column 'loss'"))
    if not lrs:
        raise ValueError(f"{path}: the file has a header but no data rows")
    return np.array(lrs, dtype=np.float64), np.array(losses, dtype=np.float64)


def _number(value: Any, where: str) -> float:
    """One recorded loss: a number ('nan'/'inf' and JSON NaN/Infinity/null allowed: null is NaN)."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: expected a number, got {value!r}") from None
    except OverflowError:  # a JSON integer beyond float64
        raise ValueError(f"{where}: the integer {str(value)[:20]}... is too large for a float64") from None


def _load_json_losses(path: str, text: str, column: Optional[str]) -> List[float]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:  # json recurses once per nesting level
        raise ValueError(f"{path}: the JSON nests too deeply; expected a list of numbers or an object with one") from None
    if isinstance(data, dict):
        keys = [column] if column is not None else ["loss", "losses"]
        found = [k for k in keys if k in data]
        if not found:
            want = " or ".join(repr(k) for k in keys)
            raise ValueError(f"{path}: no {want} key in the JSON object (keys: {', '.join(map(str, data)) or 'none'})")
        name, data = found[0], data[found[0]]
        if not isinstance(data, list):
            raise ValueError(f"{path}: {name!r} must be a list of numbers, got {type(data).__name__}")
    elif not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of numbers or an object with a 'loss'/'losses' list")
    elif column is not None:
        raise ValueError(f"{path}: --column {column} needs a JSON object with that key; this file is a plain list")
    return [_number(v, f"{path}: item {i}") for i, v in enumerate(data)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _load_csv_losses(path: str, text: str, column: Optional[str]) -> List[float]:
    rows = _csv_rows(path, text)
    header = rows[0]
    if all(_is_number(c) for c in header):  # no header: a single unnamed column
        if column is not None:
            raise ValueError(f"{path}: --column {column} needs a header row; this CSV has none")
        if len(header) != 1:
            raise ValueError(f"{path}: {len(header)} unnamed columns; add a header row and pick one with --column")
        index, body, first_line = 0, rows, 1
    else:
        name = "loss" if column is None else column
        if name not in header:
            raise ValueError(f"{path}: no column {name!r} (columns: {', '.join(header)}); pick one with --column")
        index, body, first_line = header.index(name), rows[1:], 2
    losses = []
    for i, row in enumerate(body):
        if index >= len(row):
            raise ValueError(f"{path}: row {i + first_line} has {len(row)} fields, the column is field {index + 1}")
        losses.append(_number(row[index], f"{path}: row {i + first_line}"))
    return losses


def _load_losses(path: str, column: Optional[str]) -> List[float]:
    """A recorded loss history: JSON (by the .json suffix or a leading '[' / '{') or CSV."""
    text = _read_text(path)
    if path.lower().endswith(".json") or text.lstrip()[:1] in ("[", "{"):
        return _load_json_losses(path, text, column)
    return _load_csv_losses(path, text, column)


_PLOT_POINTS = 20_000  # more points than a plot's pixels


_ENDLESS_STEPS = 10_000  # shown for a schedule without a length (step, exponential, cyclic, ...)


def _schedule_command(specs: List[str], steps: Optional[int], base_lr: float, png: str) -> int:
    from ..schedules import Schedule

    schedules = [Schedule.parse(spec) for spec in specs]
    if steps is not None:
        if steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        check_int(steps, "--steps", minimum=1)
    if not (math.isfinite(base_lr) and base_lr >= 0):
        raise ValueError(f"--base-lr must be a finite number >= 0, got {base_lr}")

    def span(s: Schedule) -> int:  # each schedule over its own length (its last value included)
        if steps is not None:
            return steps
        n = s.length
        return _ENDLESS_STEPS if n is None else min(n + 1, 2**63 - 1)

    # Only the printed steps and at most _PLOT_POINTS plotted ones are evaluated, so a length may be
    # anything up to 2**63 - 1 without building an array of that size.
    for schedule in schedules:
        n = span(schedule)
        marks = sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})
        values = schedule(np.array(marks, dtype=np.int64), base_lr)
        print(repr(schedule))
        print("  " + "  ".join(f"step {t}: {v:.4g}" for t, v in zip(marks, values)))
    if not png:
        return 0
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("pylrcore: --png/--plot needs matplotlib (pip install 'pylrcore[plot]')", file=sys.stderr)
        return 2
    # one panel per schedule, each over its own length (a 100-step cosine is not a spike beside a
    # 10,000-step one); momentum on a second axis where it is cycled; legends beside the axes
    fig, axes = plt.subplots(len(schedules), 1, figsize=(9, 2.6 * len(schedules) + 0.6), squeeze=False)
    for (ax,), schedule in zip(axes, schedules):
        n = span(schedule)
        points = min(n, _PLOT_POINTS)  # evenly spaced, in exact integers (n may be ~2**63)
        xs = np.array([i * (n - 1) // max(points - 1, 1) for i in range(points)], dtype=np.int64)
        lines = ax.plot(xs, schedule(xs, base_lr), lw=1.6, label="lr")
        ax.set_ylabel("learning rate")
        ax.set_title(repr(schedule), fontsize=8, loc="left")
        if schedule.cycles_momentum:
            twin = ax.twinx()
            lines += twin.plot(xs, schedule.momentum(xs, base_lr), lw=1.2, ls="--", color="tab:orange",
                               label="momentum / beta1")
            twin.set_ylabel("momentum")
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0),
                  borderaxespad=0.0)
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"plot written to {png}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pylrcore", description="Learning-rate toolkit")
    parser.add_argument("--version", action="version", version=f"pylrcore {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    # --debug is accepted after the subcommand too; SUPPRESS keeps a subparser from resetting it.
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", parents=[common], help="run a real LR range test on a built-in problem")
    demo.add_argument("--png", default="lr_finder.png", help="where to write the plot ('' for none)")
    demo.add_argument("--no-check", action="store_true", help="skip the short training runs that check the pick")
    demo.add_argument("--quadratic", action="store_true",
                      help="instead: gradient descent on f(x) = x^2 at lr 0.001, 0.1 and 1.1, and their diagnoses")
    demo.add_argument("--steps", type=int, default=50, help="steps of the --quadratic runs (>= 9)")

    sug = sub.add_parser("suggest", parents=[common], help="suggest an lr from a recorded range test (CSV with lr,loss columns)")
    sug.add_argument("csv", help="the recorded range test: a CSV with header columns 'lr' and 'loss'")
    sug.add_argument("--method", default=DEFAULT_METHOD,
                     help=f"suggestion method ({', '.join(METHODS)}, or a compat mode; default {DEFAULT_METHOD})")
    sug.add_argument("--diverge-factor", type=float, default=DIVERGE_FACTOR,
                     help=f"cut where the smoothed loss exceeds this x its running minimum (default {DIVERGE_FACTOR:g})")

    dia = sub.add_parser("diagnose", parents=[common], help="diagnose a recorded training-loss history (CSV or JSON)")
    dia.add_argument("file", help="CSV with a 'loss' column (or one unnamed column), or JSON: a list of "
                                  "numbers or an object with a 'loss'/'losses' list")
    dia.add_argument("--lr", type=float, default=None, help="the LR the history was trained with")
    dia.add_argument("--column", default=None, help="the CSV column (or JSON key) holding the losses")

    fnd = sub.add_parser("find", parents=[common],
                         help="LR range test on your model: MODULE:FACTORY returns (model, optimizer, criterion, loader)")
    fnd.add_argument("target", help="a module and a function: mypkg.train:make, or path/to/file.py:make")
    fnd.add_argument("--start-lr", type=float, default=None, help="default: the optimizer's lr")
    fnd.add_argument("--end-lr", type=float, default=10.0, help="the last lr of the sweep")
    fnd.add_argument("--num-iter", type=int, default=100, help="steps of the sweep")
    fnd.add_argument("--mode", choices=("exp", "linear"), default="exp", help="spacing of the lrs")
    fnd.add_argument("--method", default=DEFAULT_METHOD,
                     help=f"suggestion method ({', '.join(METHODS)}, or a compat mode; default {DEFAULT_METHOD})")
    fnd.add_argument("--diverge-factor", type=float, default=DIVERGE_FACTOR,
                     help=f"stop where the smoothed loss exceeds this x its running minimum (default {DIVERGE_FACTOR:g})")
    fnd.add_argument("--device", default=None, help="e.g. cpu or cuda (default: where the model is)")
    fnd.add_argument("--png", default="lr_finder.png", help="where to write the plot ('' for none)")
    fnd.add_argument("--json", default="", help="also write the result as JSON to this file")
    fnd.add_argument("--confirm", type=int, default=0, metavar="STEPS",
                     help="then train the pick x 1/10 .. 4.6 (6 lrs), STEPS steps each in one parallel sweep, and report "
                          "the best (default 0: no confirmation; 300 is what was measured to help)")

    sch = sub.add_parser("schedule", parents=[common], help="evaluate (and plot) schedules given in pylrcore's text form")
    sch.add_argument("specs", nargs="+", help='e.g. "warmup(500) >> cosine(9500, eta_min=1e-5)"')
    sch.add_argument("--steps", type=int, default=None,
                     help="number of steps to evaluate (default: None, each schedule over its own length; "
                          "10000 steps for a schedule without one)")
    sch.add_argument("--base-lr", type=float, default=1e-3, help="the lr a relative schedule multiplies")
    sch.add_argument("--png", "--plot", dest="png", default="", help="write a plot of all the schedules to this file")
    return parser


def _demo_command(args: argparse.Namespace) -> int:
    if args.quadratic:
        from ..quadratic import compare, format_table

        print(format_table(compare(steps=args.steps)))
        return 0
    from .demo import run

    s = run(png=args.png or None, check=not args.no_check)
    return 0 if s.ok else 1


def _suggest_command(args: argparse.Namespace) -> int:
    from ..suggestion import suggest

    lrs, losses = _load_curve(args.csv)
    s = suggest(lrs, losses, args.method, diverge_factor=args.diverge_factor)
    print(s)
    return 0 if s.ok else 1


def _diagnose_command(args: argparse.Namespace) -> int:
    from ..diagnosis import diagnose

    print(diagnose(_load_losses(args.file, args.column), lr=args.lr))
    return 0


def _schedule_args(args: argparse.Namespace) -> int:
    return _schedule_command(args.specs, args.steps, args.base_lr, args.png)


def _load_factory(target: str) -> Callable[[], Any]:
    import importlib
    import importlib.util

    module_name, sep, func_name = target.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"expected MODULE:FACTORY (e.g. mypkg.train:make or train.py:make), got {target!r}")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location("pylrcore_user_factory", module_name)
            if spec is None or spec.loader is None:
                raise ValueError(f"cannot load {module_name!r} as a Python file")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError) as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no function {func_name!r}")
    return factory  # type: ignore[no-any-return]


def _check_device(device: Optional[str]) -> None:
    """--device names a device torch can use here (not only one torch can spell)."""
    if device is None:
        return
    import torch

    try:
        where = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"--device {device!r} is not a device: {_one_line(exc)} (e.g. cpu, cuda, cuda:1, mps)") from None
    if where.type == "cpu":
        return
    try:
        torch.empty(0, device=where)  # raises where the build or the machine lacks it
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ValueError(f"--device {device!r} is not available here: {_one_line(exc)}") from None


def _confirm_steps(steps: int) -> int:
    if steps < 0:
        raise ValueError(f"--confirm must be a number of steps >= 0, got {steps}")
    return steps


def _find_command(args: argparse.Namespace) -> int:
    _check_device(args.device)
    # `python -m pylrcore` finds modules in the current folder because it puts it on sys.path; the
    # installed `pylrcore` script does not, so MODULE:FACTORY gets the same search path here.
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return _run_find(args)
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def _run_find(args: argparse.Namespace) -> int:
    made = _load_factory(args.target)()
    if not (isinstance(made, (tuple, list)) and len(made) == 4):
        raise ValueError(
            f"{args.target} must return (model, optimizer, criterion, train_loader), got {type(made).__name__}"
            + (f" of length {len(made)}" if isinstance(made, (tuple, list)) else "")
        )
    from ..torch.finder import CONFIRM_TOLERANCE, LRFinder

    model, optimizer, criterion, loader = made
    # --diverge-factor has the same default as `pylrcore suggest`: both commands read a curve alike.
    result = LRFinder(model, optimizer, criterion, device=args.device).range_test(
        loader, start_lr=args.start_lr, end_lr=args.end_lr, num_iter=args.num_iter, step_mode=args.mode,
        diverge_th=args.diverge_factor, method=args.method, confirm=_confirm_steps(args.confirm))
    print(result.details)
    if result.confirmation is not None:
        sweep = result.confirmation
        print(f"confirmation: {sweep.losses.shape[1]} steps at {len(sweep.lrs)} lrs in one parallel sweep"
              + ("" if sweep.vectorized else f" ({sweep.note})"))
        for lr, score, stopped in zip(sweep.lrs, sweep.scores, sweep.diverged_at):
            print(f"  lr {lr:9.3g}: final loss {score:.4g}" + (" (diverged)" if stopped is not None else ""))
        lowest = sweep.lrs[int(np.argmin(sweep.scores))] if np.isfinite(sweep.scores).any() else None
        print(f"  -> train with lr {result.lr:.3g}" + ("" if lowest is None or lowest == result.lr else
                                                     f" (the smallest lr within {CONFIRM_TOLERANCE:.0%} of the lowest loss, at {lowest:.3g})"))
    print(f"diagnosis: {result.diagnosis}")
    for event in result.printable_events():
        print(f"event: {event}")
    if args.png:
        try:
            result.plot(args.png)
            print(f"plot written to {args.png}")
        except ImportError:
            print("(install matplotlib to get the plot: pip install 'pylrcore[plot]')")
    if args.json:
        result.to_json(args.json)
        print(f"result written to {args.json}")
    return 0 if result.suggestion is not None else 1


_COMMANDS: "dict[str, Callable[[argparse.Namespace], int]]" = {
    "find": _find_command,
    "demo": _demo_command,
    "suggest": _suggest_command,
    "diagnose": _diagnose_command,
    "schedule": _schedule_args,
}

#: What a usage error raises (bad file, CSV, JSON, column, spec, method or number): reported as one
#: line ``pylrcore: <message>`` on stderr with exit status 2, or re-raised under ``--debug``.
USAGE_ERRORS = (ValueError, TypeError, OSError, csv.Error)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run one subcommand; returns the exit status (2 and one line on stderr for a usage error)."""
    args: Optional[argparse.Namespace] = None
    try:
        args = _build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except USAGE_ERRORS as exc:
        if args is not None and args.debug:  # a bad command line itself is always one line
            raise
        print(f"pylrcore: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (RecursionError, OverflowError, MemoryError) as exc:  # hostile sizes the checks did not name
        if args is not None and args.debug:
            raise
        what = {RecursionError: "the input nests too deeply", MemoryError: "the input is too large"}.get(
            type(exc), "a number is too large"
        )
        print(f"pylrcore: {what} ({_one_line(exc)})", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
