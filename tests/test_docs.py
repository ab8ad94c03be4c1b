"""The examples in the docstrings run, against the installed package."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["smoothing", "suggestion", "detect", "diagnosis", "nonfinite", "schedules", "plateau", "rules", "torch", "guard", "finder", "quadratic"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"pylrcore.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_readme_nutshell_suggestion_line_is_what_the_code_prints() -> None:
    import numpy as np

    import pylrcore
    from curves import lr_ladder, valley

    lrs = np.logspace(-6, 1, 100)
    assert np.allclose(lrs, lr_ladder(100))
    print_line = str(pylrcore.suggest(lrs, valley(lrs, rise_at=0.1)))
    assert print_line.startswith("suggested lr 0.000933 (capped), usable range 8.11e-05 to 0.00911")
