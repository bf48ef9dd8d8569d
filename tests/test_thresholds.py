"""Threshold expressions: the parser's accepted and refused forms, and verdicts that
equal a direct pandas computation on the same rows, on written run folders and on a
real run against the demo target."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.dataset import open_run
from analysis.thresholds import (
    Threshold,
    ThresholdRule,
    ThresholdSyntaxError,
    Verdict,
    any_failed,
    check_value,
    endpoint_matches,
    evaluate,
    format_verdicts,
    parse,
    parse_duration_s,
    parse_thresholds,
)
from harness.record import rows_to_table

T0_S = 1_700_000_000
"""The synthetic runs' start instant, whole seconds so that it is exact in float."""

EXECUTE = "/api/automations/{automationId}/execute"


# -- parsing ---------------------------------------------------------------------------

VALID: list[tuple[str, str, str, tuple[tuple[str, str], ...], str, str, float]] = [
    # key, expression, metric, tags, aggregation, op, value
    ("http_req_duration", "p(95)<500", "http_req_duration", (), "p(95)", "<", 500.0),
    (
        "http_req_duration",
        " p( 99.9 ) <= 1e3 ",
        "http_req_duration",
        (),
        "p(99.9)",
        "<=",
        1000.0,
    ),
    ("http_req_duration", "p(0)>=0", "http_req_duration", (), "p(0)", ">=", 0.0),
    ("http_req_duration", "p(100)>0", "http_req_duration", (), "p(100)", ">", 0.0),
    ("http_req_waiting", "avg<200.5", "http_req_waiting", (), "avg", "<", 200.5),
    (
        "http_req_connecting",
        "med  !=  -1",
        "http_req_connecting",
        (),
        "med",
        "!=",
        -1.0,
    ),
    ("http_req_duration", "count>=.5", "http_req_duration", (), "count", ">=", 0.5),
    ("http_req_duration", "min>1", "http_req_duration", (), "min", ">", 1.0),
    ("http_req_failed", "rate<0.01", "http_req_failed", (), "rate", "<", 0.01),
    ("http_req_failed", "rate===0", "http_req_failed", (), "rate", "==", 0.0),
    ("checks", "rate>0.99", "checks", (), "rate", ">", 0.99),
    ("http_reqs", "count>100", "http_reqs", (), "count", ">", 100.0),
    ("http_reqs", "rate>=+50", "http_reqs", (), "rate", ">=", 50.0),
    ("iterations", "count==90", "iterations", (), "count", "==", 90.0),
    ("dropped_iterations", "count<1", "dropped_iterations", (), "count", "<", 1.0),
    ("data_received", "rate<1E6", "data_received", (), "rate", "<", 1e6),
    ("data_sent", "count>0", "data_sent", (), "count", ">", 0.0),
    (
        "http_req_duration{endpoint:/api/auth/login}",
        "p(95)<200",
        "http_req_duration",
        (("endpoint", "/api/auth/login"),),
        "p(95)",
        "<",
        200.0,
    ),
    (
        " http_req_duration { method : get , scenario : Auth Flow } ",
        "max<3000",
        "http_req_duration",
        (("method", "GET"), ("scenario", "Auth Flow")),
        "max",
        "<",
        3000.0,
    ),
    (
        "http_reqs{endpoint:/api/automations/{id}/execute,status:200}",
        "count>0",
        "http_reqs",
        (("endpoint", "/api/automations/{id}/execute"), ("status", "200")),
        "count",
        ">",
        0.0,
    ),
    (
        "http_req_failed{phase:steady,step:login,error:check}",
        "rate<1",
        "http_req_failed",
        (("phase", "steady"), ("step", "login"), ("error", "check")),
        "rate",
        "<",
        1.0,
    ),
    (
        "http_req_duration{expected_response:true,status:0}",
        "avg<1",
        "http_req_duration",
        (("expected_response", "true"), ("status", "0")),
        "avg",
        "<",
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("key", "expression", "metric", "tags", "aggregation", "op", "value"),
    VALID,
    ids=[f"{v[0].strip()}:{v[1].strip()}" for v in VALID],
)
def test_parse_accepts_k6_forms(
    key: str,
    expression: str,
    metric: str,
    tags: tuple[tuple[str, str], ...],
    aggregation: str,
    op: str,
    value: float,
) -> None:
    threshold = parse(key, expression)
    assert threshold == Threshold(metric, tags, aggregation, op, value, expression)


INVALID: list[tuple[str, str, str, str, str]] = [
    # key, expression, part at fault, fragment of the problem, fragment of the fix
    ("http_req_duration", "p95<500", "expression", "'p95'", "write p(95)"),
    ("http_req_duration", "p(95)<500ms", "expression", "has a unit", "p(95)<500"),
    ("http_req_failed", "rate<1%", "expression", "has a unit", "0.01 for 1%"),
    ("http_req_duration", "p(101)<5", "expression", "from 0 to 100", "p(99.9)"),
    ("http_req_duration", "p(-1)<5", "expression", "from 0 to 100", "p(95)"),
    ("http_req_duration", "p()<5", "expression", "from 0 to 100", "p(95)"),
    ("http_req_duration", "rate<1", "expression", "not an aggregation", "p(N)"),
    ("http_req_duration", "avrg<5", "expression", "'avrg'", "did you mean 'avg'"),
    ("http_req_failed", "p(95)<1", "expression", "not an aggregation", "trends"),
    ("http_req_failed", "count<1", "expression", "not an aggregation", "accepts rate"),
    ("http_reqs", "avg<1", "expression", "not an aggregation", "count or rate"),
    (
        "http_req_duration",
        "avg 500",
        "expression",
        "no comparison operator (<, <=",
        "p(95)<500",
    ),
    ("http_req_duration", "<500", "expression", "nothing before '<'", "p(95)<500"),
    ("http_req_duration", "avg<", "expression", "no number", "p(95)<500"),
    ("http_req_duration", "avg<abc", "expression", "not a number", "rate<0.01"),
    ("http_req_duration", "avg<1<2", "expression", "not a number", "p(95)<500"),
    ("http_req_duration", "avg<inf", "expression", "not a number", "p(95)<500"),
    ("http_req_duration", "", "expression", "no comparison operator", "p(95)<500"),
    ("http_req_duraton", "avg<1", "metric", "unknown metric", "'http_req_duration'"),
    ("vus", "value<1", "metric", "unknown metric 'vus'", "metrics are: http_req"),
    ("", "avg<1", "metric", "names no metric", "metrics are"),
    ("http_req_duration{endpont:/x}", "avg<1", "metric", "unknown tag", "'endpoint'"),
    ("http_req_duration{endpoint:/x", "avg<1", "metric", "not closed", "{tag:value}"),
    ("http_req_duration{}", "avg<1", "metric", "empty braces", "endpoint"),
    (
        "http_req_duration{endpoint}",
        "avg<1",
        "metric",
        "not a tag:value",
        "{tag:value}",
    ),
    ("http_req_duration{status:}", "avg<1", "metric", "has no value", "{status:value}"),
    ("http_req_duration{status:2xx}", "avg<1", "metric", "not a status", "200"),
    ("http_req_duration{status:99}", "avg<1", "metric", "not a status", "200"),
    ("http_req_duration{endpoint:api}", "avg<1", "metric", "start with '/'", "{id}"),
    (
        "http_req_duration{expected_response:yes}",
        "avg<1",
        "metric",
        "not true or false",
        "{expected_response:true}",
    ),
    ("http_reqs{step:a,step:b}", "count<1", "metric", "appears twice", "keep one"),
    ("dropped_iterations{scenario:a}", "count<1", "metric", "takes no tags", "alone"),
]


@pytest.mark.parametrize(
    ("key", "expression", "part", "problem", "fix"),
    INVALID,
    ids=[f"{v[0]}:{v[1]}" for v in INVALID],
)
def test_parse_refuses_malformed_thresholds_saying_what_and_how(
    key: str, expression: str, part: str, problem: str, fix: str
) -> None:
    with pytest.raises(ThresholdSyntaxError) as caught:
        parse(key, expression)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.part == part
    assert problem in error.problem
    assert fix in error.fix
    assert str(error) == f"{error.problem}; {error.fix}"


def test_threshold_key_and_expression_are_written_back_canonically() -> None:
    threshold = parse(
        "http_req_duration{ endpoint : /a , method:post}", "p( 99.0 )< 5e2"
    )
    assert threshold.key == "http_req_duration{endpoint:/a,method:POST}"
    assert threshold.expression == "p(99)<500"
    assert str(threshold) == "http_req_duration{endpoint:/a,method:POST}: p(99)<500"
    assert threshold.percentile == 99.0
    assert parse("http_req_failed", "rate<0.1").expression == "rate<0.1"
    assert parse("http_req_failed", "rate<0.1").percentile is None


@pytest.mark.parametrize(
    ("expression", "observed", "passed"),
    [
        ("avg<5", 4.999, True),
        ("avg<5", 5.0, False),
        ("avg<=5", 5.0, True),
        ("avg>5", 5.0, False),
        ("avg>=5", 5.0, True),
        ("avg==5", 5.0, True),
        ("avg==5", 5.000001, False),
        ("avg!=5", 5.000001, True),
        ("avg!=5", 5.0, False),
    ],
)
def test_check_value_applies_the_operator(
    expression: str, observed: float, passed: bool
) -> None:
    assert check_value(parse("http_req_duration", expression), observed) is passed


@pytest.mark.parametrize(
    ("pattern", "endpoint", "matches"),
    [
        ("/api/auth/login", "/api/auth/login", True),
        ("/api/auth/login", "/api/auth/logout", False),
        ("/api/automations/:id/execute", EXECUTE, True),
        ("/api/automations/{id}/execute", EXECUTE, True),
        ("/api/automations/:id/execute", "/api/automations/7/execute", False),
        ("/api/automations/:id", EXECUTE, False),
        ("/api/users/:id", "/api/users/x-{id}", False),
        ("/", "/", True),
    ],
)
def test_endpoint_placeholders_match_any_placeholder_segment(
    pattern: str, endpoint: str, matches: bool
) -> None:
    assert endpoint_matches(pattern, endpoint) is matches


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (10, 10.0),
        (0.5, 0.5),
        ("10", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
    ],
)
def test_durations_parse_as_profiles_write_them(value: object, seconds: float) -> None:
    assert parse_duration_s(value) == seconds


