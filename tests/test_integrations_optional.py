"""The integrations are optional: ``import pylrcore`` never imports their frameworks, and importing
an integration without its framework names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest
from procs import pylrcore_env, scratch_dir

# slow: each test starts a Python subprocess; CI runs it (pytest -m "not slow" leaves it out)
pytestmark = pytest.mark.slow

# (module, extra, the import names that stand for the framework)
INTEGRATIONS = [
    ("pylrcore.integrations.lightning", "lightning", ["lightning", "pytorch_lightning"]),
    ("pylrcore.integrations.tensorboard", "tensorboard", ["tensorboard"]),
    ("pylrcore.integrations.transformers", "transformers", ["transformers"]),
    ("pylrcore.integrations.optuna", "optuna", ["optuna"]),
    ("pylrcore.integrations.keras", "keras", ["keras"]),
    ("pylrcore.integrations.ray", "ray", ["ray", "ray.tune"]),
]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=pylrcore_env(), cwd=scratch_dir()).stdout


@pytest.mark.parametrize("module, extra, blocked", INTEGRATIONS, ids=[i[1] for i in INTEGRATIONS])
def test_a_missing_framework_names_the_extra(module, extra, blocked):
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"  # what `import` sees when it is not installed
        "try:\n"
        f"    import {module}\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    assert f"pip install 'pylrcore[{extra}]'" in _run(code)


def test_import_pylrcore_imports_no_framework():
    frameworks = ("torch", "pytorch_lightning", "lightning", "tensorboard", "transformers", "accelerate", "optuna",
                  "keras", "ray")
    out = _run("import sys, pylrcore, pylrcore.integrations, pylrcore.torch.cuda\n"
               f"print([m for m in {frameworks!r} if m in sys.modules])")
    assert out.strip() == "[]"
    # ... nor does the torch-facing API pull in an integration's framework.
    out = _run("import sys, pylrcore.torch, pylrcore.torch.finder, pylrcore.torch.guard\n"
               f"print([m for m in {frameworks[1:]!r} if m in sys.modules])")
    assert out.strip() == "[]"


def test_the_keras_integration_names_torch_when_it_is_missing():
    # Keras runs without torch on JAX or TensorFlow; the integration's result classes need it.
    # torch is hidden by a finder that refuses it, not by sys.modules['torch'] = None: scipy >= 1.17
    # (array_api_compat, imported by Keras's JAX backend) reads sys.modules['torch'].Tensor when present.
    code = ("import os, sys\nos.environ['KERAS_BACKEND'] = 'jax'\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "try:\n    import pylrcore.integrations.keras\nexcept ImportError as e:\n    print(e)\n")
    if not (_has("keras") and _has("jax")):
        pytest.skip("keras with the jax backend is not installed")
    out = _run(code)
    assert "needs torch" in out and "pip install torch" in out


def test_keras_without_its_backend_says_so():
    # Keras defaults to TensorFlow: installed without it, the error is the backend's, not "install keras".
    if not _has("keras") or _has("tensorflow"):
        pytest.skip("needs keras without tensorflow")
    code = ("import os\nos.environ['KERAS_BACKEND'] = 'tensorflow'\n"
            "try:\n    import pylrcore.integrations.keras\nexcept ImportError as e:\n    print(e)\n")
    out = _run(code)
    assert "KERAS_BACKEND" in out and "tensorflow" in out


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
