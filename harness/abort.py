"""Live judgement of thresholds marked ``abort_on_fail``.

Each second the coordinator merges the workers' snapshots into running totals; a
threshold with ``abort_on_fail`` is judged on those totals once its
``delay_abort_eval`` has passed, and a failure stops the run early. The figures are the
live view's (latency quantiles from its log-bucket histogram, at most 25 % above the
exact value), so only what they can answer is judged here: unlabelled
``http_req_duration`` (``p(N)``, ``med``, ``max``), ``http_req_failed`` and ``checks``
rates, and ``http_reqs``/``iterations`` counts. Everything else, and every threshold
without ``abort_on_fail``, is judged exactly from the records at the end of the run.
"""

from __future__ import annotations

from analysis.thresholds import Threshold, ThresholdRule, check_value

from .livestats import WindowStats


def live_value(threshold: Threshold, totals: WindowStats) -> float | None:
    """The threshold's aggregation over the running totals, or None when the live
    figures cannot answer it (or there is no data yet)."""
    if threshold.tags or totals.requests == 0:
        return None
    metric, aggregation = threshold.metric, threshold.aggregation
    if metric == "http_req_duration":
        q = threshold.percentile
        if q is None and aggregation == "med":
            q = 50.0
        elif q is None and aggregation == "max":
            q = 100.0
        if q is None:
            return None
        ns = totals.quantile_ns(q / 100)
        return None if ns is None else ns / 1e6
    failed = totals.error_count / totals.requests
    if metric == "http_req_failed" and aggregation == "rate":
        return failed
    if metric == "checks" and aggregation == "rate":
        return 1.0 - failed
    if aggregation == "count" and metric == "http_reqs":
        return float(totals.requests)
    if aggregation == "count" and metric == "iterations":
        return float(totals.iterations)
    return None


def first_failure(
    rules: tuple[ThresholdRule, ...], totals: WindowStats, elapsed_s: float
) -> tuple[ThresholdRule, float] | None:
    """The first abort rule that fails now, with the value it saw."""
    for rule in rules:
        if not rule.abort_on_fail or elapsed_s < rule.delay_abort_eval_s:
            continue
        observed = live_value(rule.threshold, totals)
        if observed is not None and not check_value(rule.threshold, observed):
            return rule, observed
    return None
