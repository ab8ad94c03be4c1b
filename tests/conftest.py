import re
import sys
from pathlib import Path
from typing import Optional

import pytest

# Shared curve helpers (tests/curves.py) importable under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))


_SLOW_MODULE = re.compile(r"^pytestmark = \[?\s*pytest\.mark\.slow\b", re.M)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> Optional[bool]:
    """Under a -m that leaves ``slow`` out (``pytest -m "not slow"``), a module marked slow as a whole
    is not imported at all: deselecting its tests would still import Keras, Ray, transformers,
    Optuna... at collection, several seconds of the quick run."""
    markexpr = config.getoption("markexpr")
    if not markexpr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    try:
        from _pytest.mark.expression import Expression  # pytest's own -m parser
    except ImportError:  # pragma: no cover - a pytest that moved it: collect as usual
        return None
    expr = Expression.compile(markexpr)
    # Ignored only if no test marked slow can match: false with slow alone and with every marker set.
    if expr.evaluate(lambda name, **kwargs: name == "slow") or expr.evaluate(lambda name, **kwargs: True):
        return None
    return True if _SLOW_MODULE.search(collection_path.read_text(encoding="utf-8")) else None
