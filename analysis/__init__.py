"""analysis: read a run directory written by the harness and tell what it shows.

This package never imports ``harness``: a notebook needs only ``analysis`` and pandas.

``open_run``, ``open_runs``, ``Run``, ``RunSet`` and the errors they raise
(``RunNotFound``, ``RunUnreadable``, ``DamagedPart``) are importable from here; they
are loaded on first use, so that importing a light submodule (the threshold parser,
which worker processes use) does not pay for pandas and pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dataset import (
        DamagedPart,
        Run,
        RunNotFound,
        RunSet,
        RunUnreadable,
        open_run,
        open_runs,
    )

__version__ = "0.1.0"

__all__ = [
    "DamagedPart",
    "Run",
    "RunNotFound",
    "RunSet",
    "RunUnreadable",
    "open_run",
    "open_runs",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".dataset", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
