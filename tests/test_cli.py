"""The ``harness`` command as a user runs it: a separate process, real signals."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.demo.process import DemoTarget

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "profiles" / "smoke.yaml"

LONG_PROFILE = """
name: long
target: {target}
graceful_stop: 5s
load:
  model: open
  max_vus: 100
  phases: [{{name: steady, duration: 60s, rate: 100}}]
scenarios:
  - name: health
    flow:
      - {{name: health, path: /healthz}}
"""


def harness(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        **kwargs,  # type: ignore[call-overload]
    )


def harness_run(
    profile: Path, run_id: str, out: Path, *extra: str
) -> subprocess.Popen[str]:
    """``harness run PROFILE`` on 2 workers into OUT/RUN_ID."""
    return harness(
        "run", str(profile), "--workers", "2", "--run-id", run_id, "--out", str(out),
        *extra,
    )  # fmt: skip


def wait_for_manifest_pids(run_dir: Path, timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            manifest = json.loads((run_dir / "manifest.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            manifest = {}
        if manifest.get("started_at"):
            return [s["pid"] for s in manifest["shards"]]
        time.sleep(0.1)
    raise TimeoutError("the run did not start")


def test_smoke_profile_against_a_separate_target_records_every_request(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    before = demo_target.stats()["requests_served"]
    proc = harness(
        "run",
        str(SMOKE),
        "--target",
        demo_target.url,
        "--workers",
        "2",
        "--run-id",
        "smoke-1",
        "--out",
        str(tmp_path),
        "--time-scale",
        "0.5",
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    served = demo_target.stats()["requests_served"] - before
    run_dir = tmp_path / "smoke-1"
    df = pd.read_parquet(run_dir / "requests")
    assert len(df) == served > 0
    assert "run folder: " + str(run_dir) in out
    assert "/api/user/profile" in out
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["profile"]["target"] == demo_target.url


def test_ctrl_c_stops_gracefully_and_keeps_every_record(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    profile = tmp_path / "long.yaml"
    profile.write_text(LONG_PROFILE.format(target=demo_target.url))
    before = demo_target.stats()["requests_served"]
    proc = harness_run(profile, "c", tmp_path)
    run_dir = tmp_path / "c"
    wait_for_manifest_pids(run_dir)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    served = demo_target.stats()["requests_served"] - before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    df = pd.read_parquet(run_dir / "requests")
    assert len(df) == served
    assert manifest["counts"]["requests"] == len(df)
    assert 100 < len(df) < 6000
    assert "interrupted" in out


def test_a_terminal_that_hangs_up_stops_the_run_gracefully_keeping_every_record(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    # The run prints to a pseudo-terminal, as in an ssh session; the session
    # drops: the terminal goes away (writes fail with EIO) and the whole process
    # group gets SIGHUP.
    profile = tmp_path / "long.yaml"
    profile.write_text(LONG_PROFILE.format(target=demo_target.url))
    before = demo_target.stats()["requests_served"]
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(profile), "--workers", "2",
         "--run-id", "h", "--out", str(tmp_path)],
        stdin=terminal, stdout=terminal, stderr=terminal, cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    run_dir = tmp_path / "h"
    try:
        wait_for_manifest_pids(run_dir)
        time.sleep(3)
    finally:
        os.close(controller)
    os.killpg(proc.pid, signal.SIGHUP)
    assert proc.wait(timeout=60) == 130
    served = demo_target.stats()["requests_served"] - before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert len(pd.read_parquet(run_dir / "requests")) == served > 100
    assert manifest["counts"]["requests"] == served
    assert (run_dir / "report" / "summary.json").exists()
    assert sorted(p.name for p in run_dir.rglob(".*")) == []
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    stops = [json.loads(x) for x in lines if '"event": "stop"' in x]
    assert [(e["graceful"], e["reason"]) for e in stops] == [(True, "hangup")]


def test_killed_worker_is_reported_and_the_run_goes_on(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    profile = tmp_path / "long.yaml"
    profile.write_text(
        LONG_PROFILE.format(target=demo_target.url).replace("60s", "10s")
    )
    proc = harness_run(profile, "k", tmp_path, "--part-seconds", "1")
    run_dir = tmp_path / "k"
    pids = wait_for_manifest_pids(run_dir)
    time.sleep(5)
    os.kill(pids[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 3, err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "degraded"
    lost = [s for s in manifest["shards"] if s["status"] == "lost"]
    assert [s["worker"] for s in lost] == [1]
    assert lost[0]["exit_code"] == -signal.SIGKILL
    events = [
        json.loads(x) for x in (run_dir / "events.jsonl").read_text().split("\n") if x
    ]
    exits = [e for e in events if e["event"] == "worker_exit" and e["worker"] == 1]
    assert exits and exits[0]["exit_code"] == -signal.SIGKILL
    assert 4.0 < exits[0]["elapsed_s"] < 10.0
    # The survivor ran to the end; every finished part of both workers reads.
    df = pd.read_parquet(run_dir / "requests")
    assert set(df["worker"]) == {0, 1}
    survivor = df[df["worker"] == 0]
    assert len(survivor) == pytest.approx(500, abs=5)
    assert "worker 1" in out


VALID = """\
target: http://127.0.0.1:9
load:
  model: open
  phases: [{duration: 1s, rate: 1}]
