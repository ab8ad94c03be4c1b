"""Suggestion: numpy.gradient parity, peer compatibility modes (re-derived rules and the installed
peers on the same curve), accuracy of pylrcore's own methods, reasons instead of errors, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pylrcore
from curves import lr_ladder, noisy_valley, torch_lr_finder_history, valley

torch = pytest.importorskip("torch")


# ---- gradient == numpy.gradient, bit for bit -------------------------------------------------------


@pytest.mark.parametrize("edge_order", [1, 2])
@pytest.mark.parametrize("seed", range(5))
def test_gradient_equals_numpy_nonuniform(edge_order: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-10, 10, 50))
    y = rng.normal(size=50)
    np.testing.assert_array_equal(pylrcore.gradient(y, x, edge_order=edge_order), np.gradient(y, x, edge_order=edge_order))
    np.testing.assert_array_equal(pylrcore.gradient(y, edge_order=edge_order), np.gradient(y, edge_order=edge_order))


def test_gradient_equals_numpy_on_log_lr_and_exactly_uniform_coordinates() -> None:
    lrs = lr_ladder(100)
    y = valley(lrs)
    np.testing.assert_array_equal(pylrcore.gradient(y, np.log(lrs)), np.gradient(y, np.log(lrs)))
    x = np.arange(20) * 0.25  # exactly uniform: numpy switches to its uniform formula
    np.testing.assert_array_equal(pylrcore.gradient(y[:20], x), np.gradient(y[:20], x))


def test_gradient_bad_input() -> None:
    with pytest.raises(ValueError, match="edge_order"):
        pylrcore.gradient([1.0, 2.0, 3.0], edge_order=3)
    with pytest.raises(ValueError, match="at least edge_order"):
        pylrcore.gradient([1.0, 2.0], edge_order=2)
    with pytest.raises(ValueError, match="same length"):
        pylrcore.gradient([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="monotonic"):
        pylrcore.gradient([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])


# ---- peer rules, re-derived from the peers' sources (see csrc/pylrcore/suggestion.hpp for lines) ------


def ref_torch_lr_finder(lrs, losses, skip_start=10, skip_end=5):
    if len(lrs) < skip_start + skip_end + 2:
        return None
    stop = len(lrs) - skip_end
    idx = int(np.gradient(np.asarray(losses[skip_start:stop], dtype=np.float64)).argmin())
    return float(lrs[skip_start + idx])


def ref_lightning(lrs, losses, skip_begin=10, skip_end=1):
    sl = slice(skip_begin, -skip_end)
    lo = torch.tensor(np.asarray(losses)[sl].tolist())
    lr = torch.tensor(np.asarray(lrs)[sl].tolist())
    keep = torch.isfinite(lo)
    if int(keep.sum()) < 2:
        return None
    g = torch.gradient(lo[keep], spacing=[lr[keep]])[0]
    idx = torch.arange(len(losses))[sl][keep][int(torch.argmin(g))]
    return float(lrs[int(idx)])


def _fastai_inputs(lrs, losses, num_it):
    lr = torch.tensor(np.asarray(lrs)[num_it // 10 : -5].tolist())
    lo = torch.tensor(np.asarray(losses)[num_it // 10 : -5].tolist())
    nan = torch.nonzero(torch.isnan(lo))
    if len(nan):
        lr, lo = lr[: int(nan.min())], lo[: int(nan.min())]
    return lr, lo


def ref_fastai(fn, lrs, losses, num_it=None):
    lr, lo = _fastai_inputs(lrs, losses, len(lrs) if num_it is None else num_it)
    n = len(lo)
    if fn == "valley":  # fastai's O(n^2) longest decreasing subsequence, literally
        if n == 0:
            return None
        lds, max_start, max_end = [1] * n, 0, 0
        for i in range(1, n):
            for j in range(i):
                if lo[i] < lo[j] and lds[i] < lds[j] + 1:
                    lds[i] = lds[j] + 1
                if lds[max_end] < lds[i]:
                    max_end, max_start = i, i - lds[i]
        third = (max_end - max_start) / 3
        return float(lr[max_start + int(third) + int(third / 2)])
    if fn == "steep":
        if n < 2:
            return None
        g = (lo[1:] - lo[:-1]) / (lr[1:].log() - lr[:-1].log())
        return float(lr[int(g.argmin())])
    if fn == "minimum":
        return None if n == 0 else float(lr[int(lo.argmin())]) / 10
    if fn == "slide":
        if n < 16:
            return None
        g = np.gradient(lo.numpy())
        r, l = -1, -16
        pick = lr[l]
        while l >= -n and abs(g[r] - g[l]) > 0.005:
            pick = lr[l]
            r, l = r - 1, l - 1
        return float(pick)
    raise AssertionError(fn)


def _recorded_curves():
    """Curves as the peers record them: smoothed raw losses of diverse shapes, some with NaN/inf."""
    rng = np.random.default_rng(42)
    out = []
    for k in range(60):
        n = int(rng.integers(20, 160))
        lrs = lr_ladder(n, 10 ** rng.uniform(-8, -5), 10 ** rng.uniform(-1, 1))
        raw = noisy_valley(lrs, seed=k, noise=float(rng.uniform(0.0, 0.3)), center=10 ** rng.uniform(-5, -2))
        hist = torch_lr_finder_history(raw, smooth_f=float(rng.choice([0.05, 0.2, 0.6])))
        if k % 7 == 3:
            hist[int(rng.integers(n // 2, n)) :] = np.nan
        if k % 11 == 5:
            hist[int(rng.integers(n // 2, n))] = np.inf
        out.append((lrs, hist))
    return out


CURVES = _recorded_curves()


def _sugg_lr(s: pylrcore.Suggestion):
    return s.lr


@pytest.mark.parametrize("k", range(len(CURVES)))
def test_compat_modes_match_rederived_rules(k: int) -> None:
    lrs, hist = CURVES[k]
    assert _sugg_lr(pylrcore.suggest(lrs, hist, "torch_lr_finder")) == ref_torch_lr_finder(lrs, hist)
    assert _sugg_lr(pylrcore.suggest(lrs, hist, "lightning")) == ref_lightning(lrs, hist)
    for fn in ("valley", "steep", "minimum", "slide"):
        assert _sugg_lr(pylrcore.suggest(lrs, hist, f"fastai_{fn}")) == ref_fastai(fn, lrs, hist), fn


def test_compat_skips_and_num_it_are_honoured() -> None:
    lrs, hist = CURVES[0]
    s = pylrcore.suggest(lrs, hist, "torch_lr_finder", skip_start=3, skip_end=0)
    assert s.lr == ref_torch_lr_finder(lrs, hist, 3, 0)
    s = pylrcore.suggest(lrs, hist, "lightning", skip_start=2, skip_end=4)
    assert s.lr == ref_lightning(lrs, hist, 2, 4)
    s = pylrcore.suggest(lrs, hist, "fastai_valley", num_it=300)
    assert s.lr == ref_fastai("valley", lrs, hist, num_it=300)


def test_compat_no_suggestion_where_the_peer_has_none() -> None:
    lrs = lr_ladder(20)
    hist = valley(lrs)
    s = pylrcore.suggest(lrs[:16], hist[:16], "torch_lr_finder")  # the peer raises RuntimeError
    assert not s.ok and "skip_start + skip_end + 2" in s.reason
    s = pylrcore.suggest(lrs, hist, "lightning", skip_end=0)  # the peer returns None
    assert not s.ok and s.status == "too_few_points"
    s = pylrcore.suggest(lrs, hist, "fastai_slide")  # the peer raises IndexError below 16 points
    assert not s.ok and "slice" in s.reason


# ---- the installed peers themselves on the same curve ------------------------------------------------


def test_matches_installed_torch_lr_finder(capsys: pytest.CaptureFixture[str]) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tlf = pytest.importorskip("torch_lr_finder")
    model = torch.nn.Linear(2, 1)
    finder = tlf.LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-3), torch.nn.MSELoss())
    for lrs, hist in CURVES[:30]:
        finder.history = {"lr": lrs.tolist(), "loss": hist.tolist()}
        fig, ax = plt.subplots()
        _, peer = finder.plot(ax=ax, suggest_lr=True)
        plt.close(fig)
        assert pylrcore.suggest(lrs, hist, "torch_lr_finder").lr == peer
    capsys.readouterr()


@pytest.mark.slow  # imports Lightning
def test_matches_installed_lightning_suggestion() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr_finder = pytest.importorskip("pytorch_lightning.tuner.lr_finder")
    for lrs, hist in CURVES:
        finder = lr_finder._LRFinder(mode="exponential", lr_min=lrs[0], lr_max=lrs[-1], num_training=len(lrs))
        finder.results = {"lr": lrs.tolist(), "loss": hist.tolist()}
        assert pylrcore.suggest(lrs, hist, "lightning").lr == finder.suggestion()


# ---- pylrcore's own methods -----------------------------------------------------------------------


@pytest.mark.parametrize("center", [1e-5, 3e-4, 1e-3, 1e-2])
def test_steepest_finds_the_true_steepest_point_on_a_clean_curve(center: float) -> None:
    lrs = lr_ladder(200)
    s = pylrcore.suggest(lrs, valley(lrs, center=center, rise_at=center * 300))
    step = np.log(lrs[1] / lrs[0])
    assert abs(np.log(s.lr / center)) <= 1.5 * step
    assert s.zone[0] < center < s.zone[1]
    assert s.zone[0] <= s.lr <= s.zone[1]


def test_own_steepest_is_more_accurate_than_the_peers_on_noisy_curves() -> None:
    """Zero-phase smoothing has no lag: the peers' single EMA shifts the curve towards larger lrs."""
    lrs = lr_ladder(100)
    center = 1e-3
    errors = {"steepest": [], "torch_lr_finder": [], "lightning": []}
    for seed in range(40):
        raw = noisy_valley(lrs, seed=seed, noise=0.08, center=center)
        errors["steepest"].append(abs(np.log10(pylrcore.suggest(lrs, raw, "steepest").lr / center)))
        hist = torch_lr_finder_history(raw)
        errors["torch_lr_finder"].append(abs(np.log10(pylrcore.suggest(lrs, hist, "torch_lr_finder").lr / center)))
        lhist = pylrcore.ema(raw, 0.98, kind="lightning")
        errors["lightning"].append(abs(np.log10(pylrcore.suggest(lrs, lhist, "lightning").lr / center)))
    med = {k: float(np.median(v)) for k, v in errors.items()}
    assert med["steepest"] < 0.3  # within a factor 2 of the truth, typically
    assert med["steepest"] < med["torch_lr_finder"] and med["steepest"] < med["lightning"]


