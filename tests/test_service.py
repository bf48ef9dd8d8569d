"""Runs as a service: start in the background, follow, stop from another process."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import harness
from analysis import open_run
from harness.demo.process import DemoTarget
from harness.service import RunNotFoundError, StartError, resolve

from .test_cli import harness as harness_cli

LONG_PROFILE = """
name: background
target: http://127.0.0.1:1
load:
  model: open
  max_vus: 20
  phases:
    - {name: steady, duration: 60s, rate: 40}
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
  - name: health
    flow:
      - {name: health, path: /healthz}
"""


def _wait_for_rows(run_dir: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = harness.status(run_dir)
        if status.running and status.requests > 50:
            return
        time.sleep(0.2)
    raise AssertionError(f"run did not get going: {harness.status(run_dir)}")


def test_a_background_run_stops_from_another_terminal_keeping_every_record(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(LONG_PROFILE)
    out = tmp_path / "runs"
    with DemoTarget.start() as target:
        handle = harness.start(
            profile,
            target=target.url,
            workers=2,
            out=out,
            run_id="bg",
            report=False,
        )
        assert handle.run_dir == out / "bg"
        _wait_for_rows(handle.run_dir)
        # No part has closed yet (they close every 60 s): what is known is the
        # manifest's live count, and the figures say where they come from.
        live = harness.results(handle.run_dir)
        assert live["final"] is False and live["records"]["rows"] == 0
        assert live["live"]["requests"] > 50
        assert "still going" in live["note"] and "no part has closed" in live["note"]
        shown = harness_cli("runs", "show", "bg", "--out", str(out))
        stdout, stderr = shown.communicate(timeout=60)
        assert shown.returncode == 0, stderr
        assert "run bg: running" in stdout
        assert "\nall " not in stdout  # no table of zeros for a run that sends
        words = " ".join(stdout.split())  # the note is wrapped
        assert "no part has closed yet" in words and "every 60 s" in words
        counted = re.search(r"live count at \d+ s: (\d+) requests, 0 errors", words)
        assert counted is not None and int(counted[1]) > 50, words
        assert "no resource samples in the parts closed so far" in words
        listed = json.loads(
            harness_cli("runs", "list", "--out", str(out), "--json").communicate(
                timeout=60
            )[0]
        )
        assert listed["run_id"] == "bg" and listed["status"] == "running"
        stopper = harness_cli("runs", "stop", "bg", "--out", str(out))
        stdout, stderr = stopper.communicate(timeout=90)
        assert stopper.returncode == 0, stderr
        assert "run bg: interrupted" in stdout
        served = target.stats()["requests_served"]
    final = harness.status(handle.run_dir)
    assert final.status == "interrupted"
    assert final.elapsed_s is not None and final.elapsed_s < 50
    rows = pd.read_parquet(handle.run_dir / "requests")
    assert len(rows) == served == final.requests
    figures = harness.results(handle.run_dir)
    assert figures["total_requests"] == len(rows)
    assert figures["failed_requests"] == int(rows["error"].notna().sum()) == 0
    assert set(figures["scenarios"]) == {"login and profile", "health"}
    assert sum(s["total_requests"] for s in figures["scenarios"].values()) == len(rows)
    expected_p95 = float((rows["latency_ns"] / 1e6).quantile(0.95))
    assert figures["p95_response_time_ms"] == pytest.approx(expected_p95, rel=1e-9)
    # A run that ended is left alone.
    again = harness_cli("runs", "stop", "bg", "--out", str(out))
    stdout, _ = again.communicate(timeout=60)
    assert again.returncode == 0 and "is not running (interrupted)" in stdout


def test_runs_show_prints_the_results_per_scenario(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(LONG_PROFILE.replace("60s", "2s"))
    out = tmp_path / "runs"
    with DemoTarget.start() as target:
        handle = harness.start(profile, target=target.url, workers=1, out=out)
        final = handle.wait(timeout_s=60)
    assert final.status == "completed"
    proc = harness_cli("runs", "show", handle.run_id, "--out", str(out))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"run {handle.run_id}: completed" in stdout
    assert "login and profile" in stdout and "health" in stdout
    shown = json.loads(
        harness_cli(
            "runs", "show", handle.run_id, "--out", str(out), "--json"
        ).communicate(timeout=60)[0]
    )
    assert shown["total_requests"] == final.requests > 0


def test_a_run_whose_coordinator_died_is_reported_lost(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(LONG_PROFILE)
    out = tmp_path / "runs"
    with DemoTarget.start() as target:
        handle = harness.start(
            profile,
            target=target.url,
            workers=1,
            out=out,
            report=False,
            extra_args=["--part-seconds", "1"],
        )
        _wait_for_rows(handle.run_dir)
        time.sleep(1.5)  # let a part or two close
        going = harness.results(handle.run_dir)
        assert going["final"] is False and going["run"]["status"] == "running"
        closed = going["records"]["rows"]
        assert closed == going["total_requests"] > 0
        assert going["records"]["up_to_s"] > 0
        assert f"from the {closed} requests in the" in going["note"]
        assert "closed so far" in going["note"] and "every 1 s" in going["note"]
        # The run has its own session: this ends the coordinator and its workers.
        os.killpg(handle.pid, signal.SIGKILL)
        killed_at = time.time()
        deadline = time.monotonic() + 10
        while harness.status(handle.run_dir).status != "lost":
            assert time.monotonic() < deadline, harness.status(handle.run_dir)
            time.sleep(0.1)
    # Nothing to signal: stopping a lost run reports it as it is.
    lost = harness.stop(handle.run_dir)
    assert lost.status == "lost"
    # The parts closed before the kill are all there, and are what it counts.
    on_disk = len(pd.read_parquet(handle.run_dir / "requests"))
    assert on_disk > 0
    assert lost.requests == on_disk
    # Its time stopped with it: the last thing known, not the clock now.
    assert lost.started_at is not None and lost.last_seen_at is not None
    assert lost.last_seen_at <= killed_at
    assert lost.elapsed_s == pytest.approx(lost.last_seen_at - lost.started_at)
    listed = json.loads(
        harness_cli("runs", "list", "--out", str(out), "--json").communicate(
            timeout=60
        )[0]
    )
    assert listed["status"] == "lost" and listed["requests"] == on_disk
    assert listed["elapsed_s"] < killed_at - lost.started_at
    shown = harness.results(handle.run_dir)
    assert shown["total_requests"] == on_disk and shown["final"] is False
    assert shown["note"].startswith("the run is lost")
    assert "last live count" in shown["note"]


def test_a_bad_profile_fails_to_start_with_its_own_message_and_code_2(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text(LONG_PROFILE.replace("duration: 60s", "duration: -5s"))
    with pytest.raises(StartError) as excinfo:
        harness.start(profile, out=tmp_path / "runs", run_id="bad")
    assert excinfo.value.exit_code == 2
    assert "bad.yaml:" in str(excinfo.value) and "duration" in str(excinfo.value)


def test_an_unknown_run_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="harness runs list"):
        resolve("nope", tmp_path)
    proc = harness_cli("runs", "show", "nope", "--out", str(tmp_path))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no run 'nope'" in stderr


def test_a_run_stopped_while_it_starts_ends_interrupted_with_exit_130(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(LONG_PROFILE)
    out = tmp_path / "runs"
    with DemoTarget.start() as target:
        proc = harness_cli(
            "run", str(profile), "--target", target.url, "--workers", "2",
            "--out", str(out), "--run-id", "early", "--no-report",
        )  # fmt: skip
        manifest = out / "early" / "manifest.json"
        for _ in range(600):  # the run folder appears within a few seconds
            if manifest.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        # As soon as the run can be seen, before its workers are ready.
        stopped = harness.stop(out / "early")
        stdout, stderr = proc.communicate(timeout=90)
        served = target.stats()["requests_served"]
    assert stopped.status == "interrupted", (stdout, stderr)
    assert proc.returncode == 130, (stdout, stderr)
    assert "aborted" not in stderr and "Traceback" not in stderr
    assert "interrupted:" in stdout
    written = json.loads(manifest.read_text())
    assert written["status"] == "interrupted"
    assert written["stop_reason"] == "interrupted"
    assert all(s["status"] == "done" for s in written["shards"])
    # Stopped before its workers were ready, a run may have no request part at
    # all; the dataset reads that as a run with no rows.
    assert len(open_run(out / "early").requests()) == served
    assert written["counts"]["requests"] == served


def test_an_existing_run_id_is_refused_before_anything_starts(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(LONG_PROFILE)
    out = tmp_path / "runs"
    (out / "taken").mkdir(parents=True)
    proc = harness_cli(
        "run", str(profile), "--out", str(out), "--run-id", "taken", "--workers", "1"
    )
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert stdout == ""  # no banner: nothing was started
    assert f"run folder {out / 'taken'} already exists" in stderr
    assert "choose another --run-id, or remove that folder" in stderr
    assert "Traceback" not in stderr
    assert list((out / "taken").iterdir()) == []


def test_runs_show_says_why_a_run_failed(tmp_path: Path) -> None:
    # A target command that exits at once: the run fails before any load.
    quits = f"{sys.executable} -c 'import sys; sys.exit(5)'"
    profile = tmp_path / "quits.yaml"
    monitor = (
        f'monitor:\n  target: {{command: "{quits}", '
        "ready_url: http://127.0.0.1:1/, ready_timeout: 5s}\n"
    )
    profile.write_text(LONG_PROFILE.replace("load:", monitor + "load:"))
    out = tmp_path / "runs"
    run = harness_cli("run", str(profile), "--out", str(out), "--run-id", "broken")
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 3, stderr
    why = harness.status(out / "broken").stop_reason
    assert why.startswith("TargetError: ") and "5" in why, why
    proc = harness_cli("runs", "show", "broken", "--out", str(out))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "run broken: failed" in stdout
    assert f"failed: {why.splitlines()[0]}" in stdout
