"""The training guard: watch every step's loss and gradients, and respond to a bad step before it
reaches the weights.

Two ways to use it:

* explicitly, ``guard.check(loss)`` after ``backward()`` and before ``optimizer.step()``;
* as an optimizer step pre-hook, ``guard.install()``: every ``optimizer.step()`` checks the
  gradients first (and the loss, if the loop passes it to ``guard.observe(loss)``), without any
  other change to the loop.

A step the guard does not let through has its gradients set to None, so ``optimizer.step()`` leaves
parameters and optimizer state bitwise unchanged (torch optimizers skip parameters without a
gradient), and the loop can call it as usual (a ``GradScaler`` loop keeps calling
``scaler.step(opt); scaler.update()``).

Checks: the loss (non-finite, spike on ln(loss), and the core's long-run explosion rule), and every
gradient in one native pass (non-finite elements and the global norm, whose spikes are detected on
ln(norm) like loss spikes). Responses per event kind (``policy``): ``record``, ``skip``,
``scale_lr`` (skip, and multiply the lr of every group by ``lr_factor`` from the next step on; with a
pylrcore ``Scheduler`` the schedule is scaled), ``rollback`` (restore the last good in-memory
snapshot, taken every ``snapshot_every`` clean steps, and scale the lr) and ``raise``
(:class:`TrainingDiverged`, with the diagnosis of the loss history). More than
``max_consecutive_skips`` steps in a row not applied raises too.

Under ``torch.distributed`` every rank takes the same decision at the same step: the loss, the
sum of squares and the non-finite counts of all ranks are combined by one all-reduce per step
before the (deterministic) decision.

>>> import torch
>>> model = torch.nn.Linear(3, 1)
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> guard = Guard(opt, model)
>>> loss = model(torch.ones(2, 3)).pow(2).mean()
>>> loss.backward()
>>> model.weight.grad[0, 1] = float("nan")
>>> guard.check(loss)
False
>>> opt.step()  # a no-op: the gradients were cleared
>>> [(e.step, e.kind, e.action) for e in guard.events]
[(0, 'nonfinite_grad', 'skip')]
"""

from __future__ import annotations

import math
import operator
import weakref
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._checks import as_settings, check_int, check_real
from .._native import _core
from ..detect import DEFAULTS as DETECTOR_DEFAULTS
from ..diagnosis import Diagnosis, diagnose
from ._snapshot import Snapshot, run_to_completion
from .._tensors import dense, describe_host, torch_codes

__all__ = ["Guard", "GuardEvent", "TrainingDiverged", "KINDS", "ACTIONS", "DEFAULT_POLICY"]

# The event kinds and actions are the core's tables (_core.GuardEvent, _core.GuardAction, in
# step/guard.hpp), in the core's order: a kind's position is its event bit, an action's its code.
_KIND_NAMES = {
    "LOSS_NONFINITE": "nonfinite_loss", "LOSS_SPIKE": "loss_spike", "LOSS_EXPLOSION": "explosion",
    "GRAD_NONFINITE": "nonfinite_grad", "GRAD_SPIKE": "grad_spike", "AMP_OVERFLOW": "amp_overflow",
    "SKIP_LIMIT": "skip_limit",
}
#: Event kinds, in the order of the core's bits (csrc/pylrcore/step/guard.hpp).
KINDS = tuple(_KIND_NAMES[str(e.name)] for e in sorted(_core.GuardEvent, key=int))
#: Responses, from the mildest.
ACTIONS = tuple(str(a.name).lower() for a in sorted(_core.GuardAction, key=int))
#: What happens when ``policy`` does not say otherwise.
DEFAULT_POLICY: Dict[str, str] = {
    "nonfinite_loss": "skip",
    "loss_spike": "record",
    "explosion": "raise",
    "nonfinite_grad": "skip",
    "grad_spike": "record",
}
_SETTABLE = tuple(DEFAULT_POLICY)
_FIXED = {"amp_overflow": "record", "skip_limit": "raise"}
_NAN = float("nan")
_RECORD, _SCALE, _ROLLBACK, _RAISE = (int(_core.GuardAction.RECORD), int(_core.GuardAction.SCALE_LR),
                                      int(_core.GuardAction.ROLLBACK), int(_core.GuardAction.RAISE))
_DIST_AVAILABLE = torch.distributed.is_available()


@dataclass(frozen=True)
class GuardEvent:
    """One event: at guard step ``step``, ``kind`` (one of :data:`KINDS`) was seen; ``value`` crossed
    ``threshold`` and ``action`` was taken. ``lr`` is the first param group's lr at the time;
    ``loss`` and ``grad_norm`` are the step's (NaN when not checked).

    ``value``/``threshold``: the loss for nonfinite_loss; the z-score and its limit for loss_spike
    and grad_spike; for explosion the recent loss level (geometric mean of the last ~20 losses) and
    the level at which the long-run explosion rule fires (see the event table in docs/guard.md); the number of
    non-finite gradient elements for nonfinite_grad/amp_overflow; consecutive skips and the limit for
    skip_limit.
    """

    step: int
    kind: str
    value: float
    threshold: float
    lr: float
    action: str
    loss: float
    grad_norm: float


