"""Import of the compiled core with an actionable message when it is missing."""

from __future__ import annotations

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "pylrcore's compiled core (pylrcore._core) could not be imported. "
        "Did you build it? Install the package with `pip install .` from the repository root "
        "(running from a source checkout without building does not work), "
        f"then import it from outside the source tree. Original error: {exc}"
    ) from exc

__all__ = ["_core"]
