"""The host sampler: the machine as a whole, ``source="host"``.

One row per sample: CPU busy percent of the whole machine since the previous sample
(0-100, all cores together), available and total memory, the one-minute load
average, and the bytes sent and received on all interfaces (cumulative counters, as
the kernel keeps them). The harness and the target share this machine when the
target is on loopback, so these figures say whether the machine itself, rather than
the service, ran out of room.

``host_cpu_percent`` needs two readings of the machine's CPU times, like a
process's ``cpu_percent``: it is null in the first row (which only primes it) and
in a row taken less than ``min_cpu_span_s`` after the previous figure (the last
sample when the monitor stops), where the kernel's 10 ms ticks make it noise.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from .base import Row


def _busy_and_total_s(times: Any) -> tuple[float, float]:
    """CPU seconds busy and in all, summed over the cores. Linux counts guest
    time in user and nice already, and iowait is idle time."""
    total = (
        sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    )
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


class HostSampler:
    name = "host"

    def __init__(self, source: str = "host", *, min_cpu_span_s: float = 0.0) -> None:
        self.source = source
        self.min_cpu_span_s = min_cpu_span_s
        self._last: tuple[float, float, float] | None = None
        """Busy and total CPU seconds and the monotonic instant of the baseline."""

    def open(self) -> None:
        return None

    def sample(self, now_ns: int) -> list[Row]:
        memory = psutil.virtual_memory()
        row: Row = {
            "source": self.source,
            "host_cpu_percent": self._cpu_percent(),
            "host_mem_available_bytes": memory.available,
            "host_mem_total_bytes": memory.total,
            "load1": os.getloadavg()[0],
        }
        net = psutil.net_io_counters()
        if net is not None:
            row["net_bytes_sent"] = net.bytes_sent
            row["net_bytes_recv"] = net.bytes_recv
        return [row]

    def _cpu_percent(self) -> float | None:
        mono_s = time.monotonic()
        last = self._last
        if last is not None and mono_s - last[2] < self.min_cpu_span_s:
            return None  # too soon for a figure: keep the baseline
        busy_s, total_s = _busy_and_total_s(psutil.cpu_times())
        self._last = (busy_s, total_s, mono_s)
        if last is None or total_s <= last[1]:
            return None
        percent = 100.0 * (busy_s - last[0]) / (total_s - last[1])
        return min(100.0, max(0.0, percent))

    def close(self) -> None:
        return None
