"""The report: summary.json equals pandas on the Parquet, junit names the failed
threshold, the page is self-contained and renders in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from analysis import open_run
from analysis.junit import render_junit
from analysis.report import build_report, window_length_s, write_report
from harness.demo.process import DemoTarget

from .test_cli import harness, harness_run
from .test_dataset import make_records, write_run

PROFILE = """
name: report test
target: http://127.0.0.1:1
load:
  model: open
  max_vus: 20
  phases:
    - {name: warm up, duration: 2s, rate: 20}
    - {name: steady, duration: 4s, rate: 40}
thresholds:
  http_req_duration: ["p(95)<20"]
  http_req_failed: ["rate<0.5"]
slos:
  endpoints:
    /api/auth/login: {target_response_time: 500ms}
scenarios:
  - name: login and profile
    flow:
      - name: login
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "LoadTest123!"}
        capture: {token: $.data.access_token}
      - name: profile
        path: /api/user/profile
        headers: {Authorization: "Bearer {{ token }}"}
      - name: missing
        path: /api/nothing-here
"""

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """A real run whose p95 bound the target cannot meet (30 ms per request
    against p(95)<20), with a 404 endpoint for errors; reported by ``harness run``
    itself. Returns the run folder, the exit code and the output."""
    root = tmp_path_factory.mktemp("report")
    profile = root / "profile.yaml"
    profile.write_text(PROFILE)
    with DemoTarget.start(service_ms=30) as target:
        proc = harness_run(profile, "slow", root, "--target", target.url)
        out, err = proc.communicate(timeout=120)
    return root / "slow", proc.returncode, out + err


def test_a_failed_threshold_exits_1_and_the_run_writes_its_report(
    slow_run: tuple[Path, int, str],
) -> None:
    run_dir, code, output = slow_run
    assert code == 1, output
    assert f"report: {run_dir / 'report' / 'index.html'}" in output
    for name in ("index.html", "summary.json", "junit.xml"):
        assert (run_dir / "report" / name).stat().st_size > 0


def test_summary_json_figures_equal_pandas_on_the_same_parquet(
    slow_run: tuple[Path, int, str],
) -> None:
    run_dir = slow_run[0]
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    frame = pd.read_parquet(run_dir / "requests")
    frame["ms"] = frame["latency_ns"] / 1e6
    frame["failed"] = frame["error"].notna()
    groups = frame.groupby(["method", "endpoint"], observed=True)
    assert len(summary["endpoints"]) == groups.ngroups == 3
    for row in summary["endpoints"]:
        part = groups.get_group((row["method"], row["endpoint"]))
        assert row["requests"] == len(part)
        assert row["errors"] == int(part["failed"].sum())
        for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            assert row[key] == pytest.approx(part["ms"].quantile(q), rel=1e-9)
        assert row["max_ms"] == pytest.approx(part["ms"].max(), rel=1e-9)
    totals = summary["totals"]
    assert totals["requests"] == len(frame) == summary["run"]["counts"]["requests"]
    assert totals["errors"] == int(frame["failed"].sum()) > 0
    assert totals["p95_ms"] == pytest.approx(frame["ms"].quantile(0.95), rel=1e-9)
    errors = {e["kind"]: e["count"] for e in summary["errors"]}
    assert errors == frame["error"].value_counts().to_dict()
    windows = summary["windows"]["total"]
    assert sum(w["requests"] for w in windows) == len(frame)
    assert [p["name"] for p in summary["phases"]] == ["warm up", "steady"]
    # The detectors answered, each with its reason (this run is too short and too
    # flat for most of them to judge, and says so rather than guessing).
    assert set(summary["findings"]) == {
        "leak",
        "degradation",
        "breaking_point",
        "generator",
    }
    for finding in summary["findings"].values():
        assert finding["verdict"] and finding["explanation"]
        assert finding["verdict"] != "detector failed", finding


def test_threshold_verdicts_and_junit_name_the_failed_threshold(
    slow_run: tuple[Path, int, str],
) -> None:
    run_dir = slow_run[0]
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["verdict"] == "failed"
    by_expr = {t["expression"]: t for t in summary["thresholds"]}
    assert by_expr["p(95)<20"]["status"] == "failed"
    assert by_expr["p(95)<20"]["observed"] >= 20
    assert by_expr["rate<0.5"]["status"] == "passed"
    assert [s["status"] for s in summary["slos"]] == ["passed"]
    root = ET.parse(run_dir / "report" / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    failures = [
        (case.get("name"), case.find("failure"))
        for case in suite.iter("testcase")
        if case.find("failure") is not None
    ]
    assert len(failures) == 1
    name, failure = failures[0]
    assert name == "http_req_duration: p(95)<20"
    assert failure is not None
    assert "p(95)<20 failed: observed" in (failure.get("message") or "")


def test_the_page_is_one_self_contained_file_with_every_plot(
    slow_run: tuple[Path, int, str],
) -> None:
    page = (slow_run[0] / "report" / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", page)
    assert "<script" not in page
    images = re.findall(r"src='data:image/png;base64,[A-Za-z0-9+/=]+'", page)
    # latency, throughput, heatmap, load, and resources when the monitor sampled
    has_resources = not open_run(slow_run[0]).resources().empty
    assert len(images) == 4 + has_resources
    assert "GET /api/user/profile" in page
    assert "<h2>Findings</h2>" in page and "Breaking point" in page
    assert "p(95)&lt;20" in page
    # No secret from the profile reaches the page or the JSON.
    summary_text = (slow_run[0] / "report" / "summary.json").read_text()
    for text in (page, summary_text):
        assert "LoadTest123!" not in text
        assert "Bearer" not in text


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
    return found


def test_the_page_renders_in_headless_chromium_and_shows_the_plots(
    slow_run: tuple[Path, int, str], tmp_path: Path
) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed here")
    page = slow_run[0] / "report" / "index.html"
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1100
    # Plots are the only saturated colour on the page: lines, areas, the heatmap.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 0.25).mean() > 0.01
    assert pixels.std() > 0.05


def test_report_command_rewrites_the_report_and_checks_the_verdict(
    slow_run: tuple[Path, int, str], tmp_path: Path
) -> None:
    out = tmp_path / "again"
    proc = harness("report", str(slow_run[0]), "--out", str(out), "--check")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert "verdict: failed" in stdout
    assert "failed: http_req_duration: p(95)<20" in stdout
    first = json.loads((slow_run[0] / "report" / "summary.json").read_text())
    again = json.loads((out / "summary.json").read_text())
    assert again["endpoints"] == first["endpoints"]


def test_report_command_on_a_folder_that_is_not_a_run_exits_2(tmp_path: Path) -> None:
    proc = harness("report", str(tmp_path))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "is not a run directory" in stderr


def test_an_empty_run_still_gets_a_report(tmp_path: Path) -> None:
    run = write_run(tmp_path / "empty", [])
    files = write_report(run)
    summary = json.loads(files.summary_json.read_text())
    assert summary["endpoints"] == [] and summary["totals"] is None
    assert summary["verdict"] == "none declared"
    assert "No request was recorded" in files.html.read_text()
    assert summary["plots"] == []


def test_window_quantiles_in_the_json_equal_pandas_per_window(tmp_path: Path) -> None:
    table = make_records(6_000, span_s=30.0, seed=3)
    run = write_run(tmp_path / "r", [table])
    report = build_report(run, every="5s")
    frame = table.to_pandas()
    frame = frame[frame["endpoint"] == "/api/b/{id}"]
    every_ns = 5_000_000_000
    # Windows start on multiples of their length since the epoch.
    expected = frame.groupby(frame["start_ns"] // every_ns)["latency_ns"]
    series = report.summary["windows"]["endpoints"]["POST /api/b/{id}"]
    got = [w for w in series if w["requests"]]
    assert [w["requests"] for w in got] == expected.size().tolist()
    np.testing.assert_allclose(
        [w["service_p95_ms"] for w in got],
        (expected.quantile(0.95) / 1e6).to_numpy(),
        rtol=1e-9,
    )


def test_window_length_keeps_about_two_hundred_windows() -> None:
    assert window_length_s(30) == 1
    assert window_length_s(600) == 5
    assert window_length_s(8 * 3600) == 300
    assert window_length_s(10**7) == 3600


def test_junit_of_a_degraded_run_without_thresholds_fails_the_status_case() -> None:
    summary = {
        "run": {"run_id": "x", "status": "degraded", "duration_s": 1.0},
        "thresholds": [],
        "slos": [
            {
                "slo": "system.redis.max_memory_usage",
                "target": "redis memory usage at most 80%",
                "status": "not measured",
                "observed": None,
                "samples": 0,
                "note": "no resource samples in this run",
            }
        ],
    }
    root = ET.fromstring(render_junit(summary))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "2",
        "1",
        "1",
    )


def test_a_run_being_written_reads_only_its_finished_parts(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", [make_records(3_000, seed=5)])
    hidden = run.path / "requests" / "worker-0" / ".part-999999.parquet"
    hidden.write_bytes(b"not parquet yet")
    summary = build_report(open_run(run.path)).summary
    assert summary["totals"]["requests"] == 3_000
