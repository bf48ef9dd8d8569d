"""Comparing two runs: real runs of one profile against demo targets whose service
time is 20 ms or 24 ms, and written runs for the cases a target cannot stage
cheaply (a large run, an endpoint on one side only, error rates)."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import Run, open_run
from analysis.compare import (
    DamagedRun,
    _bootstrap_quantile,
    compare_runs,
    comparison_dict,
    format_comparison,
    write_comparison,
)
from harness.cli_compare import parse_fraction
from harness.demo.process import DemoTarget
from harness.errors import UsageError

from .test_dataset import make_records, write_run

REPO = Path(__file__).resolve().parent.parent

# Login then the profile: two endpoints, each holding a demo worker slot for the
# service time. 50 iterations/s for 4 s is 200 requests per endpoint, enough for the
# p95 to take part in the verdict (it needs 200).
PROFILE = """
name: compare-probe
target: http://127.0.0.1:9
load:
  model: open
  arrivals: uniform
  max_vus: 50
  phases: [{name: steady, duration: 4s, rate: 50}]
scenarios:
  - name: login and profile
    flow:
      - name: login
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "LoadTest123!"}
        capture: {token: $.data.access_token}
        check: {status: 200}
      - name: profile
        path: /api/user/profile
        headers: {Authorization: "Bearer {{ token }}"}
        check: {status: 200}
"""


def harness_compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "compare", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@dataclass(frozen=True)
class Runs:
    baseline: Path
    same: Path
    slower: Path


def _record(profile: Path, out: Path, run_id: str, service_ms: float) -> Path:
    with DemoTarget.start(service_ms=service_ms) as target:
        proc = subprocess.run(
            [
                sys.executable, "-m", "harness", "run", str(profile),
                "--target", target.url, "--workers", "1",
                "--run-id", run_id, "--out", str(out),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out / run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Three real runs of one profile, each against its own demo target: two at
    20 ms of service time, one at 24 ms (+20 %)."""
    out = tmp_path_factory.mktemp("compare")
    profile = out / "probe.yaml"
    profile.write_text(PROFILE)
    return Runs(
        baseline=_record(profile, out, "base", 20.0),
        same=_record(profile, out, "same", 20.0),
        slower=_record(profile, out, "slower", 24.0),
    )


