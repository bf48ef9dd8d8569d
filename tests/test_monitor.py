"""The resource monitor in whole runs: real coordinator, workers and targets.

Each run is short (a few seconds) on one worker process; what the monitor wrote is
read back through ``analysis``, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

from analysis.dataset import open_run
from analysis.slo import evaluate_slos
from harness.coordinator import Coordinator, RunOptions, RunOutcome
from harness.demo.process import DemoTarget
from harness.errors import ProfileError, TargetError
from harness.monitor.writer import ResourceWriter
from harness.profile.load import load_profile_text
from harness.profile.model import Profile

from .servers import wait_for_port
from .test_monitor_process import PREFORK, SPAWNER, free_port, missing_pid

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LEAK_BYTES = 20 * 1024
RATE = 200
LEAK_RUN_S = 6


def make_profile(
    target: str,
    *,
    duration_s: float,
    rate: float,
    path: str = "/healthz",
    status: int = 200,
    extra: str = "",
) -> Profile:
    text = f"""
name: monitored
target: {target}
http: {{timeout: 2s, connect_timeout: 1s}}
graceful_stop: 2s
load: {{model: open, phases: [{{duration: {duration_s}s, rate: {rate}}}]}}
{extra}
scenarios:
  - name: one
    flow: [{{path: {path}, check: {{status: {status}}}}}]
"""
    return load_profile_text(text, "monitored.yaml")


def run(profile: Profile, out: Path, run_id: str = "r") -> RunOutcome:
    return Coordinator(
        profile, RunOptions(out_dir=out, run_id=run_id, workers=1, part_s=2.0)
    ).run()


def events(run_dir: Path) -> list[dict[str, Any]]:
    with open(run_dir / "events.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def target_rss_rise_bytes(run_dir: Path) -> tuple[float, pd.DataFrame]:
    """Rise of the target tree's summed rss from the first sample to the last."""
    frame = open_run(run_dir).resources()
    target = frame[frame["source"] == "target"]
    by_instant = target.groupby("time_ns")["rss_bytes"].sum().sort_index()
    return float(by_instant.iloc[-1] - by_instant.iloc[0]), frame


def leak_run(tmp_path: Path, leak_bytes: int | None) -> tuple[float, int, Path]:
    """A run against /api/automations (no token: 401, after the leak knob)."""
    with DemoTarget.start(leak_bytes_per_request=leak_bytes) as target:
        profile = make_profile(
            target.url,
            duration_s=LEAK_RUN_S,
            rate=RATE,
            path="/api/automations",
            status=401,
            extra="monitor: {interval: 0.5s}",
        )
        outcome = run(profile, tmp_path)
    assert outcome.status == "completed"
    rise, _ = target_rss_rise_bytes(outcome.run_dir)
    return rise, outcome.rows, outcome.run_dir


def test_leaking_target_rss_rises_by_the_bytes_it_leaks(tmp_path: Path) -> None:
    rise, requests, _ = leak_run(tmp_path, LEAK_BYTES)
    expected = LEAK_BYTES * requests
    ratio = rise / expected
    print(f"leak: rss rose {rise / 2**20:.1f} MiB for {expected / 2**20:.1f} MiB "
          f"leaked over {requests} requests: ratio {ratio:.2f}")  # fmt: skip
    assert requests >= 0.9 * RATE * LEAK_RUN_S
    assert 0.5 <= ratio <= 2.0


