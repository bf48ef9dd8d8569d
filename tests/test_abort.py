from __future__ import annotations

import pytest

from analysis.thresholds import ThresholdRule, parse
from harness.abort import first_failure, live_value
from harness.livestats import WindowStats


def window(latencies_ms: list[float], errors: int = 0) -> WindowStats:
    stats = WindowStats()
    for i, ms in enumerate(latencies_ms):
        stats.add(int(ms * 1e6), "status" if i < errors else None, 100)
    stats.iterations = len(latencies_ms)
    return stats


@pytest.mark.parametrize(
    ("metric", "expression", "expected"),
    [
        ("http_req_failed", "rate<0.1", 0.25),
        ("checks", "rate>0.9", 0.75),
        ("http_reqs", "count>1", 4.0),
        ("iterations", "count>1", 4.0),
    ],
)
def test_live_value_of_rates_and_counts_is_exact(
    metric: str, expression: str, expected: float
) -> None:
    stats = window([10, 20, 30, 40], errors=1)
    assert live_value(parse(metric, expression), stats) == expected


def test_live_latency_quantile_is_at_most_a_quarter_above_the_exact_one() -> None:
    stats = window([float(ms) for ms in range(1, 1001)])
    observed = live_value(parse("http_req_duration", "p(95)<500"), stats)
    assert observed is not None
    assert 950 <= observed <= 950 * 1.25


@pytest.mark.parametrize(
    ("metric", "expression"),
    [
        ("http_req_duration{endpoint:/x}", "p(95)<500"),
        ("http_req_duration", "avg<500"),
        ("http_req_waiting", "p(95)<500"),
    ],
)
def test_what_the_live_figures_cannot_answer_is_left_to_the_end(
    metric: str, expression: str
) -> None:
    assert live_value(parse(metric, expression), window([10, 20])) is None


def test_abort_waits_for_the_delay_then_names_the_failing_rule() -> None:
    slow = window([200.0] * 50)
    rule = ThresholdRule(parse("http_req_duration", "p(95)<50"), True, 5.0)
    quiet = ThresholdRule(parse("http_req_duration", "p(95)<10"), False, 0.0)
    assert first_failure((quiet, rule), slow, elapsed_s=4.9) is None
    failure = first_failure((quiet, rule), slow, elapsed_s=5.0)
    assert failure is not None
    assert failure[0] is rule
    assert failure[1] >= 200


def test_no_abort_while_the_threshold_holds() -> None:
    fast = window([5.0] * 50)
    rule = ThresholdRule(parse("http_req_duration", "p(95)<50"), True, 0.0)
    assert first_failure((rule,), fast, elapsed_s=10) is None
