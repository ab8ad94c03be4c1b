"""The optional CUDA extension: importing pylrcore never needs a GPU, a driver or a CUDA runtime."""

from __future__ import annotations

import pylrcore.cuda


def test_probe_answers_without_raising() -> None:
    n = pylrcore.cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert pylrcore.cuda.is_available() == (n > 0)
    reason = pylrcore.cuda.unavailable_reason()
    assert isinstance(reason, str)
    if n == 0:
        assert reason  # says why: not built, no driver, or no device
