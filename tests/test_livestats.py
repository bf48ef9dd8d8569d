"""The live view's mergeable window: bucket edges, quantiles, merging, errors.

The quantile a window reports is the upper edge of the bucket that holds the sample of
rank ceil(q * n). So it must equal that edge for the same order statistic computed
exactly (numpy's ``inverted_cdf``), and it is never below the exact quantile nor more
than a quarter above it (an edge at most 5/4 of its bucket's lower edge); everything
under 8 µs reports 8 µs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.livestats import N_BUCKETS, WindowStats, bucket_of, bucket_upper_ns

MAX_RELATIVE_ERROR = 0.25
"""The widest bucket of each power of two spans [4w, 5w) microseconds."""
FLOOR_NS = 8_000
"""Everything under 8 µs shares bucket 0, whose edge is 8 µs."""
HOUR_NS = 3_600 * 10**9

latencies = st.integers(min_value=0, max_value=HOUR_NS)
errors = st.one_of(st.none(), st.sampled_from(["status", "check", "reset"]))
requests = st.tuples(latencies, errors, st.integers(min_value=0, max_value=10**6))


def lower_edge_ns(index: int) -> int:
    return 0 if index == 0 else bucket_upper_ns(index - 1)


def filled(samples: list[int]) -> WindowStats:
    window = WindowStats()
    for latency_ns in samples:
        window.add(latency_ns, None, 0)
    return window


def exact_quantile_ns(samples: list[int], q: float) -> int:
    return int(np.quantile(np.array(samples, dtype=np.int64), q, method="inverted_cdf"))


@given(latencies)
def test_every_latency_falls_below_the_upper_edge_of_its_bucket(
    latency_ns: int,
) -> None:
    index = bucket_of(latency_ns)
    upper_ns = bucket_upper_ns(index)
    assert 0 <= index < N_BUCKETS
    assert lower_edge_ns(index) <= latency_ns < upper_ns
    assert upper_ns <= max(FLOOR_NS, (1 + MAX_RELATIVE_ERROR) * latency_ns)


def test_used_buckets_tile_the_axis_without_gaps() -> None:
    # Buckets 1..3 are never used (bucket 0 takes everything under 8 µs); from 4 on,
    # each bucket starts where the previous one ended and no edge repeats.
    edges = [bucket_upper_ns(i) for i in range(4, N_BUCKETS)]
    assert bucket_upper_ns(0) == FLOOR_NS
    assert all(a < b for a, b in itertools.pairwise(edges))
    for index in range(4, N_BUCKETS):
        lower_ns = bucket_upper_ns(index - 1) if index > 4 else FLOOR_NS
        assert bucket_of(lower_ns) == index
        assert bucket_of(bucket_upper_ns(index) - 1) == index
        assert bucket_upper_ns(index) <= (1 + MAX_RELATIVE_ERROR) * lower_ns


def test_the_widest_bucket_is_a_quarter_above_its_lower_edge() -> None:
    # 8-10 µs: a sample of 8 µs is reported as 10 µs, the worst case of the scheme.
    assert bucket_upper_ns(bucket_of(8_000)) == 10_000
    assert bucket_upper_ns(bucket_of(7_999)) == FLOOR_NS
    assert bucket_upper_ns(bucket_of(0)) == FLOOR_NS


def test_latencies_beyond_the_last_bucket_land_in_the_last_bucket() -> None:
    last_upper_ns = bucket_upper_ns(N_BUCKETS - 1)
    assert bucket_of(last_upper_ns - 1) == N_BUCKETS - 1
    assert bucket_of(last_upper_ns * 4) == N_BUCKETS - 1
    # The last edge is days away: no real latency is clamped.
    assert last_upper_ns > 24 * HOUR_NS


@settings(max_examples=200)
@given(
    st.lists(latencies, min_size=1, max_size=300),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_quantile_is_the_bucket_edge_of_the_exact_quantile(
    samples: list[int], q: float
) -> None:
    exact_ns = exact_quantile_ns(samples, q)
    reported_ns = filled(samples).quantile_ns(q)
    assert reported_ns == bucket_upper_ns(bucket_of(exact_ns))
    assert exact_ns < reported_ns <= max(FLOOR_NS, (1 + MAX_RELATIVE_ERROR) * exact_ns)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_quantiles_of_a_lognormal_sample_stay_within_the_relative_error(
    q: float,
) -> None:
    rng = np.random.default_rng(20240101)
    # Median 20 ms, a long tail: what a loaded service's latencies look like.
    samples = (rng.lognormal(mean=np.log(20e6), sigma=0.8, size=20_000)).astype(int)
    exact_ns = float(np.quantile(samples, q, method="inverted_cdf"))
    reported_ns = filled(samples.tolist()).quantile_ns(q)
    assert reported_ns is not None
    assert exact_ns < reported_ns <= (1 + MAX_RELATIVE_ERROR) * exact_ns


def test_quantiles_of_a_known_two_valued_window() -> None:
    # 90 fast requests at 1 ms, 10 slow ones at 100 ms: p50 and p90 are fast, p95 slow.
    window = filled([1_000_000] * 90 + [100_000_000] * 10)
    fast_ns = bucket_upper_ns(bucket_of(1_000_000))
    slow_ns = bucket_upper_ns(bucket_of(100_000_000))
    assert window.quantile_ns(0.5) == fast_ns
    assert window.quantile_ns(0.9) == fast_ns
    assert window.quantile_ns(0.95) == slow_ns
    assert window.quantile_ns(1.0) == slow_ns
    assert window.quantile_ns(0.0) == fast_ns


def test_an_empty_window_has_no_quantile() -> None:
    window = WindowStats()
    assert window.quantile_ns(0.5) is None
    assert window.quantile_ns(0.99) is None
    assert window.requests == 0
    assert window.error_count == 0


def test_a_window_with_only_dropped_arrivals_has_no_quantile() -> None:
    window = WindowStats()
    window.dropped = 12
    window.iterations = 3
    assert window.quantile_ns(0.95) is None


@given(
    st.lists(requests, max_size=50),
    st.lists(requests, max_size=50),
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=1000),
)
def test_merging_two_windows_equals_adding_everything_to_one(
    first: list[tuple[int, str | None, int]],
    second: list[tuple[int, str | None, int]],
    second_iterations: int,
    second_dropped: int,
) -> None:
    a, b, whole = WindowStats(), WindowStats(), WindowStats()
    for latency_ns, error, bytes_in in first:
        a.add(latency_ns, error, bytes_in)
        whole.add(latency_ns, error, bytes_in)
    for latency_ns, error, bytes_in in second:
        b.add(latency_ns, error, bytes_in)
        whole.add(latency_ns, error, bytes_in)
    a.iterations, a.dropped = 5, 1
    b.iterations, b.dropped = second_iterations, second_dropped
    whole.iterations = 5 + second_iterations
    whole.dropped = 1 + second_dropped

    a.merge(b)

    assert a == whole
    assert a.quantile_ns(0.95) == whole.quantile_ns(0.95)


def test_merging_leaves_the_other_window_unchanged() -> None:
    a, b = WindowStats(), WindowStats()
    a.add(1_000_000, "status", 10)
    b.add(2_000_000, "status", 20)
    b.add(3_000_000, None, 30)
    before = WindowStats(
        b.requests, dict(b.errors), b.iterations, b.dropped, b.bytes_in, b.histogram[:]
    )
    a.merge(b)
    assert b == before
    assert a.errors == {"status": 2}


def test_errors_are_counted_by_kind_and_successes_are_not() -> None:
    window = WindowStats()
    for error in [None, "status", "check", "status", None, "reset", "status"]:
        window.add(5_000_000, error, 100)
    assert window.requests == 7
    assert window.errors == {"status": 3, "check": 1, "reset": 1}
    assert window.error_count == 5
    assert window.bytes_in == 700
    assert sum(window.histogram) == 7