@pytest.mark.parametrize("value", ["10x", "30s1m", "1s1s", "-1s", True, None, "", "s"])
def test_malformed_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"duration|order"):
        parse_duration_s(value)


def test_parse_thresholds_reads_the_manifest_form_with_k6_abort_settings() -> None:
    rules = parse_thresholds(
        {
            "http_req_duration": [
                "p(95)<500",
                {
                    "threshold": "p(99)<900",
                    "abortOnFail": True,
                    "delayAbortEval": "10s",
                },
            ],
            "http_req_failed": [{"threshold": "rate<0.01", "abort_on_fail": False}],
        }
    )
    assert rules == (
        ThresholdRule(parse("http_req_duration", "p(95)<500")),
        ThresholdRule(parse("http_req_duration", "p(99)<900"), True, 10.0),
        ThresholdRule(parse("http_req_failed", "rate<0.01")),
    )
    with pytest.raises(ThresholdSyntaxError, match="not a list"):
        parse_thresholds({"http_req_duration": "p(95)<500"})
    with pytest.raises(ThresholdSyntaxError, match="'threshold' expression"):
        parse_thresholds({"http_req_duration": [{"abortOnFail": True}]})
    with pytest.raises(ThresholdSyntaxError, match="not true or false"):
        parse_thresholds(
            {"http_req_duration": [{"threshold": "avg<1", "abort_on_fail": "yes"}]}
        )


