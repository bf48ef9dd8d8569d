"""SLO blocks: their validation, their mapping onto thresholds, and verdicts that
equal a direct computation on written run folders and on a real run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.dataset import open_run
from analysis.slo import (
    EndpointSlo,
    Slos,
    SloSpecError,
    SloVerdict,
    SystemLimit,
    evaluate_slos,
    format_slo_verdicts,
    offered_rps,
    parse_slos,
    peak_concurrency,
)
from analysis.thresholds import parse

from .test_thresholds import EXECUTE, MANIFEST, T0_S, make_rows, read_rows, write_run

BENCHMARK = {
    "endpoints": {
        "/api/auth/login": {
            "target_response_time": "200ms",
            "max_concurrent_users": 100,
            "expected_throughput": 500,
        },
        "/api/automations/:id/execute": {"target_response_time": "1.5s"},
    },
    "system": {
        "database": {"max_connections": 100, "max_query_time": "1000ms"},
        "redis": {"max_connections": 200, "max_memory_usage": 80},
        "application": {
            "max_cpu_usage": "80%",
            "max_memory_usage": 2048,
            "max_response_time": "5000ms",
        },
    },
}


# -- parsing ---------------------------------------------------------------------------


def test_benchmark_table_parses_into_typed_entries() -> None:
    slos = parse_slos(BENCHMARK)
    assert slos == Slos(
        endpoints=(
            EndpointSlo("/api/auth/login", 200.0, 100, 500.0),
            EndpointSlo("/api/automations/:id/execute", 1500.0),
        ),
        system=(
            SystemLimit("database", "max_connections", 100.0),
            SystemLimit("database", "max_query_time", 1000.0),
            SystemLimit("redis", "max_connections", 200.0),
            SystemLimit("redis", "max_memory_usage", 80.0),
            SystemLimit("application", "max_cpu_usage", 80.0),
            SystemLimit("application", "max_memory_usage", 2048.0),
            SystemLimit("application", "max_response_time", 5000.0),
        ),
    )
    assert parse_slos(slos.as_mapping()) == slos
    assert parse_slos(None) == Slos()
    assert parse_slos({"endpoints": None, "system": None}) == Slos()


INVALID: list[tuple[object, tuple[str, ...], bool, str, str]] = [
    # block, path, on_key, fragment of the problem, fragment of the fix
    ([1], (), False, "must be a mapping", "endpoints: and system:"),
    ({"endpoint": {}}, ("endpoint",), True, "unknown key", "did you mean 'endpoints'"),
    ({"endpoints": [1]}, ("endpoints",), False, "must be a mapping", "endpoints: {"),
    (
        {"endpoints": {"api/x": {"target_response_time": "1s"}}},
        ("endpoints", "api/x"),
        True,
        "not an endpoint path",
        "/api/automations/:id/execute",
    ),
    (
        {"endpoints": {"/x?page=1": {"target_response_time": "1s"}}},
        ("endpoints", "/x?page=1"),
        True,
        "not an endpoint path",
        "without the query",
    ),
    ({"endpoints": {"/x": {}}}, ("endpoints", "/x"), False, "is empty", "200ms"),
    ({"endpoints": {"/x": 5}}, ("endpoints", "/x"), False, "must be a mapping", "/x:"),
    (
        {"endpoints": {"/x": {"target_response_tim": "1s"}}},
        ("endpoints", "/x", "target_response_tim"),
        True,
        "unknown key",
        "did you mean 'target_response_time'",
    ),
    (
        {"endpoints": {"/x": {"target_response_time": 200}}},
        ("endpoints", "/x", "target_response_time"),
        False,
        "has no unit",
        "200ms or 200s",
    ),
    (
        {"endpoints": {"/x": {"target_response_time": "fast"}}},
        ("endpoints", "/x", "target_response_time"),
        False,
        "not a duration",
        "200ms",
    ),
    (
        {"endpoints": {"/x": {"target_response_time": "0ms"}}},
        ("endpoints", "/x", "target_response_time"),
        False,
        "above zero",
        "200ms",
    ),
    (
        {"endpoints": {"/x": {"max_concurrent_users": 2.5}}},
        ("endpoints", "/x", "max_concurrent_users"),
        False,
        "whole number",
        "max_concurrent_users: 100",
    ),
    (
        {"endpoints": {"/x": {"expected_throughput": "500/s"}}},
        ("endpoints", "/x", "expected_throughput"),
        False,
        "must be a number",
        "requests per second",
    ),
    (
        {"endpoints": {"/x": {"expected_throughput": 0}}},
        ("endpoints", "/x", "expected_throughput"),
        False,
        "above zero",
        "expected_throughput: 500",
    ),
    (
        {"system": {"kafka": {"max_lag": 1}}},
        ("system", "kafka"),
        True,
        "unknown component",
        "database, redis, application",
    ),
    (
        {"system": {"databse": {}}},
        ("system", "databse"),
        True,
        "unknown component",
        "did you mean 'database'",
    ),
    (
        {"system": {"redis": {"max_memory": 80}}},
        ("system", "redis", "max_memory"),
        True,
        "unknown key",
        "did you mean 'max_memory_usage'",
    ),
    (
        {"system": {"redis": {"max_memory_usage": "80 percent"}}},
        ("system", "redis", "max_memory_usage"),
        False,
        "must be a number",
        "(percent)",
    ),
    (
        {"system": {"application": {"max_memory_usage": True}}},
        ("system", "application", "max_memory_usage"),
        False,
        "must be a number",
        "(MB)",
    ),
    (
        {"system": {"database": {"max_connections": -1}}},
        ("system", "database", "max_connections"),
        False,
        "whole number",
        "max_connections: 100",
    ),
]


@pytest.mark.parametrize(
    ("block", "path", "on_key", "problem", "fix"),
    INVALID,
    ids=[f"{'.'.join(v[1]) or 'root'}-{v[3]}" for v in INVALID],
)
def test_malformed_slo_blocks_are_refused_at_their_key(
    block: object, path: tuple[str, ...], on_key: bool, problem: str, fix: str
) -> None:
    with pytest.raises(SloSpecError) as caught:
        parse_slos(block)
    error = caught.value
    assert (error.path, error.on_key) == (path, on_key)
    assert problem in error.problem
    assert fix in error.fix


# -- offered load and concurrency ------------------------------------------------------

SCENARIOS = [
    {
        "name": "Auth Flow",
        "weight": 3,
        "think_s": 1.0,
        "steps": [
            {"endpoint": "/api/auth/login", "think_s": 0.5},
            {"endpoint": "/api/user/profile", "think_s": 0.0},
        ],
    },
    {
        "name": "automation",
        "weight": 2,
        "think_s": 0.0,
        "steps": [
            {"endpoint": "/api/auth/login", "think_s": 0.0},
            {"endpoint": EXECUTE, "think_s": 0.0},
        ],
    },
]
OPEN_LOAD = {
    "model": "open",
    "max_vus": 50,
    "phases": [
        {"name": "flat", "duration_s": 1.0, "rate": 100.0, "ramp_to": None},
        {"name": "ramp", "duration_s": 1.5, "rate": 100.0, "ramp_to": 300.0},
    ],
}
CLOSED_LOAD = {
    "model": "closed",
    "stages": [
        {"name": "", "duration_s": 10.0, "target": 10},
        {"name": "", "duration_s": 10.0, "target": 10},
    ],
}


@pytest.mark.parametrize(
    ("load", "scenarios", "endpoint", "expected"),
    [
        # Mean arrivals (100*1 + 200*1.5) / 2.5 = 160/s; login on every iteration.
        (OPEN_LOAD, SCENARIOS, "/api/auth/login", 160.0),
        (OPEN_LOAD, SCENARIOS, "/api/user/profile", 160.0 * 3 / 5),
        (OPEN_LOAD, SCENARIOS, "/api/automations/:id/execute", 160.0 * 2 / 5),
        (OPEN_LOAD, SCENARIOS, "/api/nowhere", 0.0),
        # Mean VUs (5*10 + 10*10) / 20 = 7.5; mean think 3/5 * 1.5 s = 0.9 s.
        (CLOSED_LOAD, SCENARIOS, "/api/auth/login", 7.5 / 0.9),
        (CLOSED_LOAD, SCENARIOS[1:], "/api/auth/login", math.inf),
        (CLOSED_LOAD, [], "/api/auth/login", None),
        ({"model": "search"}, SCENARIOS, "/api/auth/login", None),
    ],
)
def test_offered_rate_comes_from_the_load_shape_and_scenario_mix(
    load: dict[str, Any],
    scenarios: list[dict[str, Any]],
    endpoint: str,
    expected: float | None,
) -> None:
    offered = offered_rps({"load": load, "scenarios": scenarios}, endpoint)
    assert offered == (None if expected is None else pytest.approx(expected))
    assert offered_rps({}, endpoint) is None


def _iteration_rows(spans_ms: list[tuple[int, int, int]]) -> list[tuple[Any, ...]]:
    """One request per (vu, start, end) in milliseconds after T0_S."""
    rows = []
    for vu, start_ms, end_ms in spans_ms:
        start = T0_S * 10**9 + start_ms * 10**6
        latency = (end_ms - start_ms) * 10**6
        fields = (0, vu, 0, "s", "a", "GET", "/", 200, None, start, start)
        rows.append((*fields, latency, latency, 0, 10, 10, "p", 1.0))
    return rows


def test_peak_in_flight_iterations_of_an_open_run_is_exact(tmp_path: Path) -> None:
    # vu 1 spans 5-15 ms over two requests; vu 2 starts when vu 0 ends (10 ms),
    # which is touching, not overlapping; vu 3 runs inside the others at 6-7 ms.
    spans = [(0, 0, 10), (1, 5, 8), (1, 9, 15), (2, 10, 20), (3, 6, 7)]
    manifest = {**MANIFEST, "profile": {"duration_s": 1.0, "load": OPEN_LOAD}}
    run = open_run(write_run(tmp_path / "r", _iteration_rows(spans), manifest))
    assert peak_concurrency(run, read_rows(run.path)) == (3, "iterations in flight")


def test_peak_vus_of_a_closed_run_adds_up_the_workers_reports(tmp_path: Path) -> None:
    events = [
        {"event": "run_start", "time": 1.0},
        {"event": "vus", "worker": 0, "t_s": 0.0, "vus": 3},
        {"event": "vus", "worker": 1, "t_s": 0.0, "vus": 2},
        {"event": "vus", "worker": 1, "t_s": 5.0, "vus": 5},
        {"event": "vus", "worker": 0, "t_s": 5.0, "vus": 6},
        {"event": "vus", "worker": 0, "t_s": 10.0, "vus": 1},
        {"event": "vus", "worker": 1, "t_s": 10.0, "vus": 1},
    ]
    manifest = {**MANIFEST, "profile": {"duration_s": 20, "load": CLOSED_LOAD}}
    run = open_run(write_run(tmp_path / "r", make_rows(40), manifest, events))
    peak = peak_concurrency(run, read_rows(run.path))
    assert peak == (11, "the VU count the workers reported")
    planned = open_run(write_run(tmp_path / "p", make_rows(40), manifest))
    assert peak_concurrency(planned, read_rows(planned.path))[0] == 10


# -- verdicts on a written run ---------------------------------------------------------

OPEN_MANIFEST: dict[str, Any] = {
    **MANIFEST,
    "profile": {"duration_s": 2.5, "load": OPEN_LOAD, "scenarios": SCENARIOS},
}


def _resources(folder: Path) -> pd.DataFrame:
    """Two target processes, a postgres and a redis, sampled three times."""
    columns: dict[str, list[Any]] = {
        "time_ns": [],
        "source": [],
        "pid": [],
        "cpu_percent": [],
        "rss_bytes": [],
        "db_connections": [],
        "redis_used_memory_pct": [],
    }
    for i, instant in enumerate((1, 2, 3)):
        time_ns = T0_S * 10**9 + instant * 10**9
        for source, pid, cpu, rss, conns, mem in (
            ("target", 10, 30.0 + 10 * i, 500 * 2**20 + i, None, None),
            ("target", 11, 25.0 - 5 * i, 700 * 2**20, None, None),
            ("postgres", 20, 5.0, 80 * 2**20, 40 + 30 * i, None),
            ("redis", 30, 1.0, 10 * 2**20, None, 70.0 + 6 * i),
            ("host", 1, 90.0, 9 * 2**30, None, None),
        ):
            for name, value in zip(
                columns,
                (time_ns, source, pid, cpu, rss, conns, mem),
                strict=True,
            ):
                columns[name].append(value)
    table = pa.table(
        {
            **columns,
            "db_connections": pa.array(columns["db_connections"], pa.int32()),
            "redis_used_memory_pct": pa.array(
                columns["redis_used_memory_pct"], pa.float64()
            ),
        }
    )
    folder.mkdir()
    pq.write_table(table, folder / "part-000001.parquet")
    return table.to_pandas()


def by_slo(verdicts: list[SloVerdict]) -> dict[str, SloVerdict]:
    return {v.slo: v for v in verdicts}


def test_endpoint_slos_become_thresholds_judged_on_the_rows(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", make_rows(), OPEN_MANIFEST)
    df = read_rows(run)
    slos = parse_slos(
        {
            "endpoints": {
                "/api/auth/login": {
                    "target_response_time": "20ms",
                    "expected_throughput": 150,
                },
                "/api/user/profile": {"expected_throughput": 90},
                "/api/automations/:id/execute": {
                    "target_response_time": "1s",
                    "expected_throughput": 100,
                },
                "/api/nowhere": {"target_response_time": "1s"},
            }
        }
    )
    verdicts = by_slo(evaluate_slos(run, slos))
    login = df[df["endpoint"] == "/api/auth/login"]
    execute = df[df["endpoint"] == EXECUTE]
    profile = df[df["endpoint"] == "/api/user/profile"]

    response = verdicts["endpoints./api/auth/login.target_response_time"]
    assert response.threshold == parse(
        "http_req_duration{endpoint:/api/auth/login}", "p(95)<20"
    )
    p95 = (login["latency_ns"] / 1e6).quantile(0.95)
    assert response.observed == pytest.approx(p95, rel=1e-12)
    assert response.samples == len(login)
    assert response.status == ("passed" if p95 < 20 else "failed")
    assert response.target == "p95 of /api/auth/login below 20 ms"

    execute_response = verdicts[
        "endpoints./api/automations/:id/execute.target_response_time"
    ]
    expected = (execute["latency_ns"] / 1e6).quantile(0.95)
    assert execute_response.observed == pytest.approx(expected, rel=1e-12)
    assert execute_response.status == "passed"

    # 160 arrivals/s on average reach login: 150 is exercised, and 600 logins in
    # the 2.5 s shape are 240/s.
    throughput = verdicts["endpoints./api/auth/login.expected_throughput"]
    assert throughput.threshold == parse(
        "http_reqs{endpoint:/api/auth/login}", "rate>=150"
    )
    assert throughput.observed == pytest.approx(len(login) / 2.5, rel=1e-12)
    assert throughput.status == "passed"
    assert throughput.note.startswith("offered 160 requests/s on average")
    profile_rate = verdicts["endpoints./api/user/profile.expected_throughput"]
    assert profile_rate.observed == pytest.approx(len(profile) / 2.5, rel=1e-12)
    assert profile_rate.status == ("passed" if len(profile) / 2.5 >= 90 else "failed")
    # 40% of 160/s reach execute: 100/s was never asked for.
    unexercised = verdicts["endpoints./api/automations/:id/execute.expected_throughput"]
    assert unexercised.status == "not exercised"
    assert (unexercised.passed, unexercised.observed) == (None, None)
    assert "offered 64 requests/s" in unexercised.note

    nowhere = verdicts["endpoints./api/nowhere.target_response_time"]
    assert nowhere.status == "no data" and "recorded:" in nowhere.note


def test_concurrency_target_is_a_note_not_a_verdict(tmp_path: Path) -> None:
    rows = _iteration_rows([(0, 0, 10), (1, 5, 15), (2, 6, 7)])
    run = write_run(tmp_path / "r", rows, OPEN_MANIFEST)
    slos = parse_slos(
        {
            "endpoints": {
                "/": {"max_concurrent_users": 3},
                "/x": {"max_concurrent_users": 60},
            }
        }
    )
    reached, missed = evaluate_slos(run, slos)
    assert (reached.status, reached.passed, reached.observed) == ("reached", None, 3.0)
    assert "judged by target_response_time" in reached.note
    assert (missed.status, missed.passed) == ("not reached", None)
    assert "says nothing about 60 users" in missed.note
    assert "max_vus 50" in missed.note


def test_system_limits_read_the_resource_samples(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", make_rows(), OPEN_MANIFEST)
    samples = _resources(run / "resources")
    df = read_rows(run)
    verdicts = by_slo(evaluate_slos(run, parse_slos(BENCHMARK)))
    target = samples[samples["source"] == "target"].groupby("time_ns")

    cpu = verdicts["system.application.max_cpu_usage"]
    assert cpu.observed == target["cpu_percent"].sum().max()  # 50+15 at the third
    assert (cpu.status, cpu.samples) == ("passed", 3)
    memory = verdicts["system.application.max_memory_usage"]
    assert memory.observed == target["rss_bytes"].sum().max() / 2**20
    assert memory.status == "passed"
    connections = verdicts["system.database.max_connections"]
    assert (connections.observed, connections.status) == (100.0, "passed")
    redis_memory = verdicts["system.redis.max_memory_usage"]
    assert (redis_memory.observed, redis_memory.status) == (82.0, "failed")
    assert redis_memory.target == "redis memory usage at most 80%"

    response = verdicts["system.application.max_response_time"]
    assert response.threshold == parse("http_req_duration", "max<5000")
    assert response.observed == pytest.approx(df["latency_ns"].max() / 1e6)
    assert response.status == "passed"

    # Columns the monitor did not write are not measured, never guessed.
    for name, column in (
        ("system.database.max_query_time", "db_query_max_ms"),
        ("system.redis.max_connections", "redis_connections"),
    ):
        assert verdicts[name].status == "not measured"
        assert verdicts[name].note == f"the resource samples have no {column} column"
        assert verdicts[name].observed is None
    text = format_slo_verdicts(list(verdicts.values()))
    assert "failed        system.redis.max_memory_usage" in text


def test_system_limits_without_samples_are_not_measured(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", make_rows(50), OPEN_MANIFEST)
    verdicts = evaluate_slos(run, parse_slos(BENCHMARK))
    resources = [
        v
        for v in verdicts
        if v.slo.startswith("system.")
        and v.slo != "system.application.max_response_time"
    ]
    assert len(resources) == 6
    for v in resources:
        assert (v.status, v.passed, v.observed) == ("not measured", None, None)
        assert (
            v.note == "no resource samples in this run (resources/ is empty or missing)"
        )


def test_slos_default_to_those_in_the_manifest(tmp_path: Path) -> None:
    manifest = {
        **OPEN_MANIFEST,
        "profile": {
            **OPEN_MANIFEST["profile"],
            "slos": parse_slos(BENCHMARK).as_mapping(),
        },
    }
    run = write_run(tmp_path / "r", make_rows(50), manifest)
    declared = evaluate_slos(run)
    assert declared == evaluate_slos(run, parse_slos(BENCHMARK))
    assert declared[0].slo == "endpoints./api/auth/login.target_response_time"
    assert evaluate_slos(write_run(tmp_path / "none", [], MANIFEST)) == []


# -- a real run ------------------------------------------------------------------------


@pytest.mark.slow
def test_slos_on_a_real_closed_run_against_the_demo_target(tmp_path: Path) -> None:
    from harness.coordinator import Coordinator, RunOptions
    from harness.demo.process import DemoTarget
    from harness.profile.load import load_profile_text

    with DemoTarget.start(service_ms=20) as target:
        profile = load_profile_text(
            f"""
