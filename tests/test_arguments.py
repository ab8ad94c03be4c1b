"""Hostile arguments at the boundary (issue 11 items 6 and 16): every integer that reaches the core is
bounded and named, bad values get a clear error, and everyday inputs (column slices, numpy scalars)
are accepted. The shared checks live in pylrcore/_checks.py."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import pylrcore
from pylrcore import schedules as S
from pylrcore.detect import Detector

LRS = np.logspace(-5, 0, 100)
LOSSES = 2 - np.tanh(np.log10(LRS) + 3)


@pytest.mark.parametrize("method", pylrcore.suggestion.METHODS + pylrcore.suggestion.COMPAT_METHODS)
@pytest.mark.parametrize("name", ["skip_start", "skip_end", "num_it", "lr_diff", "min_points"])
def test_int64_max_counts_never_crash_suggest(method: str, name: str) -> None:
    # repro 06: torch_lr_finder with skip_end=2**63-1 overflowed ss + se + 2 and segfaulted
    s = pylrcore.suggest(LRS, LOSSES, method, **{name: 2**63 - 1})
    assert s.ok or s.reason
    with pytest.raises(ValueError, match=rf"{name} must be <= 2\*\*63 - 1"):
        pylrcore.suggest(LRS, LOSSES, method, **{name: 2**63})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"adjust_value": math.nan}, ValueError, "adjust_value must be finite"),
        ({"adjust_value": -1.0}, ValueError, "adjust_value must be > 0"),
        ({"adjust_value": "x"}, TypeError, "adjust_value must be a number"),
        ({"diverge_factor": 1.0}, ValueError, "diverge_factor must be > 1"),
        ({"diverge_factor": -3.0}, ValueError, "diverge_factor must be > 1"),
        ({"diverge_factor": None}, TypeError, "diverge_factor must be a number"),
        ({"skip_end": 1.5}, TypeError, "skip_end must be an integer"),
    ],
)
def test_suggest_bad_values_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        pylrcore.suggest(LRS, LOSSES, "fastai_slide", **kwargs)


def test_column_slices_and_numpy_scalars_are_accepted() -> None:
    table = np.column_stack([LRS, LOSSES])
    assert pylrcore.suggest(table[:, 0], table[:, 1], min_points=np.int64(5)).lr == pylrcore.suggest(LRS, LOSSES).lr
    np.testing.assert_array_equal(pylrcore.ema(table[:, 1], np.float32(0.5)), pylrcore.ema(LOSSES, 0.5))
    assert len(Detector(window=np.int64(20), warmup=np.int32(10)).update_many(table[:, 1])) == 100
    e = pylrcore.EMA(0.5)
    assert e.update(np.float32(2.0)) == 2.0 and e.update(np.int64(4)) == pytest.approx(3.3333333333333335)
    assert Detector().update(np.float64(1.0)).step == 0


@pytest.mark.parametrize("bad", ["1.0", None, b"1", [1.0], object()])
def test_per_step_updates_name_their_argument(bad: object) -> None:
    for target in (pylrcore.EMA(), Detector()):
        with pytest.raises(TypeError, match="loss must be a real number"):
            target.update(bad)


def test_huge_ints_as_losses_are_numbers_or_overflow_errors() -> None:
    assert pylrcore.EMA(0.5, kind="plain").update(2**63) == float(2**63)
    with pytest.raises(OverflowError):
        Detector().update(10**400)


def test_detector_window_and_counters_are_bounded() -> None:
    with pytest.raises(ValueError, match="window must be <= 10,000,000"):
        Detector(window=10**12)  # was std::bad_alloc
    with pytest.raises(ValueError, match=r"window must be <= 2\*\*62"):
        Detector(window=2**63)
    det = Detector()
    det.update(1.0)
    state = det.state_dict()
    state["state"]["step"] = 2**63 - 1
    with pytest.raises(ValueError, match=r"state\['state'\]\['step'\] must be <= 2\*\*62"):
        Detector().load_state_dict(state)
    ema = pylrcore.EMA()
    saved = ema.state_dict()
    saved["count"] = 2**63 - 1
    with pytest.raises(ValueError, match=r"state\['count'\] must be <= 2\*\*62"):
        pylrcore.EMA().load_state_dict(saved)


def test_plateau_counters_from_a_state_dict_are_bounded() -> None:
    p = pylrcore.Plateau()
    state = p.state_dict()
    state["num_reductions"] = 2**63 - 1
    with pytest.raises(ValueError, match=r"num_reductions'\] must be <= 2\*\*62"):
        pylrcore.Plateau().load_state_dict(state)


def test_schedule_at_names_bad_steps() -> None:
    s = S.cosine(10)
    for bad, error in [(2**63, ValueError), (-1, ValueError), ("3", TypeError), (None, TypeError), (2.5, TypeError)]:
        with pytest.raises(error, match="step must be"):
            s.at(bad)
    assert s.at(np.int64(5)) == s.at(5)


@pytest.mark.parametrize("code", [99, -1, True, "capped", 2**70, 1.0])
def test_native_enum_settings_are_checked_against_the_core_table(code: Any) -> None:
    # Enum settings cross the bindings as ints (or IntEnum members) checked against the core's code
    # table: an unknown code names the setting and every valid name, never a crash or a silent default.
    from pylrcore import _core

    with pytest.raises(ValueError, match="'method' must be one of steepest, valley, minimum, slide, capped"):
        _core.suggest([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.5, 0.4], {"method": code})
    assert _core.suggest([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.5, 0.4], {"method": int(_core.SuggestMethod.minimum)})["status"] >= 0
