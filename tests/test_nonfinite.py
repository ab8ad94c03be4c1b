"""pylrcore.nonfinite (scan, all_finite) against numpy/torch references.

Tolerance of sumsq: rtol 1e-12 against np.sum(x.astype(np.float64) ** 2). Both sum exact squares
(float16/32 squares are exact in double) in double, in different orders; the scan's worst-case
bound is 1.1e-13 (fixed lanes per 64 KiB segment, compensated sum over segments).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import warnings
from typing import Any, List, Optional, Tuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pylrcore
from pylrcore.nonfinite import ScanResult, all_finite, scan

RTOL = 1e-12
NUMPY_FLOATS = [np.float16, np.float32, np.float64]
SIZES = [1, 7, 31, 32, 33, 1000, 16384 + 5]  # one element, partial lanes, whole lanes, > one segment


def reference(buffers: List[np.ndarray]) -> Tuple[Optional[Tuple[int, int]], int, float]:
    """(first_bad, nonfinite_count, sumsq) computed with numpy in float64."""
    first_bad = None
    count = 0
    total = 0.0
    for b, arr in enumerate(buffers):
        flat = np.asarray(arr, dtype=np.float64).ravel()
        bad = ~np.isfinite(flat)
        if bad.any() and first_bad is None:
            first_bad = (b, int(np.argmax(bad)))
        count += int(bad.sum())
        with np.errstate(over="ignore", invalid="ignore"):
            total += float(np.sum(flat**2))
    return first_bad, count, total


def bad_positions(n: int) -> List[int]:
    tail = n - n % 32  # first element after the last whole group of lanes
    return sorted({0, n - 1, n // 2, *([tail] if tail < n else [])})


# --- NaN / Inf detection --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_bad_value_found_at_first_last_middle_and_tail(dtype: Any, n: int, bad: float) -> None:
    rng = np.random.default_rng(n)
    for pos in bad_positions(n):
        x = rng.standard_normal(n).astype(dtype)
        x[pos] = bad
        for want in (True, False):
            r = scan([np.ones(3, np.float32), x], sumsq=want)
            assert not r.finite
            assert r.first_bad == (1, pos)
            assert r.nonfinite_count == 1
            if want:
                assert math.isnan(r.sumsq) if np.isnan(bad) else r.sumsq == math.inf


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_bad_value_in_torch_bfloat16_and_float16(n: int, bad: float) -> None:
    torch = pytest.importorskip("torch")
    for dtype in (torch.bfloat16, torch.float16):
        for pos in bad_positions(n):
            t = torch.randn(n).to(dtype)
            t[pos] = bad
            r = scan([t])
            assert (r.finite, r.first_bad, r.nonfinite_count) == (False, (0, pos), 1)


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
def test_largest_finite_values_are_not_flagged(dtype: Any) -> None:
    big = np.finfo(dtype).max
    for n in (1, 32, 33, 1000):  # whole lanes of maxima too: their float32 squares would overflow
        x = np.full(n, big, dtype=dtype)
        x[::2] = -big
        r = scan([x])
        assert r.finite and r.first_bad is None and r.nonfinite_count == 0
        assert all_finite(x)
        expected = n * float(big) ** 2 if dtype != np.float64 else math.inf  # float64: the sum overflows
        assert r.sumsq == pytest.approx(expected, rel=RTOL)


def test_largest_bfloat16_is_not_flagged() -> None:
    torch = pytest.importorskip("torch")
    big = torch.finfo(torch.bfloat16).max
    t = torch.full((100,), big, dtype=torch.bfloat16)
    r = scan(t)
    assert r.finite
    assert r.sumsq == pytest.approx(100 * big**2, rel=RTOL)


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
def test_subnormals_are_finite_and_squared_exactly(dtype: Any) -> None:
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([tiny, -tiny, 3 * tiny, 0.0], dtype=dtype)
    r = scan([x])
    assert r.finite
    if dtype == np.float64:
        assert r.sumsq == 0.0  # the squares underflow in double too
    else:
        assert r.sumsq == float(np.sum(x.astype(np.float64) ** 2))  # exact, not flushed to zero
        assert r.sumsq > 0


def test_nan_wins_over_inf_in_sumsq() -> None:
    r = scan([np.array([np.inf, 1.0], np.float32), np.array([2.0, np.nan], np.float16)])
    assert math.isnan(r.sumsq) and math.isnan(r.norm)
    assert r.first_bad == (0, 0) and r.nonfinite_count == 2
    r = scan([np.array([-np.inf, 1.0, np.inf])])
    assert r.sumsq == math.inf and r.nonfinite_count == 2


def test_first_bad_across_many_buffers() -> None:
    rng = np.random.default_rng(0)
    buffers = [rng.standard_normal(rng.integers(0, 3000)).astype(NUMPY_FLOATS[i % 3]) for i in range(60)]
    buffers[17] = rng.standard_normal(50).astype(np.float32)
    buffers[40] = rng.standard_normal(50).astype(np.float64)
    for b, i, value in [(40, 3, np.nan), (17, 49, -np.inf), (17, 20, np.nan), (59, 0, np.inf)]:
        if buffers[b].size > i:
            buffers[b][i] = value
    first_bad, count, _ = reference(buffers)
    assert first_bad == (17, 20)
    for threads in (None, 1, 2, 3):
        r = scan(buffers, threads=threads)
        assert (r.first_bad, r.nonfinite_count) == (first_bad, count)


# --- sum of squares -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
@pytest.mark.parametrize("n", [0, 1, 33, 100_003, 300_007])
def test_sumsq_matches_numpy_float64(dtype: Any, n: int) -> None:
    x = (np.random.default_rng(n).standard_normal(n) * 3).astype(dtype)
    r = scan([x])
    expected = float(np.sum(x.astype(np.float64) ** 2))
    assert r.finite
    assert r.sumsq == pytest.approx(expected, rel=RTOL, abs=0.0)
    assert r.norm == pytest.approx(math.sqrt(expected), rel=RTOL)


def test_sumsq_matches_torch_vector_norm() -> None:
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(*shape, generator=gen) for shape in [(64, 3, 7, 7), (64,), (1000, 2048), (1000,)]]
    tensors += [torch.randn(5000, generator=gen).to(torch.bfloat16), torch.randn(300, 7, generator=gen).half()]
    r = scan(tensors)
    flat64 = torch.cat([t.double().flatten() for t in tensors])
    assert r.norm == pytest.approx(torch.linalg.vector_norm(flat64).item(), rel=RTOL)
    # torch's float32 norm accumulates in float32: on the 2M-element tensor it is off by ~3e-5
    # (torch 2.13 CPU), so it is the loose side of this comparison.
    norms32 = torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])
    assert r.norm == pytest.approx(torch.linalg.vector_norm(norms32).item(), rel=1e-4)


def test_thread_count_does_not_change_the_result() -> None:
    rng = np.random.default_rng(3)
    buffers = [rng.standard_normal(n).astype(NUMPY_FLOATS[i % 3]) for i, n in enumerate([300_000, 0, 77, 250_001, 1])]
    buffers += [rng.standard_normal(400_000).astype(np.float32)]
    single = scan(buffers, threads=1)
    for threads in (None, 2, 3, 4, 16):
        assert scan(buffers, threads=threads) == single  # bit-identical sumsq included
    buffers[3][200_000] = np.nan
    buffers[5][7] = np.inf
    single = scan(buffers, threads=1)
    assert single.first_bad == (3, 200_000) and single.nonfinite_count == 2
    for threads in (2, 5):
        r = scan(buffers, threads=threads)
        assert (r.first_bad, r.nonfinite_count, math.isnan(r.sumsq)) == (single.first_bad, 2, True)


def test_concurrent_calls_from_python_threads() -> None:
    # The GIL is released during the scan; calls from several threads must not interfere.
    rng = np.random.default_rng(4)
    buffers = [rng.standard_normal(200_000).astype(np.float32) for _ in range(4)]
    expected = scan(buffers, threads=1)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: scan(buffers, threads=2), range(16)))
    assert all(r == expected for r in results)


# --- inputs: what is accepted without copies -----------------------------------------------------


class _SpyCore:
    """Records the raw table handed to the native scan."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.calls: List[Tuple[Any, ...]] = []

    def scan(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.core.scan(*args)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _SpyCore:
    import sys

    module = sys.modules["pylrcore.nonfinite"]
    recorder = _SpyCore(module._core)
    monkeypatch.setattr(module, "_core", recorder)
    return recorder


def test_torch_tensors_are_read_in_place(spy: _SpyCore) -> None:
    torch = pytest.importorskip("torch")
    bf = torch.randn(1000).to(torch.bfloat16)
    half = torch.randn(10, 10).half()
    view = torch.randn(100)[10:]  # contiguous view at an offset
    param = torch.nn.Parameter(torch.randn(4, 4))
    r = scan([bf, half, view, param])
    pointers, counts, codes = spy.calls[0][:3]
    assert pointers == [bf.data_ptr(), half.data_ptr(), view.data_ptr(), param.data_ptr()]
    assert counts == [1000, 100, 90, 16] and codes == [3, 2, 0, 0]
    expected = sum(float((t.detach().double() ** 2).sum()) for t in (bf, half, view, param))
    assert r.sumsq == pytest.approx(expected, rel=RTOL)
    view[5] = math.nan  # the view's indices are the ones reported
    assert scan([bf, view]).first_bad == (1, 5)


def test_numpy_arrays_are_read_in_place(spy: _SpyCore) -> None:
    base = np.arange(20, dtype=np.float64)
    view = base[4:]  # contiguous, offset
    grid = np.ones((3, 5), np.float16)
    scan([view, grid])
    assert spy.calls[0][0] == [view.ctypes.data, grid.ctypes.data]
    assert spy.calls[0][1:3] == ([16, 15], [1, 2])


def test_single_array_tensor_and_generators_are_accepted() -> None:
    x = np.array([1.0, np.nan, 2.0], np.float32)
    assert scan(x).first_bad == (0, 1)
    assert scan(iter([np.zeros(2), x])).first_bad == (1, 1)
    torch = pytest.importorskip("torch")
    assert scan(torch.tensor([3.0, 4.0])).norm == 5.0
    params = [torch.nn.Parameter(torch.ones(2)) for _ in range(3)]
    (params[0] * params[1] * params[2]).sum().backward()
    assert scan(p.grad for p in params).sumsq == 6.0


def test_empty_inputs_and_one_element_buffers() -> None:
    r = scan([])
    assert r == ScanResult(finite=True, first_bad=None, nonfinite_count=0, sumsq=0.0)
    assert scan([np.empty(0, np.float16), np.empty((0, 3))]).sumsq == 0.0
    assert scan([np.empty(0, np.float32), np.full(1, -3.0, np.float16)]).sumsq == 9.0
    assert scan([np.array(np.nan)]).first_bad == (0, 0)  # 0-d array


def test_sumsq_false_result_and_repr() -> None:
    x = np.array([3.0, 4.0], np.float32)
    r = scan([x], sumsq=False)
    assert r.finite and r.sumsq is None and r.norm is None
    assert repr(r) == "ScanResult(finite=True)"
    assert repr(scan([x])) == "ScanResult(finite=True, sumsq=25, norm=5)"
    bad = scan([x, np.array([np.inf])])
    assert repr(bad) == "ScanResult(finite=False, first_bad=(1, 0), nonfinite_count=1, sumsq=inf, norm=inf)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        bad.finite = True  # type: ignore[misc]
    assert {"scan", "all_finite", "ScanResult"} <= set(pylrcore.__all__)
    assert pylrcore.scan is scan and pylrcore.nonfinite.scan is scan  # the module no longer shadows it


# --- misuse: each error names the argument and the fix -------------------------------------------


def test_non_contiguous_numpy_array() -> None:
    with pytest.raises(ValueError, match=r"buffers\[1\] is not C-contiguous.*np\.ascontiguousarray\(buffers\[1\]\)"):
        scan([np.zeros(3), np.zeros(10)[::2]])
    with pytest.raises(ValueError, match=r"buffers\[0\] is not C-contiguous"):
        scan([np.zeros((3, 4)).T])


def test_non_contiguous_tensor() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"buffers\[0\] is not contiguous.*buffers\[0\]\.contiguous\(\)"):
        scan([torch.zeros(3, 4).t()])
    with pytest.raises(ValueError, match=r"\.contiguous\(\)"):
        scan([torch.zeros(2, 3, 4, 4).to(memory_format=torch.channels_last)])


