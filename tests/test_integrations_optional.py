"""The Hugging Face and Optuna integrations are optional: ``import pylrcore`` never imports their
frameworks, and importing an integration without its framework names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest
from procs import pylrcore_env, scratch_dir


@pytest.mark.parametrize("module, extra", [("pylrcore.integrations.transformers", "transformers"),
                                           ("pylrcore.integrations.optuna", "optuna")])
def test_a_missing_framework_names_the_extra(module, extra):
    code = (
        "import sys\n"
        f"sys.modules[{extra!r}] = None\n"  # what `import` sees when the package is not installed
        "try:\n"
        f"    import {module}\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=pylrcore_env(), cwd=scratch_dir()).stdout
    assert f"pip install 'pylrcore[{extra}]'" in out


def test_import_pylrcore_imports_neither_framework():
    code = ("import sys, pylrcore, pylrcore.integrations, pylrcore.torch, pylrcore.finder\n"
            "print([m for m in ('transformers', 'accelerate', 'optuna') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=pylrcore_env(), cwd=scratch_dir()).stdout
    assert out.strip() == "[]"
