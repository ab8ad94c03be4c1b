"""Integrations with the frameworks people train in. Each module imports its framework only when
it is imported itself (``import pylrcore`` never does), and names the extra to install when the
framework is missing:

* :mod:`pylrcore.integrations.lightning`: callbacks for a Lightning ``Trainer`` (``pip install pylrcore[lightning]``);
* :mod:`pylrcore.integrations.tensorboard`: guard events into a ``SummaryWriter`` (``pip install pylrcore[tensorboard]``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Tuple


def require(modules: Tuple[str, ...], extra: str, what: str) -> ModuleType:
    """The first of ``modules`` that imports, or ImportError naming the pip extra that provides it."""
    for name in modules:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        f"{what} needs {' or '.join(modules)}, which is not installed; install it with "
        f"pip install 'pylrcore[{extra}]'"
    )