def test_device_tensor() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"buffers\[0\] is on meta.*pylrcore\.torch\.cuda.*buffers\[0\]\.cpu\(\)"):
        scan([torch.empty(3, device="meta")])
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"buffers\[0\] is on cuda.*\.cpu\(\)"):
            scan([torch.zeros(3, device="cuda")])


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.complex64, np.longdouble])
def test_unsupported_numpy_dtype(dtype: Any) -> None:
    if dtype is np.longdouble and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("long double is float64 on this platform")
    fix = r"view\(buffers\[0\]\.real\.dtype\)" if dtype is np.complex64 else r"astype\(np\.float64\)"
    with pytest.raises(TypeError, match=rf"buffers\[0\] has dtype .*float32, float64, float16 or bfloat16.*{fix}"):
        scan([np.zeros(3, dtype)])


def test_unsupported_torch_dtype() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"buffers\[1\] has dtype torch\.int64.*buffers\[1\]\.float\(\)"):
        scan([torch.zeros(2), torch.zeros(2, dtype=torch.int64)])
    with pytest.raises(TypeError, match=r"torch\.view_as_real\(buffers\[0\]\)"):
        scan([torch.zeros(2, dtype=torch.complex64)])
    real = torch.view_as_real(torch.tensor([1 + 2j, math.nan + 0j], dtype=torch.complex64))
    assert scan([real]).first_bad == (0, 2)  # the suggested fix works, without a copy


