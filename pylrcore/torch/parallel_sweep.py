"""Parallel lr sweep: train K copies of a model at K learning rates at once, on the same batches, and
keep the lr that trained best.

A range test's lr grows while the model learns, so its pick confounds the two; training a few
candidates for a while and comparing them does not. ``sweep`` makes that cheap: the K replicas'
parameters and buffers are stacked and one pass runs all of them per step, every replica on the same
batches (common random numbers: the comparison's noise cancels), each with its own optimizer state
and lr. ``result.engine`` says how: "stacked" (a Sequential of common layers: one batched kernel per
layer, SGD/Adam/AdamW as one update on the stacks; each replica bit-equal to training alone, see
``_stacked``), "vmap" (other models: one ``torch.func.vmap`` pass; equal to ~1 ulp per step), or
"sequential" (a model vmap cannot run: data-dependent control flow, ``.item()`` in forward, ops
without a batching rule; same results, slower, and ``result.note`` says why). Optimizers other than
SGD/Adam/AdamW run as the user's class over per-replica param groups (views into the stacks). A
replica whose loss becomes NaN/inf or explodes is stopped; the others go on. The user's
model, optimizer, gradients and RNG states are restored exactly afterwards (``pylrcore`` snapshot).

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> x = torch.randn(256, 8); y = x @ torch.randn(8, 1)
>>> loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
>>> model = torch.nn.Linear(8, 1)
>>> result = sweep(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss(), loader,
...                lrs=[1e-3, 1e-2, 1e-1], steps=40)
>>> result.best_lr
0.1
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._checks import check_int, check_real
from ._snapshot import Snapshot, interrupt_shield
from ..smoothing import EMA
from ..diagnosis import Diagnosis, diagnose
from ._stacked import StackedModel, Unsupported

__all__ = ["sweep", "SweepResult"]

_DIVERGE_FACTOR = 4.0


@dataclass
class SweepResult:
    """What a parallel sweep measured. ``losses[k, t]``: replica k's training loss at step t (NaN
    once it was stopped); ``val_losses[k]``: its validation loss after training (None without a
    ``val_loader``); ``scores[k]``: what ranks the replicas (the validation loss, else the mean
    training loss over the last tenth of the steps; inf for a diverged replica)."""

    lrs: np.ndarray
    losses: np.ndarray
    val_losses: Optional[np.ndarray]
    scores: np.ndarray
    best_lr: Optional[float]
    diverged_at: List[Optional[int]]
    diagnoses: List[Optional[Diagnosis]] = field(repr=False)
    vectorized: bool
    note: str = ""
    engine: str = ""  # "stacked" (batched kernels), "vmap", or "sequential" (one replica after another)

    def __repr__(self) -> str:
        best = "None" if self.best_lr is None else f"{self.best_lr:.3g}"
        stopped = sum(d is not None for d in self.diverged_at)
        return (f"SweepResult(best_lr={best}, lrs={len(self.lrs)}, steps={self.losses.shape[1]}, "
                f"diverged={stopped}, engine={self.engine or self.vectorized})")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "lrs": self.lrs.tolist(),
            "losses": [[None if not math.isfinite(v) else v for v in row] for row in self.losses.tolist()],
            "val_losses": None if self.val_losses is None else [_finite_or_none(v) for v in self.val_losses],
            "scores": [_finite_or_none(v) for v in self.scores],
            "best_lr": self.best_lr,
            "diverged_at": list(self.diverged_at),
            "diagnoses": [None if d is None else d.code.value for d in self.diagnoses],
            "vectorized": self.vectorized,
            "note": self.note,
            "engine": self.engine,
        }

    def plot(self, path: Optional[str] = None) -> Any:
        """Loss against step for every lr (coloured by lr) and the score against the lr; returns the
        figure, writes a PNG to ``path`` when given."""
        try:
            import matplotlib

            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("plotting needs matplotlib: pip install 'pylrcore[plot]'") from None
        fig, (curves, scores) = plt.subplots(1, 2, figsize=(11, 4.2))
        colours = plt.get_cmap("viridis")(np.linspace(0, 1, len(self.lrs)))
        for k, lr in enumerate(self.lrs):
            curves.plot(self.losses[k], color=colours[k], lw=1, label=f"lr {lr:.3g}"
                        + (" (diverged)" if self.diverged_at[k] is not None else ""))
        curves.set_xlabel("step")
        curves.set_ylabel("training loss")
        curves.set_yscale("log" if np.nanmin(self.losses, initial=np.inf) > 0 else "linear")
        curves.legend(fontsize=7, loc="upper right")
        ok = np.isfinite(self.scores)
        scores.plot(self.lrs[ok], self.scores[ok], "o-", color="tab:blue")
        if self.best_lr is not None:
            scores.axvline(self.best_lr, color="tab:green", ls="--", label=f"best lr {self.best_lr:.3g}")
            scores.legend(fontsize=8)
        scores.set_xscale("log")
        scores.set_xlabel("learning rate")
        scores.set_ylabel("validation loss" if self.val_losses is not None else "final training loss")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig


def _finite_or_none(v: float) -> Optional[float]:
    return float(v) if math.isfinite(v) else None


# ---- the replicas -------------------------------------------------------------------------------


class _Replicas:
    """K stacked copies of the model's parameters (leaves, for autograd) and buffers, and one
    optimizer of the user's class whose param groups are per-replica views into the stacks."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lrs: Sequence[float]) -> None:
        from ._stacked import StackedOptimizer, Unsupported

        k = len(lrs)
        self.k = k
        self.params: Dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            stacked = p.detach().unsqueeze(0).repeat(k, *([1] * p.dim()))
            self.params[name] = stacked.requires_grad_(p.requires_grad)
        self.buffers: Dict[str, torch.Tensor] = {
            name: b.detach().unsqueeze(0).repeat(k, *([1] * b.dim())) for name, b in model.named_buffers()}
        name_of = {id(p): name for name, p in model.named_parameters()}
        missing = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in name_of]
        if missing:
            raise ValueError("the optimizer trains parameters that are not the model's: sweep needs "
                             "optimizer = Opt(model.parameters(), ...) (or groups of them)")
        self.trainable = [(name, t) for name, t in self.params.items() if t.requires_grad]
        # SGD / Adam / AdamW: one update on the stacks (a few kernels per parameter for all replicas);
        # other optimizers: the user's class over per-replica param groups (K x the kernels)
        self.stacked_optimizer: Optional[StackedOptimizer] = None
        try:
            self.stacked_optimizer = StackedOptimizer(optimizer, self.params, name_of, lrs)
            return
        except Unsupported:
            pass
        # views[name][r]: replica r's parameter, a view into the stack the optimizer updates in place
        self.views = {name: [t.detach()[r] for r in range(k)] for name, t in self.params.items()}
        base = float(optimizer.param_groups[0]["lr"])
        groups = []
        for r, lr in enumerate(lrs):
            for g in optimizer.param_groups:
                ratio = float(g["lr"]) / base if base > 0 else 1.0
                settings = {key: value for key, value in g.items() if key not in ("params", "lr", "initial_lr")}
                if settings.get("foreach", False) is None and not settings.get("fused"):
                    # torch picks the per-tensor loop on the CPU; with K x more, smaller tensors the
                    # multi-tensor kernels are several times faster (and equal bit for bit: tested)
                    settings["foreach"] = True
                groups.append({**settings, "lr": lr * ratio,
                               "params": [self.views[name_of[id(p)]][r] for p in g["params"]]})
        # The groups carry every setting; the constructor gets the defaults it takes (AdamW's defaults
        # hold a key its own __init__ does not accept).
        accepted = inspect.signature(type(optimizer).__init__).parameters
        self.optimizer = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items() if k in accepted})
        for param, state in optimizer.state.items():  # each replica continues from the user's optimizer state
            for r in range(k):
                view = self.views[name_of[id(param)]][r]
                self.optimizer.state[view] = {key: v.detach().clone() if torch.is_tensor(v) else v
                                              for key, v in state.items()}

    def step(self, active: Sequence[bool]) -> None:
        """One optimizer step of every replica. The stacked optimizer updates stopped replicas too (their
        gradient is zero, they are never read again: cheaper than masking); the param groups skip them."""
        if self.stacked_optimizer is not None:
            self.stacked_optimizer.step()
            return
        self.hand_gradients(active)
        self.optimizer.step()

    def hand_gradients(self, active: Sequence[bool]) -> None:
        """Point every active replica's views at its slice of the stacked gradient; stopped ones get
        None (the optimizer leaves them alone)."""
        for name, stacked in self.trainable:
            grad = stacked.grad
            for r, view in enumerate(self.views[name]):
                view.grad = grad[r] if (grad is not None and active[r]) else None
            stacked.grad = None

    def replica(self, r: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        return ({n: t[r] for n, t in self.params.items()}, {n: t[r] for n, t in self.buffers.items()})


def _loss_function(model: torch.nn.Module, criterion: Any, train_step: Any) -> Callable[..., torch.Tensor]:
    """loss(params, buffers, batch): the model's forward and the criterion with the given tensors in
    place of the model's own (torch.func.functional_call), for one replica or, under vmap, all."""
    from torch.func import functional_call

    from .finder import loss_from

    if train_step is not None:
        wrapper = _StepModule(model, train_step)

        def custom(params: Dict[str, torch.Tensor], buffers: Dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
            loss: torch.Tensor = functional_call(wrapper, ({"model." + n: t for n, t in params.items()},
                                                           {"model." + n: t for n, t in buffers.items()}), (batch,))
            return loss

        return custom

    def loss(params: Dict[str, torch.Tensor], buffers: Dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        if isinstance(batch, dict):  # the finder's conventions: model(**batch), model(inputs), model(batch)
            out = functional_call(model, (params, buffers), (), batch)
        elif isinstance(batch, (list, tuple)):
            out = functional_call(model, (params, buffers), (batch[0],))
        else:
            out = functional_call(model, (params, buffers), (batch,))
        return loss_from(out, batch, criterion)

    return loss


class _StepModule(torch.nn.Module):
    """Wraps ``train_step(model, batch)`` as a module, so functional_call can swap the model's tensors."""

    def __init__(self, model: torch.nn.Module, step: Any) -> None:
        super().__init__()
        self.model = model
        self.step = step

    def forward(self, batch: Any) -> Any:
        return self.step(self.model, batch)


# ---- the sweep ----------------------------------------------------------------------------------


def sweep(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Optional[Callable[..., torch.Tensor]],
    train_loader: Any,
    lrs: Sequence[float],
    steps: int = 100,
    val_loader: Any = None,
    *,
    train_step: Optional[Callable[[torch.nn.Module, Any], torch.Tensor]] = None,
    vectorize: bool = True,
    tolerance: float = 0.0,
) -> SweepResult:
    """Train ``len(lrs)`` copies of ``model`` for ``steps`` optimizer steps, copy k at ``lrs[k]``
    (group lr ratios kept), all on the same batches, and return a :class:`SweepResult`.

    ``optimizer`` gives the class, the hyperparameters and the starting state of every copy's
    optimizer (any ``torch.optim`` optimizer built on ``model.parameters()``). ``criterion`` and
    ``train_step`` as in :meth:`pylrcore.LRFinder.range_test`. ``vectorize=False`` runs the copies
    one after another (the fallback, forced). ``tolerance``: ``best_lr`` is the smallest lr whose
    score is within ``tolerance`` x |best score| of the best (0: the best score itself; ties and
    near-ties go to the smaller, safer lr). The model, optimizer, gradients and RNG states are
    restored exactly afterwards.

    Under ``torch.distributed`` the copies are shared out over the ranks (copy k on rank k % world)
    and every rank returns the whole result. Give every rank the same, unsharded batches (not a
    DistributedSampler's shard): the copies are compared on the same data."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    try:
        lr_values = [check_real(v, "lrs[i]") for v in lrs]
    except TypeError:
        raise TypeError(f"lrs must be a sequence of numbers, got {lrs!r}") from None
    if not lr_values or any(v <= 0 for v in lr_values):
        raise ValueError(f"lrs must be one or more learning rates > 0, got {list(lrs)!r}")
    steps = check_int(steps, "steps", minimum=1)
    tolerance = check_real(tolerance, "tolerance")
    if tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if steps > 10**8:
        raise ValueError(f"steps must be at most 10**8, got {steps}")
    from .finder import Cycle

    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    mine = list(range(dist.get_rank(), len(lr_values), dist.get_world_size())) if distributed else \
        list(range(len(lr_values)))
    saved = Snapshot(model, optimizer).take()
    with interrupt_shield():
        try:
            saved.detach_grads()
            model.train()
            local = _train(model, optimizer, criterion, train_step, Cycle(train_loader, "train_loader"),
                           val_loader, [lr_values[i] for i in mine], steps, vectorize, tolerance) if mine else None
        finally:
            saved.restore()
    if not distributed:
        assert local is not None
        return local
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (mine, local))
    return _merge(parts, lr_values, steps, tolerance)


def _best_index(lrs: Sequence[float], scores: np.ndarray, tolerance: float) -> Optional[int]:
    """The replica kept: the smallest lr whose score is within ``tolerance`` x |best| of the best
    score (the best itself when tolerance is 0; the first of equal lrs); None when all diverged."""
    finite = np.isfinite(scores)
    if not finite.any():
        return None
    low = float(scores[finite].min())
    near = [i for i in range(len(scores)) if finite[i] and scores[i] <= low + tolerance * abs(low)]
    return min(near, key=lambda i: (lrs[i], i))


def _merge(parts: List[Any], lrs: List[float], steps: int, tolerance: float = 0.0) -> SweepResult:
    """One result from the ranks' parts (each: the copies it trained, by index, and their result)."""
    k = len(lrs)
    losses = np.full((k, steps), np.nan)
    scores = np.full(k, np.inf)
    val: Optional[np.ndarray] = None
    diverged: List[Optional[int]] = [None] * k
    diagnoses: List[Optional[Diagnosis]] = [None] * k
    vectorized, notes, engines = True, [], []
    for indices, part in parts:
        if part is None:
            continue
        for j, i in enumerate(indices):
            losses[i] = part.losses[j]
            scores[i] = part.scores[j]
            diverged[i] = part.diverged_at[j]
            diagnoses[i] = part.diagnoses[j]
            if part.val_losses is not None:
                val = np.full(k, np.inf) if val is None else val
                val[i] = part.val_losses[j]
        vectorized = vectorized and part.vectorized
        if part.engine not in engines:
            engines.append(part.engine)
        if part.note and part.note not in notes:
            notes.append(part.note)
    best = _best_index(lrs, scores, tolerance)
    return SweepResult(lrs=np.asarray(lrs), losses=losses, val_losses=val, scores=scores,
                       best_lr=None if best is None else lrs[best], diverged_at=diverged, diagnoses=diagnoses,
                       vectorized=vectorized, note="; ".join(notes), engine="+".join(engines))


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion: Any, train_step: Any,
           batches: Any, val_loader: Any, lrs: List[float], steps: int, vectorize: bool,
           tolerance: float = 0.0) -> SweepResult:
    replicas = _Replicas(model, optimizer, lrs)
    k = len(lrs)
    loss_fn = _loss_function(model, criterion, train_step)
    losses = np.full((k, steps), np.nan)
    active = [True] * k
    diverged: List[Optional[int]] = [None] * k
    smoothers = [EMA(0.9) for _ in range(k)]
    starts: List[float] = [math.nan] * k
    note = ""
    run = _vectorized(loss_fn) if vectorize else None
    stacked = _stacked_model(model, criterion) if vectorize and train_step is None else None
    if not vectorize:
        note = "vectorize=False: replicas run one after another"
    for t in range(steps):
        batch = batches.next()
        step_losses: Optional[torch.Tensor] = None
        if stacked is not None:
            try:
                step_losses = stacked.losses(replicas.params, replicas.buffers, batch, k)
            except Exception:  # a layer the stacked form cannot run with this batch: vmap (or its fallback) instead
                if t > 0:
                    raise
                stacked = None  # vmap instead, from scratch (a failed pass may have touched buffers)
                replicas = _Replicas(model, optimizer, lrs)
        if step_losses is None and run is not None:
            try:
                step_losses = run(replicas.params, replicas.buffers, batch)
            except Exception as e:  # a model vmap cannot run: the same training, one replica at a time
                if t > 0:
                    raise
                run = None
                note = f"vmap could not run this model ({type(e).__name__}: {str(e).splitlines()[0][:160]}); " \
                       "replicas ran one after another (same results, slower)"
                replicas = _Replicas(model, optimizer, lrs)  # buffers a failed pass may have touched
        if step_losses is None:
            step_losses = torch.stack([loss_fn(*replicas.replica(r), batch).reshape(()) if active[r]
                                       else torch.zeros((), device=_device_of(model)) for r in range(k)])
        values = step_losses.detach().double().tolist()
        for r, value in enumerate(values):
            if not active[r]:
                continue
            losses[r, t] = value
            smoothed = smoothers[r].update(value)
            if t == 0:
                starts[r] = value
            # Diverged: NaN/inf, or the smoothed loss far above where this replica started (a rule that
            # a healthy run, whose loss only falls, never meets; the range test's "x best" would, near 0).
            if not math.isfinite(value) or (starts[r] > 0 and smoothed > _DIVERGE_FACTOR * starts[r]):
                active[r] = False
                diverged[r] = t
        if not any(active):
            break
        mask = torch.tensor(active, dtype=step_losses.dtype, device=step_losses.device)
        # Stopped replicas contribute nothing (a NaN loss times 0 would still be NaN: where() drops it).
        total = torch.where(mask > 0, step_losses, torch.zeros_like(step_losses)).sum()
        if total.requires_grad:
            total.backward()  # type: ignore[no-untyped-call]
        replicas.step(active)
    val = _validate(model, replicas, loss_fn, val_loader, k, active) if val_loader is not None else None
    tail = max(1, steps // 10)
    scores = np.array([np.nanmean(losses[r, max(0, steps - tail):]) if active[r] and val is None
                       else (val[r] if active[r] and val is not None else np.inf) for r in range(k)])
    scores[~np.isfinite(scores)] = np.inf
    best = _best_index(lrs, scores, tolerance)
    diagnoses: List[Optional[Diagnosis]] = []
    for r in range(k):
        curve = losses[r][np.isfinite(losses[r])]
        try:
            diagnoses.append(diagnose(curve, lr=lrs[r]) if curve.size >= 10 else None)
        except ValueError:
            diagnoses.append(None)
    return SweepResult(lrs=np.asarray(lrs), losses=losses, val_losses=val, scores=scores,
                       best_lr=None if best is None else lrs[best], diverged_at=diverged, diagnoses=diagnoses,
                       vectorized=run is not None, note=note,
                       engine="stacked" if stacked is not None else "vmap" if run is not None else "sequential")


def _stacked_model(model: torch.nn.Module, criterion: Any) -> Optional[StackedModel]:
    """The model's stacked form (see _stacked), or None for a model with a layer it does not know."""
    try:
        return StackedModel(model, criterion)
    except Unsupported:
        return None


def _vectorized(loss_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    from torch.func import vmap

    # randomness="different": each replica draws its own dropout masks, as K separate runs would.
    return vmap(loss_fn, in_dims=(0, 0, None), randomness="different")


def _validate(model: torch.nn.Module, replicas: _Replicas, loss_fn: Any, val_loader: Any, k: int,
              active: List[bool]) -> np.ndarray:
    """Mean validation loss per replica (weighted by batch size), in eval mode, without gradients."""
    totals = np.zeros(k)
    count = 0
    model.eval()
    with torch.no_grad():
        for batch in val_loader:
            size = len(batch[0]) if isinstance(batch, (list, tuple)) else 1
            for r in range(k):
                if active[r]:
                    params, buffers = replicas.replica(r)
                    totals[r] += float(loss_fn(params, {n: b.clone() for n, b in buffers.items()}, batch)) * size
            count += size
    model.train()
    if count == 0:
        raise ValueError("val_loader is empty: it yielded no batch")
    return np.where(active, totals / count, np.inf)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