def test_all_own_methods_give_lrs_inside_the_swept_range_and_before_divergence() -> None:
    lrs = lr_ladder(120)
    raw = noisy_valley(lrs, seed=3, noise=0.05)
    for method in pylrcore.METHODS:
        s = pylrcore.suggest(lrs, raw, method)
        assert s.ok, s.reason
        assert s.method == method
        assert lrs[0] / 10 <= s.lr <= lrs[s.analysed - 1]
        assert s.smoothed is not None and np.isfinite(s.smoothed[: s.analysed]).all()
    s = pylrcore.suggest(lrs, raw, "minimum")
    assert s.lr == pytest.approx(lrs[s.min_index] / 10)


def test_divergence_and_nan_cut_the_curve() -> None:
    lrs = lr_ladder(100)
    raw = valley(lrs)
    with_nan = raw.copy()
    with_nan[80:] = np.nan
    s = pylrcore.suggest(lrs, with_nan)
    assert s.ok and s.first_nonfinite == 80 and s.analysed <= 80
    s = pylrcore.suggest(lrs, raw)
    assert s.diverged_at is not None and s.lrs[s.diverged_at] > 0.1
    assert "diverged" in str(s)
    assert pylrcore.suggest(lrs, raw, diverge_factor=0).diverged_at is None


