"""The host sampler: the machine as a whole, ``source="host"``.

One row per sample: CPU busy percent of the whole machine since the previous sample
(0-100, all cores together), available and total memory, the one-minute load
average, and the bytes sent and received on all interfaces (cumulative counters, as
the kernel keeps them). The harness and the target share this machine when the
target is on loopback, so these figures say whether the machine itself, rather than
the service, ran out of room.
"""

from __future__ import annotations

import os

import psutil

from .base import Row


class HostSampler:
    name = "host"

    def __init__(self, source: str = "host") -> None:
        self.source = source

    def open(self) -> None:
        # psutil measures CPU since its previous call: the first call primes it.
        psutil.cpu_percent(interval=None)

    def sample(self, now_ns: int) -> list[Row]:
        memory = psutil.virtual_memory()
        row: Row = {
            "source": self.source,
            "host_cpu_percent": psutil.cpu_percent(interval=None),
            "host_mem_available_bytes": memory.available,
            "host_mem_total_bytes": memory.total,
            "load1": os.getloadavg()[0],
        }
        net = psutil.net_io_counters()
        if net is not None:
            row["net_bytes_sent"] = net.bytes_sent
            row["net_bytes_recv"] = net.bytes_recv
        return [row]

    def close(self) -> None:
        return None