target: {target.url}
http: {{timeout: 5s}}
graceful_stop: 5s
load:
  model: closed
  graceful_ramp_down: 1s
  stages: [{{duration: 1s, target: 4}}, {{duration: 2s, target: 4}}]
slos:
  endpoints:
    /healthz: {{target_response_time: 5s, max_concurrent_users: 4}}
    /api/auth/login: {{target_response_time: 5s, max_concurrent_users: 5,
                       expected_throughput: 10}}
  system:
    application: {{max_response_time: 5000ms, max_cpu_usage: 90}}
scenarios:
  - name: login
    flow:
      - name: login
        method: POST
        path: /api/auth/login
        json: {{email: loadtest@example.com, password: LoadTest123!}}
        check: {{status: 200}}
""",
            "real.yaml",
            env={},
        )
        outcome = Coordinator(
            profile, RunOptions(out_dir=tmp_path, run_id="real", workers=2)
        ).run()
    assert outcome.status == "completed"
    assert profile.slos is not None
    verdicts = by_slo(evaluate_slos(outcome.run_dir, profile.slos))
    df = read_rows(outcome.run_dir)
    assert verdicts["endpoints./healthz.target_response_time"].status == "no data"
    response = verdicts["endpoints./api/auth/login.target_response_time"]
    assert response.observed == pytest.approx((df["latency_ns"] / 1e6).quantile(0.95))
    # The service time is a floor under every latency.
    assert response.observed is not None and response.observed >= 20
    assert response.status == "passed"
    assert verdicts["endpoints./healthz.max_concurrent_users"].status == "reached"
    five = verdicts["endpoints./api/auth/login.max_concurrent_users"]
    assert (five.status, five.observed) == ("not reached", 4.0)
    # Without think time, closed VUs can ask for any rate: the target is judged.
    throughput = verdicts["endpoints./api/auth/login.expected_throughput"]
    assert throughput.note.startswith("offered an unbounded rate")
    assert throughput.status == "passed"
    assert verdicts["system.application.max_response_time"].status == "passed"
    # The monitor sampled the demo target (found by its port): its CPU is judged
    # from those samples, summed over its processes at each instant.
    cpu = verdicts["system.application.max_cpu_usage"]
    assert cpu.status in ("passed", "failed") and cpu.samples > 0
    resources = open_run(outcome.run_dir).resources()
    per_instant = resources[resources["source"] == "target"].groupby("time_ns")
    assert cpu.observed == pytest.approx(per_instant["cpu_percent"].sum().max())
