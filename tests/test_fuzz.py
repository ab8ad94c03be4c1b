"""Hypothesis fuzz of every public entry point that takes user values (issue 11, "Done when"):
whatever the input, pylrcore answers with a value or a clean Python exception carrying a message,
never a crash, a hang, a raw pybind11 "incompatible function arguments", or a silent NaN for finite
input. Inputs are small so that 2,000 examples per entry point stay cheap; derandomize=True makes
CI reproducible (the same examples every run).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pylrcore  # noqa: E402
from pylrcore import schedules as S  # noqa: E402
from pylrcore.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=int(__import__("os").environ.get("PYLRCORE_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

#: What misuse may raise: standard exceptions with a message (never pybind11's TypeError about
#: "incompatible function arguments", which names no argument).
CLEAN = (ValueError, TypeError, OverflowError)


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Optional[Any]:
    """fn(*args, **kwargs), or None when it refused the input cleanly."""
    try:
        return fn(*args, **kwargs)
    except CLEAN as exc:
        message = str(exc)
        assert message, f"{type(exc).__name__} without a message"
        assert "incompatible function arguments" not in message, message
        return None


# ---- strategies ----------------------------------------------------------------------------------

finite_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
any_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
edge_ints = st.sampled_from([0, 1, 2, 3, -1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30])
ints = st.one_of(st.integers(min_value=-5, max_value=200), edge_ints)

#: Anything a user might pass where a number is expected.
values = st.one_of(
    ints,
    any_floats,
    ints.map(lambda v: np.int64(v) if -(2**63) <= v < 2**63 else v),
    finite_floats.map(np.float32),
    st.sampled_from([None, "1", "abc", b"1", True, [1.0], (), {}, object(), 1 + 2j]),
)


curves = st.one_of(
    st.lists(st.one_of(finite_floats, st.sampled_from([math.nan, math.inf, -math.inf])), min_size=0, max_size=40),
    st.lists(finite_floats, min_size=0, max_size=40).map(lambda v: np.asarray(v, dtype=np.float32)),
    st.lists(st.integers(-1000, 1000), min_size=0, max_size=40).map(np.asarray),
    st.lists(finite_floats, min_size=2, max_size=40).map(lambda v: np.asarray(v)[::2]),  # a strided view
    st.lists(finite_floats, min_size=4, max_size=40).map(lambda v: np.asarray(v[: len(v) // 2 * 2]).reshape(-1, 2)),
    st.sampled_from([None, "abc", 3.0, [[1.0]], np.array(["a"]), np.array([1 + 1j]), [1.0, "x"], [2**70]]),
)
finite_curves = st.lists(finite_floats, min_size=1, max_size=40)


def increasing_lrs(n: int) -> np.ndarray:
    return np.logspace(-6, 1, n)


# ---- smoothing -----------------------------------------------------------------------------------


@FUZZ
@given(curve=curves, beta=values, kind=st.sampled_from(["debiased", "plain", "lightning", "boxcar", None]),
       nonfinite=st.sampled_from(["mark", "hold", "raise", "skip"]))
def test_fuzz_ema(curve: Any, beta: Any, kind: Any, nonfinite: str) -> None:
    out = attempt(pylrcore.ema, curve, beta, kind=kind, nonfinite=nonfinite)
    if out is not None and np.isfinite(np.asarray(curve, dtype=float)).all():
        assert np.isfinite(out).all()


@FUZZ
@given(beta=values, losses=st.lists(values, max_size=8), state=st.dictionaries(
    st.sampled_from(["average", "beta_power", "count", "nonfinite_count", "last", "beta", "kind"]), values, max_size=7))
def test_fuzz_EMA(beta: Any, losses: list, state: Dict[str, Any]) -> None:
    ema = attempt(pylrcore.EMA, beta)
    if ema is None:
        return
    for loss in losses:
        out = attempt(ema.update, loss)
        if out is not None and isinstance(loss, (int, float)) and math.isfinite(float(loss)):
            assert math.isfinite(out)
    attempt(ema.load_state_dict, {**ema.state_dict(), **state})
    attempt(ema.update, 1.0)


# ---- suggestion ----------------------------------------------------------------------------------

suggest_kwargs = st.fixed_dictionaries({}, optional={
    "beta": values, "diverge_factor": values, "zone": st.one_of(values, st.tuples(values, values)),
    "min_points": values, "skip_start": values, "skip_end": values, "num_it": values, "lr_diff": values,
    "thresh": values, "adjust_value": values,
})


@FUZZ
@given(losses=finite_curves, method=st.sampled_from(pylrcore.METHODS + pylrcore.COMPAT_METHODS + ("best",)),
       kwargs=suggest_kwargs, lrs_kind=st.sampled_from(["good", "column", "bad"]))
def test_fuzz_suggest(losses: list, method: str, kwargs: Dict[str, Any], lrs_kind: str) -> None:
    n = len(losses)
    if lrs_kind == "good":
        lrs: Any = increasing_lrs(n)
    elif lrs_kind == "column":
        lrs = np.column_stack([increasing_lrs(n), np.zeros(n)])[:, 0]
    else:
        lrs = np.array(losses)
    s = attempt(pylrcore.suggest, lrs, losses, method, **kwargs)
    if s is not None and s.ok:
        assert math.isfinite(s.lr) and s.lr > 0
        str(s), repr(s)


@FUZZ
@given(y=curves, x=st.one_of(st.none(), curves), edge_order=values)
def test_fuzz_gradient(y: Any, x: Any, edge_order: Any) -> None:
    out = attempt(pylrcore.gradient, y, x, edge_order=edge_order)
    if out is not None and np.isfinite(np.asarray(y, dtype=float)).all() and (x is None or np.isfinite(np.asarray(x, dtype=float)).all()):
        assert not np.isnan(out).any()


# ---- detection and diagnosis ---------------------------------------------------------------------

detector_kwargs = st.fixed_dictionaries({}, optional={
    name: values for name in ("beta", "explode_factor", "spike_z", "spike_clip", "warmup", "window", "plateau_rel",
                              "decrease_rel", "max_events")
})


@FUZZ
@given(kwargs=detector_kwargs, losses=st.lists(values, max_size=6), many=curves,
       state_step=st.one_of(st.none(), values))
def test_fuzz_Detector(kwargs: Dict[str, Any], losses: list, many: Any, state_step: Any) -> None:
    det = attempt(pylrcore.Detector, **kwargs)
    if det is None:
        return
    for loss in losses:
        attempt(det.update, loss)
    attempt(det.update_many, many)
    state = det.state_dict()
    if state_step is not None:
        state["state"]["step"] = state_step
    fresh = pylrcore.Detector(**det.config, max_events=det.max_events)
    attempt(fresh.load_state_dict, state)
    attempt(fresh.update, 1.0)
    repr(det), det.events, det.stats


@FUZZ
@given(losses=curves, lr=st.one_of(st.none(), values),
       thresholds=st.dictionaries(st.sampled_from(["window", "spike_count", "beta", "warmup", "nope"]), values, max_size=2))
def test_fuzz_diagnose(losses: Any, lr: Any, thresholds: Dict[str, Any]) -> None:
    d = attempt(pylrcore.diagnose, losses, lr=lr, **thresholds)
    if d is not None:
        assert str(d)


@FUZZ
@given(buffers=st.one_of(curves.map(lambda c: [c]), st.lists(curves, max_size=3), curves), threads=st.one_of(st.none(), values))
def test_fuzz_scan(buffers: Any, threads: Any) -> None:
    attempt(pylrcore.scan, buffers, threads=threads)
    attempt(pylrcore.all_finite, buffers, threads=threads)


# ---- schedules -----------------------------------------------------------------------------------

_BUILDER_ARGS = {
    "constant": ["factor"], "step": ["step_size", "gamma"], "multistep": ["milestones", "gamma"],
    "exponential": ["gamma"], "linear": ["start_factor", "end_factor", "total_iters"],
    "polynomial": ["total_iters", "power", "end_factor"], "cosine": ["T_max", "eta_min"],
    "warm_restarts": ["T_0", "T_mult", "eta_min"], "cyclic": ["max_lr", "step_size_up", "step_size_down", "gamma"],
    "one_cycle": ["total_steps", "max_lr", "pct_start"], "inverse_sqrt": ["warmup_steps", "timescale"],
    "wsd": ["warmup_steps", "stable_steps", "decay_steps", "min_lr_ratio"], "warmup": ["steps", "start_factor"],
}
_SMALL = st.one_of(st.integers(1, 50), st.floats(0.01, 1.0), edge_ints)


@st.composite
def schedules(draw: Any, depth: int = 2) -> Any:
    """A schedule built from random (often bad) arguments; None when the builder refused them."""
    name = draw(st.sampled_from(sorted(_BUILDER_ARGS)))
    args = {k: draw(st.one_of(_SMALL, values, st.lists(st.integers(0, 100), max_size=3))) for k in _BUILDER_ARGS[name]
            if draw(st.booleans())}
    if name in ("step", "cosine", "warm_restarts", "one_cycle", "wsd", "cyclic", "multistep", "warmup") and not args:
        args = {_BUILDER_ARGS[name][0]: draw(_SMALL)}
    s = attempt(getattr(S, name), **args)
    if s is not None and depth > 0 and draw(st.booleans()):
        other = draw(schedules(depth=depth - 1))
        if other is not None:
            op = draw(st.sampled_from([">>", "*", "k*"]))
            s = attempt(lambda: s >> other if op == ">>" else s * other if op == "*" else draw(values) * s)
    return s


steps = st.one_of(st.integers(0, 10_000), edge_ints, values,
                  st.lists(st.one_of(st.integers(0, 2**63 - 1), edge_ints), max_size=5).map(np.asarray))


@FUZZ
@given(schedule=schedules(), step=steps, base_lr=st.one_of(st.floats(0, 10), values))
def test_fuzz_schedules(schedule: Any, step: Any, base_lr: Any) -> None:
    if schedule is None:
        return
    a = attempt(schedule.at, step)
    if a is not None:
        assert not (math.isnan(a[0]) or math.isnan(a[1]))
    out = attempt(schedule, step, base_lr)
    if out is not None:
        values_out = np.asarray(out, dtype=float)
        assert not np.isnan(values_out).any() and (values_out >= 0).all()
    text = repr(schedule)
    again = attempt(S.Schedule.parse, text)
    assert again == schedule, text  # the text form round-trips, nested ones included (repro 14)
    attempt(S.Schedule.from_dict, schedule.to_dict())


@FUZZ
@given(text=st.one_of(
    st.text(alphabet="cosinewarmup()[]>*,.=0123456789 _-e\"'", max_size=60),
    st.builds(lambda n, k, sep: sep.join([f"cosine({n})"] * k), st.sampled_from(["10", "0", "2**62", "1e400", "-1", "'a'"]),
              st.integers(1, 8), st.sampled_from([" >> ", " * ", ", "])),
))
def test_fuzz_schedule_parse(text: str) -> None:
    s = attempt(S.Schedule.parse, text)
    if s is not None:
        repr(s)


# ---- reduce-on-plateau and the torch Scheduler ---------------------------------------------------

plateau_kwargs = st.fixed_dictionaries({}, optional={
    name: values for name in ("factor", "patience", "threshold", "cooldown", "min_lr", "eps")
} | {"mode": st.sampled_from(["min", "max", "avg"]), "threshold_mode": st.sampled_from(["rel", "abs", "x"])})


@FUZZ
@given(kwargs=plateau_kwargs, metrics=st.lists(values, max_size=6), counter=st.one_of(st.none(), values))
def test_fuzz_Plateau(kwargs: Dict[str, Any], metrics: list, counter: Any) -> None:
    p = attempt(pylrcore.Plateau, **kwargs)
    if p is None:
        return
    for m in metrics:
        attempt(p.step, m)
    state = p.state_dict()
    if counter is not None:
        state["num_reductions"] = counter
    attempt(pylrcore.Plateau.from_dict(p.to_dict()).load_state_dict, state)
    repr(p)


torch = pytest.importorskip("torch")


@FUZZ
@given(lr=st.one_of(st.floats(0, 1), values), schedule=st.one_of(schedules(depth=1), st.text(max_size=20)),
       last_epoch=st.one_of(st.just(-1), values), n_steps=st.integers(0, 3),
       state=st.dictionaries(st.sampled_from(["last_epoch", "base_lrs", "foo", "_step_count"]), values, max_size=2))
def test_fuzz_Scheduler(lr: Any, schedule: Any, last_epoch: Any, n_steps: int, state: Dict[str, Any]) -> None:
    from pylrcore.torch import Scheduler

    if schedule is None:
        return
    param = torch.nn.Parameter(torch.zeros(1))
    opt = attempt(torch.optim.SGD, [param], lr=lr)
    if opt is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own "step() before optimizer.step()" notes
        sched = attempt(Scheduler, opt, schedule, last_epoch=last_epoch)
        if sched is None:
            return
        for _ in range(n_steps):
            opt.step()
            sched.step()
        lrs = [g["lr"] for g in opt.param_groups]
        assert all(not math.isnan(v) and v >= 0 for v in lrs), lrs
        attempt(sched.load_state_dict, {**sched.state_dict(), **state})


# ---- the command line, in process ----------------------------------------------------------------

_DIR = Path(tempfile.mkdtemp(prefix="pylrcore-fuzz-"))  # one folder for every example's file
atexit.register(shutil.rmtree, _DIR, True)

cells = st.one_of(finite_floats.map(repr), st.sampled_from(["nan", "inf", "", "abc", '"1.0"', "1e999", "1" + "0" * 400, "-0"]))


@st.composite
def files(draw: Any) -> Path:
    kind = draw(st.sampled_from(["csv", "json", "bom", "deep", "empty"]))
    path = _DIR / ("f.json" if kind in ("json", "deep") else "f.csv")
    if kind in ("csv", "bom"):
        header = draw(st.sampled_from(["lr,loss", '"lr","loss"', "loss", "x,y", ""]))
        n = draw(st.integers(0, 30))
        rows = [",".join(draw(st.lists(cells, min_size=1, max_size=3))) for _ in range(n)]
        if draw(st.booleans()) and header in ("lr,loss", '"lr","loss"'):  # a plausible range test
            rows = [f"{lr!r},{2.0 - 0.01 * i!r}" for i, lr in enumerate(increasing_lrs(max(n, 1)))]
        text = "\n".join([header, *rows]) + "\n"
        path.write_bytes((b"\xef\xbb\xbf" if kind == "bom" else b"") + text.encode())
    elif kind == "json":
        doc = draw(st.one_of(
            st.lists(st.one_of(finite_floats, st.none(), st.integers(), st.text(max_size=3)), max_size=30),
            st.dictionaries(st.sampled_from(["loss", "losses", "acc"]), st.lists(finite_floats, max_size=30), max_size=2),
        ))
        path.write_text(json.dumps(doc))
    elif kind == "deep":
        depth = draw(st.sampled_from([10, 3000]))
        path.write_text("[" * depth + "]" * depth)
    else:
        path.write_text("")
    return path


@FUZZ
@given(command=st.sampled_from(["suggest", "diagnose", "schedule"]), file=files(),
       method=st.sampled_from(["steepest", "valley", "torch_lr_finder", "fastai_slide", "nope"]),
       lr=st.sampled_from(["0.1", "1e308", "-1", "nan", "abc"]),
       spec=st.one_of(st.sampled_from(["cosine(100)", "warmup(10) >> cosine(90)", "warm_restarts(7, T_mult=5)",
                                        "cosine(0)", "nope(1)", " >> ".join(["cosine(10)"] * 20),
                                        " >> ".join(["cosine(10)"] * 3000)]),
                      st.text(alphabet="cosine()>0123456789 ", max_size=30)),
       steps=st.sampled_from(["1", "100", str(2**63 - 1), str(2**63), "0", "-5", "x"]))
def test_fuzz_cli(command: str, file: Path, method: str, lr: str, spec: str, steps: str) -> None:
    argv = {
        "suggest": ["suggest", str(file), "--method", method],
        "diagnose": ["diagnose", str(file), "--lr", lr],
        "schedule": ["schedule", spec, "--steps", steps],
    }[command]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse's --help/--version only
            code = int(exc.code or 0)
    assert code in (0, 1, 2), code
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pylrcore: "), err.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