@pytest.mark.parametrize(
    ("losses", "status", "words"),
    [
        (np.full(50, np.nan), "all_nonfinite", "first loss is not finite"),
        (np.r_[valley(lr_ladder(50))[:3], np.full(47, np.inf)], "too_few_points", "non-finite"),
        (np.full(50, 2.0), "never_decreased", "never decreased"),
        (np.linspace(1.0, 3.0, 50), "never_decreased", "never decreased"),
    ],
)
def test_reasons_instead_of_errors(losses: np.ndarray, status: str, words: str) -> None:
    s = pylrcore.suggest(lr_ladder(50), losses)
    assert not s.ok and s.lr is None and s.status == status and words in s.reason
    assert "no suggestion" in str(s)


def test_too_few_points_reason() -> None:
    s = pylrcore.suggest([1e-3, 1e-2, 1e-1], [1.0, 0.5, 0.4])
    assert s.status == "too_few_points" and "more iterations" in s.reason


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lrs", "losses", "error", "match"),
    [
        ([], [], ValueError, "lrs is empty"),
        ([1e-3, 1e-2], [1.0], ValueError, "same length"),
        ([1e-3, np.nan, 1e-1], [1.0, 1.0, 1.0], ValueError, r"lrs\[1\] = nan is not finite"),
        ([1e-3, np.inf], [1.0, 1.0], ValueError, "not finite"),
        ([0.0, 1e-2], [1.0, 1.0], ValueError, "not positive"),
        ([-1e-3, 1e-2], [1.0, 1.0], ValueError, "not positive"),
        ([1e-2, 1e-3], [1.0, 1.0], ValueError, "strictly increasing"),
        ([1e-2, 1e-2], [1.0, 1.0], ValueError, "strictly increasing"),
        (np.ones((2, 2)), [1.0, 1.0], ValueError, "lrs must be 1-D"),
        ([1e-3, 1e-2], np.ones((2, 1)), ValueError, "losses must be 1-D"),
        (np.array(["1", "2"]), [1.0, 1.0], TypeError, "lrs must hold real numbers"),
    ],
)
def test_bad_curves(lrs: object, losses: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        pylrcore.suggest(lrs, losses)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "best"}, ValueError, "method must be one of"),
        ({"beta": 1.0}, ValueError, "beta"),
        ({"beta": 0.0}, ValueError, "beta"),
        ({"zone": (0.9, 0.1)}, ValueError, "zone"),
        ({"zone": 0.5}, TypeError, "zone"),
        ({"diverge_factor": 0.5}, ValueError, "diverge_factor"),
        ({"diverge_factor": float("nan")}, ValueError, "diverge_factor"),
        ({"min_points": 1}, ValueError, "min_points"),
        ({"skip_start": -1}, ValueError, "skip_start"),
        ({"skip_end": 1.5}, TypeError, "skip_end"),
        ({"num_it": 0}, ValueError, "num_it"),
        ({"lr_diff": 0}, ValueError, "lr_diff"),
        ({"thresh": -1}, ValueError, "thresh"),
    ],
)
def test_bad_options(kwargs: dict, error: type, match: str) -> None:
    lrs = lr_ladder(50)
    with pytest.raises(error, match=match):
        pylrcore.suggest(lrs, valley(lrs), **kwargs)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=80),
    st.lists(
        st.one_of(st.floats(min_value=-1e6, max_value=1e6), st.sampled_from([np.nan, np.inf, -np.inf])),
        min_size=80,
        max_size=80,
    ),
    st.sampled_from(pylrcore.METHODS + pylrcore.COMPAT_METHODS),
)
def test_property_never_crashes_and_answers_or_explains(n: int, values: list, method: str) -> None:
    lrs = lr_ladder(n)
    s = pylrcore.suggest(lrs, np.array(values[:n]), method)
    if s.ok:
        assert np.isfinite(s.lr) and s.lr > 0 and 0 <= s.index < n
        assert lrs[0] / 10 * 0.999 <= s.lr <= lrs[-1] * 1.001
    else:
        assert s.reason and s.lr is None