class TrainingDiverged(RuntimeError):
    """Raised by a guard whose policy says ``raise`` (or after too many consecutive skips).

    ``event`` is the event that decided it, ``diagnosis`` the :func:`pylrcore.diagnose` result on the
    guard's loss history (None when no loss was checked), ``summary`` the guard's summary text.
    """

    def __init__(self, message: str, event: GuardEvent, diagnosis: Optional[Diagnosis], summary: str) -> None:
        super().__init__(message)
        self.event = event
        self.diagnosis = diagnosis
        self.summary = summary


def _policy_codes(policy: Union[None, str, Mapping[str, str]]) -> Dict[str, str]:
    chosen = dict(DEFAULT_POLICY)
    if policy is None:
        pass
    elif isinstance(policy, str):
        if policy not in ACTIONS:
            raise ValueError(f"policy must be one of {', '.join(map(repr, ACTIONS))} or a dict per kind, got {policy!r}")
        for kind in _SETTABLE:
            # A NaN update would poison the weights: "record" everywhere still skips non-finite steps.
            chosen[kind] = "skip" if policy == "record" and kind.startswith("nonfinite") else policy
    elif isinstance(policy, Mapping):
        for kind, action in policy.items():
            if kind not in _SETTABLE:
                hint = " (fixed: the GradScaler handles it)" if kind == "amp_overflow" else ""
                hint = " (fixed: always raises)" if kind == "skip_limit" else hint
                raise ValueError(f"policy has an unknown or fixed event kind {kind!r}{hint}; kinds: {', '.join(_SETTABLE)}")
            if action not in ACTIONS:
                raise ValueError(f"policy[{kind!r}] must be one of {', '.join(map(repr, ACTIONS))}, got {action!r}")
            if action == "record" and kind.startswith("nonfinite"):
                raise ValueError(
                    f"policy[{kind!r}] cannot be 'record': the update would write NaN/Inf into the weights; "
                    "use 'skip' (the default), 'scale_lr', 'rollback' or 'raise'"
                )
            chosen[kind] = action
    else:
        raise TypeError(f"policy must be None, an action name or a dict {{kind: action}}, got {type(policy).__name__}")
    chosen.update(_FIXED)
    return chosen


class _GradTable:
    """Where the gradients are, kept between steps.

    Reading 160 ``p.grad``, ``data_ptr()`` and layout attributes in Python costs tens of µs, so the
    table of (address, count, dtype) is reused while every gradient is still the same tensor object
    (weak references: the table never keeps a gradient alive). ``zero_grad(set_to_none=True)``
    makes new tensors each step, and the table is rebuilt for those. Gradients the native scan
    cannot read in place (other devices, sparse, unusual dtypes) go to a torch fallback.
    """

    def __init__(self) -> None:
        self.refs: List[Any] = []
        self.pointers: List[int] = []
        self.counts: List[int] = []
        self.codes: List[int] = []
        self.others: List[torch.Tensor] = []
        self.valid = False
        self.simple = False  # every gradient was a plain, contiguous CPU tensor: _repoint applies

    def refresh(self, grads: List[Optional[torch.Tensor]]) -> bool:
        """Bring the table up to date with ``grads``; True when it was rebuilt."""
        if self.valid and len(grads) == len(self.refs):
            current = [None if r is None else r() for r in self.refs]
            if all(map(operator.is_, grads, current)):
                return False
            if self._repoint(grads):
                return True
        self._rebuild(grads)
        return True

    def _repoint(self, grads: List[Optional[torch.Tensor]]) -> bool:
        """The set_to_none=True case, half the cost of a rebuild: the same parameters got new
        gradient tensors. torch ties a gradient's dtype, shape and device to its parameter (assigning
        another raises), so when the new ones are plain contiguous tensors again, only the addresses
        changed."""
        if not self.simple:
            return False
        plain = torch.Tensor  # (a None gradient fails the type test)
        if not all(type(g) is plain and g.is_contiguous() for g in grads):
            return False
        self.pointers = [g.data_ptr() for g in grads]  # type: ignore[union-attr]
        self.refs = list(map(weakref.ref, grads))
        return True

    def _rebuild(self, grads: List[Optional[torch.Tensor]]) -> None:
        self.refs, self.pointers, self.counts, self.codes, self.others = [], [], [], [], []
        codes = torch_codes()
        simple = True
        for i, g in enumerate(grads):
            if g is None:
                self.refs.append(None)
                simple = False
                continue
            self.refs.append(weakref.ref(g))
            code = codes.get(g.dtype)
            is_dense = g.layout is torch.strided and dense(g)
            if g.is_cpu and is_dense and code is not None and type(g) in (torch.Tensor, torch.nn.Parameter):
                # A dense tensor in any dimension order (channels_last too) occupies numel() elements
                # from data_ptr(): the scan's order does not matter for NaN/Inf and the sum of squares.
                self.pointers.append(g.data_ptr() if g.numel() else 0)
                self.counts.append(g.numel())
                self.codes.append(code)
                simple = simple and type(g) is torch.Tensor and g.numel() > 0 and g.is_contiguous()
            else:
                if not (g.is_floating_point() or g.is_sparse):
                    describe_host(g, f"buffers[{i}]")  # raises the error that names the gradient and the fix
                self.others.append(g)
                simple = False
        self.simple = simple
        self.valid = True


