"""The report: summary.json equals pandas on the Parquet, junit names the failed
threshold, the page is self-contained and renders in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from analysis import open_run
from analysis.dataset import DamagedPart
from analysis.junit import render_junit
from analysis.report import (
    ReportError,
    ReportWriteError,
    build_report,
    window_length_s,
    write_report,
)
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
    # run status, run records, two thresholds, one SLO
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
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
            "--window-size=1200,3200",
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
    assert pixels.shape[0] >= 3000 and pixels.shape[1] >= 1100
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
    # Each window says which part of it the run covered; the inner ones all of it.
    total = report.summary["windows"]["total"]
    assert all(0 <= w["covered_offset_s"] < 5 for w in total)
    assert all(0 < w["covered_s"] <= 5 for w in total)
    inner = [w for w in total if not w["partial"]]
    assert inner and all(w["covered_s"] == 5 for w in inner)


@pytest.mark.parametrize("every", ["0s", "0.5s", "1.5s", "soon"])
def test_windows_that_are_not_whole_seconds_are_refused_alike(
    tmp_path: Path, every: str
) -> None:
    run = write_run(tmp_path / "r", [make_records(100, span_s=5.0, seed=1)])
    with pytest.raises(ReportError, match="whole seconds, one or more"):
        build_report(run, every=every)


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


# -- records, status, output folder, status codes ---------------------------------

CLEAN_PROFILE = """
name: clean
target: http://127.0.0.1:1
load:
  model: open
  max_vus: 20
  phases: [{name: steady, duration: 2s, rate: 25}]
thresholds:
  http_req_failed: ["rate<0.6"]
scenarios:
  - name: login
    flow:
      - name: login
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "LoadTest123!"}
        check: {status: 200}
"""


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run that passes its threshold, against a target that answers 20 % of
    requests with HTTP 500; its report written by ``harness run``."""
    root = tmp_path_factory.mktemp("clean")
    profile = root / "profile.yaml"
    profile.write_text(CLEAN_PROFILE)
    with DemoTarget.start(error_rate=0.2, seed=7) as target:
        proc = harness_run(profile, "clean", root, "--target", target.url)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    return root / "clean"