def _random_valley(seed: int) -> tuple:
    """A noisy valley of random length, noise and centre (the independent-implementation tests)."""
    rng = np.random.default_rng(seed)
    lrs = lr_ladder(int(rng.integers(30, 3000)))
    return lrs, noisy_valley(lrs, seed=seed, noise=float(rng.uniform(0.01, 0.2)), center=10 ** rng.uniform(-5, -2))


@pytest.mark.parametrize("seed", range(20))
def test_steepest_equals_independent_numpy_implementation(seed: int) -> None:
    from numpy_reference import steepest_numpy

    lrs, raw = _random_valley(seed)
    assert pylrcore.suggest(lrs, raw, "steepest").index == steepest_numpy(lrs, raw)


def test_one_blow_up_point_left_by_the_divergence_cut_does_not_hide_a_clear_drop():
    """The noise the drop is compared with is robust (median |residual|): a final 11.4 after a drop
    3.49 -> 2.40 (kept by a 5x divergence rule) used to inflate an RMS noise estimate to 1.07 and
    turn a clear drop into "never decreased"."""
    rng = np.random.default_rng(1)
    n = 20
    lrs = np.logspace(-5, -1, n)
    losses = np.concatenate([np.full(6, 3.49), np.linspace(3.49, 2.40, n - 7), [11.4]]) + 0.03 * rng.standard_normal(n)
    s = pylrcore.suggest(lrs, losses, diverge_factor=5)
    assert s.lr is not None and 1e-4 < s.lr < 1e-2, s.reason