scenarios:
  - name: a
    flow:
      - {path: /x}
"""


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("duration: 1s", "duration: -1s", ":4: load.phases[0].duration"),
        ("target:", "bogus: 1\ntarget:", ":1: bogus"),
        ("{path: /x}", "{path: /x, capture: {a: data.x}}", ":8: scenarios[0].flow[0]"),
        ("{path: /x}", "{path: '/{{ nope }}'}", ":8: scenarios[0].flow[0].path"),
    ],
)
def test_invalid_profile_exits_2_naming_file_and_line(
    tmp_path: Path, old: str, new: str, where: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace(old, new))
    proc = harness("run", str(path), "--out", str(tmp_path))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"bad.yaml{where}" in err
    assert not (tmp_path / "runs").exists()


def test_second_ctrl_c_stops_at_once_and_reports_requests_cut_short(
    tmp_path: Path,
) -> None:
    # Every API request takes 3 s at the target, so requests are always in flight.
    with DemoTarget.start(workers=64, service_ms=3000) as target:
        profile = tmp_path / "slow.yaml"
        profile.write_text(
            LONG_PROFILE.format(target=target.url)
            .replace("/healthz", "/api/user/profile")
            .replace("rate: 100", "rate: 10")
        )
        before = target.stats()["requests_served"]
        proc = harness_run(profile, "s", tmp_path)
        run_dir = tmp_path / "s"
        wait_for_manifest_pids(run_dir)
        time.sleep(4)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took_s = time.monotonic() - stopped_at
        time.sleep(3.5)  # let the target finish what it had in service
        served = target.stats()["requests_served"] - before
    assert proc.returncode == 130, err
    assert took_s < 5.0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    cancelled = manifest["counts"]["cancelled"]
    assert cancelled > 0
    df = pd.read_parquet(run_dir / "requests")
    assert (df["error"] == "cancelled").sum() == cancelled
    # Requests cut short were sent, so the target may still have answered them.
    assert served - cancelled <= len(df) - cancelled <= served
    assert f"{cancelled} requests cut short" in out


def test_threshold_the_target_cannot_meet_exits_1_and_names_it(tmp_path: Path) -> None:
    with DemoTarget.start(workers=8, service_ms=100) as target:
        profile = tmp_path / "slow.yaml"
        profile.write_text(
            LONG_PROFILE.format(target=target.url)
            .replace("/healthz", "/api/user/profile")
            .replace("duration: 60s, rate: 100", "duration: 2s, rate: 20")
            + 'thresholds:\n  http_req_duration: ["p(95)<50", "max<5000"]\n'
        )
        proc = harness_run(profile, "t", tmp_path)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    assert "FAIL http_req_duration: p(95)<50" in out
    assert "ok   http_req_duration: max<5000" in out
    assert "thresholds failed" in out


def test_abort_on_fail_stops_the_run_early_and_the_manifest_says_why(
    tmp_path: Path,
) -> None:
    with DemoTarget.start(workers=8, service_ms=100) as target:
        profile = tmp_path / "abort.yaml"
        profile.write_text(
            LONG_PROFILE.format(target=target.url)
            .replace("/healthz", "/api/user/profile")
            .replace("rate: 100", "rate: 20")
            + "thresholds:\n  http_req_duration:\n"
            + '    - {threshold: "p(95)<50", abort_on_fail: true,'
            + " delay_abort_eval: 2s}\n"
        )
        started = time.monotonic()
        proc = harness_run(profile, "a", tmp_path)
        out, err = proc.communicate(timeout=90)
        took_s = time.monotonic() - started
    assert proc.returncode == 1, err
    assert took_s < 40  # the profile asks for 60 s
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["status"] == "aborted"
    assert "p(95)<50" in manifest["abort_reason"]
    events = (tmp_path / "a" / "events.jsonl").read_text()
    assert '"threshold_abort"' in events
    assert "aborting: threshold http_req_duration: p(95)<50" in out
