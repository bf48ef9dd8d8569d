"""harness: generate HTTP load from many processes and record every request.

The command line is :mod:`harness.cli`; the run directory it writes is read by the
separate :mod:`analysis` package.

Runs can also be driven from Python (see :mod:`harness.service`)::

    import harness

    run = harness.start("profiles/smoke.yaml", target="http://127.0.0.1:13010")
    print(run.status().status)          # running
    run.stop()                          # graceful, like Ctrl-C
    print(harness.results(run.run_dir)["p95_response_time_ms"])

These names are loaded on first use, so importing ``harness`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import list_runs, results, start, status, stop, wait

__version__ = "0.1.0"

__all__ = ["list_runs", "results", "start", "status", "stop", "wait"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".service", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
