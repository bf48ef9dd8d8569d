"""Whole runs through the coordinator against the real demo target.

Each test runs a short profile on 2 worker processes and checks what the run wrote
against what the target itself counted.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import pacing
from harness.coordinator import Coordinator, RunOptions
from harness.demo.process import DemoTarget
from harness.errors import UsageError
from harness.profile.load import load_profile_text
from harness.profile.model import ClosedModel, Profile

pytestmark = pytest.mark.slow

LOGIN_AND_PROFILE = """
scenarios:
  - name: login and profile
    flow:
      - name: login
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "{{ password }}"}
        capture: {token: $.data.access_token}
        check: {status: 200}
      - name: profile
        path: /api/user/profile
        headers: {Authorization: "Bearer {{ token }}"}
        check: {status: 200, json: {"$.success": true}}
"""

HEALTH = """
scenarios:
  - name: health
    flow:
      - {name: health, path: /healthz, check: {status: 200}}
"""


def make_profile(target: str, load: str, scenarios: str = HEALTH) -> Profile:
    text = f"""
name: test
target: {target}
http: {{timeout: 5s}}
graceful_stop: 5s
variables:
  password: ${{TEST_PASSWORD}}
load:
{load}
{scenarios}
"""
    return load_profile_text(text, "test.yaml", env={"TEST_PASSWORD": "LoadTest123!"})


def run(profile: Profile, out: Path, run_id: str = "r", workers: int = 2) -> Any:
    coordinator = Coordinator(
        profile, RunOptions(out_dir=out, run_id=run_id, workers=workers)
    )
    return coordinator.run()


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    with open(run_dir / "events.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_open_model_uniform_arrivals_match_the_rate_and_nothing_is_lost(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    before = demo_target.stats()["requests_served"]
    profile = make_profile(
        demo_target.url,
        """
  model: open
  arrivals: uniform
  max_vus: 400
  phases: [{name: steady, duration: 30s, rate: 200}]
""",
        LOGIN_AND_PROFILE,
    )
    outcome = run(profile, tmp_path)
    served = demo_target.stats()["requests_served"] - before
    assert outcome.status == "completed"
    assert outcome.exit_code == 0
    df = pd.read_parquet(outcome.run_dir / "requests")
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    iterations = manifest["counts"]["iterations"]
    assert abs(iterations - 6000) <= 60
    assert manifest["counts"]["dropped"] == 0
    # Every request the target served is a row, and every row was served.
    assert len(df) == served
    assert len(df) == manifest["counts"]["requests"]
    assert df["error"].isna().all(), df["error"].value_counts()
    first_steps = df[df["step"] == "login"]
    assert len(first_steps) == iterations
    # The two workers share the arrivals evenly.
    per_worker = first_steps.groupby("worker").size()
    assert per_worker.max() - per_worker.min() <= 1
    # Rows carry the contract's meaning: later steps keep the iteration's lag.
    assert (df["start_ns"] >= df["intended_ns"]).all()
    assert (df["latency_ns"] >= df["ttfb_ns"]).all()
    assert set(df["endpoint"].astype(str)) == {"/api/auth/login", "/api/user/profile"}
    assert (df["offered"] == 200).all()


def test_open_model_poisson_arrivals_have_exponential_gaps(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    profile = make_profile(
        demo_target.url,
        """
  model: open
  arrivals: poisson
  max_vus: 400
  phases: [{name: steady, duration: 10s, rate: 200}]
""",
    )
    outcome = run(profile, tmp_path)
    assert outcome.status == "completed"
    df = pd.read_parquet(outcome.run_dir / "requests", columns=["intended_ns"])
    arrivals = df["intended_ns"].sort_values().to_numpy()
    gaps = (arrivals[1:] - arrivals[:-1]).astype(float)
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert 0.9 <= cv <= 1.1, cv
    assert 1700 <= len(arrivals) <= 2300


def test_open_model_drops_arrivals_when_cap_is_full(tmp_path: Path) -> None:
    with DemoTarget.start(workers=1, service_ms=200) as target:
        before = target.stats()["requests_served"]
        profile = make_profile(
            target.url,
            """
  model: open
  max_vus: 2
  phases: [{name: steady, duration: 3s, rate: 50}]
""",
            LOGIN_AND_PROFILE,
        )
        outcome = run(profile, tmp_path)
        served = target.stats()["requests_served"] - before
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    dropped = manifest["counts"]["dropped"]
    iterations = manifest["counts"]["iterations"]
    assert dropped > 0
    assert iterations + dropped == 150
    drop_events = [e for e in read_events(outcome.run_dir) if e["event"] == "drops"]
    assert sum(e["count"] for e in drop_events) == dropped
    assert len(pd.read_parquet(outcome.run_dir / "requests")) == served


def test_closed_model_vu_events_follow_the_stages(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    profile = make_profile(
        demo_target.url,
        """
  model: closed
  stages:
    - {duration: 2s, target: 6}
    - {duration: 2s, target: 6}
    - {duration: 2s, target: 1}