def test_byte_swapped_array() -> None:
    with pytest.raises(ValueError, match=r"buffers\[0\] has byte-swapped dtype.*newbyteorder"):
        scan([np.zeros(3, np.dtype(np.float32).newbyteorder())])


def test_sparse_tensors() -> None:
    torch = pytest.importorskip("torch")
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([1.0, math.nan]), (4,), check_invariants=True)
    with pytest.raises(ValueError, match=r"buffers\[0\] is a sparse tensor.*buffers\[0\]\.coalesce\(\)\.values\(\)"):
        scan([coo])
    assert scan([coo.coalesce().values()]).first_bad == (0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        csr = torch.eye(3).to_sparse_csr()
    with pytest.raises(ValueError, match=r"sparse tensor .*buffers\[0\]\.values\(\)"):
        scan([csr])


@pytest.mark.parametrize(
    "buffers, pattern",
    [
        ([np.zeros(2), None], r"buffers\[1\] is None .*p\.grad is not None"),
        ([1.0, 2.0], r"buffers\[0\] is a float, not an array.*np\.asarray"),
        ([[1.0, 2.0]], r"buffers\[0\] is a list"),
        ([b"abc"], r"buffers\[0\] is a bytes; each buffer must be a numpy array or a CPU torch tensor"),
        ({"w": np.zeros(2)}, r"buffers is a dict; .*list\(buffers\.values\(\)\)"),
        (3.0, r"buffers must be a list of numpy arrays"),
        ("abc", r"buffers must be a list"),
    ],
)
def test_not_buffers(buffers: Any, pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern):
        scan(buffers)


def test_unknown_dtype_code_at_the_core_is_a_value_error() -> None:
    from pylrcore import _core

    x = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"buffers\[0\] has unknown dtype code 9 \(0=float32, 1=float64, 2=float16, 3=bfloat16\)"):
        _core.scan([x.ctypes.data], [1], [9], True, 1)