def _fallback_summary(tensors: Sequence[torch.Tensor]) -> Tuple[int, float]:
    """(non-finite count, sum of squares) of gradients the native scan does not read (other
    devices, sparse, tensor subclasses), with torch ops queued per tensor and read back once per
    device: one host sync per device and step, not one per tensor. (pylrcore.torch.cuda's GradCheck is
    the sync-free path for CUDA gradients; it is not wired in here until it has run on a GPU.)"""
    per_device: Dict[Any, List[torch.Tensor]] = {}
    for g in tensors:
        if g.is_sparse:
            g = g.coalesce()._values()  # duplicates summed first: the norm is that of the dense gradient
        elif g.layout is not torch.strided:
            raise ValueError(f"gradient layout {g.layout} is not supported by the guard; use dense or sparse COO gradients")
        values = g.detach()
        if not values.is_floating_point():
            raise TypeError(f"a gradient has dtype {values.dtype}; the guard checks floating-point gradients")
        bad = (~torch.isfinite(values)).sum()
        # In float64, like the native scan: squares of float32/16 values cannot overflow there.
        sumsq = torch.linalg.vector_norm(values, dtype=torch.float64).square()
        per_device.setdefault(values.device, []).append(torch.stack([bad.double(), sumsq]))
    bad_total = 0
    total = 0.0
    for rows in per_device.values():
        for n_bad, sq in torch.stack(rows).tolist():  # the one sync for this device
            bad_total += int(n_bad)
            total += sq if n_bad == 0 else _NAN
    return bad_total, total