# ---- significance: no confident lr where nothing was learned (issue 11, item 12) --------------------


@pytest.mark.parametrize("n", [30, 100, 300, 1000])
def test_flat_noisy_curves_get_no_suggestion_and_name_end_lr(n: int) -> None:
    """Repro 08: on flat curves with 2-10% noise suggest() returned an lr and a usable range ~80% of
    the time (any peak and later minimum among the noise's wiggles counted as a drop)."""
    rng = np.random.default_rng(n)
    lrs = np.logspace(-7, -4, n)
    for noise in (0.01, 0.02, 0.05, 0.10):
        results = [pylrcore.suggest(lrs, 0.7 * (1 + noise * rng.standard_normal(n))) for _ in range(500)]
        picked = sum(s.ok for s in results)
        assert picked <= 5, f"{noise:.0%} noise: {picked}/500 flat curves got an lr"
        for s in results:
            if not s.ok:
                assert s.status == "never_decreased" and s.zone is None
                assert "never decreased" in s.reason and "end_lr is too low" in s.reason and "0.0001" in s.reason


def test_repro_08_flat_curve_at_three_percent_noise() -> None:
    rng = np.random.default_rng(0)
    lrs = np.logspace(-7, -4, 100)
    assert sum(pylrcore.suggest(lrs, 0.7 + 0.03 * rng.standard_normal(100)).ok for _ in range(500)) <= 5
    s = pylrcore.suggest(lrs, 0.7 + 0.03 * np.random.default_rng(1).standard_normal(100))
    assert s.lr is None and s.zone is None and s.status == "never_decreased"
    assert s.noise == pytest.approx(0.03, rel=0.25) and s.drop is not None and s.drop > 0