def _endpoints(report: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = report["endpoints"]
    assert isinstance(rows, list)
    return {f"{r['method']} {r['endpoint']}".strip(): r for r in rows}


def test_planted_slowdown_is_worse_a_regression_and_exits_1(runs: Runs) -> None:
    proc = harness_compare(str(runs.baseline), str(runs.slower))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(
        (runs.slower / "compare-base" / "compare.json").read_text(encoding="utf-8")
    )
    rows = _endpoints(report)
    assert set(rows) == {"GET /api/user/profile", "POST /api/auth/login", "ALL"}
    for name, row in rows.items():
        assert row["verdict"] == "worse", (name, row["reasons"])
        # The target adds 4 ms to ~21 ms (20 ms of service time and ~1 ms of
        # client, kernel and event-loop overhead): about +19 %.
        change = row["change"]
        assert isinstance(change, dict)
        assert 0.12 < change["p50"] < 0.28, (name, change)
        test = row["latency_test"]
        assert isinstance(test, dict)
        assert test["p_value"] < 1e-20
        assert test["median_ratio"]["low"] > 1.05
    assert sorted(report["regressions"]) == [
        "GET /api/user/profile",
        "POST /api/auth/login",
    ]
    assert rows["ALL"]["regression"] is False
    assert "GET /api/user/profile" in proc.stdout
    assert "worse REGRESSION" in proc.stdout
    assert "2 endpoint(s) regressed" in proc.stdout


def test_two_runs_of_one_configuration_show_no_change_and_exit_0(
    runs: Runs, tmp_path: Path
) -> None:
    proc = harness_compare(
        str(runs.baseline), str(runs.same), "--out", str(tmp_path / "report")
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report" / "compare.json").read_text())
    rows = _endpoints(report)
    assert len(rows) == 3
    for name, row in rows.items():
        assert row["verdict"] == "no significant change", (name, row["reasons"])
        change = row["change"]
        assert isinstance(change, dict)
        assert abs(change["p50"]) < 0.05, (name, change)
    assert report["regressions"] == []
    assert report["notes"] == []
    assert "no regression beyond tolerance" in proc.stdout


def _pandas_figures(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path / "requests")
    df = df.assign(
        method=df["method"].astype(str),
        endpoint=df["endpoint"].astype(str),
        failed=df["error"].notna(),
        latency_ms=df["latency_ns"] / 1e6,
    )
    span_s = ((df["start_ns"] + df["latency_ns"]).max() - df["start_ns"].min()) / 1e9
    groups = [(f"{m} {e}", g) for (m, e), g in df.groupby(["method", "endpoint"])]
    rows = []
    for name, group in [*groups, ("ALL", df)]:
        q = group["latency_ms"].quantile([0.5, 0.95, 0.99])
        rows.append(
            {
                "name": name,
                "requests": len(group),
                "errors": int(group["failed"].sum()),
                "error_rate": float(group["failed"].mean()),
                "rps": len(group) / span_s,
                "p50_ms": q.iloc[0],
                "p95_ms": q.iloc[1],
                "p99_ms": q.iloc[2],
            }
        )
    return pd.DataFrame(rows).set_index("name")


def test_json_figures_equal_pandas_on_the_same_parquet(runs: Runs) -> None:
    comparison = compare_runs(open_run(runs.baseline), open_run(runs.slower))
    report = comparison_dict(comparison)
    rows = _endpoints(report)
    for role, path in (("baseline", runs.baseline), ("candidate", runs.slower)):
        want = _pandas_figures(path)
        assert set(rows) == set(want.index)
        for name, expected in want.iterrows():
            got = rows[str(name)][role]
            assert isinstance(got, dict)
            assert got["requests"] == expected["requests"]
            assert got["errors"] == expected["errors"]
            for column in ("error_rate", "rps", "p50_ms", "p95_ms", "p99_ms"):
                assert got[column] == pytest.approx(expected[column], rel=1e-9), (
                    role,
                    name,
                    column,
                )
            # Every request is in the sample: fewer than max_samples.
            assert got["samples"] == expected["requests"]
    for name, row in rows.items():
        before, after = row["baseline"], row["candidate"]
        assert isinstance(before, dict) and isinstance(after, dict)
        change = row["change"]
        assert isinstance(change, dict)
        assert change["p95"] == pytest.approx(after["p95_ms"] / before["p95_ms"] - 1)
        assert change["error_rate"] == after["error_rate"] - before["error_rate"], name


@pytest.mark.parametrize(
    ("make_args", "named"),
    [
        (lambda base, tmp: [str(tmp / "missing"), str(base)], "missing"),
        (lambda base, tmp: [str(base), str(base / "requests")], "requests"),
        (lambda base, tmp: [str(base), str(base), "--tolerance", "ten"], "--tolerance"),
        (lambda base, tmp: [str(base), str(base), "--alpha", "1.5"], "--alpha"),
    ],
)
def test_bad_input_exits_2_and_names_what_is_wrong(
    runs: Runs, tmp_path: Path, make_args: object, named: str
) -> None:
    assert callable(make_args)
    args = make_args(runs.baseline, tmp_path)
    proc = harness_compare(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr
    if named in ("missing", "requests"):
        assert "manifest.json" in proc.stderr
        assert args[0 if named == "missing" else 1] in proc.stderr


def test_html_is_self_contained_with_the_table_and_a_plot(
    runs: Runs, tmp_path: Path
) -> None:
    comparison = compare_runs(open_run(runs.baseline), open_run(runs.slower))
    paths = write_comparison(comparison, tmp_path / "out")
    page = paths["html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page
    assert "<table" in page and "GET /api/user/profile" in page
    assert "base" in page and "slower" in page  # both run ids in the header
    images = re.findall(
        r"""<img src=['"]data:image/png;base64,([A-Za-z0-9+/=]+)""", page
    )
    assert len(images) == 3  # ALL and the two endpoints
    assert base64.b64decode(images[0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "class='worse'" in page


def test_html_escapes_names_from_the_records(tmp_path: Path) -> None:
    table = make_records(400, seed=3, endpoints=("/a/<script>", "/b&c"))
    base = write_run(tmp_path / "b", [table], run_id="<b>")
    cand = write_run(tmp_path / "c", [table], run_id="c")
    page = write_comparison(compare_runs(base, cand), tmp_path / "o")["html"]
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<b>" not in text and "&lt;b&gt;" in text


def _with_latency(table: pa.Table, latency_ns: np.ndarray) -> pa.Table:
    index = table.schema.get_field_index("latency_ns")
    values = pa.array(latency_ns.astype(np.int64))
    return table.set_column(index, table.schema.field(index), values)


def _slowed(table: pa.Table, factor: float) -> pa.Table:
    return _with_latency(table, table.column("latency_ns").to_numpy() * factor)


def test_large_runs_are_sampled_to_max_samples_and_repeat_with_a_seed(
    tmp_path: Path,
) -> None:
    rows = 60_000
    base = write_run(tmp_path / "b", [make_records(rows, seed=5)], row_group_rows=5_000)
    cand = write_run(
        tmp_path / "c",
        [_slowed(make_records(rows, seed=6), 1.3)],
        run_id="c",
        row_group_rows=5_000,
    )
    first = compare_runs(base, cand, max_samples=2_000, seed=7)
    again = compare_runs(base, cand, max_samples=2_000, seed=7)
    assert comparison_dict(first) == comparison_dict(again)
    total = first.endpoints[-1]
    assert total.is_total and total.baseline is not None
    assert total.baseline.requests == rows
    for e in first.endpoints:
        assert e.baseline is not None and e.candidate is not None
        assert e.baseline.samples == e.candidate.samples == 2_000
        assert e.verdict == "worse", e.reasons
        assert e.latency is not None
        assert e.latency.median.low < 1.3 < e.latency.median.high


def test_a_slower_tail_alone_is_worse_through_the_p95_interval(tmp_path: Path) -> None:
    ends = ("/a",)
    table = make_records(4_000, seed=4, endpoints=ends, error_rate=0.0)
    latency = table.column("latency_ns").to_numpy()
    slow = np.where(latency > np.quantile(latency, 0.9), latency * 3, latency)
    tail = _with_latency(table, slow)
    base = write_run(tmp_path / "b", [table])
    cand = write_run(tmp_path / "c", [tail], run_id="c")
    e = compare_runs(base, cand).endpoints[0]
    assert e.latency is not None and e.latency.p95 is not None
    assert e.latency.median.estimate == pytest.approx(1.0)
    assert e.latency.p95.low > 1.25
    assert e.verdict == "worse" and e.regression
    assert any(r.startswith("regression: p95") for r in e.reasons), e.reasons


def test_endpoints_on_one_side_or_with_few_requests_get_their_own_verdict(
    tmp_path: Path,
) -> None:
    base = write_run(
        tmp_path / "b", [make_records(600, seed=1, endpoints=("/a", "/gone"))]
    )
    few = make_records(20, seed=3, endpoints=("/rare",))
    cand = write_run(
        tmp_path / "c",
        [make_records(600, seed=2, endpoints=("/a", "/new")), few],
        run_id="c",
    )
    verdicts = {e.name: e.verdict for e in compare_runs(base, cand).endpoints}
    assert verdicts["POST /gone"] == "only in baseline"
    assert verdicts["POST /new"] == "only in candidate"
    assert verdicts["GET /rare"] == "only in candidate"
    assert verdicts["GET /a"] == "no significant change"
    tiny = write_run(tmp_path / "t", [few], run_id="t")
    verdicts = {e.name: e.verdict for e in compare_runs(tiny, tiny).endpoints}
    assert verdicts == {"GET /rare": "too few samples", "ALL": "too few samples"}


def test_more_errors_is_worse_and_a_regression_past_the_error_tolerance(
    tmp_path: Path,
) -> None:
    ends = ("/a",)
    base = write_run(tmp_path / "b", [make_records(4_000, seed=1, endpoints=ends)])
    cand = write_run(
        tmp_path / "c",
        [make_records(4_000, seed=2, endpoints=ends, error_rate=0.10)],
        run_id="c",
    )
    comparison = compare_runs(base, cand)
    e = comparison.endpoints[0]
    assert e.name == "GET /a"
    assert e.verdict == "worse" and e.regression
    assert e.errors is not None and e.errors.method == "two-proportion z"
    assert e.errors.p_value < 1e-6
    assert e.change("error_rate") == pytest.approx(0.05, abs=0.015)
    assert any("error rate" in r for r in e.reasons)
    # The rise of a rate is a difference of percentages: percentage points.
    (rose,) = [r for r in e.reasons if "rose by" in r]
    assert re.search(
        r"rose by \d+\.\d\d percentage points, over the tolerance of 0\.50 "
        "percentage points",
        rose,
    ), rose
    loose = compare_runs(base, cand, error_tolerance=0.2)
    assert loose.endpoints[0].verdict == "worse"
    assert not loose.regressions
    # The other way round, fewer errors and the same latency: better.
    assert compare_runs(cand, base).endpoints[0].verdict == "better"
    assert "REGRESSION" in format_comparison(comparison)


def test_few_errors_are_judged_with_fisher_exact(tmp_path: Path) -> None:
    ends = ("/a",)
    base = write_run(
        tmp_path / "b", [make_records(200, seed=1, endpoints=ends, error_rate=0.0)]
    )
    cand = write_run(
        tmp_path / "c",
        [make_records(200, seed=1, endpoints=ends, error_rate=0.01)],
        run_id="c",
    )
    e = compare_runs(base, cand).endpoints[0]
    assert e.errors is not None and e.errors.method == "fisher exact"
    assert e.errors.p_value > 0.01
    assert e.verdict == "no significant change"


def test_bootstrap_quantile_from_beta_draws_matches_resampling() -> None:
    rng = np.random.default_rng(11)
    sample = np.sort(rng.lognormal(3.0, 0.5, 301))
    draws = 20_000
    fast = _bootstrap_quantile(sample, 0.95, draws, np.random.default_rng(1))
    slow_rng = np.random.default_rng(2)
    k = math.ceil(0.95 * sample.size)
    resampled = np.sort(slow_rng.choice(sample, (draws, sample.size)), axis=1)
    slow = resampled[:, k - 1]
    for level in (0.005, 0.05, 0.5, 0.95, 0.995):
        assert np.quantile(fast, level) == pytest.approx(
            np.quantile(slow, level), rel=0.01
        )


@pytest.mark.parametrize(
    ("text", "value"), [("10%", 0.1), ("0.1", 0.1), (" 5 % ", 0.05), ("0", 0.0)]
)
def test_fractions_are_read_as_percentages_or_numbers(text: str, value: float) -> None:
    assert parse_fraction(text, "--tolerance") == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "value"), [("1000%", 10.0), ("100%", 1.0), ("0.99", 0.99)]
)
def test_fractions_of_one_or_more_are_taken_when_written_as_percentages(
    text: str, value: float
) -> None:
    assert parse_fraction(text, "--tolerance") == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "reading"),
    [("10", "'10' reads as 1000 %; write 10% or 0.1"), ("1", "reads as 100 %")],
)
def test_bare_numbers_of_one_or_more_are_refused_as_likely_percentages(
    text: str, reading: str
) -> None:
    with pytest.raises(UsageError, match="--tolerance") as caught:
        parse_fraction(text, "--tolerance")
    assert reading in str(caught.value)


@pytest.mark.parametrize("text", ["-1%", "ten", "nan", "inf", "%"])
def test_fractions_that_are_not_refused_with_the_option_name(text: str) -> None:
    with pytest.raises(UsageError, match="--tolerance"):
        parse_fraction(text, "--tolerance")


def test_out_of_range_options_are_refused(runs: Runs) -> None:
    run = open_run(runs.baseline)
    with pytest.raises(ValueError, match="alpha"):
        compare_runs(run, run, alpha=0.0)
    with pytest.raises(ValueError, match="max_samples"):
        compare_runs(run, run, max_samples=10)
    with pytest.raises(ValueError, match="error_tolerance"):
        compare_runs(run, run, error_tolerance=2.0)
    with pytest.raises(ValueError, match="seed"):
        compare_runs(run, run, seed=-1)


@pytest.fixture(scope="module")
def slowed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A baseline run and a candidate 30 % slower on every request: a regression
    at the default options."""
    out = tmp_path_factory.mktemp("slowed")
    table = make_records(3_000, seed=9)
    base = write_run(out / "b", [table], run_id="b")
    cand = write_run(out / "c", [_slowed(table, 1.3)], run_id="c")
    return base.path, cand.path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--tolerance", "10", "--tolerance '10' reads as 1000 %; write 10% or 0.1"),
        ("--error-tolerance", "2", "--error-tolerance '2' reads as 200 %"),
        ("--error-tolerance", "150%", "more than 100 percentage points"),
        ("--seed", "-1", "--seed -1: use a whole number of 0 or more"),
    ],
)
def test_options_that_would_switch_the_gate_off_are_refused(
    slowed: tuple[Path, Path], tmp_path: Path, option: str, value: str, said: str
) -> None:
    # Read as a fraction, --tolerance 10 is 1000 %: the +30 % slowdown would pass
    # as no regression, exit 0.
    proc = harness_compare(
        str(slowed[0]),
        str(slowed[1]),
        "--out",
        str(tmp_path / "report"),
        option,
        value,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert said in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "report").exists()


@pytest.mark.slow
def test_a_tolerance_written_as_a_percentage_is_taken_as_written(
    slowed: tuple[Path, Path], tmp_path: Path
) -> None:
    proc = harness_compare(
        str(slowed[0]),
        str(slowed[1]),
        "--out",
        str(tmp_path / "report"),
        "--tolerance",
        "1000%",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report" / "compare.json").read_text())
    assert report["options"]["tolerance"] == pytest.approx(10.0)
    assert report["regressions"] == []


@pytest.mark.slow
def test_a_truncated_part_is_named_with_its_run_and_exits_2(
    runs: Runs, tmp_path: Path
) -> None:
    copy = tmp_path / "slower"
    shutil.copytree(runs.slower, copy)
    part = open_run(copy).request_parts()[-1]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    proc = harness_compare(str(runs.baseline), str(copy), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: the candidate run slower "), proc.stderr
    assert str(part) in proc.stderr
    assert f"rename it (e.g. to {part.name}.damaged)" in proc.stderr
    assert "--help" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_part_with_a_damaged_page_is_found_and_named(tmp_path: Path) -> None:
    base = write_run(tmp_path / "b", [make_records(3_000, seed=1)])
    cand = write_run(tmp_path / "c", [make_records(3_000, seed=2)], run_id="c")
    part = cand.request_parts()[-1]
    # The footer stays intact; the bytes of one column chunk of a row group do not.
    chunk = pq.read_metadata(part).row_group(1).column(5)
    data = bytearray(part.read_bytes())
    start = chunk.data_page_offset
    for i in range(start, start + chunk.total_compressed_size):
        data[i] ^= 0xA5
    part.write_bytes(bytes(data))
    with pytest.raises(DamagedRun) as caught:
        compare_runs(base, cand)
    assert caught.value.part == part
    assert caught.value.run_id == "c"
    assert str(part) in str(caught.value)


def test_changes_that_round_to_zero_carry_no_minus_sign(tmp_path: Path) -> None:
    table = make_records(600, seed=8)
    base = write_run(tmp_path / "b", [table])
    cand = write_run(tmp_path / "c", [_slowed(table, 0.998)], run_id="c")
    comparison = compare_runs(base, cand)
    assert all(-0.005 < e.change("p50_ms") < 0 for e in comparison.endpoints)
    text = format_comparison(comparison)
    assert "-0%" not in text
    assert text.count(" 0%") >= len(comparison.endpoints)
    page = write_comparison(comparison, tmp_path / "o")["html"].read_text()
    assert "-0.0%" not in page and "-0.00 pt" not in page


def test_a_run_compared_with_itself_is_unchanged(runs: Runs) -> None:
    run: Run = open_run(runs.same)
    comparison = compare_runs(run, run)
    assert {e.verdict for e in comparison.endpoints} == {"no significant change"}
    for e in comparison.endpoints:
        assert e.latency is not None
        assert e.latency.prob_slower == pytest.approx(0.5)
        assert e.latency.median.low <= 1.0 <= e.latency.median.high
