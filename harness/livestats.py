"""Small mergeable counters for the live view: one window of one worker.

Workers never compute percentiles from rows; each second they ship a
:class:`WindowStats` (counts and a log-bucket latency histogram) to the coordinator,
which merges the workers' windows and reads an approximate p95 off the merged
histogram. The Parquet rows stay the truth; these figures are only for the screen and
for early aborts.

Buckets: latency in microseconds, four buckets per power of two (so a bucket's upper
edge is at most 25 % above its lower edge). Index 0 holds everything under 8 µs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUB_BUCKETS_BITS = 2
N_BUCKETS = 4 * 40


def bucket_of(latency_ns: int) -> int:
    """Index of the histogram bucket for a latency in nanoseconds."""
    us = latency_ns // 1000
    bits = us.bit_length()
    if bits <= 3:
        return 0
    sub = (us >> (bits - 3)) & 3
    index = (bits - 3) * 4 + sub
    return index if index < N_BUCKETS else N_BUCKETS - 1


def bucket_upper_ns(index: int) -> int:
    """Upper edge of a bucket in nanoseconds (the value a quantile reports)."""
    if index == 0:
        return 8_000
    bits = index // 4 + 3
    sub = index % 4
    lower_us = (4 + sub) << (bits - 3)
    width_us = 1 << (bits - 3)
    return (lower_us + width_us) * 1000


@dataclass(slots=True)
class WindowStats:
    """Counts for one window (normally one second) of one worker or of all."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    iterations: int = 0
    dropped: int = 0
    bytes_in: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)

    def add(self, latency_ns: int, error: str | None, bytes_in: int) -> None:
        self.requests += 1
        self.bytes_in += bytes_in
        self.histogram[bucket_of(latency_ns)] += 1
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1

    def merge(self, other: WindowStats) -> None:
        self.requests += other.requests
        self.iterations += other.iterations
        self.dropped += other.dropped
        self.bytes_in += other.bytes_in
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        hist = self.histogram
        for i, n in enumerate(other.histogram):
            if n:
                hist[i] += n

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def quantile_ns(self, q: float) -> int | None:
        """Upper edge of the bucket holding quantile ``q``; None when empty."""
        total = sum(self.histogram)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.histogram):
            seen += n
            if seen >= rank and n:
                return bucket_upper_ns(i)
        return bucket_upper_ns(N_BUCKETS - 1)
