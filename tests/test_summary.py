"""The end-of-run table, against the same figures computed with pandas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import Run, open_run
from analysis.histogram import RELATIVE_ERROR
from analysis.summary import COLUMNS, endpoint_summary, format_summary

from .test_dataset import make_records, write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("summary") / "s"
    return write_run(
        folder,
        [make_records(4_000, seed=21), make_records(3_000, seed=22, worker=1)],
    )


def pandas_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The table as the plain pandas way computes it: service-time quantiles,
    rates over the first start to the last end."""
    df = df.assign(
        method=df["method"].astype(str),
        endpoint=df["endpoint"].astype(str),
        failed=df["error"].notna(),
        latency_ms=df["latency_ns"] / 1e6,
        response_ms=(df["latency_ns"] + df["start_ns"] - df["intended_ns"]) / 1e6,
    )
    span_s = ((df["start_ns"] + df["latency_ns"]).max() - df["start_ns"].min()) / 1e9
    groups = [(m, e, g) for (m, e), g in df.groupby(["method", "endpoint"])]
    rows = []
    for method, endpoint, group in [*groups, ("ALL", "", df)]:
        q = group["latency_ms"].quantile([0.5, 0.95, 0.99])
        rows.append(
            {
                "method": method,
                "endpoint": endpoint,
                "requests": len(group),
                "errors": int(group["failed"].sum()),
                "rps": len(group) / span_s,
                "p50_ms": q.iloc[0],
                "p95_ms": q.iloc[1],
                "p99_ms": q.iloc[2],
                "max_ms": group["latency_ms"].max(),
                "response_p99_ms": group["response_ms"].quantile(0.99),
            }
        )
    return pd.DataFrame(rows)


def test_summary_rows_equal_pandas_per_method_and_endpoint_and_all(run: Run) -> None:
    got = endpoint_summary(run)
    want = pandas_summary(run.requests())
    assert list(got.columns) == COLUMNS
    assert list(got["method"]) == list(want["method"])
    assert list(got["endpoint"]) == list(want["endpoint"])
    for column in want.columns[2:]:
        np.testing.assert_allclose(got[column], want[column], rtol=1e-9, err_msg=column)
    assert (got["quantile_rel_error"] == 0).all()
    assert got["response_p99_ms"].iloc[-1] > got["p99_ms"].iloc[-1]


def test_a_summary_from_histograms_stays_within_the_bound_and_says_so(
    run: Run,
) -> None:
    exact = endpoint_summary(run)
    approximate = endpoint_summary(run, exact_rows=0)
    for column in ("p50_ms", "p95_ms", "p99_ms", "response_p99_ms"):
        np.testing.assert_allclose(
            approximate[column], exact[column], rtol=RELATIVE_ERROR, err_msg=column
        )
    for column in ("requests", "errors", "rps", "max_ms"):
        np.testing.assert_allclose(approximate[column], exact[column], rtol=1e-12)
    assert "within 0.39%" in format_summary(approximate)
    assert "histograms" not in format_summary(exact)


def test_format_summary_prints_one_line_per_row_and_cuts_long_names(
    tmp_path: Path,
) -> None:
    long_name = "/api/" + "x" * 60
    run = write_run(
        tmp_path / "long", [make_records(200, endpoints=(long_name, "/short"))]
    )
    text = format_summary(endpoint_summary(run))
    lines = text.splitlines()
    assert lines[0].split() == [
        "endpoint",
        "requests",
        "errors",
        "req/s",
        "p50",
        "ms",
        "p95",
        "ms",
        "p99",
        "ms",
    ]
    assert len(lines) == 2 + 3  # header, rule, two endpoints and ALL
    assert any(line.startswith("GET /api/xxx") and "..." in line for line in lines)
    assert lines[-1].startswith("ALL ")
    assert lines[-1].split()[1] == "200"


def test_an_empty_run_has_an_empty_summary(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"run_id": "empty"}')
    table = endpoint_summary(open_run(folder))
    assert table.empty
    assert list(table.columns) == COLUMNS
    assert format_summary(table) == "no requests were recorded"
