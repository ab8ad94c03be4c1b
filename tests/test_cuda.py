"""pylrcore.torch.cuda: importing never needs a GPU; misuse is refused before any CUDA call; the kernels'
host twins agree with the CPU core; and, on a GPU, the kernels agree with their twins bit for bit.

The GPU tests are skipped without a usable CUDA device. They are the ones still to be run."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any, List, Optional

import numpy as np
import pytest
from procs import pylrcore_env, scratch_dir
import torch

import pylrcore
import pylrcore.torch.cuda
from pylrcore.torch.cuda import GradCheck, LossTracker
from pylrcore.nonfinite import scan

try:
    from pylrcore import _cuda
except ImportError:  # built without a CUDA compiler
    _cuda = None  # type: ignore[assignment]

needs_extension = pytest.mark.skipif(_cuda is None, reason="pylrcore was built without its CUDA extension")
needs_gpu = pytest.mark.skipif(not pylrcore.torch.cuda.is_available(), reason=f"no CUDA: {pylrcore.torch.cuda.unavailable_reason()}")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
MAX_FINITE = {dt: float(torch.finfo(dt).max) for dt in DTYPES}
CHUNK_BYTES = 64 << 10


def test_probe_answers_without_raising() -> None:
    n = pylrcore.torch.cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert pylrcore.torch.cuda.is_available() == (n > 0)
    reason = pylrcore.torch.cuda.unavailable_reason()
    assert isinstance(reason, str)
    if n == 0:
        assert reason  # says why: not built, no driver, or no device


@pytest.mark.slow  # a Python subprocess
def test_importing_pylrcore_cuda_does_not_import_torch() -> None:
    code = "import sys, pylrcore, pylrcore.torch.cuda; pylrcore.torch.cuda.is_available(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=pylrcore_env(), cwd=scratch_dir())


# --- argument checks: these run without a GPU --------------------------------------------------------


class FakeCudaTensor:
    """Just enough of a CUDA tensor for the checks that come before any CUDA call."""

    layout = torch.strided

    def __init__(self, n: int = 4, dtype: torch.dtype = torch.float32, index: int = 0, contiguous: bool = True) -> None:
        self.device = torch.device("cuda", index)
        self.dtype = dtype
        self.shape = (n,)
        self._n, self._contiguous = n, contiguous

    def is_contiguous(self) -> bool:
        return self._contiguous

    def data_ptr(self) -> int:
        return 0x7F0000000000

    def numel(self) -> int:
        return self._n


def test_grad_check_refuses_cpu_tensors_with_a_pointer_to_scan() -> None:
    with pytest.raises(ValueError, match=r"tensors\[1\] is on cpu; .*pylrcore.nonfinite.scan"):
        GradCheck([FakeCudaTensor(), torch.zeros(3)])
    with pytest.raises(ValueError, match="is on meta"):
        GradCheck([torch.zeros(3, device="meta")])


@pytest.mark.parametrize(
    "tensors, error, message",
    [
        ([], ValueError, "tensors is empty"),
        ([None], TypeError, r"tensors\[0\] is None"),
        ([1.0], TypeError, r"tensors\[0\] is a float"),
        ([FakeCudaTensor(dtype=torch.int32)], TypeError, "dtype torch.int32"),
        ([FakeCudaTensor(dtype=torch.complex64)], TypeError, "float32, float64, float16 or bfloat16"),
        ([FakeCudaTensor(contiguous=False)], ValueError, r"not contiguous .*contiguous\(\)"),
        ([FakeCudaTensor(), FakeCudaTensor(index=1)], ValueError, r"tensors\[1\] is on cuda:1 but tensors\[0\] is on cuda:0"),
        ([torch.zeros(2, 2).to_sparse()], ValueError, "sparse"),
    ],
)
def test_grad_check_names_the_bad_argument(tensors: List[Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        GradCheck(tensors)


def test_grad_check_takes_a_list_not_one_tensor() -> None:
    with pytest.raises(TypeError, match="must be a list of CUDA tensors"):
        GradCheck(FakeCudaTensor())  # type: ignore[arg-type]


@pytest.mark.skipif(pylrcore.torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_valid_tensors_without_cuda_raise_runtime_error_with_the_reason() -> None:
    with pytest.raises(RuntimeError, match="not available here: " + pylrcore.torch.cuda.unavailable_reason()[:20]):
        GradCheck([FakeCudaTensor(), FakeCudaTensor(dtype=torch.bfloat16)])
    with pytest.raises(RuntimeError, match="not available"):
        LossTracker(10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"capacity": 0}, "capacity must be >= 1"),
        ({"capacity": 10, "beta": 1.0}, r"beta must be in \[0, 1\)"),
        ({"capacity": 10, "beta": -0.5}, r"beta must be in \[0, 1\)"),
        ({"capacity": 10, "kind": "ewma"}, "kind must be one of"),
        ({"capacity": 10, "diverge_th": 1.0}, "diverge_th must be a finite number > 1"),
    ],
)
def test_loss_tracker_checks_its_settings_first(kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LossTracker(**kwargs)


def test_loss_tracker_refuses_a_bad_loss_tensor() -> None:
    from pylrcore.torch.cuda import _loss_address

    cuda0 = torch.device("cuda", 0)
    with pytest.raises(ValueError, match="loss is on cpu"):
        _loss_address(torch.tensor(1.0), cuda0)
    with pytest.raises(ValueError, match="one value"):
        _loss_address(FakeCudaTensor(n=2), cuda0)
    with pytest.raises(ValueError, match="tracker is on cuda:0"):
        _loss_address(FakeCudaTensor(n=1, index=1), cuda0)
    assert _loss_address(FakeCudaTensor(n=1, dtype=torch.bfloat16), cuda0) == (0x7F0000000000, 3)


# --- the host twins, compiled into the extension: run wherever it was built ----------------------------


def _values(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-128, 129, (n,), generator=g).double() / 64).to(dtype)  # exact in every dtype


def _twin(host: List[torch.Tensor], device_addresses: Optional[List[int]] = None) -> Any:
    assert _cuda is not None
    addresses = [t.data_ptr() for t in host]
    return _cuda.check_on_host(
        addresses, device_addresses or addresses, [t.numel() for t in host], [CODES[t.dtype] for t in host]
    )


def _poisoned_tables() -> List[List[torch.Tensor]]:
    """Edge cases: NaN/+Inf/-Inf first, last, in a chunk's tail and across a chunk edge, largest
    finite values, empty and 1-element tensors, mixed dtypes."""
    tables = []
    for dt in DTYPES:
        per = CHUNK_BYTES // torch.tensor([], dtype=dt).element_size()
        for n in (1, 37, per + 9):
            for pos in sorted({0, n - 1, n // 2, per - 1 if n > per else 0}):
                for bad in (math.nan, math.inf, -math.inf):
                    t = _values(n, dt, n + pos)
                    t[pos] = bad
                    tables.append([t])
        big = torch.full((257,), MAX_FINITE[dt], dtype=dt)
        big[1::2] *= -1
        tables.append([big, torch.empty(0, dtype=dt), _values(1, dt, 1)])
    mixed = [_values(5000 + 731 * i, DTYPES[i % 4], i) for i in range(9)]
    mixed[6][4321] = math.inf
    mixed[2][17] = math.nan
    tables.append(mixed)
    return tables


@needs_extension
def test_kernel_twin_agrees_with_the_cpu_scan() -> None:
    for table in _poisoned_tables():
        sumsq, count, tensor, element = _twin(table)
        ref = scan(table)
        assert (count == 0) == ref.finite and count == ref.nonfinite_count
        assert (None if count == 0 else (tensor, element)) == ref.first_bad
        assert ref.sumsq is not None
        if math.isnan(ref.sumsq) or math.isinf(ref.sumsq):
            assert repr(sumsq) == repr(ref.sumsq)
        else:
            assert sumsq == pytest.approx(ref.sumsq, rel=1e-13)


@needs_extension
def test_kernel_twin_follows_the_device_alignment() -> None:
    # Same data, different device addresses: other elements take the 16-byte path, same answer.
    t = _values(10_001, torch.float16, 3)
    t[9_999] = math.nan
    for misalign in range(0, 16, 2):
        sumsq, count, tensor, element = _twin([t], [0x7F0000000000 + misalign])
        assert (count, tensor, element) == (1, 0, 9_999) and math.isnan(sumsq)
    with pytest.raises(ValueError, match="not aligned to its 2-byte elements"):
        _twin([t], [0x7F0000000001])


@needs_extension
@pytest.mark.parametrize("kind, code", [("plain", 0), ("debiased", 1), ("lightning", 2)])
def test_loss_tracker_twin_is_pylrcore_ema_to_the_bit(kind: str, code: int) -> None:
    assert _cuda is not None
    rng = np.random.default_rng(0)
    losses = (2.0 + 0.1 * rng.standard_normal(200)).tolist()
    state, smoothed = _cuda.track_losses_on_host(losses, {"beta": 0.9, "kind": code, "diverge_th": 1e9})
    np.testing.assert_array_equal(np.asarray(smoothed), pylrcore.ema(losses, 0.9, kind=kind))
    assert state["steps"] == 200 and state["stop_step"] == -1
    assert state["best"] == min(smoothed)


@needs_extension
def test_loss_tracker_twin_stops_like_the_finder() -> None:
    assert _cuda is not None
    losses = [3.0, 2.0, 1.0, 0.9, 2.0, 6.0, 50.0]
    state, smoothed = _cuda.track_losses_on_host(losses, {"beta": 0.0, "kind": 0, "diverge_th": 5.0})
    assert smoothed == losses and state["diverged_step"] == 5 and state["stop_step"] == 5  # 6 > 5 x 0.9
    state, smoothed = _cuda.track_losses_on_host([1.0, math.nan, 1.0], {"beta": 0.5, "kind": 1, "diverge_th": 4.0})
    assert state["nonfinite_step"] == 1 and state["stop_step"] == 1 and state["finite"] == 2
    assert math.isnan(smoothed[1])


@needs_extension
def test_loss_tracker_config_is_read_by_field_name() -> None:
    assert _cuda is not None
    state, _ = _cuda.track_losses_on_host([1.0], {})  # keys left out keep the core's defaults
    assert state["steps"] == 1
    with pytest.raises(TypeError, match="loss tracker config: unknown setting 'smooth_f'"):
        _cuda.track_losses_on_host([1.0], {"smooth_f": 0.05})
    with pytest.raises(ValueError, match="'kind' must be one of plain, debiased, lightning, fastai, got 7"):
        _cuda.track_losses_on_host([1.0], {"kind": 7})
    with pytest.raises(ValueError, match="beta must be in"):
        _cuda.track_losses_on_host([1.0], {"beta": 1.0})


# --- on a GPU: the kernels themselves (skipped here; see the module docstring) -------------------------


def _cuda_copy(table: List[torch.Tensor], misalign_elements: int = 0) -> List[torch.Tensor]:
    """Device copies; with misalign_elements > 0 each starts that many elements into its storage,
    so the kernel's scalar head path runs."""
    out = []
    for t in table:
        base = torch.empty(t.numel() + misalign_elements, dtype=t.dtype, device="cuda")
        view = base[misalign_elements:]
        view.copy_(t)
        out.append(view)
    return out