class Guard:
    """Guard the optimizer's steps. See the module docstring for the checks and responses.

    ``optimizer``: whose parameters' gradients are checked and whose steps are guarded.
    ``model``: needed for ``rollback`` (its buffers are restored with the weights); otherwise optional.
    ``policy``: an action for every kind, or ``{kind: action}`` over :data:`DEFAULT_POLICY`.
    ``scheduler``: a pylrcore ``Scheduler`` (``scale_lr`` scales its schedule) or a torch scheduler
    (what it computes from is scaled with the groups' lrs: ``base_lrs``, the groups' ``initial_lr``,
    OneCycleLR's ``max_lr``/``min_lr``, CyclicLR's ``max_lrs``, SequentialLR's children); another
    scheduler type is refused when the policy can scale the lr, since the guard could not keep it scaled.
    ``snapshot_every``: clean steps between rollback points (``rollback`` policies; a snapshot is kept in
    :meth:`state_dict`). ``max_rollbacks``: rollbacks allowed within one incident, i.e. without
    ``snapshot_every`` clean steps in between (then the guard raises); ``guard.rollbacks`` counts all.
    ``scaler``: the ``GradScaler`` of an AMP loop; its overflow steps are recorded as ``amp_overflow``,
    not as divergence, and ``check`` unscales the gradients first if the loop has not.
    ``check_loss`` / ``check_grads``: turn either family of checks off (``check_grads=False`` costs
    under 2 µs per step). ``spike_z``, ``explode_factor``, ``warmup``: the loss detector's settings
    (``loss_detector`` takes any other :class:`pylrcore.Detector` setting); ``grad_spike_z`` the norm's.
    ``grads``: ``"replicated"`` (DDP: every rank has the same reduced gradients) or ``"sharded"``
    (FSDP/ZeRO: the global sum of squares is the sum over ranks).
    ``on_event``: called with each :class:`GuardEvent` as it happens (loggers, TensorBoard).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: Optional[torch.nn.Module] = None,
        *,
        policy: Union[None, str, Mapping[str, str]] = None,
        scheduler: Any = None,
        scaler: Any = None,
        check_loss: bool = True,
        check_grads: bool = True,
        lr_factor: float = 0.5,
        snapshot_every: int = 100,
        max_rollbacks: int = 3,
        max_consecutive_skips: int = 25,
        spike_z: float = 6.0,
        explode_factor: float = 4.0,
        warmup: int = 50,
        grad_spike_z: float = 6.0,
        loss_detector: Optional[Mapping[str, Any]] = None,
        grads: str = "replicated",
        process_group: Any = None,
        history: int = 10_000,
        max_events: int = 10_000,
        on_event: Optional[Callable[[GuardEvent], None]] = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        self.optimizer = optimizer
        self.model = model
        self.policy = _policy_codes(policy)
        self._wants_snapshot = "rollback" in self.policy.values()
        if self._wants_snapshot and model is None:
            raise ValueError("policy 'rollback' restores the model's weights and buffers: pass model=... to Guard")
        if scheduler is not None and not _can_scale(scheduler) and any(
                self.policy[k] in ("scale_lr", "rollback") for k in _SETTABLE):
            raise TypeError(
                f"the guard cannot scale the lr of a {type(scheduler).__name__}: it knows pylrcore's Scheduler and "
                "torch.optim.lr_scheduler's schedulers (and their subclasses); without scale_lr/rollback in the "
                "policy any scheduler works, or scale the lr yourself in on_event")
        self.scheduler = scheduler
        self.scaler = scaler
        self.check_loss = bool(check_loss)
        self.check_grads = bool(check_grads)
        if not (self.check_loss or self.check_grads):
            raise ValueError("check_loss and check_grads are both False: the guard would check nothing")
        self.lr_factor = _fraction(lr_factor, "lr_factor")
        self.snapshot_every = check_int(snapshot_every, "snapshot_every", minimum=1)
        self.max_rollbacks = check_int(max_rollbacks, "max_rollbacks", minimum=0)
        if grads not in ("replicated", "sharded"):
            raise ValueError(f"grads must be 'replicated' (DDP) or 'sharded' (FSDP/ZeRO), got {grads!r}")
        self.grads_mode = grads
        self.process_group = process_group
        self.on_event = on_event
        self.max_events = check_int(max_events, "max_events", minimum=0)

        loss_settings = dict(loss_detector or {})
        loss_settings.update(spike_z=spike_z, explode_factor=explode_factor, warmup=warmup)
        norm_settings = dict(spike_z=grad_spike_z, warmup=warmup)
        self._loss_config = as_settings(loss_settings, DETECTOR_DEFAULTS, "Guard loss_detector")
        self._norm_config = as_settings(norm_settings, DETECTOR_DEFAULTS, "Guard")
        self.max_consecutive_skips = check_int(max_consecutive_skips, "max_consecutive_skips", minimum=1)
        codes = [ACTIONS.index(self.policy[k]) for k in KINDS]
        self._core = _core.GuardCore(self._loss_config, self._norm_config, codes, self.max_consecutive_skips)

        self.events: List[GuardEvent] = []
        self.events_dropped = 0
        self.losses: Deque[float] = deque(maxlen=check_int(history, "history", minimum=1))
        self.skipped = 0
        self.lr_scale = 1.0
        self.rollbacks = 0  # over the whole run (reported); max_rollbacks bounds those of one incident
        self._incident_rollbacks = 0
        self._table = _GradTable()
        self._params: List[torch.nn.Parameter] = []
        self._groups_key: Tuple[Any, ...] = ()
        self._pending_loss: Any = None
        self._hook: Any = None
        self._snapshot: Optional[Snapshot] = None
        self._snapshot_core: Dict[str, Any] = {}
        self._since_snapshot = 0

    # -- the per-step path ------------------------------------------------------------------------
    def check(self, loss: Any = None) -> bool:
        """Check this step (call after ``backward()``, before ``optimizer.step()``); True if it may be applied.

        ``loss``: the step's loss (a 1-element tensor or a float; only its value is read, so a
        detached loss is fine), or None to check the gradients only. On False the gradients are
        cleared, so ``optimizer.step()`` changes nothing. Raises :class:`TrainingDiverged` when the
        policy says so.
        """
        has_loss = loss is not None and self.check_loss
        value = _loss_value(loss) if has_loss else _NAN
        bad = 0
        sumsq = 0.0
        grads_checked = self.check_grads
        amp = False
        if grads_checked:
            amp = self._unscale_for_scaler()
            bad, sumsq = self._scan_grads()
        if self._distributed():
            value, bad, sumsq, has_loss = self._agree(value, bad, sumsq, has_loss)
        d = self._core.check(value, has_loss, grads_checked, bad, sumsq, amp)
        if has_loss:
            self.losses.append(value)
        applied = self._respond(d, value, bad) if d.events else True
        if applied and self._wants_snapshot:
            self._maybe_snapshot(d)
        return applied

    def observe(self, loss: Any) -> None:
        """With :meth:`install`: the loss the next ``optimizer.step()`` will be checked with."""
        self._pending_loss = loss

    def install(self) -> "Guard":
        """Check every ``optimizer.step()`` first (an optimizer step pre-hook); returns the guard.

        The hook checks the gradients (and the loss given to :meth:`observe`, if any) and clears
        the gradients of a step that must not be applied. Not for closure-based optimizers (LBFGS),
        whose gradients only exist inside ``step``.
        """
        if self._hook is not None:
            raise RuntimeError("this guard is already installed on its optimizer")

        def pre_step(_opt: Any, _args: Any, _kwargs: Any) -> None:
            loss, self._pending_loss = self._pending_loss, None
            self.check(loss)

        self._hook = self.optimizer.register_step_pre_hook(pre_step)
        return self

    def remove(self) -> None:
        """Undo :meth:`install`."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    @property
    def step(self) -> int:
        """Steps checked so far."""
        return int(self._core.step)

    # -- gradients ----------------------------------------------------------------------------------
    def _parameters(self) -> List[torch.nn.Parameter]:
        groups = self.optimizer.param_groups
        key = tuple((id(g["params"]), len(g["params"])) for g in groups)
        if key != self._groups_key:
            self._params = [p for g in groups for p in g["params"]]
            self._groups_key = key
            self._table.valid = False
            if not self._params:
                raise ValueError("the optimizer has no parameters yet; add them (add_param_group) before the first check")
        return self._params

    def _scan_grads(self) -> Tuple[int, float]:
        params = self._parameters()
        grads = [p.grad for p in params]
        table = self._table
        table.refresh(grads)
        # `grads` keeps every gradient alive until the native scan (which runs without the GIL) returns.
        finite, _, _, bad, sumsq = _core.scan(table.pointers, table.counts, table.codes, True, 0)
        if table.others:
            more_bad, more_sumsq = _fallback_summary(table.others)
            bad += more_bad
            sumsq += more_sumsq
        return int(bad), float(sumsq)

    def _unscale_for_scaler(self) -> bool:
        """True when a GradScaler owns non-finite gradients this step (after unscaling them if needed)."""
        scaler = self.scaler
        if scaler is None or not scaler.is_enabled():
            return False
        state = scaler._per_optimizer_states[id(self.optimizer)]
        if state["stage"].name == "READY":
            scaler.unscale_(self.optimizer)  # the loop's scaler.step() will not unscale twice
        return True

    # -- distributed --------------------------------------------------------------------------------
    def _distributed(self) -> bool:
        return _DIST_AVAILABLE and torch.distributed.is_initialized()

    def _agree(self, value: float, bad: int, sumsq: float, has_loss: bool) -> Tuple[float, int, float, bool]:
        """One all-reduce: [loss, has_loss, non-finite count, sum of squares], the same on every rank after."""
        dist = torch.distributed
        device = _collective_device(dist.get_backend(self.process_group))
        world = dist.get_world_size(self.process_group)
        loss = value if has_loss else 0.0
        numbers = torch.tensor([loss, float(has_loss), float(bad), sumsq], dtype=torch.float64, device=device)
        dist.all_reduce(numbers, group=self.process_group)
        total_loss, n_loss, total_bad, total_sumsq = numbers.tolist()
        agreed_sumsq = total_sumsq if self.grads_mode == "sharded" else total_sumsq / world
        # A NaN on one rank makes the sum NaN on all of them: every rank sees the same non-finite loss.
        agreed_loss = total_loss / n_loss if n_loss > 0 else _NAN
        return agreed_loss, int(total_bad) if math.isfinite(total_bad) else 1, agreed_sumsq, n_loss > 0

    # -- responses ----------------------------------------------------------------------------------
    def _respond(self, d: Any, loss: float, bad: int) -> bool:
        action = d.action_code
        lr = _first_lr(self.optimizer)
        name = ACTIONS[action]
        decisive: Optional[GuardEvent] = None
        for bit, kind in enumerate(KINDS):
            if not d.events & (1 << bit):
                continue
            value, threshold = self._evidence(kind, d, loss, bad)
            event = GuardEvent(int(d.step), kind, value, threshold, lr, name, loss, float(d.grad_norm))
            self._log(event)
            if ACTIONS.index(self.policy[kind]) == action or kind == "skip_limit":
                decisive = event
        if action == _RECORD:
            return True
        self._clear_grads()
        self.skipped += 1
        if action == _SCALE:
            self._scale_lr()
        elif action == _ROLLBACK:
            self._rollback(decisive)
        elif action == _RAISE:
            assert decisive is not None
            self._raise(decisive)
        return False

    def _evidence(self, kind: str, d: Any, loss: float, bad: int) -> Tuple[float, float]:
        if kind == "nonfinite_loss":
            return loss, _NAN
        if kind == "loss_spike":
            return float(d.loss_z), float(self._loss_config["spike_z"])
        if kind == "explosion":
            return float(d.smoothed), float(d.explode_at)
        if kind == "grad_spike":
            return float(d.norm_z), float(self._norm_config["spike_z"])
        if kind == "skip_limit":
            return float(d.consecutive_skips), float(self.max_consecutive_skips)
        return float(bad), 0.0  # nonfinite_grad, amp_overflow: how many elements

    def _log(self, event: GuardEvent) -> None:
        if self.max_events == 0:
            self.events_dropped += 1
        else:
            if len(self.events) >= self.max_events:
                del self.events[0]
                self.events_dropped += 1
            self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _clear_grads(self) -> None:
        for p in self._parameters():
            p.grad = None

    def _scale_lr(self) -> None:
        f = self.lr_factor
        sched = self.scheduler
        if _is_pylrcore_scheduler(sched):
            sched.scale(f)  # pylrcore Scheduler: the schedule is scaled and written at once
        else:
            for group in self.optimizer.param_groups:
                for key in _GROUP_LR_KEYS:  # the lr, and what torch schedulers read it from
                    value = group.get(key)
                    if isinstance(value, torch.Tensor):
                        with torch.no_grad():
                            value.mul_(f)  # keeps the tensor's identity (compiled/captured steps hold it)
                    elif isinstance(value, (float, int)) and not isinstance(value, bool):
                        group[key] = value * f
            if sched is not None:
                _scale_torch_scheduler(sched, f)
        self.lr_scale *= f

    def _rollback(self, event: Optional[GuardEvent]) -> None:
        if self._snapshot is None or self._incident_rollbacks >= self.max_rollbacks:
            why = ("no snapshot was taken yet" if self._snapshot is None else
                   f"{self._incident_rollbacks} rollbacks to step {self._snapshot_core.get('step', '?')} already, "
                   f"max_rollbacks={self.max_rollbacks}")
            assert event is not None
            self._raise(event, f"rollback impossible ({why})")
        snapshot = self._snapshot
        assert snapshot is not None
        # Weights, buffers, optimizer state and the detectors: all or (after a Ctrl-C) all the same.
        run_to_completion(lambda: [snapshot.restore, lambda: self._core._restore_detectors(self._snapshot_core)])
        self.rollbacks += 1
        self._incident_rollbacks += 1
        self._scale_lr()  # the lr that blew up would blow up again

    def _maybe_snapshot(self, d: Any) -> None:
        self._since_snapshot += 1
        due = self._snapshot is None or self._since_snapshot >= self.snapshot_every
        exploding = d.smoothed > d.explode_at  # never keep weights from inside a (pending) explosion
        if due and not exploding:
            if self._snapshot is None:
                assert self.model is not None  # rollback policies require it (checked in __init__)
                self._snapshot = Snapshot(self.model, self.optimizer, scope="weights")
            self._snapshot.take()
            self._snapshot_core = self._core._get_state()
            self._since_snapshot = 0
            self._incident_rollbacks = 0  # snapshot_every clean steps since: the incident is over

    def _raise(self, event: GuardEvent, prefix: str = "") -> None:
        try:
            diagnosis: Optional[Diagnosis] = diagnose(np.asarray(self.losses, dtype=np.float64))
        except ValueError:  # too short a history to diagnose
            diagnosis = None
        what = describe_event(event)
        message = f"{prefix + ': ' if prefix else ''}{what} at step {event.step} (lr {event.lr:.3g})"
        if diagnosis is not None and diagnosis.code != "healthy":
            message += f". {diagnosis.message}"
        raise TrainingDiverged(message, event, diagnosis, self.summary())

    # -- reports and checkpoints --------------------------------------------------------------------
    def summary(self) -> str:
        """The events in a few lines: counts per kind, the steps they span, the responses and what to try."""
        return _summarise(self)

    def state_dict(self) -> Dict[str, Any]:
        """Counters, detector states, the event log, the loss history and the rollback point (the last
        good weights and optimizer state as tensors, when a rollback policy has taken one), so that a
        resumed run equals the uninterrupted one bitwise. The lr scaling itself lives in the
        optimizer's/scheduler's own state dicts."""
        return {
            "core": self._core._get_state(),
            "policy": dict(self.policy),
            "loss_detector": dict(self._loss_config),
            "norm_detector": dict(self._norm_config),
            "events": [asdict(e) for e in self.events],
            "events_dropped": self.events_dropped,
            "losses": list(self.losses),
            "skipped": self.skipped,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "since_snapshot": self._since_snapshot,
            "incident_rollbacks": self._incident_rollbacks,
            "snapshot": None if self._snapshot is None else self._snapshot.state_dict(),
            "snapshot_core": self._snapshot_core,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the guard must have the same policy and detector settings).
        All or nothing: a state that cannot be loaded raises and leaves the guard as it was."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict returned by Guard.state_dict(), got {type(state).__name__}")
        missing = [k for k in _STATE_KEYS if k not in state]
        unknown = [k for k in state if k not in _STATE_KEYS and k not in _OPTIONAL_STATE_KEYS]
        if missing or unknown:
            raise ValueError("state must be a dict returned by Guard.state_dict()"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown keys {', '.join(map(repr, unknown))}" if unknown else ""))
        try:
            mismatched = [k for k, mine in (("policy", self.policy), ("loss_detector", self._loss_config),
                                            ("norm_detector", self._norm_config)) if dict(state[k]) != mine]
        except (TypeError, ValueError):
            raise ValueError("state must be a dict returned by Guard.state_dict()") from None
        if mismatched:
            raise ValueError(f"the state was saved from a Guard with other settings ({', '.join(mismatched)}); "
                             "create the Guard with the same policy and detector settings")
        # Everything is checked and built first; the guard changes only once nothing can fail.
        _check_counters(state["core"], "state['core']")
        _check_counters(state.get("snapshot_core") or {}, "state['snapshot_core']")
        try:
            events = [GuardEvent(**e) for e in state["events"]]
            losses = [float(v) for v in state["losses"]]
            counters = {k: check_int(state[k], f"state[{k!r}]", minimum=0)
                        for k in ("events_dropped", "skipped", "rollbacks")}
            since = check_int(state.get("since_snapshot", 0), "state['since_snapshot']", minimum=0)
            incident = check_int(state.get("incident_rollbacks", 0), "state['incident_rollbacks']", minimum=0)
            lr_scale = check_real(state["lr_scale"], "state['lr_scale']")
        except TypeError as e:
            raise ValueError(f"state must be a dict returned by Guard.state_dict(): {e}") from None
        snapshot: Optional[Snapshot] = None
        if state.get("snapshot") is not None:
            if self.model is None:
                raise ValueError("the state holds a rollback point: create the Guard with model=...")
            snapshot = Snapshot(self.model, self.optimizer, scope="weights")
            snapshot.load_state_dict(state["snapshot"])
        try:
            self._core._set_state(state["core"])  # the last step that can fail: it parses before it assigns
        except TypeError as e:  # a key the core does not know
            raise ValueError(f"state must be a dict returned by Guard.state_dict(): {e}") from None
        self.events = events
        self.events_dropped = counters["events_dropped"]
        self.losses.clear()
        self.losses.extend(losses)
        self.skipped = counters["skipped"]
        self.lr_scale = lr_scale
        self.rollbacks = counters["rollbacks"]
        self._since_snapshot = since
        self._incident_rollbacks = incident
        self._snapshot = snapshot
        self._snapshot_core = dict(state.get("snapshot_core") or {})

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.policy.items() if DEFAULT_POLICY.get(k, v) != v}
        return (f"Guard(step={self.step}, events={len(self.events) + self.events_dropped}, skipped={self.skipped}, "
                f"lr_scale={self.lr_scale:g}{', policy=' + repr(changed) if changed else ''})")