def test_bad_threads() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        scan([np.zeros(2)], threads=0)
    with pytest.raises(TypeError, match="threads must be an integer"):
        scan([np.zeros(2)], threads=2.0)


# --- property test -------------------------------------------------------------------------------


def _arrays_of(dtype: Any) -> st.SearchStrategy[np.ndarray]:
    width = np.dtype(dtype).itemsize * 8
    # float64 magnitudes stay below 1e150 so the float64 reference cannot overflow differently.
    elements = st.floats(width=width, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    if dtype == np.float64:
        elements = st.one_of(st.floats(-1e150, 1e150), st.sampled_from([math.nan, math.inf, -math.inf]))
    return hnp.arrays(dtype, st.integers(0, 200), elements=elements)


buffer_lists = st.lists(st.sampled_from(NUMPY_FLOATS).flatmap(_arrays_of), max_size=8)


@settings(max_examples=200, deadline=None)
@given(buffer_lists, st.sampled_from([None, 1, 2, 3]))
def test_property_matches_numpy(buffers: List[np.ndarray], threads: Optional[int]) -> None:
    first_bad, count, total = reference(buffers)
    r = scan(buffers, threads=threads)
    assert r.finite == (first_bad is None)
    assert r.first_bad == first_bad and r.nonfinite_count == count
    if first_bad is None:
        assert r.sumsq == pytest.approx(total, rel=RTOL, abs=0.0)
    elif any(np.isnan(np.asarray(b, np.float64)).any() for b in buffers):
        assert math.isnan(r.sumsq)
    else:
        assert r.sumsq == math.inf
    assert all_finite(buffers, threads=threads) == r.finite