def test_target_without_leak_stays_flat_and_reads_back_through_analysis(
    tmp_path: Path,
) -> None:
    rise, requests, run_dir = leak_run(tmp_path, None)
    would_leak = LEAK_BYTES * requests
    print(f"no leak: rss rose {rise / 2**20:.2f} MiB over {requests} requests")
    assert rise < 0.25 * would_leak

    frame = open_run(run_dir).resources()
    assert {"target", "host", "coordinator", "harness-worker-0"} <= set(frame["source"])
    target = frame[frame["source"] == "target"]
    assert target["cpu_percent"].notna().any()
    assert target["connections"].max() >= 1  # the worker's keep-alive connections
    assert (frame[frame["source"] == "host"]["host_mem_total_bytes"] > 0).all()
    workers = frame[frame["source"] == "harness-worker-0"]
    assert workers["cpu_percent"].max() > 0  # it was sending 200 requests/s

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["monitor"]["target"]["how"] == "port"
    assert manifest["monitor"]["target"]["auto"] is True
    assert manifest["monitor"]["rows"] == len(frame)

    slos = load_profile_text(
        """
target: http://127.0.0.1:1
load: {model: open, phases: [{duration: 1s, rate: 1}]}
slos:
  system:
    application: {max_memory_usage: 4096, max_cpu_usage: 0.001}
scenarios: [{name: a, flow: [{path: /}]}]
""",
        "slos.yaml",
    ).slos
    verdicts = {v.slo: v for v in evaluate_slos(run_dir, slos)}
    memory = verdicts["system.application.max_memory_usage"]
    assert memory.status == "passed" and memory.observed is not None
    assert 5 < memory.observed < 4096  # MiB of a real Python process
    assert verdicts["system.application.max_cpu_usage"].status == "failed"