# -- helpers -----------------------------------------------------------------------------------------
def _loss_value(loss: Any) -> float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"loss must have one element, got shape {tuple(loss.shape)}; reduce it first (e.g. loss.mean()), "
                "or pass the value you call backward() on"
            )
        return float(loss.item())  # .item() reads the value without a new (detached) tensor
    if isinstance(loss, (float, int, np.floating, np.integer)) and not isinstance(loss, bool):
        return float(loss)
    raise TypeError(f"loss must be a 1-element tensor or a real number, got {type(loss).__name__}")


def _first_lr(optimizer: torch.optim.Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.detach().item()) if isinstance(lr, torch.Tensor) else float(lr)


def _collective_device(backend: str) -> torch.device:
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# Param-group entries that hold an lr: the lr itself, torch's "initial_lr" (every LRScheduler's
# base), OneCycleLR's "max_lr"/"min_lr" (its phases read the group, not base_lrs), SWALR's "swa_lr".
_GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "swa_lr")


def _is_pylrcore_scheduler(sched: Any) -> bool:
    return sched is not None and hasattr(sched, "scale") and hasattr(sched, "schedule")


def _torch_scheduler_types() -> Tuple[type, ...]:
    from torch.optim import lr_scheduler

    return (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)


def _can_scale(sched: Any) -> bool:
    if _is_pylrcore_scheduler(sched):
        return True
    if not isinstance(sched, _torch_scheduler_types()):
        return False
    return all(_can_scale(s) for s in getattr(sched, "_schedulers", ()))


