"""The range-test figure (matplotlib, optional): loss vs lr on a log axis, the smoothed curve the
suggestion was read from, the usable range, the suggestion and where the sweep stopped."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .suggestion import Suggestion

__all__ = ["plot_range_test"]


def plot_range_test(
    lrs: np.ndarray,
    losses: np.ndarray,
    details: Suggestion,
    *,
    ema: Optional[np.ndarray] = None,
    stop_reason: str = "",
    path: Optional[str] = None,
    ax: Any = None,
) -> Any:
    """Draw on ``ax`` (a new figure if None); write a PNG to ``path`` when given; return the Axes.

    ``details`` is the :class:`~pylrcore.suggestion.Suggestion` for this curve; ``ema`` the causal
    EMA a finder's stop rule used (drawn faintly next to the lag-free curve).
    """
    try:
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'pylrcore[plot]'") from None
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, color="0.75", lw=1, label="loss")
    if details.smoothed is not None:  # the lag-free curve the suggestion was read from
        if ema is not None:
            ax.plot(lrs, ema, color="C0", lw=1, alpha=0.4, label="EMA (stop rule)")
        ax.plot(lrs, details.smoothed, color="C0", lw=2, label="smoothed (zero-phase)")
    elif ema is not None:
        ax.plot(lrs, ema, color="C0", lw=2, label="smoothed")
    if details.zone:
        ax.axvspan(*details.zone, color="C2", alpha=0.15, label="usable range")
    if details.lr is not None:
        ax.axvline(details.lr, color="C3", ls="--", label=f"suggested lr {details.lr:.2g} ({details.method})")
    # Where the loss diverged, at the same lr the suggestion's text names (its divergence cut,
    # DIVERGE_FACTOR x the running minimum unless the caller chose another factor); the sweep's own
    # stop, which lags behind it, only when the analysis saw no divergence.
    end = details.diverged_at if details.diverged_at is not None else details.first_nonfinite
    if end is not None:
        what = "diverged" if details.diverged_at is not None else "non-finite"
        ax.axvline(lrs[end], color="k", ls=":", label=f"loss {what} at lr {lrs[end]:.2g}")
    elif stop_reason:
        ax.axvline(lrs[-1], color="k", ls=":", label="stopped: " + stop_reason.split(" (")[0])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    finite = losses[np.isfinite(losses)]
    if finite.size:
        top = min(float(finite.max()), float(finite[0]) * 2.5 if finite[0] > 0 else float(finite.max()))
        ax.set_ylim(float(finite.min()) - 0.05 * abs(float(finite.min())), top * 1.05 if top > 0 else top + 1)
    ax.legend(loc="best", fontsize=8)
    if fig is not None:
        fig.tight_layout()
    if path is not None:
        ax.figure.savefig(path, dpi=110)
        if fig is not None:
            plt.close(fig)
    return ax
