"""The profiles in profiles/: each loads, runs against the demo target, and does what
its header says (the k6 equivalent passes and fails where k6 would; the volume
profile uses a million distinct users, none twice)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from analysis import open_run
from harness.demo.process import DemoTarget
from harness.profile.load import load_profile

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
TEST_TYPES = ("load", "stress", "spike", "endurance", "k6-platform")


def run_harness(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout_s,
    )


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PROFILES.iterdir() if p.suffix in (".yaml", ".yml")),
    ids=lambda p: p.name,
)
def test_every_bundled_profile_loads(path: Path, tmp_path: Path) -> None:
    if path.name == "volume.yaml":
        # Its data file is generated, not committed: load a copy beside a small one.
        path = _volume_copy(tmp_path, rows=10)
    # No environment: every secret has a default, so a fresh machine can run them.
    profile = load_profile(path, env={})
    assert profile.scenarios and profile.duration_s > 0


def _volume_copy(folder: Path, rows: int) -> Path:
    data = folder / "data" / "users.csv"
    subprocess.run(
        [
            sys.executable,
            PROFILES / "make_users.py",
            "--rows",
            str(rows),
            "--out",
            data,
        ],
        check=True,
        capture_output=True,
    )
    copy = folder / "volume.yaml"
    shutil.copy(PROFILES / "volume.yaml", copy)
    return copy


@pytest.mark.parametrize("name", TEST_TYPES)
def test_each_test_type_profile_runs_against_the_demo_target(
    name: str, tmp_path: Path
) -> None:
    with DemoTarget.start() as target:
        proc = run_harness(
            "run", str(PROFILES / f"{name}.yaml"), "--target", target.url,
            "--workers", "1", "--duration", "2s", "--run-id", "r",
            "--out", str(tmp_path), "--no-report",
        )  # fmt: skip
        served = target.stats()["requests_served"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = pd.read_parquet(tmp_path / "r" / "requests")
    assert len(rows) == served > 0
    assert rows["error"].isna().all(), rows["error"].value_counts()


def test_the_k6_profile_passes_on_a_healthy_target_and_fails_on_a_slow_one(
    tmp_path: Path,
) -> None:
    profile = str(PROFILES / "k6-platform.yaml")
    codes = {}
    for label, service_ms in (("healthy", None), ("slow", 600)):
        with DemoTarget.start(service_ms=service_ms) as target:
            proc = run_harness(
                "run", profile, "--target", target.url, "--workers", "2",
                "--time-scale", "0.01", "--duration", "5s", "--run-id", label,
                "--out", str(tmp_path),
            )  # fmt: skip
        codes[label] = proc.returncode
        if label == "healthy":
            assert proc.returncode == 0, proc.stdout + proc.stderr
    assert codes["slow"] == 1
    slow = json.loads((tmp_path / "slow" / "report" / "summary.json").read_text())
    failed = {
        t["metric"] + ": " + t["expression"]
        for t in slow["thresholds"]
        if t["status"] == "failed"
    }
    assert "http_req_duration: p(95)<500" in failed
    # The setup logged in once per worker, recorded as its own scenario.
    rows = pd.read_parquet(tmp_path / "healthy" / "requests")
    setup = rows[rows["scenario"] == "setup"]
    assert len(setup) == 2 and (setup["endpoint"] == "/api/auth/login").all()
    assert setup["error"].isna().all()
    scenarios = set(rows["scenario"]) - {"setup"}
    assert scenarios == {
        "authentication",
        "exchange accounts",
        "margin guard",
        "admin",
        "simulations",
    }


def _automations(url: str) -> list[dict[str, object]]:
    login = urllib.request.Request(
        f"{url}/api/auth/login",
        data=json.dumps(
            {"email": "loadtest@example.com", "password": "LoadTest123!"}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(login, timeout=10) as answer:
        token = json.load(answer)["data"]["access_token"]
    listing = urllib.request.Request(
        f"{url}/api/automations", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(listing, timeout=30) as answer:
        items: list[dict[str, object]] = json.load(answer)["data"]
    return items


def test_the_volume_profile_uses_a_million_users_each_once(tmp_path: Path) -> None:
    profile = _volume_copy(tmp_path, rows=1_000_000)
    with DemoTarget.start(keep_items=0) as target:
        proc = run_harness(
            "run", str(profile), "--target", target.url, "--workers", "2",
            "--time-scale", "0.002", "--run-id", "v", "--out", str(tmp_path),
            "--no-report",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        created = _automations(target.url)
    rows = pd.read_parquet(tmp_path / "v" / "requests")
    writes = rows[rows["scenario"] == "write"]
    assert len(created) == len(writes) > 1000
    ids = [int(str(item["name"]).split()[1]) for item in created]
    assert len(set(ids)) == len(ids), "a user was sent twice"
    # Each worker took its own rows from the start of its share: even ids for one,
    # odd for the other, with no gap beyond what the other scenario took.
    assert {i % 2 for i in ids} == {0, 1}
    assert max(ids) < 2 * len(rows[rows["scenario"] != "setup"]) + 2
    # Memory per worker stays bounded with a million-row file (see the monitor).
    resources = open_run(tmp_path / "v").resources()
    workers = resources[resources["source"].astype(str).str.startswith("harness-w")]
    peak_mib = workers.groupby("source")["rss_bytes"].max() / 2**20
    assert len(peak_mib) == 2 and (peak_mib < 400).all(), peak_mib


def test_the_platform_benchmarks_say_which_hold(tmp_path: Path) -> None:
    with DemoTarget.start() as target:
        proc = run_harness(
            "run", str(PROFILES / "platform-benchmarks.yaml"), "--target", target.url,
            "--workers", "2", "--time-scale", "0.01", "--run-id", "b",
            "--out", str(tmp_path),
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "b" / "report" / "summary.json").read_text())
    status = {s["slo"]: s["status"] for s in summary["slos"]}
    assert len(status) == 9 * 3 + 7
    assert status["endpoints./api/auth/login.target_response_time"] == "passed"
    # Nothing in this run calls the automation runner, and no database is sampled.
    assert status["endpoints./api/automations/:id/execute.target_response_time"] == (
        "no data"
    )
    assert status["system.database.max_connections"] == "not measured"
    # The monitor measured the demo target itself.
    assert status["system.application.max_memory_usage"] == "passed"
    assert status["system.application.max_cpu_usage"] in ("passed", "failed")
    assert "not exercised" in status.values()