def _scale_torch_scheduler(sched: Any, f: float) -> None:
    """Scale the lrs a torch scheduler computes from (the group entries are scaled by the caller):
    ``base_lrs``; CyclicLR's ``max_lrs``; the children of SequentialLR / ChainedScheduler."""
    if hasattr(sched, "base_lrs"):
        sched.base_lrs = [b * f for b in sched.base_lrs]
    if hasattr(sched, "max_lrs"):
        sched.max_lrs = [m * f for m in sched.max_lrs]
    for child in getattr(sched, "_schedulers", ()):
        _scale_torch_scheduler(child, f)


_STATE_KEYS = ("core", "policy", "loss_detector", "norm_detector", "events", "events_dropped", "losses", "skipped",
               "lr_scale", "rollbacks")
_OPTIONAL_STATE_KEYS = ("since_snapshot", "incident_rollbacks", "snapshot", "snapshot_core")  # absent in states saved before 0.2
# Counters loaded from a checkpoint must leave room to count on (the core's are 64-bit).
_MAX_COUNTER = 2**53


def _check_counters(state: Any, where: str) -> None:
    """Every integer in a core state (nested dicts and lists) is a count in [0, 2**53]."""
    if isinstance(state, Mapping):
        for k, v in state.items():
            _check_counters(v, f"{where}[{k!r}]")
    elif isinstance(state, (list, tuple)):
        for k, v in enumerate(state):
            _check_counters(v, f"{where}[{k}]")
    elif isinstance(state, (int, np.integer)) and not isinstance(state, bool):
        if not 0 <= state <= _MAX_COUNTER:
            raise ValueError(f"{where} = {state} is not a step count this guard can continue from "
                             f"(0 to 2**53); the state dict is corrupt")


