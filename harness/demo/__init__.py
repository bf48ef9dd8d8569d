"""The bundled demo target: an HTTP/1.1 JSON API with fault knobs.

The harness's demo, tests and benchmarks load it. It runs as its own process
(``python -m harness.demo``, or :class:`DemoTarget` from a parent) so it can be
observed like any real service: its pid, memory and request counts.
"""

from .config import DemoConfig
from .process import DemoTarget

__all__ = ["DemoConfig", "DemoTarget"]
