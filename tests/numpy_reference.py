"""pylrcore's "steepest" rule written independently with numpy/scipy: the reference the tests and the
benchmark compare the compiled core with (same curve, same index)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.signal import lfilter


def debiased_ema(x: np.ndarray, beta: float) -> np.ndarray:
    return lfilter([1 - beta], [1, -beta], x) / (1 - beta ** np.arange(1, x.size + 1))


def robust_noise(raw: np.ndarray) -> float:
    """sd per point of the raw losses from the median absolute second difference."""
    return float(1.4826 * np.median(np.abs(np.diff(raw, 2))) / np.sqrt(6))


def smoothed_noise_factor(beta: float) -> float:
    """sd left of unit white noise after the EMA forwards then backwards: sqrt(sum of the squared
    impulse response (1-b)^2 b^|k| / (1-b^2)), summed numerically here."""
    k = np.arange(-4000, 4001)
    h = (1 - beta) ** 2 * beta ** np.abs(k) / (1 - beta**2)
    return float(np.sqrt(np.sum(h**2)))


def steepest_numpy(lrs: np.ndarray, raw: np.ndarray, diverge_factor: float = 4.0, zone=(0.1, 0.9),
                   significant: float = 8.0) -> Optional[int]:
    bad = ~np.isfinite(raw)
    cut = int(np.argmax(bad)) if bad.any() else raw.size
    beta = 1 - 2 / (max(3.0, 0.05 * cut) + 1)
    causal = debiased_ema(raw[:cut], beta)
    best_before = np.minimum.accumulate(causal)[:-1]
    over = causal[1:] > best_before + (diverge_factor - 1) * np.abs(best_before)
    if over.any():
        cut = 1 + int(np.argmax(over))
    smooth = debiased_ema(causal[:cut][::-1], beta)[::-1]
    slope = np.gradient(smooth, np.log(lrs[:cut]))
    m = int(np.argmin(smooth))
    peak = m - int(np.argmax(smooth[: m + 1][::-1]))
    top = smooth[peak]
    drop = top - smooth[m]
    noise_sds = significant * (1 + 1 / np.sqrt(cut - 2))
    test_beta = 1 - 2 / (max(5.0, 0.1 * cut) + 1)  # the significance test's wider smoothing
    wide = debiased_ema(debiased_ema(raw[:cut], test_beta)[::-1], test_beta)[::-1]
    low = int(np.argmin(wide))
    wide_drop = wide[: low + 1].max() - wide[low]
    if m < 2 or m <= peak or not drop > 0.01 * abs(top):
        return None
    if not wide_drop > noise_sds * robust_noise(raw[:cut]) * smoothed_noise_factor(test_beta):
        return None
    noise_drop = noise_sds * robust_noise(raw[:cut]) * smoothed_noise_factor(beta)
    start_fall = max(zone[0] * drop, noise_drop / 2)
    lo = peak + 1 + int(np.nonzero(smooth[peak : m + 1] > top - start_fall)[0][-1])
    hi = lo + int(np.argmax(smooth[lo : m + 1] <= top - max(zone[1] * drop, start_fall)))
    return lo + int(np.argmin(slope[lo : hi + 1]))