def _fraction(value: Any, name: str) -> float:
    out = check_real(value, name)
    if not 0 < out < 1:
        raise ValueError(f"{name} must be a number in (0, 1) (the lr is multiplied by it), got {value!r}")
    return out


_PLURALS = {
    "nonfinite_loss": ("non-finite loss", "non-finite losses"),
    "loss_spike": ("loss spike", "loss spikes"),
    "explosion": ("loss explosion", "loss explosions"),
    "nonfinite_grad": ("step with non-finite gradients", "steps with non-finite gradients"),
    "grad_spike": ("gradient-norm spike", "gradient-norm spikes"),
    "amp_overflow": ("AMP overflow skipped by the GradScaler", "AMP overflows skipped by the GradScaler"),
    "skip_limit": ("stop after too many consecutive skips", "stops after too many consecutive skips"),
}


# One line per event kind, for logs, exceptions and the integrations' reports.
_DESCRIPTIONS: Dict[str, Callable[[GuardEvent], str]] = {
    "nonfinite_loss": lambda e: f"non-finite loss ({e.value})",
    "loss_spike": lambda e: f"loss spike (loss {e.loss:.4g}, z = {e.value:.1f} > {e.threshold:g})",
    "explosion": lambda e: f"loss explosion (recent loss level {e.value:.4g} above {e.threshold:.4g})",
    "nonfinite_grad": lambda e: f"{int(e.value)} non-finite gradient element(s)",
    "grad_spike": lambda e: f"gradient-norm spike (norm {e.grad_norm:.4g}, z = {e.value:.1f} > {e.threshold:g})",
    "amp_overflow": lambda e: f"AMP overflow ({int(e.value)} non-finite gradient elements, skipped by the GradScaler)",
    "skip_limit": lambda e: f"{int(e.value)} consecutive steps not applied (limit {int(e.threshold)})",
}


