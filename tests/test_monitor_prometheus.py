"""PrometheusSampler against real pages: the demo target's /metrics and the page
``prometheus_client`` serves itself, compared with what psutil reads of the same
process."""

from __future__ import annotations

import json
import logging
import re
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.demo.process import DemoTarget
from harness.manifest import describe_profile
from harness.monitor.base import MonitorError
from harness.monitor.monitor import Monitor, MonitorEvent
from harness.monitor.prometheus import PrometheusSampler
from harness.profile.load import load_profile_text
from harness.profile.model import MonitorSettings, PrometheusSource

from .servers import free_port, wait_for_port

# A process the project did not write: the library's own HTTP server and process
# collector, with the main thread kept busy so it uses CPU (bounded to a minute).
LIBRARY_EXPORTER = """
import sys, time
import prometheus_client
prometheus_client.start_http_server(int(sys.argv[1]), addr="127.0.0.1")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    sum(range(1000))
"""


def _rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def _within(value: object, expected: int, fraction: float) -> bool:
    assert isinstance(value, int), value
    return abs(value - expected) <= fraction * expected


@pytest.fixture
def library_exporter() -> Iterator[tuple[str, int]]:
    """URL and pid of a subprocess serving prometheus_client's default registry."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LIBRARY_EXPORTER, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/metrics", proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_rss_from_demo_metrics_matches_psutil_within_5_percent(
    demo_target: DemoTarget,
) -> None:
    sampler = PrometheusSampler(f"{demo_target.url}/metrics")
    sampler.open()
    [row] = sampler.sample(time.time_ns())
    rss = _rss_bytes(demo_target.pid)
    sampler.close()

    assert row["source"] == "prometheus"
    assert _within(row["rss_bytes"], rss, 0.05), (row["rss_bytes"], rss)
    vms = int(psutil.Process(demo_target.pid).memory_info().vms)
    assert _within(row["vms_bytes"], vms, 0.05), (row["vms_bytes"], vms)
    assert isinstance(row["open_fds"], int) and row["open_fds"] >= 3
    assert row["cpu_percent"] is None


def test_demo_metrics_count_requests_but_not_scrapes_and_ignore_fault_knobs() -> None:
    with DemoTarget.start(error_rate=1.0) as target:
        for _ in range(7):
            with urllib.request.urlopen(f"{target.url}/healthz", timeout=5) as answer:
                assert answer.status == 200
        sampler = PrometheusSampler(
            f"{target.url}/metrics",
            metrics=("demo_requests_served_total", "demo_connections_open"),
            source="demo",
        )
        sampler.open()
        rows = [sampler.sample(time.time_ns())[0] for _ in range(3)]
        served = target.stats()["requests_served"]

    assert served == 7
    assert [r["prom_demo_requests_served_total"] for r in rows] == [7.0, 7.0, 7.0]
    # The scrape's own connection is open while the page is made.
    assert all(r["prom_demo_connections_open"] == 1.0 for r in rows)
    assert all(r["source"] == "demo" for r in rows)


def test_library_exporter_matches_psutil_and_cpu_appears_from_second_sample(
    library_exporter: tuple[str, int],
) -> None:
    url, pid = library_exporter
    sampler = PrometheusSampler(url, metrics=("process_max_fds", "python_info"))
    sampler.open()
    [first] = sampler.sample(time.time_ns())
    rss_first = _rss_bytes(pid)
    time.sleep(0.5)
    [second] = sampler.sample(time.time_ns())
    rss_second = _rss_bytes(pid)
    sampler.close()

    assert _within(first["rss_bytes"], rss_first, 0.05), (first, rss_first)
    assert _within(second["rss_bytes"], rss_second, 0.05), (second, rss_second)
    assert first["cpu_percent"] is None
    cpu_percent = second["cpu_percent"]
    # The exporter spins its main thread: well above idle even on a busy machine.
    assert isinstance(cpu_percent, float) and 10.0 < cpu_percent < 250.0
    assert isinstance(second["cpu_seconds_total"], float)
    assert second["cpu_seconds_total"] > 0
    soft_limit, _ = psutil.Process(pid).rlimit(resource.RLIMIT_NOFILE)
    assert second["prom_process_max_fds"] == float(soft_limit)
    # python_info has one label set of value 1: the sum over label sets is 1.
    assert second["prom_python_info"] == 1.0


def test_unreachable_url_fails_open_naming_the_url_without_its_password() -> None:
    port = free_port()
    sampler = PrometheusSampler(f"http://scraper:hunter22@127.0.0.1:{port}/metrics")

    with pytest.raises(MonitorError) as caught:
        sampler.open()

    message = str(caught.value)
    assert f"http://127.0.0.1:{port}/metrics" in message
    assert "hunter22" not in message
    assert "fix:" in message


def test_page_not_in_text_format_fails_open(demo_target: DemoTarget) -> None:
    sampler = PrometheusSampler(f"{demo_target.url}/healthz")

    with pytest.raises(MonitorError, match="not in the Prometheus text format"):
        sampler.open()


def test_absent_extra_metric_is_null_and_warned_once(
    demo_target: DemoTarget, caplog: pytest.LogCaptureFixture
) -> None:
    sampler = PrometheusSampler(
        f"{demo_target.url}/metrics", metrics=("no_such_metric", "demo_leaked_bytes")
    )
    with caplog.at_level(logging.WARNING, logger="harness.monitor.prometheus"):
        sampler.open()
        rows = [sampler.sample(time.time_ns())[0] for _ in range(3)]

    assert [r["prom_no_such_metric"] for r in rows] == [None, None, None]
    assert [r["prom_demo_leaked_bytes"] for r in rows] == [0.0, 0.0, 0.0]
    warnings = [r for r in caplog.records if "no_such_metric" in r.getMessage()]
    assert len(warnings) == 1


def test_target_gone_mid_run_gives_null_rows_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with DemoTarget.start() as target:
        sampler = PrometheusSampler(f"{target.url}/metrics", metrics=("python_info",))
        sampler.open()
        [alive] = sampler.sample(time.time_ns())
    with caplog.at_level(logging.WARNING, logger="harness.monitor.prometheus"):
        gone = [sampler.sample(time.time_ns())[0] for _ in range(3)]

    assert isinstance(alive["rss_bytes"], int)
    for row in gone:
        assert row["source"] == "prometheus"
        assert {k: v for k, v in row.items() if k != "source"} == {
            "rss_bytes": None,
            "vms_bytes": None,
            "cpu_seconds_total": None,
            "cpu_percent": None,
            "open_fds": None,
            "prom_python_info": None,
        }
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    ("url", "metrics", "complaint"),
    [
        ("127.0.0.1:9100/metrics", (), "not an http(s) URL"),
        ("ftp://127.0.0.1/metrics", (), "not an http(s) URL"),
        ("http://me:hunter22@127.0.0.1:99999/metrics", (), "not a URL"),
        ("http://127.0.0.1:9100/metrics", ("9lives",), "not a metric name"),
        ("http://127.0.0.1:9100/metrics", ("a:b", "a_b"), "listed twice or collides"),
    ],
)
def test_bad_url_or_metric_name_is_refused_when_built(
    url: str, metrics: tuple[str, ...], complaint: str
) -> None:
    with pytest.raises(MonitorError, match=re.escape(complaint)) as caught:
        PrometheusSampler(url, metrics)

    assert "hunter22" not in str(caught.value)


def test_url_credentials_become_basic_auth_and_never_show(
    demo_target: DemoTarget,
) -> None:
    host_port = demo_target.url.removeprefix("http://")
    sampler = PrometheusSampler(f"http://scraper:hunter22@{host_port}/metrics")
    sampler.open()
    [row] = sampler.sample(time.time_ns())

    assert sampler.url == f"{demo_target.url}/metrics"
    assert isinstance(row["rss_bytes"], int)


def test_cpu_over_less_than_the_minimum_span_is_null(demo_target: DemoTarget) -> None:
    sampler = PrometheusSampler(f"{demo_target.url}/metrics", min_cpu_span_s=0.2)
    sampler.open()
    sampler.sample(time.time_ns())
    [soon] = sampler.sample(time.time_ns())  # a few milliseconds later
    time.sleep(0.25)
    [later] = sampler.sample(time.time_ns())  # from the kept baseline
    sampler.close()

    assert soon["cpu_percent"] is None and isinstance(soon["rss_bytes"], int)
    assert isinstance(later["cpu_percent"], float)


def _wait_event(monitor: Monitor, kind: str, into: list[MonitorEvent]) -> None:
    deadline = time.monotonic() + 10.0
    while not any(event[0] == kind for event in into):
        assert time.monotonic() < deadline, f"no {kind} event: {into}"
        time.sleep(0.05)
        into += monitor.events()


def test_an_outage_and_the_recovery_of_a_scrape_are_one_event_each(
    tmp_path: Path,
) -> None:
    with DemoTarget.start() as first:
        port = first.port
        url = f"http://mon:s3cret@pw@127.0.0.1:{port}/metrics?token=QSECRET"
        settings = MonitorSettings(
            interval_s=0.1, prometheus=(PrometheusSource(url, source="api"),)
        )
        # A target URL off loopback: only the host, the harness and the scrape.
        monitor = Monitor(settings, "http://192.0.2.1:80")
        monitor.open()
        monitor.start(tmp_path, {})
    seen: list[MonitorEvent] = []
    try:
        _wait_event(monitor, "monitor_sampler_error", seen)
        with DemoTarget.start(port=port):
            _wait_event(monitor, "monitor_sampler_recovered", seen)
            monitor.stop()
    finally:
        monitor.stop()
    seen += monitor.events()

    kinds = [(kind, data.get("sampler")) for kind, _, data in seen]
    assert kinds.count(("monitor_sampler_error", "api")) == 1
    assert kinds.count(("monitor_sampler_recovered", "api")) == 1
    error = next(d for k, _, d in seen if k == "monitor_sampler_error")["error"]
    assert f"http://127.0.0.1:{port}/metrics" in str(error)
    for secret in ("s3cret", "pw@", "QSECRET"):
        assert secret not in str(seen)


def test_passwords_with_at_signs_and_query_tokens_never_reach_the_manifest() -> None:
    text = """
target: http://127.0.0.1:1
load: {model: open, phases: [{duration: 1s, rate: 1}]}
monitor:
  target: {command: "serve --password=hunter2cmd", ready_url: "http://127.0.0.1:1/?key=RSECRET"}
  prometheus: {url: "http://mon:s3cret@pw@127.0.0.1:13180/metrics?token=QSECRET&page="}
  redis: {url: "redis://:pw%239@x@127.0.0.1:6379/0"}
  postgres: {dsn: "postgresql://app:p@ss@127.0.0.1/app?sslpassword=KSECRET"}
scenarios: [{name: a, flow: [{path: /}]}]
"""
    shown = json.dumps(describe_profile(load_profile_text(text, "m.yaml")))
    for secret in ("hunter2cmd", "RSECRET", "s3cret", "pw@", "QSECRET", "%239", "x@"):
        assert secret not in shown
    for secret in ("p@ss", "ss@", "KSECRET"):
        assert secret not in shown
    assert "http://mon:<secret>@127.0.0.1:13180/metrics?token=<secret>&page=" in shown
    assert "redis://:<secret>@127.0.0.1:6379/0" in shown
    assert "postgresql://app:<secret>@127.0.0.1/app?sslpassword=<secret>" in shown