@needs_gpu
@pytest.mark.parametrize("misalign", [0, 1, 3])
def test_gpu_check_matches_twin_bit_for_bit_and_cpu_scan(misalign: int) -> None:
    for table in _poisoned_tables():
        device = _cuda_copy(table, misalign)
        check = GradCheck(device)
        check(device)
        torch.cuda.synchronize()
        got = check.result()
        ref = scan(table)
        assert got.finite == ref.finite and got.first_bad == ref.first_bad
        assert got.nonfinite_count == ref.nonfinite_count
        assert float(check.found_inf.item()) == (0.0 if ref.finite else 1.0)
        twin_sumsq, *_ = _twin(table, [t.data_ptr() for t in device])
        assert repr(got.sumsq) == repr(twin_sumsq)  # the same bits (NaN/inf included)


@needs_gpu
def test_gpu_check_sums_large_tensors_like_torch() -> None:
    g = [torch.randn(n, device="cuda", dtype=dt) for n, dt in [(50_000_000, torch.float32), (30_000_001, torch.bfloat16)]]
    check = GradCheck(g)
    check()
    expected = sum(float(t.double().pow(2).sum()) for t in g)
    assert check.result().sumsq == pytest.approx(expected, rel=1e-12)


@needs_gpu
def test_gpu_check_is_sync_free_and_repoints_new_gradients() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).cuda()
    x = torch.randn(32, 64, device="cuda")
    model(x).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    check = GradCheck(grads)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            check(grads)
            check.norm()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads]))
    assert float(check.norm()) == pytest.approx(float(expected), rel=1e-12)


