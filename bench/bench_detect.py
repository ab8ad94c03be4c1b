"""Cost of streaming detection per training step, and of whole-history detection/diagnosis.

Each group holds pylrcore and what a user would write instead (the same rules in plain Python,
numpy where it helps), in the same run; every benchmark also checks that its result matches.

    PYTHONPATH=. python -m pytest bench/bench_detect.py --benchmark-only --benchmark-columns=median,iqr,rounds

PYLRCORE_BENCH_QUICK=1 shrinks the sizes (CI runs this once with --benchmark-disable, as a parity test).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import pylrcore
from pylrcore.detect import DEFAULTS, Detector
from pylrcore.diagnosis import DEFAULTS as DIAGNOSE_DEFAULTS

QUICK = os.environ.get("PYLRCORE_BENCH_QUICK") == "1"
STREAM = 1_000  # updates per benchmark call: the per-call cost is the median / STREAM
WHOLE = 20_000 if QUICK else 1_000_000


def training_losses(n: int, seed: int = 0) -> np.ndarray:
    """A decaying, noisy loss with a few spikes and one NaN: every code path of the detector runs."""
    t = np.arange(n, dtype=float)
    x = (0.2 + 2.0 * np.exp(-t / max(n / 5, 1.0))) * (1.0 + 0.05 * np.random.default_rng(seed).standard_normal(n))
    x[n // 3 :: max(n // 7, 1)] *= 3.0
    x[n // 2] = np.nan
    return x


# --- the same rules in plain Python -------------------------------------------------------------------


class PyEma:
    """fastai's debiased EMA, as one would write it."""

    def __init__(self, beta: float = 0.98) -> None:
        self.beta, self.average, self.power = beta, 0.0, 1.0

    def update(self, x: float) -> float:
        if not math.isfinite(x):
            return math.nan
        self.average = self.beta * self.average + (1.0 - self.beta) * x
        self.power *= self.beta
        return self.average / (1.0 - self.power)


PERSISTENT = 2 | 8 | 16 | 32


class PyDetector:
    """pylrcore.Detector's rules in plain Python (without its overflow guards for astronomically large losses)."""

    def __init__(self, c: dict = DEFAULTS) -> None:
        self.c = c
        self.window = int(c["window"])
        self.ema = PyEma(c["beta"])
        self.step = self.n = 0
        self.s = self.best = self.start = self.last = math.nan
        self.mean = self.var = self.last_diff = self.alternation = self.amplitude = 0.0
        self.ring = [0.0] * self.window
        self.ring_sum = self.ring_sumsq = self.ring_moment = 0.0
        self.flags = 0

    def update(self, x: float):
        c, step, previous = self.c, self.step, self.flags
        self.step += 1
        if not math.isfinite(x):
            self.flags = (previous & PERSISTENT) | 1
            return step, self.flags, self.flags & ~previous, self.s, self.best, math.nan
        s = self.s = self.ema.update(x)
        self.n += 1
        n = self.n
        if n <= 10:
            self.start = self.best = s
        elif s < self.best:
            self.best = s
        warm = n > max(c["warmup"], 10)
        flags = 2 if s > self.explode_threshold() else 0
        sd = max(math.sqrt(self.var), 1e-3 * abs(self.mean), 1e-300)
        z = 0.0
        if n >= 2:
            z = min(max((x - self.mean) / sd, -1e12), 1e12)
            if warm and z > c["spike_z"]:
                flags |= 4
        clipped = min(max(x, self.mean - c["spike_clip"] * sd), self.mean + c["spike_clip"] * sd) if warm else x
        self.moments(clipped, n)
        self.differences(x, n)
        self.push(clipped, n)
        self.last = x
        if warm:
            flags |= self.window_states(previous)
        self.flags = flags
        return step, flags, flags & ~previous, s, self.best, z

    def explode_threshold(self) -> float:
        floor = 1e-3 * abs(self.start)
        return self.best + (self.c["explode_factor"] - 1.0) * max(abs(self.best), floor)

    def moments(self, x: float, n: int) -> None:
        if n == 1:
            self.mean = x
            return
        d = x - self.mean
        self.var += max(1.0 - self.c["spike_var_beta"], 1.0 / (n - 1.0)) * (d * d - self.var)
        self.mean += max(1.0 - self.c["spike_beta"], 1.0 / n) * d

    def differences(self, x: float, n: int) -> None:
        if n < 2:
            return
        diff = x - self.last
        self.amplitude += max(1.0 / self.window, 1.0 / (n - 1)) * (abs(diff) - self.amplitude)
        if n >= 3:
            changed = 1.0 if (diff > 0 and self.last_diff < 0) or (diff < 0 and self.last_diff > 0) else 0.0
            self.alternation += max(1.0 / self.window, 1.0 / (n - 2)) * (changed - self.alternation)
        self.last_diff = diff

    def push(self, x: float, n: int) -> None:
        w, slot = self.window, (n - 1) % self.window
        if n <= w:
            self.ring_moment += (n - 1) * x
        else:
            oldest = self.ring[slot]
            self.ring_sum -= oldest
            self.ring_sumsq -= oldest * oldest
            self.ring_moment -= self.ring_sum
            self.ring_moment += (w - 1) * x
        self.ring_sum += x
        self.ring_sumsq += x * x
        self.ring[slot] = x
        if slot == w - 1:
            self.ring_sum = self.ring_sumsq = self.ring_moment = 0.0
            for j, v in enumerate(self.ring):
                self.ring_sum += v
                self.ring_sumsq += v * v
                self.ring_moment += j * v

    def window_states(self, previous: int) -> int:
        c, k = self.c, float(min(self.n, self.window))
        level = max(abs(self.ring_sum / k), 1e-3 * math.sqrt(self.ring_sumsq / k), 1e-150)
        rate = se = 0.0
        if k >= 3:
            stt = k * (k * k - 1.0) / 12.0
            slope = (self.ring_moment - 0.5 * (k - 1.0) * self.ring_sum) / stt
            resid = max(self.ring_sumsq - self.ring_sum * self.ring_sum / k - slope * slope * stt, 0.0) / (k - 2.0)
            rate, se = slope * (self.window / level), math.sqrt(resid / stt) * (self.window / level)
        flags, dec, flat = 0, c["decrease_rel"], c["plateau_rel"]
        if (rate < -0.5 * dec) if previous & 32 else (rate < -dec and rate < -4.0 * se):
            flags |= 32
        flat_now = abs(rate) <= 2 * flat + 4 * se if previous & 8 else abs(rate) < flat + 2 * se
        progress = (self.start - self.best) / abs(self.start) if abs(self.start) > 0 else 0.0
        if not flags & 32 and flat_now and progress >= c["plateau_progress"]:
            flags |= 8
        alt_on, amp_on, amplitude = c["oscillation_alternation"], c["oscillation_amplitude"], self.amplitude / level
        if previous & 16:
            on = self.alternation >= 0.5 * (alt_on + 2 / 3) and amplitude >= 0.5 * amp_on
        else:
            on = self.alternation >= alt_on and amplitude >= amp_on
        return flags | (16 if on else 0)