def _report(run_dir: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    proc = harness("report", str(run_dir), "--out", str(out), *extra)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def _junit_failures(path: Path) -> dict[str, str]:
    return _junit_failures_of(path.read_text())


@pytest.mark.slow
def test_a_complete_run_passes_and_says_its_records_are_all_there(
    clean_run: Path,
) -> None:
    summary = json.loads((clean_run / "report" / "summary.json").read_text())
    listed = json.loads((clean_run / "manifest.json").read_text())["counts"]
    assert summary["verdict"] == "passed"
    assert summary["incomplete_reasons"] == []
    records = summary["records"]
    assert records["complete"] is True
    assert records["listed_requests"] == records["found_requests"] == listed["requests"]
    assert records["listed_parts"] == 2 and records["missing_parts"] == []
    assert _junit_failures(clean_run / "report" / "junit.xml") == {}


@pytest.mark.slow
def test_a_copy_missing_a_workers_parts_does_not_pass(
    clean_run: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "lost"
    shutil.copytree(clean_run, copy)
    shutil.rmtree(copy / "requests" / "worker-1")
    manifest = json.loads((copy / "manifest.json").read_text())
    listed = manifest["counts"]["requests"]
    kept = next(s["rows"] for s in manifest["shards"] if s["worker"] == 0)
    code, out, err = _report(copy, tmp_path / "rep", "--check")
    assert code == 1, out + err
    assert "verdict: incomplete: records missing" in out
    assert f"incomplete: records missing: {listed:,} listed / {kept:,} found" in out
    assert "requests/worker-1/part-000001.parquet" in out
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    records = summary["records"]
    assert records["complete"] is False
    assert (records["listed_requests"], records["found_requests"]) == (listed, kept)
    assert records["missing_requests"] == listed - kept > 0
    assert records["missing_parts"] == ["requests/worker-1/part-000001.parquet"]
    assert summary["totals"]["requests"] == kept
    failures = _junit_failures(tmp_path / "rep" / "junit.xml")
    assert failures == {
        "run records": f"records missing: {listed:,} listed / {kept:,} found"
    }
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "badge incomplete'>incomplete: records missing<" in page
    assert f"records missing: {listed:,} listed / {kept:,} found" in page


@pytest.mark.slow
def test_a_copy_without_any_part_does_not_pass(clean_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "none"
    shutil.copytree(clean_run, copy)
    shutil.rmtree(copy / "requests")
    code, out, err = _report(copy, tmp_path / "rep", "--check")
    assert code == 1, out + err
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["verdict"] == "incomplete: records missing"
    assert summary["records"]["found_requests"] == 0
    assert "run records" in _junit_failures(tmp_path / "rep" / "junit.xml")


@pytest.mark.slow
def test_a_truncated_part_is_skipped_named_and_counted_missing(
    clean_run: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "cut"
    shutil.copytree(clean_run, copy)
    part = copy / "requests" / "worker-1" / "part-000001.parquet"
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    kept = len(pd.read_parquet(copy / "requests" / "worker-0"))
    code, out, err = _report(copy, tmp_path / "rep", "--check")
    assert code == 1, out + err
    assert "Traceback" not in err
    assert f"skipping damaged part {part}" in err
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["totals"]["requests"] == kept
    assert summary["verdict"] == "incomplete: records missing"
    damaged = summary["records"]["damaged_parts"]
    assert [d["part"] for d in damaged] == ["requests/worker-1/part-000001.parquet"]
    # The dataset layer names the part rather than failing somewhere inside Arrow.
    with pytest.raises(DamagedPart, match=re.escape(str(part))):
        open_run(copy).requests()


@pytest.mark.slow
def test_a_damaged_manifest_is_a_clear_error(clean_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bad"
    shutil.copytree(clean_run, copy)
    (copy / "manifest.json").write_text("{not json\n")
    code, _, err = _report(copy, tmp_path / "rep")
    assert code == 2
    assert "Traceback" not in err
    assert f"{copy / 'manifest.json'} cannot be read: it is not JSON" in err


@pytest.mark.slow
def test_an_out_folder_that_cannot_be_made_is_a_clear_error(
    clean_run: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    code, _, err = _report(clean_run, a_file / "rep")
    assert code == 2, err
    assert "Traceback" not in err
    assert f"cannot write the report into {a_file / 'rep'}: Not a directory" in err
    assert "choose another --out" in err
    with pytest.raises(ReportWriteError, match=r"into /proc/nope: No such file"):
        write_report(clean_run, Path("/proc/nope"))


@pytest.mark.slow
def test_status_codes_per_endpoint_equal_the_records(clean_run: Path) -> None:
    summary = json.loads((clean_run / "report" / "summary.json").read_text())
    frame = pd.read_parquet(clean_run / "requests")
    [login] = summary["endpoints"]
    want = {str(k): int(v) for k, v in frame["status"].value_counts().items()}
    assert login["statuses"] == summary["totals"]["statuses"] == want
    # The target's injected 500s fail the check; the page shows them by status.
    assert want["500"] == login["errors_by_kind"]["check"] > 0
    assert want["200"] + want["500"] == login["requests"]
    page = (clean_run / "report" / "index.html").read_text()
    section = page[page.index("<h2>Status codes and errors</h2>") :]
    assert "<th>500</th>" in section and "<th>error: check</th>" in section
    assert f"<td>{want['500']:,}</td>" in section


@pytest.mark.slow
def test_a_manifest_time_plus_seconds_selects_that_part_of_a_real_run(
    clean_run: Path,
) -> None:
    run = open_run(clean_run)
    started = run.manifest["started_at"]
    starts = run.requests(["start_ns"])["start_ns"]
    first = run.requests(["start_ns"], end=started + 1)
    assert len(first) == int((starts < round(started * 1e9) + 10**9).sum()) > 0
    assert len(run.requests(end=started + 5)) == len(starts)


LONG_PROFILE = """
name: long
target: {target}
graceful_stop: 2s
load:
  model: open
  max_vus: 20
  phases: [{{name: steady, duration: 60s, rate: 20}}]
thresholds:
  http_req_failed: ["rate<0.5"]
scenarios:
  - name: health
    flow:
      - {{name: health, path: /healthz}}
"""


def _wait_for(what: str, ready: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Poll until ``ready()``, at most ``limit_s`` (a bound, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def _started(run_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return manifest if manifest.get("started_at") else {}


@pytest.mark.slow
def test_a_run_in_progress_then_interrupted_never_passes(tmp_path: Path) -> None:
    profile = tmp_path / "long.yaml"
    with DemoTarget.start() as target:
        profile.write_text(LONG_PROFILE.format(target=target.url))
        proc = harness_run(
            profile, "live", tmp_path, "--part-seconds", "1", "--no-report"
        )
        run_dir = tmp_path / "live"
        try:
            _wait_for("a finished part", lambda: bool(open_run_parts(run_dir)))
            code, out, err = _report(run_dir, tmp_path / "running", "--check")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
    assert code == 1, out + err
    assert "verdict: incomplete: running" in out
    summary = json.loads((tmp_path / "running" / "summary.json").read_text())
    assert summary["records"]["complete"] is None
    assert _junit_failures(tmp_path / "running" / "junit.xml").keys() == {"run status"}
    page = (tmp_path / "running" / "index.html").read_text()
    assert "<dt>arrivals dropped</dt><dd>not yet known</dd>" in page
    assert "None" not in re.sub(r"<img[^>]*>", "", page)

    assert json.loads((run_dir / "manifest.json").read_text())["status"] == (
        "interrupted"
    )
    code, out, err = _report(run_dir, tmp_path / "stopped", "--check")
    assert code == 1, out + err
    summary = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert [t["status"] for t in summary["thresholds"]] == ["passed"]
    assert summary["verdict"] == "incomplete: interrupted"
    assert summary["records"]["complete"] is True
    failures = _junit_failures(tmp_path / "stopped" / "junit.xml")
    assert list(failures) == ["run status"]
    assert failures["run status"].startswith("status interrupted: ")
    page = (tmp_path / "stopped" / "index.html").read_text()
    assert "badge incomplete'>incomplete: interrupted<" in page
    assert "badge passed'>passed<" not in page.split("</h1>")[0]


def open_run_parts(run_dir: Path) -> list[Path]:
    return open_run(run_dir).request_parts() if _started(run_dir) else []


@pytest.mark.slow
def test_a_run_with_a_killed_worker_does_not_pass(tmp_path: Path) -> None:
    profile = tmp_path / "long.yaml"
    with DemoTarget.start() as target:
        profile.write_text(LONG_PROFILE.format(target=target.url))
        proc = harness_run(profile, "k", tmp_path, "--part-seconds", "1", "--no-report")
        run_dir = tmp_path / "k"
        events = run_dir / "events.jsonl"
        try:
            _wait_for("a finished part", lambda: bool(open_run_parts(run_dir)))
            worker_pid = _started(run_dir)["shards"][1]["pid"]
            os.kill(worker_pid, signal.SIGKILL)
            _wait_for("the worker's exit", lambda: "worker_exit" in events.read_text())
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "degraded"
    code, out, err = _report(run_dir, tmp_path / "rep", "--check")
    assert code == 1, out + err
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert [t["status"] for t in summary["thresholds"]] == ["passed"]
    assert summary["verdict"] == "incomplete: degraded"
    assert summary["incomplete_reasons"] == ["the run ended degraded: worker(s) 1 lost"]
    assert "run status" in _junit_failures(tmp_path / "rep" / "junit.xml")
    [exit_event] = [e for e in summary["events"] if e["event"] == "worker_exit"]
    assert exit_event["worker"] == 1 and exit_event["pid"] == worker_pid
    assert type(exit_event["worker"]) is int and type(exit_event["pid"]) is int
    assert exit_event["exit_code"] == -signal.SIGKILL


def test_a_run_whose_coordinator_is_gone_is_lost_and_does_not_pass(
    tmp_path: Path,
) -> None:
    run = write_run(tmp_path / "r", [make_records(500, seed=9)])
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    manifest = {
        "run_id": "r1",
        "status": "running",
        "coordinator_pid": gone.pid,
        "host": {"hostname": socket.gethostname()},
    }
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    summary = build_report(open_run(run.path)).summary
    assert summary["run"]["status"] == "lost"
    assert summary["verdict"] == "incomplete: lost"
    failures = _junit_failures_of(render_junit(summary))
    assert failures["run status"].startswith("status lost: the manifest says running")


def _junit_failures_of(text: str) -> dict[str, str]:
    suite = ET.fromstring(text).find("testsuite")
    assert suite is not None
    return {
        str(case.get("name")): str(failure.get("message"))
        for case in suite.iter("testcase")
        if (failure := case.find("failure")) is not None
    }
