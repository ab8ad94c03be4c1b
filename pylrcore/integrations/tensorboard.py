"""TensorBoard: guard events and range-test curves into a ``torch.utils.tensorboard.SummaryWriter``.

>>> from torch.utils.tensorboard import SummaryWriter                # doctest: +SKIP
>>> guard = Guard(opt, model, on_event=GuardWriter(SummaryWriter()))  # doctest: +SKIP

Each event becomes a scalar ``guard/<kind>`` at its step (value = the statistic that crossed the
threshold: z-score, smoothed loss, number of non-finite elements) and a text line
``guard/events`` with the description and the response, so spikes and skips line up with the
loss curve in the TensorBoard UI.
"""

from __future__ import annotations

from typing import Any

from . import require

require(("tensorboard",), "tensorboard", "pylrcore.integrations.tensorboard")

from ..torch.guard import GuardEvent, describe_event  # noqa: E402

__all__ = ["GuardWriter", "log_range_test"]


class GuardWriter:
    """An ``on_event`` callable for :class:`pylrcore.torch.Guard` writing to ``writer`` (a SummaryWriter)."""

    def __init__(self, writer: Any, *, prefix: str = "guard", step_offset: int = 0) -> None:
        if not (hasattr(writer, "add_scalar") and hasattr(writer, "add_text")):
            raise TypeError(f"writer must be a torch.utils.tensorboard.SummaryWriter, got {type(writer).__name__}")
        self.writer = writer
        self.prefix = prefix
        self.step_offset = int(step_offset)  # when guard steps and the loop's global step differ

    def __call__(self, event: GuardEvent) -> None:
        step = event.step + self.step_offset
        self.writer.add_scalar(f"{self.prefix}/{event.kind}", event.value, step)
        self.writer.add_text(f"{self.prefix}/events",
                             f"step {step}: {describe_event(event)}, lr {event.lr:.3g} -> {event.action}", step)


def log_range_test(writer: Any, result: Any, *, tag: str = "lr_finder", step: int = 0) -> None:
    """Write a :class:`~pylrcore.FinderResult`: the curve as scalars indexed by iteration
    (``<tag>/loss``, ``<tag>/smoothed``, ``<tag>/lr``; TensorBoard's x axis is an integer step), the
    suggestion as ``<tag>/suggestion`` at ``step``, a text summary, and the figure when matplotlib
    is installed."""
    for i, (lr, loss, smooth) in enumerate(zip(result.lrs, result.losses, result.smoothed)):
        writer.add_scalar(f"{tag}/lr", float(lr), i)
        writer.add_scalar(f"{tag}/loss", float(loss), i)
        writer.add_scalar(f"{tag}/smoothed", float(smooth), i)
    if result.suggestion is not None:
        writer.add_scalar(f"{tag}/suggestion", float(result.suggestion), step)
    writer.add_text(f"{tag}/summary", str(result.details) + (f"; {result.diagnosis}" if result.diagnosis else ""), step)
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ax = result.plot()
    writer.add_figure(tag, ax.figure, global_step=step)
    plt.close(ax.figure)
