"""The range-test figure (matplotlib, optional): loss vs lr on a log axis, the smoothed curve the
suggestion was read from, the usable range, the suggestion and where the sweep stopped."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .suggestion import Suggestion, SweepStop

__all__ = ["plot_range_test", "plot_history"]


def plot_range_test(
    lrs: np.ndarray,
    losses: np.ndarray,
    details: Suggestion,
    *,
    ema: Optional[np.ndarray] = None,
    stop: Optional[SweepStop] = None,
    path: Optional[str] = None,
    ax: Any = None,
) -> Any:
    """Draw on ``ax`` (a new figure if None); write a PNG to ``path`` when given; return the Axes.

    ``details`` is the :class:`~pylrcore.suggestion.Suggestion` for this curve; ``ema`` the causal
    EMA a finder's stop rule used (drawn faintly next to the lag-free curve); ``stop`` the sweep's
    early stop (:class:`~pylrcore.suggestion.SweepStop`), marked when the analysis saw no divergence.
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
    elif stop is not None:
        ax.axvline(stop.lr, color="k", ls=":", label=f"stopped: {stop.short} at lr {stop.lr:.2g}")
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


def plot_history(history: Any, skip_start: int = 10, skip_end: int = 5, log_lr: bool = True,
                 show_lr: Optional[float] = None, ax: Any = None, suggest_lr: bool = True) -> Any:
    """torch-lr-finder's ``LRFinder.plot()`` on its ``history`` dict, argument for argument: the same
    checks and errors, one line for the curve, the steepest gradient of the (uniformly spaced)
    losses as one red dot, ``show_lr`` as a vertical line; returns ``ax`` or ``(ax, suggested_lr)``.
    A figure it made itself is shown (on an interactive backend)."""
    from .suggestion import gradient

    if skip_start < 0:
        raise ValueError("skip_start cannot be negative")
    if skip_end < 0:
        raise ValueError("skip_end cannot be negative")
    if show_lr is not None and not isinstance(show_lr, float):
        raise ValueError("show_lr must be float")
    lrs, losses = list(history["lr"]), list(history["loss"])
    if suggest_lr and len(lrs) < skip_start + skip_end + 2:
        raise RuntimeError(f"Need at least {skip_start + skip_end + 2} iterations to suggest a learning rate. "
                           f"Got {len(lrs)}")
    end = len(lrs) - skip_end
    lrs, losses = lrs[skip_start:end], losses[skip_start:end]
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'pylrcore[plot]'") from None
    fig = None
    if ax is None:
        fig, ax = plt.subplots()
    ax.plot(lrs, losses)
    suggested = None
    if suggest_lr:
        best = int(np.argmin(gradient(np.asarray(losses, dtype=np.float64)))) if len(losses) > 1 else 0
        suggested = lrs[best]
        ax.scatter(suggested, losses[best], s=75, marker="o", color="red", zorder=3, label="steepest gradient")
        ax.legend()
    if log_lr:
        ax.set_xscale("log")
    ax.set_xlabel("Learning rate")
    ax.set_ylabel("Loss")
    if show_lr is not None:
        ax.axvline(x=show_lr, color="red")
    if fig is not None and matplotlib.get_backend().lower() not in _NON_INTERACTIVE:
        plt.show()
    return (ax, suggested) if suggest_lr else ax


# Backends that cannot show a window: plt.show() there only warns.
_NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}