def kill_after_start(run_dir: Path, pid: int, after_s: float) -> None:
    """SIGKILL ``pid`` ``after_s`` seconds into the run (its ``run_start``)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        path = run_dir / "events.jsonl"
        if path.exists() and '"run_start"' in path.read_text():
            break
        time.sleep(0.02)
    time.sleep(after_s)
    os.kill(pid, signal.SIGKILL)


def test_killed_target_is_an_event_and_the_run_completes(tmp_path: Path) -> None:
    target = DemoTarget.start()
    killer = threading.Thread(
        target=kill_after_start, args=(tmp_path / "r", target.pid, 2.0), daemon=True
    )
    try:
        profile = make_profile(target.url, duration_s=5, rate=50)
        killer.start()
        outcome = run(profile, tmp_path)
    finally:
        killer.join(timeout=10)
        target.stop()
    assert outcome.status == "completed" and outcome.exit_code == 0
    found = [e for e in events(outcome.run_dir) if e["event"] == "target_exit"]
    assert len(found) == 1 and found[0]["pid"] == target.pid
    run_start = next(e for e in events(outcome.run_dir) if e["event"] == "run_start")
    assert 1.5 <= found[0]["time"] - run_start["time"] <= 3.5

    rows = open_run(outcome.run_dir).requests()
    late = rows[rows["start_ns"] > int(found[0]["time"] * 1e9)]
    assert len(late) > 50
    assert late["error"].notna().all()
    assert set(late["error"].astype(str)) <= {"connect_refused", "reset"}
    frame = open_run(outcome.run_dir).resources()
    last_target_ns = frame[frame["source"] == "target"]["time_ns"].max()
    assert last_target_ns < found[0]["time"] * 1e9
    assert (frame["source"] == "host").sum() >= 5  # sampling went on


def test_command_target_is_started_sampled_with_its_children_and_stopped(
    tmp_path: Path,
) -> None:
    port = free_port()
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER)
    command = json.dumps([sys.executable, str(script), str(port), "2"])
    extra = textwrap.dedent(
        f"""
        monitor:
          interval: 0.5s
          target:
            command: {command}
            ready_url: http://127.0.0.1:{port}/healthz
            stop_grace: 2s
        """
    )
    profile = make_profile(
        f"http://127.0.0.1:{port}", duration_s=2, rate=20, extra=extra
    )
    outcome = run(profile, tmp_path)
    assert outcome.status == "completed"
    assert open_run(outcome.run_dir).requests()["error"].isna().all()

    frame = open_run(outcome.run_dir).resources()
    target = frame[frame["source"] == "target"]
    root_pid = json.loads((outcome.run_dir / "manifest.json").read_text())["monitor"][
        "target"
    ]["pid"]
    pids = {int(pid) for pid in target["pid"]}
    assert len(pids) == 3 and root_pid in pids
    per_instant = target.groupby("time_ns")["pid"].nunique()
    assert (per_instant == 3).sum() >= 3
    deadline = time.monotonic() + 5.0  # SIGKILL to the group takes a moment
    while any(pid_running(pid) for pid in pids):
        assert time.monotonic() < deadline, "the started target outlived the run"
        time.sleep(0.05)
    kinds = [e["event"] for e in events(outcome.run_dir)]
    assert "target_stopped" in kinds and "target_exit" not in kinds
    assert (outcome.run_dir / "target.log").exists()


def test_prefork_server_found_by_port_is_its_master_and_worker_turnover_is_quiet(
    tmp_path: Path,
) -> None:
    port = free_port()
    script = tmp_path / "prefork.py"
    script.write_text(PREFORK)
    # 2 workers, each replaced after 15 requests: about 6 replacements in the run.
    server = subprocess.Popen(
        [sys.executable, str(script), str(port), "2", "15"], start_new_session=True
    )
    try:
        wait_for_port(port)
        profile = make_profile(
            f"http://127.0.0.1:{port}",
            duration_s=2,
            rate=50,
            path="/",
            extra="monitor: {interval: 0.25s}",
        )
        outcome = run(profile, tmp_path)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert outcome.status == "completed"
    described = json.loads((outcome.run_dir / "manifest.json").read_text())
    target = described["monitor"]["target"]
    assert target["auto"] is True and target["pid"] == server.pid
    assert (target["exits"], target["restarts"]) == (0, 0)
    kinds = {e["event"] for e in events(outcome.run_dir)}
    assert not kinds & {"target_exit", "target_restart"}
    frame = open_run(outcome.run_dir).resources()
    pids = set(frame[frame["source"] == "target"]["pid"].astype(int))
    assert server.pid in pids and len(pids) >= 4  # the master and workers that came


def test_a_port_already_answered_refuses_a_command_target_with_exit_2(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"target: {demo_target.url}\n"
        "load: {model: open, phases: [{duration: 1s, rate: 1}]}\n"
        "monitor:\n"
        "  target:\n"
        f"    command: [{sys.executable}, -c, 'raise SystemExit(1)']\n"
        f"    ready_url: {demo_target.url}/healthz\n"
        "scenarios: [{name: a, flow: [{path: /}]}]\n"
    )
    done = harness_cli(
        "run", str(profile), "--out", str(tmp_path), "--run-id", "x", "--no-report"
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"port {demo_target.port} is already held by pid {demo_target.pid}" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


FAILING_TARGET = """
import sys
print("Traceback (most recent call last):", file=sys.stderr)
print("  serve --user admin --password=hunter2" + "cmd", file=sys.stderr)
raise SystemExit(1)
"""


def test_failed_target_output_is_not_copied_into_events_or_manifest(
    tmp_path: Path,
) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING_TARGET)
    port = free_port()
    command = json.dumps([sys.executable, str(script)])
    extra = textwrap.dedent(
        f"""
        monitor:
          target:
            command: {command}
            ready_url: http://127.0.0.1:{port}/healthz
        """
    )
    profile = make_profile(
        f"http://127.0.0.1:{port}", duration_s=1, rate=1, extra=extra
    )
    with pytest.raises(TargetError, match="exited with code 1"):
        run(profile, tmp_path)
    run_dir = tmp_path / "r"
    assert "hunter2cmd" in (run_dir / "target.log").read_text()
    failed = [e for e in events(run_dir) if e["event"] == "run_failed"]
    assert len(failed) == 1 and str(run_dir / "target.log") in failed[0]["error"]
    for path in run_dir.rglob("*"):
        if path.is_file() and path.name != "target.log":
            assert b"hunter2cmd" not in path.read_bytes(), path


def pid_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def harness_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_monitor_pid_that_does_not_exist_exits_2_before_the_run(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "target: http://127.0.0.1:1\n"
        "load: {model: open, phases: [{duration: 1s, rate: 1}]}\n"
        "scenarios: [{name: a, flow: [{path: /}]}]\n"
    )
    pid = missing_pid()
    done = harness_cli(
        "run", str(profile), "--out", str(tmp_path), "--run-id", "x",
        "--monitor-pid", str(pid), "--no-report",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{pid}: no process has this pid" in done.stderr
    assert not (tmp_path / "x").exists()

    both = harness_cli(
        "run", str(profile), "--monitor-pid", "1", "--no-monitor", "--no-report"
    )
    assert both.returncode == 2
    assert "cannot be used together" in both.stderr


def test_unknown_key_in_the_monitor_block_is_located() -> None:
    text = """
