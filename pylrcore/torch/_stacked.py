"""The parallel sweep's fast path: K replicas of a model built from common layers, run as stacked
tensors by batched kernels, and their optimizer as one update on the stacks.

Why not vmap alone: for the small models a sweep trains, a step is almost all per-op overhead, and
``torch.func.vmap`` multiplies it (batching rules, functional_call's reparametrisation, K per-replica
optimizer groups). Here a replica's activations are the k-th slice of a ``[K, batch, ...]`` tensor,
a Linear is one ``baddbmm`` over the ``[K, out, in]`` weights, a Conv2d one grouped convolution, a
BatchNorm one ``batch_norm`` over K x C channels, and the optimizer one SGD/Adam/AdamW update with
the per-replica lr as a broadcast tensor, in the op order of torch's own per-tensor implementation.

Bit for bit: each replica must train exactly as that model alone would. A batched kernel may sum in
another order than the one-model kernel (a tiny ``bmm`` takes a naive loop, a grouped convolution
another oneDNN algorithm, some element-wise kernels a scalar tail), so every layer with a one-replica
reference checks itself on its first call (and on any new input shape): forward, input and parameter
gradients, and buffer updates of the stacked kernel against the layer run replica by replica; a
layer that differs runs replica by replica from then on (same results, a little slower). Dropout is
the exception: its masks are random per replica by design. A model with a layer this module does not
know (or hooks, or a custom forward) is not run here at all: the sweep uses vmap for it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Unsupported", "StackedModel", "StackedOptimizer"]

Tensors = Dict[str, torch.Tensor]


class Unsupported(Exception):
    """The fast path cannot run this model, batch or optimizer (the sweep then uses vmap / groups)."""


# ---- layers -------------------------------------------------------------------------------------


class _Layer:
    """One module of the model over stacked tensors. ``stacked`` runs all K replicas in one kernel,
    ``single`` one replica as the module itself would; layers with a ``single`` check on first use
    that the two agree bit for bit and keep the per-replica loop where they do not."""

    checked_by_reference = True
    in_place = False

    def __init__(self, module: nn.Module, prefix: str) -> None:
        self.module = module
        self.prefix = prefix
        # input signature -> the fastest variant that is exact (index into variants()), or -1: looped
        self.choice: Dict[Tuple[Any, ...], int] = {}
        # (model-level name, layer-level name) of this layer's parameters and buffers
        self.param_names = [(prefix + n, n) for n, _ in module.named_parameters(recurse=False)]
        self.buffer_names = [(prefix + n, n) for n, b in module.named_buffers(recurse=False) if b is not None]

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        raise NotImplementedError

    def single(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        raise NotImplementedError

    def variants(self) -> List[Callable[[torch.Tensor, Tensors, Tensors], torch.Tensor]]:
        """Stacked implementations, fastest first; the first that is exact on first use is kept."""
        return [self.stacked]

    def looped(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        # each replica's input as the model alone has it: contiguous, and its own tensor when the layer
        # writes into it (in place on views of one tensor, autograd would see each write as the others')
        outs = []
        for r in range(x.shape[0]):
            xr = x[r].clone(memory_format=torch.contiguous_format) if self.in_place else x[r].contiguous()
            outs.append(self.single(xr, {n: t[r] for n, t in p.items()}, {n: t[r] for n, t in b.items()}))
        return torch.stack(outs)

    def __call__(self, x: torch.Tensor, params: Tensors, buffers: Tensors) -> torch.Tensor:
        try:
            p = {n: params[full] for full, n in self.param_names}
            b = {n: buffers[full] for full, n in self.buffer_names}
        except KeyError:  # a module shared by two places in the model: functional_call's business
            raise Unsupported(f"{type(self.module).__name__} at {self.prefix or 'the top'} is shared") from None
        if not self.checked_by_reference:
            return self.stacked(x, p, b)
        key = (tuple(x.shape), tuple(x.stride()), x.dtype, x.requires_grad)
        choice = self.choice.get(key)
        if choice is None:
            # which kernels run (and so how they sum) depends on the layer, the shapes, layouts and
            # settings, not on the values: one check per process for each (later sweeps reuse it)
            known = (type(self).__name__, type(self.module).__name__, self.module.extra_repr(), key, x.device.type,
                     tuple((n, tuple(t.shape), t.requires_grad) for n, t in p.items()),
                     tuple((n, tuple(t.shape)) for n, t in b.items()),
                     torch.get_num_threads(), bool(torch.backends.mkldnn.enabled),
                     torch.get_float32_matmul_precision())
            choice = _CHECKED.get(known)
            if choice is None:
                choice = _exact_variant(self, x, p, b)
                if len(_CHECKED) >= 4096:
                    _CHECKED.clear()
                _CHECKED[known] = choice
            self.choice[key] = choice
        return self.variants()[choice](x, p, b) if choice >= 0 else self.looped(x, p, b)


_CHECKED: Dict[Tuple[Any, ...], int] = {}  # a layer's signature -> its exact variant (see _Layer.__call__)


def _exact_variant(layer: _Layer, x: torch.Tensor, p: Tensors, b: Tensors) -> int:
    """The first of the layer's stacked variants that gives, bit for bit, what the replicas give one
    by one (outputs, the gradients of the input and parameters for a random output gradient, updated
    buffers), or -1. Run on copies: the real buffers and the global RNG are left alone."""
    reference = _run(layer, layer.looped, x, p, b)
    for i, fn in enumerate(layer.variants()):
        try:
            if all(_same(u, v) for u, v in zip(_run(layer, fn, x, p, b), reference)):
                return i
        except Unsupported:  # a variant for other inputs
            continue
    return -1


def _run(layer: _Layer, fn: Callable[[torch.Tensor, Tensors, Tensors], torch.Tensor], x: torch.Tensor,
         p: Tensors, b: Tensors) -> List[Optional[torch.Tensor]]:
    gen = torch.Generator(device=x.device).manual_seed(0)  # the same output gradient for every run
    leaf = x.detach().clone().requires_grad_(True) if x.requires_grad else x.detach()
    pi = {n: t.detach().clone().requires_grad_(t.requires_grad) for n, t in p.items()}
    bi = {n: t.clone() for n, t in b.items()}
    with torch.enable_grad():
        # an in-place layer writes into its input: a copy, never x itself or a leaf
        out = fn(leaf.clone() if layer.in_place else leaf, pi, bi)
    wrt = ([leaf] if x.requires_grad else []) + [t for t in pi.values() if t.requires_grad]
    grads: Sequence[Optional[torch.Tensor]] = ()
    if wrt and out.requires_grad:
        # laid out as the output (as the gradient that reaches it in training usually is)
        g = torch.empty_like(out).copy_(torch.randn(out.shape, generator=gen, dtype=out.dtype, device=out.device))
        grads = torch.autograd.grad(out, wrt, g, allow_unused=True)
    return [out.detach(), *grads, *bi.values()]


def _same(u: Optional[torch.Tensor], v: Optional[torch.Tensor]) -> bool:
    if u is None or v is None:
        return u is v
    return u.shape == v.shape and bool(torch.equal(u, v))


class _StackedLinear(torch.autograd.Function):
    """x @ w^T + b for K replicas at once (baddbmm). Its own backward because autograd's for bmm
    computes the weight gradient as (x^T g)^T where nn.Linear's computes g^T x: another gemm layout,
    other sums (measured: not bit-equal for some shapes)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, w = ctx.saved_tensors
        # nn.Linear's backward gets a contiguous gradient; so do this one and its first-use check (a
        # gradient coming back through a stacked BatchNorm is a transposed view)
        g = g.contiguous()
        gx = g.bmm(w) if ctx.needs_input_grad[0] else None
        gw = g.transpose(1, 2).bmm(x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


class _Linear(_Layer):
    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        if x.dim() != 3:
            raise Unsupported("Linear on inputs that are not (batch, features)")
        out: torch.Tensor = _StackedLinear.apply(x, p["weight"], p.get("bias"))  # type: ignore[no-untyped-call]
        return out

    def single(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        return F.linear(x, p["weight"], p.get("bias"))


def _grouped_conv(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor],
                  args: Tuple[Any, ...]) -> torch.Tensor:
    """All replicas as one convolution with K x groups groups over the channel-stacked input."""
    stride, padding, dilation, groups = args
    k, n = x.shape[:2]
    out = F.conv2d(x.transpose(0, 1).reshape(n, -1, *x.shape[3:]), w.reshape(-1, *w.shape[2:]),
                   None if bias is None else bias.reshape(-1), stride, padding, dilation, groups * k)
    return out.view(n, k, -1, *out.shape[2:]).transpose(0, 1)


class _StackedConv2d(torch.autograd.Function):
    """The grouped convolution forward with a backward that is partly replica by replica: oneDNN's
    grouped backward may sum in another order than the one-model backward (measured: the input
    gradient differs in the last bits for 8->16 channels, all three for 1->8), so ``per_replica``
    names the gradients ("input", "weight") computed by the convolution_backward call nn.Conv2d's
    autograd makes, one replica at a time; the others come from one grouped call."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor], args: Tuple[Any, ...],
                per_replica: Tuple[str, ...]) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.args, ctx.per_replica = args, per_replica
        ctx.bias_sizes = None if bias is None else [bias.shape[1]]
        return _grouped_conv(x, w, bias, args)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        k, n = x.shape[:2]
        want = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]),
                ctx.bias_sizes is not None and bool(ctx.needs_input_grad[2])]
        alone = [want[0] and "input" in ctx.per_replica, want[1] and "weight" in ctx.per_replica,
                 want[2] and "weight" in ctx.per_replica]  # (the bias gradient goes with the weight's)
        together = [a and not b for a, b in zip(want, alone)]
        out: List[Optional[torch.Tensor]] = [None, None, None]
        if any(together):
            bias_sizes = None if ctx.bias_sizes is None else [k * ctx.bias_sizes[0]]
            parts = torch.ops.aten.convolution_backward(
                g.transpose(0, 1).reshape(n, -1, *g.shape[3:]), x.transpose(0, 1).reshape(n, -1, *x.shape[3:]),
                w.reshape(-1, *w.shape[2:]), bias_sizes, stride, padding, dilation, False, [0, 0], groups * k,
                together)
            if together[0]:
                out[0] = parts[0].view(n, k, *x.shape[2:]).transpose(0, 1)
            if together[1]:
                out[1] = parts[1].view(w.shape)
            if together[2]:
                out[2] = parts[2].view(k, -1)
        if any(alone):
            parts = [torch.ops.aten.convolution_backward(g[r].contiguous(), x[r].contiguous(), w[r], ctx.bias_sizes,
                                                         stride, padding, dilation, False, [0, 0], groups, alone)
                     for r in range(k)]
            for i in range(3):
                if alone[i]:
                    out[i] = torch.stack([part[i] for part in parts])
        return out[0], out[1], out[2], None, None


class _Conv2d(_Layer):
    def __init__(self, module: nn.Module, prefix: str) -> None:
        super().__init__(module, prefix)
        if getattr(module, "padding_mode", "zeros") != "zeros" or isinstance(module.padding, str):
            raise Unsupported("Conv2d with a padding mode other than zeros or a padding given by name")

    def _args(self) -> Tuple[Any, Any, Any, int]:
        m: Any = self.module
        return list(m.stride), list(m.padding), list(m.dilation), int(m.groups)

    def shared(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        """Every replica reads the same input (the model's first layer: the batch, expanded): one
        convolution with K x out channels, plain autograd (measured: its weight gradients are the
        one-model ones, where the grouped backward's are not)."""
        stride, padding, dilation, groups = self._args()
        if x.dim() != 5 or x.stride(0) != 0 or groups != 1:
            raise Unsupported("not a shared input")
        k, n = x.shape[:2]
        w, bias = p["weight"], p.get("bias")
        out = F.conv2d(x[0], w.reshape(-1, *w.shape[2:]), None if bias is None else bias.reshape(-1),
                       stride, padding, dilation)
        return out.view(n, k, -1, *out.shape[2:]).transpose(0, 1)

    def variants(self) -> List[Callable[[torch.Tensor, Tensors, Tensors], torch.Tensor]]:
        def variant(per_replica: Tuple[str, ...]) -> Callable[[torch.Tensor, Tensors, Tensors], torch.Tensor]:
            def run(x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
                if x.dim() != 5:
                    raise Unsupported("Conv2d on inputs that are not (batch, channels, height, width)")
                out: torch.Tensor = _StackedConv2d.apply(  # type: ignore[no-untyped-call]
                    x, p["weight"], p.get("bias"), self._args(), per_replica)
                return out
            return run
        return [self.shared, variant(()), variant(("input",)), variant(("weight",)), variant(("input", "weight"))]

    def single(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        m: Any = self.module
        out: torch.Tensor = m._conv_forward(x, p["weight"], p.get("bias"))
        return out


class _BatchNorm(_Layer):
    """K x C channels in one batch_norm; the running statistics are views into the stacked buffers,
    so its in-place update is each replica's."""

    def _factor(self, b: Tensors) -> Tuple[float, bool]:
        m = self.module
        factor = 0.0 if m.momentum is None else float(m.momentum)  # type: ignore[arg-type]
        if m.training and m.track_running_stats and "num_batches_tracked" in b:
            b["num_batches_tracked"].add_(1)
            # every replica has taken the same number of steps: replica 0's count is everyone's
            count = b["num_batches_tracked"].reshape(-1)[0]
            factor = 1.0 / float(count) if m.momentum is None else float(m.momentum)  # type: ignore[arg-type]
        training = bool(m.training) or ("running_mean" not in b and "running_var" not in b)
        return factor, training

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        if x.dim() < 3:
            raise Unsupported("BatchNorm on inputs without a batch dimension")
        k, n = x.shape[:2]
        factor, training = self._factor(b)
        flat = {name: t.reshape(-1) for name, t in b.items() if name != "num_batches_tracked"}
        w, bias = p.get("weight"), p.get("bias")
        out = F.batch_norm(x.transpose(0, 1).reshape(n, -1, *x.shape[3:]), flat.get("running_mean"),
                           flat.get("running_var"), None if w is None else w.reshape(-1),
                           None if bias is None else bias.reshape(-1), training, factor,
                           float(self.module.eps))  # type: ignore[arg-type]
        return out.view(n, k, -1, *out.shape[2:]).transpose(0, 1)

    def looped(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        factor, training = self._factor(b)  # the count once for all replicas, as in stacked
        return torch.stack([F.batch_norm(x[r].contiguous(), b["running_mean"][r] if "running_mean" in b else None,
                                         b["running_var"][r] if "running_var" in b else None,
                                         p["weight"][r] if "weight" in p else None,
                                         p["bias"][r] if "bias" in p else None, training, factor,
                                         float(self.module.eps))  # type: ignore[arg-type]
                            for r in range(x.shape[0])])


class _Elementwise(_Layer):
    """A parameter-free module that maps each element (activations): the stacked tensor as its input."""

    def __init__(self, module: nn.Module, prefix: str) -> None:
        super().__init__(module, prefix)
        self.in_place = bool(getattr(module, "inplace", False))

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out

    def single(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out


class _PerSample(_Layer):
    """A parameter-free module that works on each sample alone (pooling): replicas folded into the batch."""

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        k, n = x.shape[:2]
        out: torch.Tensor = self.module(x.reshape(k * n, *x.shape[2:]))
        return out.view(k, n, *out.shape[1:])

    def single(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out


class _LastDim(_Layer):
    """Softmax / LogSoftmax along a dimension, shifted past the replica dimension."""

    def _dim(self) -> int:
        dim = getattr(self.module, "dim", None)
        if dim is None:
            raise Unsupported(f"{type(self.module).__name__} without dim")
        return int(dim)

    def _fn(self) -> Callable[..., torch.Tensor]:
        return F.log_softmax if isinstance(self.module, nn.LogSoftmax) else F.softmax

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        dim = self._dim()
        return self._fn()(x, dim=dim + 1 if dim >= 0 else dim)

    def single(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        return self._fn()(x, dim=self._dim())


class _ClassLogSoftmax(_Layer):
    """CrossEntropyLoss's first half (log_softmax over the classes of (batch, classes) outputs) for all
    replicas in one kernel; its second half, nll_loss, stays per replica (its mean sums in a cascade
    that a stacked reduction would not reproduce)."""

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        return F.log_softmax(x, 2)

    def single(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        return F.log_softmax(x, 1)


class _Dropout(_Layer):
    """One mask over the stacked tensor: every replica draws its own (as K separate runs would); not
    checked against a reference, random masks have none."""

    checked_by_reference = False

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        m = self.module
        return F.dropout(x, float(m.p), bool(m.training), bool(m.inplace))  # type: ignore[arg-type]


class _Flatten(_Layer):
    checked_by_reference = False  # a reshape: no arithmetic to differ

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        m = self.module
        start, end = int(m.start_dim), int(m.end_dim)  # type: ignore[arg-type]
        return x.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


class _Identity(_Layer):
    checked_by_reference = False

    def stacked(self, x: torch.Tensor, p: Tensors, b: Tensors) -> torch.Tensor:
        return x


_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
                nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.Softsign)
_PER_SAMPLE = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_LAYERS: Dict[type, Callable[[nn.Module, str], _Layer]] = {
    nn.Linear: _Linear, nn.Conv2d: _Conv2d, nn.BatchNorm1d: _BatchNorm, nn.BatchNorm2d: _BatchNorm,
    nn.Dropout: _Dropout, nn.Flatten: _Flatten, nn.Identity: _Identity, nn.Softmax: _LastDim,
    nn.LogSoftmax: _LastDim, **{t: _Elementwise for t in _ELEMENTWISE}, **{t: _PerSample for t in _PER_SAMPLE}}


def _hooked(module: nn.Module) -> bool:
    return any(bool(getattr(module, name, None)) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _layers(module: nn.Module, prefix: str) -> List[_Layer]:
    # exact types only: a subclass may override forward
    if _hooked(module):
        raise Unsupported(f"{type(module).__name__} at {prefix or 'the top'} has hooks")
    if type(module) is nn.Sequential:
        out: List[_Layer] = []
        for name, child in module.named_children():
            out += _layers(child, f"{prefix}{name}.")
        return out
    make = _LAYERS.get(type(module))
    if make is None:
        raise Unsupported(f"{type(module).__name__} is not a layer the stacked path knows")
    return [make(module, prefix)]


class StackedModel:
    """The model as a list of stacked layers: ``loss(params, buffers, batch)`` -> per-replica losses [K]."""

    def __init__(self, model: nn.Module, criterion: Any) -> None:
        if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            raise Unsupported("global module hooks are set")
        if criterion is None:
            raise Unsupported("the model computes its own loss")
        self.layers = _layers(model, "")
        self.criterion = criterion
        # nn.CrossEntropyLoss as torch computes it (log_softmax, then nll_loss), its log_softmax stacked
        self.log_softmax: Optional[_ClassLogSoftmax] = None
        if (type(criterion) is nn.CrossEntropyLoss and criterion.weight is None and criterion.label_smoothing == 0
                and criterion.reduction == "mean" and not _hooked(criterion)):
            self.log_softmax = _ClassLogSoftmax(criterion, "criterion.")

    def losses(self, params: Tensors, buffers: Tensors, batch: Any, k: int) -> torch.Tensor:
        if not (isinstance(batch, (list, tuple)) and len(batch) >= 2 and torch.is_tensor(batch[0])):
            raise Unsupported("batches that are not (inputs, targets, ...)")
        x = batch[0]
        if not x.is_floating_point():
            raise Unsupported("inputs that are not floating point")
        h = x.unsqueeze(0).expand(k, *x.shape)  # every replica reads the same batch, no copy
        for layer in self.layers:
            h = layer(h, params, buffers)
        y = batch[1]
        if (self.log_softmax is not None and h.dim() == 3 and torch.is_tensor(y) and y.dim() == 1
                and not y.is_floating_point() and h.is_contiguous()):
            ignore = int(self.criterion.ignore_index)
            return torch.stack([F.nll_loss(lp, y, ignore_index=ignore)
                                for lp in self.log_softmax(h, {}, {}).unbind(0)])
        # the criterion replica by replica, as the model alone calls it (unbind: one op back in autograd)
        values = []
        for out in h.unbind(0):
            loss = self.criterion(out if out.is_contiguous() else out.contiguous(), y)
            if not (torch.is_tensor(loss) and loss.numel() == 1):
                raise Unsupported("a criterion that does not return one number")
            values.append(loss if loss.dim() == 0 else loss.reshape(()))
        return torch.stack(values)


# ---- the optimizer ------------------------------------------------------------------------------


class StackedOptimizer:
    """SGD, Adam or AdamW over the stacked parameters, replica r at lrs[r] x its group's lr ratio: the
    per-tensor update of torch.optim (the CPU default), op for op, with the one setting that differs
    per replica (the lr) as a [K, 1, ...] tensor where torch has a Python number:
    ``p.add_(g, alpha=-lr)`` becomes ``p.addcmul_(g, -lr_t)`` (both one fused multiply-add per element),
    ``p.addcdiv_(m, d, value=-s)`` becomes ``p.add_((m * -s_t).div_(d))`` (addcdiv's own order), and
    AdamW's ``p.mul_(1 - lr*wd)`` multiplies by the per-replica factor. Every other op and scalar is the
    same for all replicas and runs on the stacks as it is. The ops run as ``torch._foreach_*`` over a
    group's stacks: on the CPU those loop over the same per-tensor kernels in C++ (same numbers, one
    Python call per op instead of one per op and parameter). Other optimizers, or fused / capturable /
    differentiable settings: Unsupported (the sweep then uses per-replica param groups)."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: Tensors, name_of: Dict[int, str],
                 lrs: Sequence[float]) -> None:
        kind = type(optimizer)
        if kind not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
            raise Unsupported(f"{kind.__name__} is updated by per-replica param groups")
        self.kind = "sgd" if kind is torch.optim.SGD else "adam"
        self.k = len(lrs)
        base = float(optimizer.param_groups[0]["lr"])
        # one entry per user group: its settings, lr per replica (double, as the Python number torch.optim
        # computes with), the stacks and their states
        self.groups: List[Tuple[Dict[str, Any], torch.Tensor, List[torch.Tensor], List[Dict[str, Any]]]] = []
        for g in optimizer.param_groups:
            if any(g.get(key) for key in ("fused", "capturable", "differentiable")):
                raise Unsupported("fused, capturable or differentiable optimizer settings")
            values = [g["lr"], g.get("momentum", 0.0), g.get("dampening", 0.0), g["weight_decay"],
                      *g.get("betas", ()), g.get("eps", 0.0)]
            if any(torch.is_tensor(v) for v in values):
                raise Unsupported("tensor-valued optimizer settings")
            if not g["params"]:
                continue
            stacks = [params[name_of[id(p)]] for p in g["params"]]
            ratio = float(g["lr"]) / base if base > 0 else 1.0
            lr = torch.tensor([v * ratio for v in lrs], dtype=torch.float64, device=stacks[0].device)
            states = []
            for p in g["params"]:
                state: Dict[str, Any] = {}
                for key, value in optimizer.state.get(p, {}).items():
                    if key == "step":
                        state[key] = float(value)
                    elif torch.is_tensor(value):
                        state[key] = value.detach().unsqueeze(0).repeat(self.k, *([1] * value.dim()))
                    else:
                        state[key] = value
                states.append(state)
            self.groups.append((g, lr, stacks, states))

    @property
    def states(self) -> List[Dict[str, Any]]:
        return [state for _, _, _, states in self.groups for state in states]

    def step(self) -> None:
        with torch.no_grad():
            for g, lr, stacks, states in self.groups:
                live = [(p, p.grad, state) for p, state in zip(stacks, states) if p.grad is not None]
                if self.kind == "adam":
                    # parameters at different step counts (a restored state can have them) go separately
                    for step in sorted({state.get("step", 0.0) for _, _, state in live}):
                        self._adam([e for e in live if e[2].get("step", 0.0) == step], g, lr)
                elif live:
                    self._sgd(live, g, lr)
                for p in stacks:
                    p.grad = None

    @staticmethod
    def _per_replica(value: torch.Tensor, like: List[torch.Tensor]) -> List[torch.Tensor]:
        """value ([K], double) rounded to the parameters' dtype (as torch.optim's Python number is when a
        kernel takes it), viewed to broadcast over each stack's replica dimension."""
        value = value.to(like[0].dtype)
        return [value.view(-1, *([1] * (p.dim() - 1))) for p in like]

    def _sgd(self, live: List[Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]], g: Dict[str, Any],
             lr: torch.Tensor) -> None:
        # torch.optim.sgd._single_tensor_sgd, op for op
        ps = [p for p, _, _ in live]
        grads = [grad for _, grad, _ in live]
        if g["maximize"]:
            grads = list(torch._foreach_neg(grads))
        if g["weight_decay"] != 0:
            grads = list(torch._foreach_add(grads, ps, alpha=g["weight_decay"]))
        momentum = g["momentum"]
        if momentum != 0:
            bufs: List[Optional[torch.Tensor]] = [state.get("momentum_buffer") for _, _, state in live]
            old = [(buf, grads[i]) for i, buf in enumerate(bufs) if buf is not None]
            if old:
                torch._foreach_mul_([buf for buf, _ in old], momentum)
                torch._foreach_add_([buf for buf, _ in old], [grad for _, grad in old], alpha=1 - g["dampening"])
            filled: List[torch.Tensor] = []
            for i, buf in enumerate(bufs):
                if buf is None:
                    buf = live[i][2]["momentum_buffer"] = grads[i].detach().clone()
                filled.append(buf)
            grads = list(torch._foreach_add(grads, filled, alpha=momentum)) if g["nesterov"] else filled
        torch._foreach_addcmul_(ps, grads, self._per_replica(-lr, ps))

    def _adam(self, live: List[Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]], g: Dict[str, Any],
              lr: torch.Tensor) -> None:
        # torch.optim.adam._single_tensor_adam (not capturable), op for op
        if not live:
            return
        for p, _, state in live:
            if not state:
                state["step"] = 0.0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if g["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        ps = [p for p, _, _ in live]
        grads = [grad for _, grad, _ in live]
        exp_avgs = [state["exp_avg"] for _, _, state in live]
        exp_avg_sqs = [state["exp_avg_sq"] for _, _, state in live]
        step = live[0][2]["step"]
        if g["maximize"]:
            grads = list(torch._foreach_neg(grads))
        beta1, beta2 = g["betas"]
        wd = g["weight_decay"]
        if wd != 0:
            if g.get("decoupled_weight_decay", False):
                torch._foreach_mul_(ps, self._per_replica(1 - lr * wd, ps))
            else:
                grads = list(torch._foreach_add(grads, ps, alpha=wd))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if g["amsgrad"]:
            maxima = [state["max_exp_avg_sq"] for _, _, state in live]
            torch._foreach_maximum_(maxima, exp_avg_sqs)
            denom = torch._foreach_sqrt(maxima)
        else:
            denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, g["eps"])
        update = torch._foreach_mul(exp_avgs, self._per_replica(-(lr / bias_correction1), ps))
        torch._foreach_div_(update, denom)
        torch._foreach_add_(ps, update)
