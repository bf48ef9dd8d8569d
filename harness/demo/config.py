"""Settings of the demo target: where it listens and which faults it injects."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 13010
DEFAULT_WORKERS = 8
"""Slots for requests in service. They only matter when requests take time, that is
with a service time or a latency drift."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """How the demo target runs. Every fault is off unless set.

    Faults apply to requests routed to an ``/api/...`` endpoint (with an allowed
    method), never to ``/healthz``, ``/metrics`` or ``/_demo/...``, so a probe can
    always tell a slow service from a dead one. The stall is the exception: it
    freezes the whole process, as a stop-the-world pause would.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    """0 picks a free port."""
    workers: int = DEFAULT_WORKERS
    service_ms: float = 0.0
    """Time each API request holds a worker slot; capacity is workers / service time."""
    leak_bytes_per_request: int = 0
    """Memory kept forever for each API request."""
    latency_drift_ms_per_min: float = 0.0
    """Added to the service time for every minute since start."""
    error_rate: float = 0.0
    """Fraction (0..1) of API requests answered with a 500, drawn at random."""
    stall_every_s: float = 0.0
    """Period of whole-process stalls; 0 means never."""
    stall_ms: float = 0.0
    seed: int | None = None
    """Seed of the error draws; None draws a fresh one."""
    keep_items: int = 100
    """Items kept per user in each stored list (newest first); 0 keeps them all, so
    the data grows with every write, as a real store's would."""

    def __post_init__(self) -> None:
        def need(ok: bool, option: str, value: object, rule: str) -> None:
            if not ok:
                raise UsageError(f"--{option} {value}: {rule}")

        def finite(value: float) -> bool:
            return math.isfinite(value)

        need(0 <= self.port <= 65535, "port", self.port, "use 0..65535 (0 = free port)")
        need(self.workers >= 1, "workers", self.workers, "needs at least 1 slot")
        need(self.keep_items >= 0, "keep-items", self.keep_items, "must be >= 0")
        need(
            finite(self.service_ms) and self.service_ms >= 0,
            "service-ms",
            self.service_ms,
            "must be a number of milliseconds >= 0",
        )
        need(
            self.leak_bytes_per_request >= 0,
            "leak-bytes-per-request",
            self.leak_bytes_per_request,
            "must be >= 0",
        )
        need(
            finite(self.latency_drift_ms_per_min)
            and self.latency_drift_ms_per_min >= 0,
            "latency-drift-ms-per-min",
            self.latency_drift_ms_per_min,
            "must be >= 0",
        )
        need(
            0.0 <= self.error_rate <= 1.0,
            "error-rate",
            self.error_rate,
            "is a fraction: use a value from 0 to 1, e.g. 0.05 for 5 %",
        )
        need(
            finite(self.stall_every_s) and self.stall_every_s >= 0,
            "stall-every-s",
            self.stall_every_s,
            "must be >= 0 (0 = never)",
        )
        need(
            finite(self.stall_ms) and self.stall_ms >= 0,
            "stall-ms",
            self.stall_ms,
            "must be >= 0",
        )
        if (self.stall_every_s > 0) != (self.stall_ms > 0):
            raise UsageError(
                "--stall-every-s and --stall-ms go together: give both "
                "(e.g. --stall-every-s 10 --stall-ms 200) or neither"
            )

    @property
    def has_service_time(self) -> bool:
        return self.service_ms > 0 or self.latency_drift_ms_per_min > 0

    def knobs(self) -> dict[str, float | int | None]:
        """The fault settings, for the stats endpoint and the start-up log line."""
        return {
            "workers": self.workers,
            "service_ms": self.service_ms,
            "leak_bytes_per_request": self.leak_bytes_per_request,
            "latency_drift_ms_per_min": self.latency_drift_ms_per_min,
            "error_rate": self.error_rate,
            "stall_every_s": self.stall_every_s,
            "stall_ms": self.stall_ms,
            "seed": self.seed,
        }
