"""The fault knobs of the demo target, at run time.

A request routed to an API endpoint goes through :meth:`Faults.before_request`:
it leaks memory, waits for a worker slot and holds it for the service time (plus the
drift), then draws whether to fail. The stall is a background task that blocks the
event loop itself, so every connection feels it at once.
"""

from __future__ import annotations

import logging
import random
import time

import trio

from .config import DemoConfig

log = logging.getLogger("harness.demo")

PAGE_BYTES = 4096


class Faults:
    """Fault state and counters for one server."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.started_s = time.monotonic()
        self.slots = trio.Semaphore(config.workers) if config.has_service_time else None
        self.any_per_request = (
            config.has_service_time
            or config.leak_bytes_per_request > 0
            or config.error_rate > 0
        )
        self._leaked: list[bytearray] = []
        self.leaked_bytes = 0
        self.errors_injected = 0
        self.stalls = 0
        self.in_service = 0
        self.peak_in_service = 0
        self.waiting = 0
        self.peak_waiting = 0

    def service_time_s(self) -> float:
        c = self.config
        minutes = (time.monotonic() - self.started_s) / 60.0
        return (c.service_ms + c.latency_drift_ms_per_min * minutes) / 1000.0

    async def before_request(self) -> bool:
        """Apply the per-request faults; True when this request must fail with 500."""
        if self.config.leak_bytes_per_request:
            self._leak(self.config.leak_bytes_per_request)
        if self.slots is not None:
            await self._hold_slot()
        if self.config.error_rate and self.rng.random() < self.config.error_rate:
            self.errors_injected += 1
            return True
        return False

    def _leak(self, size: int) -> None:
        block = bytearray(size)
        # Write one byte in every page: an untouched allocation may be backed by
        # the shared zero page and never show up in the resident set size.
        pages = len(range(0, size, PAGE_BYTES))
        block[::PAGE_BYTES] = b"\x01" * pages
        self._leaked.append(block)
        self.leaked_bytes += size

    async def _hold_slot(self) -> None:
        assert self.slots is not None
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        try:
            self.in_service += 1
            self.peak_in_service = max(self.peak_in_service, self.in_service)
            await trio.sleep(self.service_time_s())
        finally:
            self.in_service -= 1
            self.slots.release()

    async def run_stalls(self) -> None:
        """Block the whole event loop for ``stall_ms`` every ``stall_every_s``.

        Runs until cancelled with the server.
        """
        period_s = self.config.stall_every_s
        stall_s = self.config.stall_ms / 1000.0
        if period_s <= 0 or stall_s <= 0:
            return
        while True:
            await trio.sleep(period_s)
            # Deliberately blocking: this is the fault, a stop-the-world pause.
            time.sleep(stall_s)
            self.stalls += 1

    def stats(self) -> dict[str, float | int]:
        return {
            "leaked_bytes": self.leaked_bytes,
            "errors_injected": self.errors_injected,
            "stalls": self.stalls,
            "service_time_ms": round(self.service_time_s() * 1000.0, 3)
            if self.slots is not None
            else 0.0,
            "in_service": self.in_service,
            "peak_in_service": self.peak_in_service,
            "waiting": self.waiting,
            "peak_waiting": self.peak_waiting,
        }