target: http://127.0.0.1:1
load: {model: open, phases: [{duration: 1s, rate: 1}]}
monitor:
  intervall: 1s
scenarios: [{name: a, flow: [{path: /}]}]
"""
    with pytest.raises(ProfileError) as caught:
        load_profile_text(text, "m.yaml")
    assert str(caught.value).startswith("m.yaml:5: monitor.intervall: unknown key")
    assert "did you mean 'interval'" in str(caught.value)

    twice = text.replace("intervall: 1s", "target: {pid: 12, port: 80}")
    with pytest.raises(ProfileError, match=r"m.yaml:5: monitor.target: .*pid, port"):
        load_profile_text(twice, "m.yaml")


def test_monitor_block_builds_settings_with_secrets_kept_out_of_the_manifest(
    tmp_path: Path,
) -> None:
    from harness.manifest import describe_profile

    text = """
target: http://127.0.0.1:1
load: {model: open, phases: [{duration: 1s, rate: 1}]}
monitor:
  interval: 2s
  target: {port: 8080}
  prometheus: {url: "http://127.0.0.1:9100/metrics", metrics: [http_requests_total]}
  postgres: {dsn: "postgresql://app:${PG_PASSWORD}@127.0.0.1/app"}
  redis: [{url: "redis://:hunter2@127.0.0.1:6379/0"}, {url: "redis://127.0.0.1:6380", source: cache}]
scenarios: [{name: a, flow: [{path: /}]}]
"""  # noqa: E501
    profile = load_profile_text(text, "m.yaml", env={"PG_PASSWORD": "s3cret"})
    monitor = profile.monitor
    assert monitor.interval_s == 2.0 and monitor.target is not None
    assert monitor.target.port == 8080 and monitor.target.how == "port"
    assert monitor.prometheus[0].metrics == ("http_requests_total",)
    assert monitor.postgres[0].dsn == "postgresql://app:s3cret@127.0.0.1/app"
    assert [r.source for r in monitor.redis] == ["redis", "cache"]
    shown = json.dumps(describe_profile(profile))
    assert "s3cret" not in shown and "hunter2" not in shown
    assert "postgresql://app:<secret>@127.0.0.1/app" in shown


def test_writer_parts_hold_known_and_prometheus_columns(tmp_path: Path) -> None:
    writer = ResourceWriter(tmp_path / "resources", {"harness.run_id": "w"})
    writer.add([{"time_ns": 1, "source": "target", "pid": 7, "rss_bytes": 100}])
    writer.add(
        [{"time_ns": 2, "source": "prometheus", "prom_queue_depth": 3, "bogus": 1}]
    )
    assert list((tmp_path / "resources").iterdir()) == []  # nothing due yet
    writer.close()
    writer.close()
    (part,) = (tmp_path / "resources").iterdir()
    assert part.name == "part-000001.parquet"
    table = pq.read_table(part)
    assert "prom_queue_depth" in table.column_names
    assert "bogus" not in table.column_names
    assert table.schema.metadata[b"harness.run_id"] == b"w"
    frame = table.to_pandas()
    assert frame["rss_bytes"].tolist()[0] == 100
    assert frame["prom_queue_depth"].tolist()[1] == 3.0
    with pytest.raises(ValueError, match="no source"):
        ResourceWriter(tmp_path / "other", {}).add([{"time_ns": 1}])


def test_writer_rotates_and_readers_skip_the_part_in_progress(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "resources"
    writer = ResourceWriter(folder, {}, rotate_s=0.2)
    writer.add([{"time_ns": 1, "source": "host", "load1": 0.5}])
    time.sleep(0.25)
    writer.add([{"time_ns": 2, "source": "host", "load1": 0.7}])
    writer.add([{"time_ns": 3, "source": "host", "load1": 0.9}])
    assert [p.name for p in sorted(folder.iterdir())] == ["part-000001.parquet"]
    writer.close()
    frame = pd.concat(pd.read_parquet(p) for p in sorted(folder.iterdir()))
    assert frame["load1"].tolist() == [0.5, 0.7, 0.9]


def test_free_port_helper_gives_a_port_nobody_listens_on() -> None:
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