""",
    )
    outcome = run(profile, tmp_path)
    assert outcome.status == "completed"
    assert isinstance(profile.load, ClosedModel)
    stages = profile.load.stages
    events = [e for e in read_events(outcome.run_dir) if e["event"] == "vus"]
    # Rebuild the total VU count from each worker's changes, in scheduled time.
    changes = sorted((e["t_s"], e["worker"], e["vus"]) for e in events)
    current = {0: 0, 1: 0}
    checked = 0
    for t_s, worker, vus in changes:
        current[worker] = vus
        same_instant = [c for c in changes if c[0] == t_s]
        if (t_s, worker, vus) == same_instant[-1]:
            assert sum(current.values()) == pacing.vus_at(stages, t_s), t_s
            checked += 1
    assert checked >= 6
    expected_changes = {
        t
        for t, _ in pacing.vu_schedule(stages, 0, 2) + pacing.vu_schedule(stages, 1, 2)
    }
    assert {c[0] for c in changes} == expected_changes
    df = pd.read_parquet(outcome.run_dir / "requests")
    assert df["vu"].nunique() == 6
    assert (df["offered"] <= 6).all()


def test_run_folder_holds_no_secret(tmp_path: Path, demo_target: DemoTarget) -> None:
    profile = make_profile(
        demo_target.url,
        """
  model: open
  phases: [{duration: 2s, rate: 20}]
""",
        LOGIN_AND_PROFILE,
    )
    outcome = run(profile, tmp_path)
    df = pd.read_parquet(outcome.run_dir / "requests")
    assert len(df) > 0
    text = [
        (outcome.run_dir / "manifest.json").read_text(),
        (outcome.run_dir / "events.jsonl").read_text(),
        df.astype(str).to_csv(),
    ]
    for blob in text:
        assert "LoadTest123!" not in blob
        assert "Bearer" not in blob
        assert "access_token" not in blob
    manifest = json.loads(text[0])
    assert manifest["profile"]["variables"]["password"] == "${TEST_PASSWORD}"


def test_target_that_goes_away_yields_error_rows_and_the_run_completes(
    tmp_path: Path,
) -> None:
    target = DemoTarget.start()
    profile = make_profile(
        target.url,
        """
  model: open
  phases: [{name: steady, duration: 4s, rate: 50}]
""",
    )

    def stop_target_two_seconds_into_the_run() -> None:
        events = tmp_path / "r" / "events.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if events.exists() and "run_start" in events.read_text():
                break
            time.sleep(0.05)
        time.sleep(2.0)
        target.stop()

    stopper = threading.Thread(target=stop_target_two_seconds_into_the_run)
    stopper.start()
    try:
        outcome = run(profile, tmp_path)
    finally:
        stopper.join()
        target.stop()
    assert outcome.status == "completed"
    df = pd.read_parquet(outcome.run_dir / "requests")
    assert len(df) == pytest.approx(200, abs=2)
    kinds = set(df["error"].dropna().astype(str))
    assert df["error"].isna().sum() > 0
    assert kinds and kinds <= {"connect_refused", "reset"}, kinds
    refused = df[df["error"] == "connect_refused"]
    assert (refused["status"] == 0).all()


def test_a_stop_asked_for_before_the_start_is_an_interrupted_run(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    profile = make_profile(
        demo_target.url,
        """
  model: open
  phases: [{duration: 30s, rate: 20}]
""",
    )
    coordinator = Coordinator(
        profile, RunOptions(out_dir=tmp_path, run_id="r", workers=2)
    )
    coordinator.request_stop()  # as `harness runs stop` the moment the run shows
    outcome = coordinator.run()
    assert outcome.status == "interrupted"
    assert outcome.exit_code == 130
    assert outcome.rows == 0 and outcome.workers_lost == []
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["stop_reason"] == "interrupted"
    assert demo_target.stats()["requests_served"] == 0
    kinds = [e["event"] for e in read_events(outcome.run_dir)]
    assert "run_failed" not in kinds and kinds[-1] == "run_end"


def test_an_existing_run_folder_is_refused_as_bad_input(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    profile = make_profile(
        "http://127.0.0.1:1",
        """
  model: open
  phases: [{duration: 1s, rate: 1}]
""",
    )
    coordinator = Coordinator(
        profile, RunOptions(out_dir=tmp_path, run_id="r", workers=1)
    )
    with pytest.raises(UsageError, match="choose another --run-id") as excinfo:
        coordinator.run()
    assert excinfo.value.exit_code == 2
    assert str(tmp_path / "r") in str(excinfo.value)
    assert list((tmp_path / "r").iterdir()) == []