@needs_gpu
def test_gpu_check_replays_in_a_cuda_graph() -> None:
    g = [torch.randn(1000, device="cuda"), torch.randn(77, device="cuda", dtype=torch.float16)]
    check = GradCheck(g)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        check()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        check()
    g[1][5] = math.inf
    graph.replay()
    torch.cuda.synchronize()
    assert check.result().first_bad == (1, 5) and float(check.found_inf) == 1.0
    g[1][5] = 0.0
    graph.replay()
    assert check.result().finite


@needs_gpu
def test_gpu_found_inf_makes_fused_adam_skip_the_step() -> None:
    p = torch.nn.Parameter(torch.ones(8, device="cuda"))
    opt = torch.optim.Adam([p], lr=0.1, fused=True)
    p.grad = torch.ones(8, device="cuda")
    p.grad[3] = math.nan
    check = GradCheck([p.grad])
    check()
    opt.found_inf = check.found_inf  # type: ignore[attr-defined]  # what GradScaler sets for fused optimizers
    opt.grad_scale = None  # type: ignore[attr-defined]
    opt.step()
    assert torch.equal(p.detach(), torch.ones(8, device="cuda"))


@needs_gpu
@pytest.mark.parametrize("kind", ["plain", "debiased"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gpu_loss_tracker_matches_pylrcore_ema(kind: str, dtype: torch.dtype) -> None:
    losses = torch.linspace(3.0, 1.0, 60).to(dtype).tolist() + torch.linspace(1.0, 20.0, 40).to(dtype).tolist()
    tracker = LossTracker(len(losses), beta=0.9, kind=kind, diverge_th=5.0)
    device_losses = [torch.tensor(v, dtype=dtype, device="cuda") for v in losses]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, loss in enumerate(device_losses):
            tracker.append(loss)
            if i % 10 == 9:
                tracker.request()
                tracker.poll()  # never blocks
    finally:
        torch.cuda.set_sync_debug_mode("default")
    raw, smoothed = tracker.history()
    np.testing.assert_array_equal(raw, np.asarray(losses, dtype=np.float64))
    np.testing.assert_array_equal(smoothed, pylrcore.ema(losses, 0.9, kind=kind))
    assert _cuda is not None
    expected, _ = _cuda.track_losses_on_host(losses, {"beta": 0.9, "kind": 0 if kind == "plain" else 1, "diverge_th": 5.0})
    state = tracker.state()
    assert state.stop_step == expected["stop_step"] and state.best == expected["best"]
    torch.cuda.synchronize()
    polled = tracker.poll()
    assert polled is not None and polled.steps == len(losses)
    tracker.reset()
    assert tracker.state().steps == 0


# --- the guard's decision on the device (step/guard.hpp's guard_step()) ----------------------------------------


def _guard_inputs(n: int, seed: int) -> List[Any]:
    """(has_loss, loss, grads_checked, grad_nonfinite, grad_sumsq, amp_active) per step, with
    spikes, NaN losses, non-finite gradients and a final explosion."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        loss = float((2.0 - i / n) * np.exp(0.05 * rng.standard_normal()))
        if rng.random() < 0.02:
            loss *= 20.0
        if i > 0.85 * n:
            loss *= 1.0 + 30.0 * (i / n - 0.85)
        if rng.random() < 0.01:
            loss = math.nan
        norm = float(np.exp(0.2 * rng.standard_normal()))
        bad = 2 if rng.random() < 0.01 else 0
        out.append((rng.random() > 0.05, loss, rng.random() > 0.05, bad, norm * norm, 0.3 * n < i < 0.4 * n))
    return out


GUARD_ACTIONS = [1, 1, 3, 1, 2, 0, 4]  # skip, skip, rollback, skip, scale_lr, record, raise


@needs_extension
@pytest.mark.parametrize("takeover", [0, 700])
def test_device_guard_twin_decides_like_the_cpu_guard_core(takeover: int) -> None:
    assert _cuda is not None
    from pylrcore import _core

    loss_config: Any = {"warmup": 20}
    norm_config: Any = {"spike_z": 4.0}
    core = _core.GuardCore(loss_config, norm_config, GUARD_ACTIONS, 3)
    inputs = _guard_inputs(1500, 1)
    for has_loss, loss, checked, bad, sumsq, amp in inputs[:takeover]:
        core.check(loss, has_loss, checked, bad, sumsq, amp)
    state = core._get_state() if takeover else None
    twin = _cuda.guard_steps_on_host(loss_config, norm_config, GUARD_ACTIONS, 3, state, inputs[takeover:])
    for (has_loss, loss, checked, bad, sumsq, amp), got in zip(inputs[takeover:], twin):
        d = core.check(loss, has_loss, checked, bad, sumsq, amp)
        expected = (d.step, d.events, d.action_code, d.consecutive_skips, d.loss_z, d.smoothed, d.explode_at,
                    d.grad_norm, d.norm_z)
        assert repr(got) == repr(expected)


@needs_gpu
def test_gpu_device_guard_matches_its_twin_and_skips_without_a_sync() -> None:
    assert _cuda is not None
    inputs = _guard_inputs(400, 2)
    grad = torch.zeros(1000, device="cuda")
    check = GradCheck([grad])
    stream = torch.cuda.current_stream().cuda_stream
    guard = _cuda.DeviceGuard(0, {}, {}, GUARD_ACTIONS, 3, None, stream)
    found_inf = torch.zeros((), device="cuda")
    clip = torch.zeros((), device="cuda")
    scale = torch.zeros((), device="cuda")
    records = torch.zeros((len(inputs), 9), dtype=torch.float64, device="cuda")
    losses = torch.tensor([x[1] for x in inputs], dtype=torch.float32, device="cuda")
    torch.cuda.synchronize()
    twin_inputs = []
    for i, (has_loss, _, checked, bad, sumsq, amp) in enumerate(inputs):
        grad.fill_(math.sqrt(sumsq / grad.numel()))
        if bad:
            grad[7] = math.inf
        check(None)
        loss_ptr = losses[i].data_ptr() if has_loss else 0
        info, ssq = (check.info.data_ptr(), check.sumsq.data_ptr()) if checked else (0, 0)
        guard.decide(loss_ptr, 0, info, ssq, amp, 1.0, found_inf.data_ptr(), clip.data_ptr(), scale.data_ptr(),
                     records[i].data_ptr(), stream)
        twin_inputs.append((has_loss, float(np.float32(inputs[i][1])), checked, 1 if bad else 0,
                            float(check.sumsq), amp))  # reads back: this test checks values, not syncs
    twin = _cuda.guard_steps_on_host({}, {}, GUARD_ACTIONS, 3, None, twin_inputs)
    got = records.cpu().numpy()
    for row, expected in zip(got, twin):
        assert tuple(int(v) for v in row[:4]) == expected[:4]  # step, events, action, consecutive skips
        np.testing.assert_allclose(row[4:], np.asarray(expected[4:], dtype=np.float64), rtol=1e-13)  # ln() ulps