def describe_event(e: GuardEvent) -> str:
    return _DESCRIPTIONS[e.kind](e)


def _summarise(guard: Guard) -> str:
    events = guard.events
    if not events:
        return f"{guard.step} steps checked, no events."
    counts: Dict[str, int] = {}
    for e in events:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    parts = []
    for kind in KINDS:
        n = counts.get(kind, 0)
        if n:
            one, many = _PLURALS[kind]
            action = guard.policy[kind]
            done = {"skip": "skipped", "scale_lr": "lr scaled", "rollback": "rolled back", "raise": "raised"}.get(action)
            parts.append(f"{n} {one if n == 1 else many}" + (f" ({done})" if done and kind != "amp_overflow" else ""))
    first, last = events[0].step, events[-1].step
    span = f"at step {first}" if first == last else f"between steps {first}–{last}"
    lrs = [e.lr for e in events if e.kind != "amp_overflow"]
    text = f"{', '.join(parts)} {span}" + (f" ({guard.events_dropped} older not kept)" if guard.events_dropped else "")
    text += f"; {guard.step} steps checked, {guard.skipped} not applied"
    if guard.lr_scale != 1.0:
        text += f", lr scaled to {guard.lr_scale:g}x"
    if guard.rollbacks:
        text += f", {guard.rollbacks} rollback(s)"
    text += "."
    # One or two isolated bad steps are usually a bad batch or an overflow; a pattern is the lr.
    nonfinite_steps = len({e.step for e in events if e.kind in ("nonfinite_loss", "nonfinite_grad")})
    spikes = counts.get("loss_spike", 0) + counts.get("grad_spike", 0)
    severe = counts.get("explosion", 0) + counts.get("skip_limit", 0)
    if lrs and (severe or nonfinite_steps >= 3 or spikes >= 3):
        lr = lrs[-1]
        text += f" LR {lr:.3g} is likely too high; try ÷10 ({lr / 10:.3g}) or a longer warmup."
    elif nonfinite_steps or spikes:
        text += " Isolated: usually a bad batch; if it recurs, lower the LR or clip gradients."
    elif counts.get("amp_overflow", 0) and len(counts) == 1:
        text += " Only GradScaler overflows: normal while the scale calibrates; persistent ones mean divergence."
    return text