def _fall(lrs: np.ndarray, depth: float, center: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A loss of 2.3 that falls by `depth` of it around `center` (logistic in log10 lr), rises past
    0.3, with multiplicative noise."""
    x = np.log10(lrs)
    base = 2.3 * (1 - depth / (1 + np.exp(-(x - np.log10(center)) / 0.5))) + np.where(x > -0.5, 8 * (x + 0.5) ** 2, 0)
    return base * (1 + noise * rng.standard_normal(lrs.size))


@pytest.mark.parametrize("n", [30, 100, 300, 1000])
def test_clear_drops_are_still_picked(n: int) -> None:
    """The significance test must not lose real drops: ones of at least 10 sd of the raw noise are
    all found, and the pick stays near the steepest point."""
    rng = np.random.default_rng(100 + n)
    lrs = lr_ladder(n, 1e-6, 10)
    for depth, noise in [(0.78, 0.02), (0.78, 0.05), (0.78, 0.10), (0.5, 0.02), (0.5, 0.05), (0.3, 0.02)]:
        errors = []
        for _ in range(100):
            center = 10 ** rng.uniform(-4.5, -2.5)
            s = pylrcore.suggest(lrs, _fall(lrs, depth, center, noise, rng))
            assert s.ok, f"depth {depth}, noise {noise}: {s.reason}"
            assert s.zone[0] <= s.lr <= s.zone[1]
            errors.append(abs(np.log10(s.lr / center)))
        assert np.median(errors) < 0.35, (depth, noise)


def test_usable_range_starts_below_the_noise_level() -> None:
    """On a noisy flat start, 10% of the drop is reached inside the noise: the usable range must
    start where the loss is clearly below its starting level, not decades earlier."""
    lrs = lr_ladder(100, 1e-7, 10)
    starts = []
    for seed in range(30):
        raw = _fall(lrs, 0.3, 1e-3, 0.05, np.random.default_rng(seed))
        s = pylrcore.suggest(lrs, raw)
        assert s.ok
        starts.append(np.log10(s.zone[0]))
    # 10% of the fall is reached at 10^-4.1 (its centre is 1e-3); noise must not move the start of the
    # range by decades (it did: down to the first lr, 1e-7, on some seeds).
    assert min(starts) > -5.2 and np.std(starts) < 0.35 and abs(np.median(starts) + 3.9) < 0.3


def test_sweep_that_diverges_before_falling_says_so() -> None:
    lrs = lr_ladder(60, 1e-3, 10)
    raw = 0.7 * (1 + 0.05 * np.random.default_rng(3).standard_normal(60))
    raw[45:] *= np.exp(np.arange(15))  # blows up without having fallen
    s = pylrcore.suggest(lrs, raw)
    assert s.status == "never_decreased" and s.diverged_at is not None
    assert "diverged at lr" in s.reason and "smaller lr" in s.reason and "end_lr" not in s.reason


# ---- own methods depend on the curve, not on its sampling (issue 11, item 13) -----------------------


@pytest.mark.parametrize("method", pylrcore.METHODS)
def test_same_curve_sampled_at_100_300_1000_points_gives_the_same_pick(method: str) -> None:
    """Repro 10: slide counted lr_diff and its threshold in points, so on a 1000-point sweep it
    stopped at once, next to the divergence (0.3 here instead of 3e-4)."""
    picks = []
    for n in (100, 300, 1000):
        lrs = lr_ladder(n)
        picks.append(pylrcore.suggest(lrs, valley(lrs), method).lr)
    assert max(picks) / min(picks) < 1.25, picks
    ratios = []
    for seed in range(20):
        noisy = []
        for n in (100, 300, 1000):
            lrs = lr_ladder(n)
            noisy.append(pylrcore.suggest(lrs, valley(lrs) + np.random.default_rng(seed).normal(0, 0.02, n), method).lr)
        ratios.append(max(noisy) / min(noisy))
    assert np.median(ratios) < 1.6 and max(ratios) < 2.5, ratios


def test_slide_stays_in_the_usable_range_on_long_sweeps() -> None:
    for n in (100, 300, 1000):
        lrs = lr_ladder(n)
        s = pylrcore.suggest(lrs, valley(lrs) + np.random.default_rng(n).normal(0, 0.02, n), "slide")
        assert s.ok and s.zone[0] <= s.lr <= s.zone[1]
        assert s.lr < lrs[s.analysed - 1] / 100  # far from where the curve was cut


def test_slide_needs_a_sweep_wider_than_lr_diff() -> None:
    lrs = np.logspace(-3, -2, 50)  # one decade; lr_diff=15 is 1.2 decades at fastai's sampling
    s = pylrcore.suggest(lrs, valley(lrs, center=3e-3, width=0.1), "slide")
    assert s.status == "too_few_points" and "decades" in s.reason
    assert pylrcore.suggest(lrs, valley(lrs, center=3e-3, width=0.1), "slide", lr_diff=5).ok


# ---- one divergence factor (issue 11, item 14) --------------------------------------------------------


def test_one_divergence_factor_is_the_default_everywhere() -> None:
    import inspect

    from pylrcore import cli
    from pylrcore.cli import demo
    from pylrcore._native import _core
    from pylrcore.torch.finder import LRFinder

    assert pylrcore.DIVERGE_FACTOR == _core.DIVERGE_FACTOR == 4.0
    assert inspect.signature(pylrcore.suggest).parameters["diverge_factor"].default == pylrcore.DIVERGE_FACTOR
    assert inspect.signature(LRFinder.range_test).parameters["diverge_th"].default == pylrcore.DIVERGE_FACTOR
    assert inspect.signature(demo.range_test).parameters["diverge_th"].default == pylrcore.DIVERGE_FACTOR
    parser = cli._build_parser()
    for command in (["suggest", "x.csv"], ["find", "m:f"]):
        assert parser.parse_args(command).diverge_factor == pylrcore.DIVERGE_FACTOR


def test_divergence_cut_at_the_factor() -> None:
    lrs = lr_ladder(100)
    raw = valley(lrs)
    at_default = pylrcore.suggest(lrs, raw)
    assert at_default.diverged_at == pylrcore.suggest(lrs, raw, diverge_factor=pylrcore.DIVERGE_FACTOR).diverged_at
    assert pylrcore.suggest(lrs, raw, diverge_factor=8).diverged_at > at_default.diverged_at


@pytest.mark.parametrize("beta", [0.01, 0.3, 0.99])
def test_a_user_beta_keeps_the_usable_range_ordered(beta: float) -> None:
    """The significance test has its own smoothing; with a user's beta the pick's curve may keep more
    noise than it, and the usable range must still be a range around the pick."""
    lrs = lr_ladder(100)
    for seed in range(10):
        s = pylrcore.suggest(lrs, noisy_valley(lrs, seed=seed, noise=0.1), beta=beta)
        if s.ok:
            assert s.zone_indices[0] <= s.index <= s.zone_indices[1] and s.zone[0] <= s.zone[1]
        else:
            assert s.reason


@pytest.mark.peers
def test_compat_modes_take_duplicate_lrs_as_their_peers_do():
    """A finder that records an lr twice: torch-lr-finder's plot() and Lightning's suggestion()
    answer, and so do the compat modes, with the same lr; pylrcore's own methods still refuse."""
    import contextlib
    import io
    import warnings

    tlf = pytest.importorskip("torch_lr_finder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorch_lightning.tuner.lr_finder import _LRFinder
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    for _ in range(40):
        lrs = list(np.logspace(-5, 0, 60))
        losses = list(2 - np.tanh(np.log10(lrs) + 3) + 0.05 * rng.standard_normal(60))
        for d in sorted(rng.choice(58, 3, replace=False) + 1, reverse=True):
            lrs.insert(d, lrs[d])
            losses.insert(d, losses[d] + 0.01 * rng.standard_normal())
        lightning = _LRFinder("exponential", 1e-5, 1, len(lrs))
        lightning.results = {"lr": lrs, "loss": losses}
        with contextlib.redirect_stderr(io.StringIO()):
            assert pylrcore.suggest(lrs, losses, "lightning").lr == lightning.suggestion()
        model = torch.nn.Linear(1, 1)
        peer = tlf.LRFinder(model, torch.optim.SGD(model.parameters(), lr=1.0), torch.nn.MSELoss())
        peer.history = {"lr": lrs, "loss": losses}
        fig, ax = plt.subplots()
        with contextlib.redirect_stdout(io.StringIO()):
            _, expected = peer.plot(ax=ax)
        plt.close(fig)
        assert pylrcore.suggest(lrs, losses, "torch_lr_finder").lr == expected
    with pytest.raises(ValueError, match="strictly increasing"):
        pylrcore.suggest(lrs, losses, "steepest")
    with pytest.raises(ValueError, match="non-decreasing"):
        pylrcore.suggest(lrs[::-1], losses, "lightning")


@pytest.mark.parametrize("seed", range(20))
def test_capped_is_the_smaller_of_steepest_and_a_tenth_of_the_minimum(seed: int) -> None:
    """The default rule, re-derived from two independent readings of the same curve."""
    from numpy_reference import steepest_numpy

    lrs, raw = _random_valley(seed)
    minimum = pylrcore.suggest(lrs, raw, "minimum")
    expected = min(lrs[steepest_numpy(lrs, raw)], minimum.lr)
    s = pylrcore.suggest(lrs, raw)
    assert s.method == pylrcore.DEFAULT_METHOD == "capped"
    assert s.lr == expected and s.confidence == "high"
    assert s.zone == pylrcore.suggest(lrs, raw, "steepest").zone


def test_a_noisy_fall_confirmed_by_divergence_gets_a_low_confidence_pick() -> None:
    """Small-batch regression: the per-batch loss varies by 50%, the fall is real but short of the
    significance threshold; the explosion afterwards corroborates it. A flagged pick, derived from
    the minimum, instead of no answer; flat noise without divergence still gets none."""
    lrs = lr_ladder(100, 1e-7, 10)
    picked = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        level = 1.2 - 0.6 / (1 + np.exp(-(np.log10(lrs) + 2) * 2))
        raw = level * (1 + 0.3 * rng.standard_normal(100))
        raw[85:] *= np.exp(np.arange(15))
        s = pylrcore.suggest(lrs, raw)
        if s.confidence == "low":
            assert s.lr == pytest.approx(lrs[s.min_index] / 10) and s.zone == (lrs[s.min_index],) * 2
            assert "low confidence" in s.reason and "diverged at lr" in s.reason and "low confidence" in str(s)
            # every method derived from the minimum says so with the same lr, not the minimum's own
            assert pylrcore.suggest(lrs, raw, "steepest").lr == pytest.approx(s.lr)
            assert pylrcore.suggest(lrs, raw, "minimum").lr == pytest.approx(s.lr)
            picked.append(s)
        else:
            assert s.ok or s.status == "never_decreased"
    assert picked  # the regime exists on these curves
    flat = 0.7 * (1 + 0.3 * np.random.default_rng(0).standard_normal(100))
    assert pylrcore.suggest(lrs, flat).lr is None


def test_keyword_defaults_are_the_core_defaults() -> None:
    """suggest()'s signature and the core's SuggestOptions hold the same defaults (the method aside:
    the core's is the plain steepest rule, the Python default is DEFAULT_METHOD)."""
    import inspect

    from pylrcore._native import _core

    core = _core.suggest_defaults()
    p = {k: v.default for k, v in inspect.signature(pylrcore.suggest).parameters.items()}
    assert p["method"] == pylrcore.DEFAULT_METHOD and p["beta"] is None and core["beta"] < 0
    assert (p["diverge_factor"], p["zone"], p["min_points"]) == (core["diverge_factor"], (core["zone_lo"], core["zone_hi"]), core["min_points"])
    assert (p["lr_diff"], p["thresh"], p["adjust_value"]) == (core["slide_lr_diff"], core["slide_thresh"], core["slide_adjust"])
    assert p["skip_start"] is p["skip_end"] is p["num_it"] is None and core["skip_start"] == core["skip_end"] == core["num_it"] == -1