def py_diagnose(losses: np.ndarray) -> tuple:
    """pylrcore.diagnose's measures and rules: the Python detector for the stream, numpy for the rest.
    Returns (codes in priority order, step of the first)."""
    d = DIAGNOSE_DEFAULTS
    det = PyDetector({k: d[k] for k in DEFAULTS})
    ys, ss, steps = [], [], []
    first_bad = explosion = first_spike = osc_step = -1
    spikes = warm = oscillating = 0
    for i, x in enumerate(losses.tolist()):
        _, flags, onset, s, _, _ = det.update(x)
        if flags & 1:
            first_bad = i if first_bad < 0 else first_bad
            continue
        ys.append(x), ss.append(s), steps.append(i)
        explosion = i if onset & 2 and explosion < 0 else explosion
        if onset & 4:
            spikes += 1
            first_spike = i if first_spike < 0 else first_spike
        osc_step = i if onset & 16 and osc_step < 0 else osc_step
        if det.n > max(d["warmup"], 10):
            warm += 1
            oscillating += bool(flags & 16)
    found = []
    if first_bad >= 0 or explosion >= 0:
        found.append(("exploding", min(v for v in (first_bad, explosion) if v >= 0)))
    y, s, m = np.array(ys), np.array(ss), len(ys)
    scale = float(np.abs(y).max()) or 1.0
    y, s = y / scale, s / scale
    c = min(max(int(math.floor(d["chunk"] * m + 0.5)), 1), m)
    c0 = min(c, 10)
    first, middle, end = y[:c0].mean(), y[(m - c) // 2 : (m - c) // 2 + c].mean(), y[m - c :].mean()
    diffs = np.diff(y)
    noise = float(np.median(np.abs(diffs))) / (0.6744897501960817 * math.sqrt(2.0))
    drop, drop_se = first - end, noise * math.sqrt(1 / c0 + 1 / c)
    relative_drop, progress = drop / max(abs(first), 1e-300), (first - s.min()) / max(abs(first), 1e-300)
    late_share = (middle - end) / drop if drop > 0 else math.nan
    beta, k = d["beta"], np.arange(1, m + 1, dtype=float)
    bound = s + 3 * noise * np.sqrt((1 - beta) / (1 + beta) * (1 + beta**k) / (1 - beta**k))
    lowest = int(np.argmin(bound))
    rise = (end - s[lowest]) / max(abs(s[lowest]), 1e-300)
    rising = end - 3 * noise / math.sqrt(c) > bound[lowest] and rise > d["rising"]
    tail = min(m, max(int(d["window"]), int(d["plateau_tail"] * m)))
    tail_y = y[m - tail :]
    t = np.arange(tail) - 0.5 * (tail - 1)
    slope = float(t @ (tail_y - tail_y.mean())) / float(t @ t)
    resid = tail_y - tail_y.mean() - slope * t
    level = max(abs(tail_y.mean()), 1e-300)
    change, change_se = slope * tail / level, math.sqrt(float(resid @ resid) / (tail - 2) / float(t @ t)) * tail / level
    if warm and oscillating / warm >= d["oscillation_fraction"]:
        found.append(("oscillating", osc_step))
    if spikes >= max(d["spike_count"], d["spike_rate"] * m):
        found.append(("unstable", first_spike))
    elif rising:
        found.append(("unstable", steps[lowest]))
    if relative_drop < d["no_progress"] or drop <= 3 * drop_se:
        if not rising:
            found.append(("not_decreasing", 0))
    elif late_share >= d["slow_late_share"]:
        found.append(("slow", 0))
    elif not rising and progress >= d["plateau_progress"] and abs(change) < d["plateau_change"] + 2 * change_se:
        w = min(tail, int(d["window"]))
        band = max(d["plateau_change"] * level, 3 * noise / math.sqrt(w))
        means = np.convolve(y, np.ones(w) / w, mode="valid")
        above = means[: m - w] > tail_y.mean() + band
        first_in = int(np.argmin(above)) if not above.all() else m - w
        found.append(("plateau", steps[first_in]))
    order = [str(code) for code in pylrcore.Symptom]
    found = sorted(found, key=lambda f: order.index(f[0])) or [("healthy", -1)]
    return [f[0] for f in found], found[0][1]


# --- per-step streaming cost -------------------------------------------------------------------------


def feed(update, losses: list) -> None:
    for x in losses:
        update(x)


@pytest.fixture(scope="module")
def stream() -> list:
    return training_losses(STREAM, seed=1).tolist()


@pytest.mark.parametrize("impl", ["pylrcore", "python"])
def test_ema_update_per_call(benchmark, impl, stream):
    benchmark.group = f"EMA.update: {STREAM} calls"
    ema = pylrcore.EMA(0.98) if impl == "pylrcore" else PyEma(0.98)
    benchmark(feed, ema.update, stream)
    a, b = pylrcore.EMA(0.98), PyEma(0.98)
    assert all(a.update(x) == b.update(x) or math.isnan(x) for x in stream * 3)


@pytest.mark.parametrize("impl", ["pylrcore", "python"])
def test_detector_update_per_call(benchmark, impl, stream):
    benchmark.group = f"Detector.update: {STREAM} calls"
    det = Detector() if impl == "pylrcore" else PyDetector()
    benchmark(feed, det.update, stream)
    fast, slow = Detector(), PyDetector()
    for x in stream * 3:
        v, (step, flags, onset, s, best, z) = fast.update(x), slow.update(x)
        assert (v.step, v.flag_bits, v.onset_bits) == (step, flags, onset)
        assert v.smoothed == s and v.best == best and (v.zscore == z or math.isnan(z))


# --- whole histories ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history() -> np.ndarray:
    return training_losses(WHOLE, seed=2)


def python_detect_flags(losses: np.ndarray) -> np.ndarray:
    det = PyDetector()
    return np.array([det.update(x)[1] for x in losses.tolist()], dtype=np.uint32)


def pylrcore_codes(losses: np.ndarray) -> tuple:
    result = pylrcore.diagnose(losses)
    return [str(f.code) for f in result.findings], -1 if result.step is None else result.step


PYTHON_ROUNDS = dict(rounds=1 if QUICK else 3, iterations=1)  # seconds per round at 1e6: no need for more


@pytest.mark.parametrize("impl", ["pylrcore", "python"])
def test_detect_whole_history(benchmark, impl, history):
    benchmark.group = f"detect a whole history: {WHOLE:.0e} losses"
    if impl == "pylrcore":
        flags = benchmark(lambda: Detector().update_many(history).flags)
        expected = python_detect_flags(history)
    else:
        flags = benchmark.pedantic(python_detect_flags, (history,), **PYTHON_ROUNDS)
        expected = Detector().update_many(history).flags
    np.testing.assert_array_equal(flags, expected)


@pytest.mark.parametrize("impl", ["pylrcore", "python+numpy"])
def test_diagnose_whole_history(benchmark, impl, history):
    benchmark.group = f"diagnose a whole history: {WHOLE:.0e} losses"
    if impl == "pylrcore":
        result = benchmark(pylrcore_codes, history)
        expected = py_diagnose(history)
    else:
        result = benchmark.pedantic(py_diagnose, (history,), **PYTHON_ROUNDS)
        expected = pylrcore_codes(history)
    assert result == expected