# -- run folders -----------------------------------------------------------------------


def make_rows(iterations: int = 600, seed: int = 7) -> list[tuple[Any, ...]]:
    """Request rows in the record's field order: two workers, two scenarios, a mix
    of outcomes, one iteration starting every 5 ms from T0_S."""
    rng = random.Random(seed)
    rows: list[tuple[Any, ...]] = []
    outcomes = [
        (None, 200, 0.85),
        ("status", 500, 0.05),
        ("check", 200, 0.05),
        ("connect_refused", 0, 0.03),
        ("read_timeout", 0, 0.02),
    ]
    for i in range(iterations):
        vu = i % 20
        worker = vu % 2
        iteration = i // 20
        scenario = "Auth Flow" if rng.random() < 0.6 else "automation"
        steps = [("login", "POST", "/api/auth/login")]
        if scenario == "Auth Flow":
            steps.append(("profile", "GET", "/api/user/profile"))
        else:
            steps.append(("execute", "POST", EXECUTE))
        intended = T0_S * 10**9 + i * 5_000_000
        start = intended + rng.randrange(0, 200_000)
        phase = "warm" if i < iterations // 3 else "steady"
        for step, method, endpoint in steps:
            error, status, _ = rng.choices(outcomes, [o[2] for o in outcomes])[0]
            latency = int(rng.lognormvariate(16.5, 0.6))  # around 15 ms
            connect = rng.choice([0, 0, 0, rng.randrange(50_000, 400_000)])
            ttfb = connect + int(latency * rng.uniform(0.5, 0.95))
            latency = max(latency, ttfb + 1)
            rows.append(
                (
                    worker,
                    vu,
                    iteration,
                    scenario,
                    step,
                    method,
                    endpoint,
                    status,
                    error,
                    intended,
                    start,
                    latency,
                    ttfb,
                    connect,
                    rng.randrange(100, 400),
                    0 if status == 0 else rng.randrange(200, 5000),
                    phase,
                    50.0,
                )
            )
            start += latency + rng.randrange(0, 100_000)
    return rows


def write_run(
    folder: Path,
    rows: list[tuple[Any, ...]],
    manifest: dict[str, Any],
    events: list[dict[str, Any]] | None = None,
) -> Path:
    """A run folder as the harness writes it: two parts per worker, a manifest and
    events."""
    folder.mkdir(parents=True)
    for worker in (0, 1):
        mine = [r for r in rows if r[0] == worker]
        half = len(mine) // 2
        for part, chunk in enumerate((mine[:half], mine[half:]), start=1):
            if chunk:
                target = folder / "requests" / f"worker-{worker}"
                target.mkdir(parents=True, exist_ok=True)
                pq.write_table(
                    rows_to_table(chunk), target / f"part-{part:06d}.parquet"
                )
    (folder / "manifest.json").write_text(json.dumps(manifest))
    lines = [json.dumps(e) for e in events or []]
    (folder / "events.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def read_rows(run_dir: Path) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "requests")
    for column in ("scenario", "step", "method", "endpoint", "phase", "error"):
        df[column] = df[column].astype("object")
    return df


MANIFEST: dict[str, Any] = {
    "run_id": "r",
    "status": "completed",
    "started_at": float(T0_S),
    "profile": {"duration_s": 2.5},
    "counts": {"requests": 1200, "iterations": 602, "dropped": 7},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs") / "r", make_rows(), MANIFEST)


def _span_s(df: pd.DataFrame) -> float:
    last_end = float((df["start_ns"] + df["latency_ns"]).max())
    start = T0_S * 1e9
    return (min(start + 2.5e9, last_end) - start) / 1e9


def _ms(df: pd.DataFrame, column: str = "latency_ns") -> pd.Series:
    return df[column] / 1e6


Expected = Callable[[pd.DataFrame], tuple[Any, int]]

CASES: list[tuple[str, str, Expected]] = [
    ("http_req_duration", "avg<20", lambda d: (_ms(d).mean(), len(d))),
    ("http_req_duration", "min<20", lambda d: (_ms(d).min(), len(d))),
    ("http_req_duration", "max<20", lambda d: (_ms(d).max(), len(d))),
    ("http_req_duration", "med<20", lambda d: (_ms(d).median(), len(d))),
    ("http_req_duration", "count>1000", lambda d: (float(len(d)), len(d))),
    ("http_req_duration", "p(95)<30", lambda d: (_ms(d).quantile(0.95), len(d))),
    ("http_req_duration", "p(99.9)<60", lambda d: (_ms(d).quantile(0.999), len(d))),
    ("http_req_duration", "p(0)>=0", lambda d: (_ms(d).min(), len(d))),
    ("http_req_duration", "p(100)<100", lambda d: (_ms(d).max(), len(d))),
    (
        "http_req_waiting",
        "p(90)<20",
        lambda d: (_ms(d, "ttfb_ns").quantile(0.9), len(d)),
    ),
    ("http_req_connecting", "max<1", lambda d: (_ms(d, "connect_ns").max(), len(d))),
    ("http_req_failed", "rate<0.1", lambda d: (d["error"].notna().mean(), len(d))),
    ("checks", "rate>0.9", lambda d: (d["error"].isna().mean(), len(d))),
    ("http_reqs", "count==1200", lambda d: (float(len(d)), len(d))),
    ("http_reqs", "rate>400", lambda d: (len(d) / _span_s(d), len(d))),
    ("data_received", "count>0", lambda d: (float(d["bytes_in"].sum()), len(d))),
    ("data_sent", "rate<1e5", lambda d: (d["bytes_out"].sum() / _span_s(d), len(d))),
    ("iterations", "count==602", lambda d: (602.0, 602)),
    ("iterations", "rate>0", lambda d: (602 / _span_s(d), 602)),
    ("dropped_iterations", "count<10", lambda d: (7.0, 7)),
    ("dropped_iterations", "rate<1", lambda d: (7 / _span_s(d), 7)),
]

SUB = [
    (
        "http_req_duration{endpoint:/api/auth/login}",
        "p(95)<25",
        lambda d: d["endpoint"] == "/api/auth/login",
    ),
    (
        "http_req_duration{endpoint:/api/automations/:id/execute}",
        "p(99)<40",
        lambda d: d["endpoint"] == EXECUTE,
    ),
    (
        "http_req_failed{method:post,scenario:automation}",
        "rate<0.2",
        lambda d: (d["method"] == "POST") & (d["scenario"] == "automation"),
    ),
    ("http_reqs{status:0}", "count<50", lambda d: d["status"] == 0),
    (
        "http_reqs{status:500,phase:steady}",
        "count<50",
        lambda d: (d["status"] == 500) & (d["phase"] == "steady"),
    ),
    ("checks{step:profile}", "rate>0.8", lambda d: d["step"] == "profile"),
    ("http_req_duration{error:check}", "avg<20", lambda d: d["error"] == "check"),
    (
        "http_req_duration{expected_response:true}",
        "med<20",
        lambda d: d["error"].isna(),
    ),
    (
        "http_req_duration{expected_response:false}",
        "max<99",
        lambda d: d["error"].notna(),
    ),
]


def _sub_expected(key: str, expression: str, df: pd.DataFrame) -> tuple[Any, int]:
    metric = key.partition("{")[0]
    aggregation = parse(key, expression)
    if metric == "http_req_duration":
        values = _ms(df)
        if aggregation.aggregation == "avg":
            return values.mean(), len(df)
        if aggregation.aggregation == "med":
            return values.median(), len(df)
        if aggregation.aggregation == "max":
            return values.max(), len(df)
        q = aggregation.percentile
        assert q is not None
        return values.quantile(q / 100), len(df)
    if metric == "http_req_failed":
        return df["error"].notna().mean(), len(df)
    if metric == "checks":
        return df["error"].isna().mean(), len(df)
    return float(len(df)), len(df)


def _check(verdict: Verdict, observed: float, samples: int) -> None:
    assert verdict.observed == pytest.approx(observed, rel=1e-12, abs=0)
    assert verdict.samples == samples
    assert verdict.passed is check_value(verdict.threshold, observed)


@pytest.mark.parametrize(
    ("key", "expression", "expected"),
    CASES,
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_metric_equals_a_direct_pandas_computation(
    run_dir: Path, key: str, expression: str, expected: Expected
) -> None:
    df = read_rows(run_dir)
    [verdict] = evaluate(run_dir, [parse(key, expression)])
    observed, samples = expected(df)
    _check(verdict, observed, samples)


@pytest.mark.parametrize(("key", "expression", "select"), SUB, ids=[s[0] for s in SUB])
def test_sub_metrics_select_the_rows_their_tags_name(
    run_dir: Path,
    key: str,
    expression: str,
    select: Callable[[pd.DataFrame], pd.Series],
) -> None:
    df = read_rows(run_dir)
    picked = df[select(df)]
    assert 0 < len(picked) < len(df)
    [verdict] = evaluate(run_dir, [parse(key, expression)])
    _check(verdict, *_sub_expected(key, expression, picked))


def test_verdicts_come_back_in_order_and_both_outcomes_occur(run_dir: Path) -> None:
    thresholds: list[Threshold | ThresholdRule] = [
        parse("http_req_duration", "p(95)<1"),
        ThresholdRule(parse("http_req_duration", "p(95)<10000"), abort_on_fail=True),
        parse("http_req_failed", "rate<0"),
    ]
    verdicts = evaluate(run_dir, thresholds)
    assert [v.status for v in verdicts] == ["failed", "passed", "failed"]
    assert verdicts[1].threshold == parse("http_req_duration", "p(95)<10000")
    assert any_failed(verdicts)
    assert not any_failed(verdicts[1:2])
    text = format_verdicts(verdicts).splitlines()
    assert text[0].startswith("FAIL http_req_duration: p(95)<1  observed ")
    assert text[1].startswith("ok   http_req_duration: p(95)<10000")


def test_iterations_with_tags_count_distinct_iterations_in_the_rows(
    run_dir: Path,
) -> None:
    df = read_rows(run_dir)
    [verdict] = evaluate(run_dir, [parse("iterations{scenario:automation}", "count>0")])
    expected = df[df["scenario"] == "automation"][["worker", "vu", "iteration"]]
    _check(
        verdict, float(len(expected.drop_duplicates())), len(expected.drop_duplicates())
    )
    [total] = evaluate(run_dir, [parse("iterations", "count>0")])
    assert total.note == "from the manifest's counts.iterations"


def test_threshold_over_no_matching_row_is_no_data_and_names_what_exists(
    run_dir: Path,
) -> None:
    verdicts = evaluate(
        run_dir,
        [
            parse("http_req_duration{endpoint:/api/login}", "p(95)<500"),
            parse("http_req_failed{scenario:nobody}", "rate<0.01"),
            parse("http_reqs{endpoint:/api/login}", "count>0"),
            parse("http_reqs{status:204}", "count==0"),
        ],
    )
    trend, rate, count, zero = verdicts
    assert (trend.passed, trend.observed, trend.samples) == (None, None, 0)
    assert trend.status == "no data"
    assert trend.note.startswith("no data: no request has endpoint '/api/login'")
    assert "/api/auth/login" in trend.note and EXECUTE in trend.note
    assert rate.status == "no data" and "Auth Flow, automation" in rate.note
    # A count over nothing is an observed zero, and judged.
    assert (count.observed, count.passed, count.samples) == (0.0, False, 0)
    assert (zero.observed, zero.passed) == (0.0, True)
    assert not any_failed([trend, rate])
    assert "n/a  http_req_duration{endpoint:/api/login}" in format_verdicts(verdicts)


def test_run_without_requests_gives_no_data_except_counts(tmp_path: Path) -> None:
    run = write_run(tmp_path / "empty", [], {**MANIFEST, "counts": {}})
    verdicts = evaluate(
        run,
        [
            parse("http_req_duration", "p(95)<500"),
            parse("checks", "rate>0.9"),
            parse("http_reqs", "count==0"),
            parse("http_reqs", "rate>1"),
            parse("iterations", "count==0"),
            parse("dropped_iterations", "count==0"),
        ],
    )
    assert [v.status for v in verdicts] == [
        "no data",
        "no data",
        "passed",
        "no data",
        "passed",
        "no data",
    ]
    assert verdicts[0].note == "no data: the run recorded no request"
    assert verdicts[5].note == "no data: the manifest has no counts.dropped"


def test_run_stopped_early_divides_rates_by_the_time_it_ran(tmp_path: Path) -> None:
    rows = make_rows(iterations=100)
    manifest = {**MANIFEST, "profile": {"duration_s": 60.0}}
    run = write_run(tmp_path / "short", rows, manifest)
    df = read_rows(run)
    last_end = (df["start_ns"] + df["latency_ns"]).max()
    span_s = (last_end - T0_S * 1e9) / 1e9
    assert span_s < 1.0
    [verdict] = evaluate(run, [parse("http_reqs", "rate>0")])
    _check(verdict, len(df) / span_s, len(df))


def test_tables_without_a_manifest_use_the_rows_span(run_dir: Path) -> None:
    df = read_rows(run_dir)
    table = pq.read_table(run_dir / "requests")
    span_s = ((df["start_ns"] + df["latency_ns"]).max() - df["start_ns"].min()) / 1e9
    thresholds = [
        parse("http_req_duration{endpoint:/api/auth/login}", "p(95)<25"),
        parse("http_reqs", "rate>1"),
        parse("iterations", "count>1"),
        parse("dropped_iterations", "count<1"),
    ]
    from_table = evaluate(table, thresholds)
    from_frame = evaluate(pd.read_parquet(run_dir / "requests"), thresholds)
    from_dir = evaluate(run_dir, thresholds)
    assert from_table == from_frame
    assert from_table[0] == from_dir[0]
    _check(from_table[1], len(df) / span_s, len(df))
    unique = len(df[["worker", "vu", "iteration"]].drop_duplicates())
    _check(from_table[2], float(unique), unique)
    assert from_table[3].status == "no data"
    with pytest.raises(ValueError, match="no column latency_ns"):
        evaluate(df.drop(columns=["latency_ns"]), thresholds)


def test_thresholds_default_to_those_in_the_manifest(tmp_path: Path) -> None:
    manifest = {
        **MANIFEST,
        "profile": {
            "duration_s": 2.5,
            "thresholds": {
                "http_req_duration": [
                    "p(95)<500",
                    {"threshold": "max<1", "abortOnFail": True},
                ],
                "http_req_failed{endpoint:/api/auth/login}": ["rate<0.5"],
            },
        },
    }
    run = write_run(tmp_path / "declared", make_rows(iterations=50), manifest)
    verdicts = evaluate(open_run(run))
    assert [str(v.threshold) for v in verdicts] == [
        "http_req_duration: p(95)<500",
        "http_req_duration: max<1",
        "http_req_failed{endpoint:/api/auth/login}: rate<0.5",
    ]
    assert [v.status for v in verdicts] == ["passed", "failed", "passed"]
    with pytest.raises(ValueError, match="no thresholds given"):
        evaluate(pa.table({"start_ns": [1]}))


# -- a real run ------------------------------------------------------------------------


@pytest.mark.slow
def test_thresholds_on_a_real_run_against_the_demo_target(tmp_path: Path) -> None:
    from harness.coordinator import Coordinator, RunOptions
    from harness.demo.process import DemoTarget
    from harness.profile.load import load_profile_text

    service_ms = 30
    with DemoTarget.start(service_ms=service_ms) as target:
        profile = load_profile_text(
            f"""
target: {target.url}
http: {{timeout: 5s}}
graceful_stop: 5s
load:
  model: open
  phases: [{{name: steady, duration: 3s, rate: 30}}]
thresholds:
  http_req_duration: ["p(50)>={service_ms}", "max<1"]
  http_req_duration{{endpoint:/api/auth/login}}: ["p(95)<5000"]
  http_req_failed: ["rate==0"]
  http_reqs{{endpoint:/api/user/profile}}: ["count>0", "rate>0"]
  iterations: ["count>0"]
  dropped_iterations: ["count==0"]
scenarios:
  - name: login and profile
    flow:
      - name: login
        method: POST
        path: /api/auth/login
        json: {{email: loadtest@example.com, password: LoadTest123!}}
        capture: {{token: $.data.access_token}}
        check: {{status: 200}}
      - name: profile
        path: /api/user/profile
        headers: {{Authorization: "Bearer {{{{ token }}}}"}}
        check: {{status: 200}}
""",
            "real.yaml",
            env={},
        )
        outcome = Coordinator(
            profile, RunOptions(out_dir=tmp_path, run_id="real", workers=2)
        ).run()
    assert outcome.status == "completed"
    verdicts = evaluate(outcome.run_dir)
    df = read_rows(outcome.run_dir)
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    ms = _ms(df)
    login = df[df["endpoint"] == "/api/auth/login"]
    profile_rows = df[df["endpoint"] == "/api/user/profile"]
    start = manifest["started_at"] * 1e9
    last_end = float((df["start_ns"] + df["latency_ns"]).max())
    span_s = (
        min(start + manifest["profile"]["duration_s"] * 1e9, last_end) - start
    ) / 1e9
    iterations = manifest["counts"]["iterations"]
    expected = [
        (ms.median(), len(df)),
        (ms.max(), len(df)),
        (_ms(login).quantile(0.95), len(login)),
        (df["error"].notna().mean(), len(df)),
        (float(len(profile_rows)), len(profile_rows)),
        (len(profile_rows) / span_s, len(profile_rows)),
        (float(iterations), iterations),
        (0.0, 0),
    ]
    assert len(verdicts) == len(expected)
    for verdict, (observed, samples) in zip(verdicts, expected, strict=True):
        _check(verdict, observed, samples)
    # The target holds every request for its service time, so these are certain.
    assert [v.status for v in verdicts] == ["passed", "failed", *["passed"] * 6]
    assert not math.isnan(span_s) and span_s <= 3.0
