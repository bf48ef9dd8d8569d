"""Finding and sampling process trees, with real processes started by the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from harness.demo.process import DemoTarget
from harness.errors import TargetError
from harness.monitor.base import MonitorError, Row
from harness.monitor.host import HostSampler
from harness.monitor.monitor import Monitor
from harness.monitor.process import (
    HarnessSampler,
    LaunchedTarget,
    TargetSampler,
    check_nothing_answers,
    find_by_name,
    find_by_pid,
    find_by_port,
    is_alive,
    listeners,
    loopback_port,
)
from harness.profile.model import MonitorSettings, MonitorTarget

REPO = Path(__file__).resolve().parent.parent

SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    kids = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        for _ in range(int(sys.argv[2]))
    ]

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
    """
)

PREFORK = textwrap.dedent(
    """
    # A pre-forking server: the master binds, forks N workers that accept on the
    # shared socket, and replaces a worker that exits (after serving LIMIT
    # requests, when a third argument gives it). Bounded to a minute.
    import os, socket, sys, time

    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(64)
    sock.settimeout(0.5)
    deadline = time.monotonic() + 60

    def serve():
        served = 0
        while time.monotonic() < deadline and not (limit and served >= limit):
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n"
                    b"Connection: close\\r\\n\\r\\nok"
                )
            served += 1

    def spawn():
        pid = os.fork()
        if pid == 0:
            try:
                serve()
            finally:
                os._exit(0)
        return pid

    for _ in range(int(sys.argv[2])):
        spawn()
    while time.monotonic() < deadline:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        spawn()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def missing_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "spawner.py"
    path.write_text(SPAWNER)
    return path


@pytest.fixture
def sleeper_named(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes whose process name is ``montest-sleeper`` (a symlink to python)."""
    link = tmp_path / "montest-sleeper"
    link.symlink_to(sys.executable)
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def start_sleeper(tmp_path: Path, into: list[subprocess.Popen[bytes]]) -> int:
    proc = subprocess.Popen(
        [str(tmp_path / "montest-sleeper"), "-c", "import time; time.sleep(60)"]
    )
    into.append(proc)
    wait_for(lambda: psutil.Process(proc.pid).name() == "montest-sleeper")
    return proc.pid


def launch(
    tmp_path: Path, script: Path, children: int, path: str = "/"
) -> LaunchedTarget:
    """Start ``script`` (a small HTTP server with ``children`` child processes) on a
    free port as a command target, ready once ``path`` answers."""
    port = free_port()
    return LaunchedTarget.start(
        (sys.executable, str(script), str(port), str(children)),
        f"http://127.0.0.1:{port}{path}",
        15.0,
        tmp_path / "target.log",
    )


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://127.0.0.1:13010", 13010),
        ("http://localhost:8080/api", 8080),
        ("http://[::1]:9000", 9000),
        ("http://127.0.0.2", 80),
        ("https://127.0.0.1", 443),
        ("http://10.0.0.5:8080", None),
        ("https://example.com:443", None),
    ],
)
def test_loopback_port_is_found_only_for_loopback_urls(
    url: str, port: int | None
) -> None:
    assert loopback_port(url) == port


def test_missing_pid_is_a_clear_monitor_error() -> None:
    pid = missing_pid()
    with pytest.raises(MonitorError, match=f"{pid}: no process has this pid"):
        find_by_pid(pid)


def test_port_finds_the_listening_demo_target_and_none_when_free(
    demo_target: DemoTarget,
) -> None:
    found = find_by_port(demo_target.port)
    assert found is not None and found.pid == demo_target.pid
    assert find_by_port(free_port()) is None


def test_name_finds_one_process_and_lists_candidates_when_ambiguous(
    tmp_path: Path, sleeper_named: list[subprocess.Popen[bytes]]
) -> None:
    with pytest.raises(MonitorError, match="no running process has this name"):
        find_by_name("montest-sleeper")
    first = start_sleeper(tmp_path, sleeper_named)
    found = find_by_name("montest-sleeper")
    assert found is not None and found.pid == first
    second = start_sleeper(tmp_path, sleeper_named)
    with pytest.raises(MonitorError) as caught:
        find_by_name("montest-sleeper")
    message = str(caught.value)
    assert f"pid {first}" in message and f"pid {second}" in message
    assert "--monitor-pid" in message
    assert find_by_name("montest-sleeper", required=False) is None


def test_tree_sampling_follows_children_that_come_and_go(
    tmp_path: Path, script: Path
) -> None:
    launched = launch(tmp_path, script, 2, "/healthz")
    events: list[tuple[str, dict[str, object]]] = []
    try:
        root = psutil.Process(launched.pid)
        kids = root.children()
        assert len(kids) == 2
        sampler = TargetSampler(root, lambda k, d: events.append((k, d)))
        sampler.open()
        first = sampler.sample(time.time_ns())
        assert {r["pid"] for r in first} == {launched.pid, *(k.pid for k in kids)}
        assert all(r.get("cpu_percent") is None for r in first)  # primed only
        assert all(r["source"] == "target" for r in first)
        root_first = next(r for r in first if r["pid"] == launched.pid)
        assert root_first["connections"] == 0  # its listening socket does not count
        time.sleep(0.2)
        os.kill(kids[0].pid, signal.SIGKILL)
        wait_for(lambda: not is_alive(kids[0]))  # a zombie: the script never reaps
        second = sampler.sample(time.time_ns())
        assert {r["pid"] for r in second} == {launched.pid, kids[1].pid}
        assert all(isinstance(r["cpu_percent"], float) for r in second)
        assert all(isinstance(r["rss_bytes"], int) for r in second)
        root_row = next(r for r in second if r["pid"] == launched.pid)
        assert isinstance(root_row["num_fds"], int) and root_row["num_fds"] > 0
        assert sampler.latest is not None and sampler.latest.processes == 2
        assert events == []
    finally:
        code = launched.stop(grace_s=5.0)
    assert code == -signal.SIGTERM
    wait_for(lambda: not is_alive(kids[1]), timeout_s=5.0)  # SIGKILL to the group


def test_root_exit_is_reported_once_with_the_exit_code_when_started_here(
    tmp_path: Path, script: Path
) -> None:
    launched = launch(tmp_path, script, 0)
    events: list[tuple[str, dict[str, object]]] = []
    sampler = TargetSampler(
        psutil.Process(launched.pid),
        lambda k, d: events.append((k, d)),
        launched=launched,
    )
    assert sampler.sample(time.time_ns())
    os.kill(launched.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert sampler.sample(time.time_ns()) == []
    assert sampler.sample(time.time_ns()) == []
    assert events == [
        (
            "target_exit",
            {"pid": launched.pid, "exit_code": -signal.SIGKILL, "survivors": []},
        )
    ]
    launched.stop(grace_s=1.0)


def test_survivors_of_a_dead_root_are_still_sampled_and_named_in_the_exit_event(
    tmp_path: Path, script: Path
) -> None:
    launched = launch(tmp_path, script, 2)
    events: list[tuple[str, dict[str, object]]] = []
    try:
        root = psutil.Process(launched.pid)
        kids = root.children()
        sampler = TargetSampler(
            root, lambda k, d: events.append((k, d)), launched=launched
        )
        assert len(sampler.sample(time.time_ns())) == 3
        os.kill(launched.pid, signal.SIGKILL)
        wait_for(lambda: not is_alive(root))
        after = sampler.sample(time.time_ns())
        assert {r["pid"] for r in after} == {k.pid for k in kids}
        assert all(isinstance(r["rss_bytes"], int) for r in after)
        assert sampler.latest is not None and sampler.latest.processes == 2
        assert [k for k, _ in events] == ["target_exit"]
        assert events[0][1]["survivors"] == sorted(k.pid for k in kids)
        os.kill(kids[0].pid, signal.SIGKILL)
        wait_for(lambda: not is_alive(kids[0]))
        later = sampler.sample(time.time_ns())
        assert {r["pid"] for r in later} == {kids[1].pid}
        assert len(events) == 1 and sampler.exits == 1
    finally:
        launched.stop(grace_s=1.0)  # SIGKILL to the group: the survivor too
    wait_for(lambda: not is_alive(kids[1]), timeout_s=5.0)


def test_port_finds_the_master_of_a_prefork_server_and_worker_turnover_is_no_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    script = tmp_path / "prefork.py"
    script.write_text(PREFORK)
    launched = LaunchedTarget.start(
        (sys.executable, str(script), str(port), "2"),
        f"http://127.0.0.1:{port}/",
        15.0,
        tmp_path / "target.log",
    )
    events: list[tuple[str, dict[str, object]]] = []
    try:
        master = psutil.Process(launched.pid)
        wait_for(lambda: len(master.children()) == 2)
        workers = master.children()
        pids, hidden = listeners(port)
        assert set(pids) == {master.pid, *(w.pid for w in workers)} and not hidden
        found = find_by_port(port)
        assert found is not None and found.pid == master.pid

        sampler = TargetSampler(
            found,
            lambda k, d: events.append((k, d)),
            relocate=lambda survivors: find_by_port(port, survivors),
        )
        first = sampler.sample(time.time_ns())
        assert {r["pid"] for r in first} == {master.pid, *(w.pid for w in workers)}
        os.kill(workers[0].pid, signal.SIGKILL)  # the master starts another one

        def replaced() -> bool:
            now = {c.pid for c in master.children()}
            return workers[0].pid not in now and len(now) == 2

        wait_for(replaced)
        second = sampler.sample(time.time_ns())
        now = {master.pid, *(c.pid for c in master.children())}
        assert {r["pid"] for r in second} == now
        assert events == [] and sampler.exits == 0 and sampler.restarts == 0
    finally:
        launched.stop(grace_s=2.0)


def test_port_finds_the_nginx_master_with_its_worker(nginx: str) -> None:
    port = loopback_port(nginx)
    assert port is not None
    found = find_by_port(port)
    assert found is not None
    assert found.ppid() == os.getpid()  # the master, started by this test session
    assert found.name() == "nginx" and found.children()


def test_a_port_already_held_refuses_a_command_target_naming_the_holder(
    demo_target: DemoTarget, tmp_path: Path
) -> None:
    ready_url = f"http://127.0.0.1:{demo_target.port}/healthz"
    with pytest.raises(MonitorError) as caught:
        check_nothing_answers(ready_url)
    message = str(caught.value)
    assert (
        f"port {demo_target.port} is already held by pid {demo_target.pid}" in message
    )
    assert caught.value.exit_code == 2
    check_nothing_answers(f"http://127.0.0.1:{free_port()}/healthz")  # free: fine

    settings = MonitorSettings(
        target=MonitorTarget(
            command=(sys.executable, "-c", "raise SystemExit(1)"), ready_url=ready_url
        )
    )
    with pytest.raises(MonitorError, match=f"pid {demo_target.pid}"):
        Monitor(settings, demo_target.url).open()


def test_a_ready_url_answered_by_another_process_is_not_a_ready_target(
    demo_target: DemoTarget, tmp_path: Path
) -> None:
    with pytest.raises(TargetError) as caught:
        LaunchedTarget.start(
            (sys.executable, "-c", "import time; time.sleep(30)"),
            f"http://127.0.0.1:{demo_target.port}/healthz",
            10.0,
            tmp_path / "target.log",
        )
    message = str(caught.value)
    assert f"port {demo_target.port} is held by pid {demo_target.pid}" in message
    assert "not by the target command" in message


PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from harness.monitor.process import LaunchedTarget

    port = sys.argv[1]
    launched = LaunchedTarget.start(
        (sys.executable, sys.argv[2], port, "0"),
        f"http://127.0.0.1:{port}/",
        15.0,
        Path(sys.argv[3]),
    )
    print(launched.pid, flush=True)
    time.sleep(60)
    """
)


def test_a_started_target_stops_when_the_harness_is_killed(
    tmp_path: Path, script: Path
) -> None:
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(port), str(script), str(tmp_path / "t.log")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    target: psutil.Process | None = None
    try:
        assert parent.stdout is not None
        target = psutil.Process(int(parent.stdout.readline()))
        assert is_alive(target)
        parent.kill()  # SIGKILL: no chance to stop the target itself
        parent.wait()
        wait_for(lambda: not is_alive(target), timeout_s=10.0)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if target is not None and is_alive(target):
            target.kill()


def test_a_new_listener_on_the_port_is_reported_as_a_restart() -> None:
    events: list[tuple[str, dict[str, object]]] = []
    with DemoTarget.start() as first:
        port = first.port
        sampler = TargetSampler(
            psutil.Process(first.pid),
            lambda k, d: events.append((k, d)),
            relocate=lambda survivors: find_by_port(port, survivors),
        )
        sampler.sample(time.time_ns())
    sampler.sample(time.time_ns())
    with DemoTarget.start(port=port) as second:
        rows = sampler.sample(time.time_ns())
        assert {r["pid"] for r in rows} == {second.pid}
    assert [k for k, _ in events] == ["target_exit", "target_restart"]
    assert events[1][1] == {"old_pid": first.pid, "new_pid": second.pid}


def test_command_that_never_gets_ready_is_stopped_with_a_clear_error(
    tmp_path: Path,
) -> None:
    port = free_port()
    with pytest.raises(TargetError, match=r"not ready within 0\.5s") as caught:
        LaunchedTarget.start(
            (sys.executable, "-c", "import time; print('hello'); time.sleep(30)"),
            f"http://127.0.0.1:{port}/healthz",
            0.5,
            tmp_path / "target.log",
        )
    message = str(caught.value)
    assert "hello" not in message  # output may hold secrets: only its place
    assert f"Its output is in {tmp_path / 'target.log'}" in message
    assert "pid" in message


def test_command_that_exits_at_once_reports_its_code(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="exited with code 3"):
        LaunchedTarget.start(
            (sys.executable, "-c", "raise SystemExit(3)"),
            f"http://127.0.0.1:{free_port()}/",
            10.0,
            tmp_path / "target.log",
        )


def test_command_that_does_not_exist_is_a_target_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="cannot start the target command"):
        LaunchedTarget.start(
            (str(tmp_path / "no-such-program"),),
            "http://127.0.0.1:1/",
            1.0,
            tmp_path / "target.log",
        )


def test_host_and_harness_rows_carry_their_columns() -> None:
    host = HostSampler()
    host.open()
    (first,) = host.sample(time.time_ns())
    assert first["host_cpu_percent"] is None  # only primes it, like a process row
    time.sleep(0.05)  # at least one kernel tick between the readings
    (row,) = host.sample(time.time_ns())
    assert row["source"] == "host"
    total = row["host_mem_total_bytes"]
    available = row["host_mem_available_bytes"]
    assert isinstance(total, int) and isinstance(available, int)
    assert 0 < available <= total
    cpu = row["host_cpu_percent"]
    assert isinstance(cpu, float) and 0.0 <= cpu <= 100.0
    assert isinstance(row["net_bytes_recv"], int)

    harness = HarnessSampler({"coordinator": os.getpid()})
    rows: list[Row] = harness.sample(time.time_ns())
    assert [(r["source"], r["pid"]) for r in rows] == [("coordinator", os.getpid())]
    assert "connections" not in rows[0]


def test_cpu_over_less_than_the_minimum_span_is_null_but_memory_is_kept(
    demo_target: DemoTarget,
) -> None:
    root = psutil.Process(demo_target.pid)
    sampler = TargetSampler(root, lambda k, d: None, min_cpu_span_s=0.1)
    host = HostSampler(min_cpu_span_s=0.1)
    sampler.sample(time.time_ns())
    host.sample(time.time_ns())
    [soon] = sampler.sample(time.time_ns())  # a few milliseconds later
    [host_soon] = host.sample(time.time_ns())
    assert soon.get("cpu_percent") is None and isinstance(soon["rss_bytes"], int)
    assert host_soon["host_cpu_percent"] is None
    assert isinstance(host_soon["host_mem_available_bytes"], int)
    time.sleep(0.15)
    [later] = sampler.sample(time.time_ns())  # measured from the kept baseline
    [host_later] = host.sample(time.time_ns())
    assert isinstance(later["cpu_percent"], float)
    assert isinstance(host_later["host_cpu_percent"], float)


def test_the_monitors_last_sample_at_stop_has_memory_but_no_cpu(
    demo_target: DemoTarget, tmp_path: Path
) -> None:
    settings = MonitorSettings(
        interval_s=60.0, target=MonitorTarget(pid=demo_target.pid)
    )
    monitor = Monitor(settings, demo_target.url)
    monitor.open()
    notes = list(monitor.notes)
    monitor.start(tmp_path, {})
    wait_for(lambda: monitor.target is not None and monitor.target.latest is not None)
    time.sleep(0.05)  # a kernel tick or more: a percentage could be computed
    monitor.stop()
    frame = pd.concat(
        pd.read_parquet(part) for part in sorted((tmp_path / "resources").iterdir())
    )
    for source in ("target", "coordinator"):
        rows = frame[frame["source"] == source]
        assert len(rows) == 2  # the first tick and the last one, at the stop
        assert rows["cpu_percent"].isna().all()
        assert rows["rss_bytes"].notna().all()
    host = frame[frame["source"] == "host"]
    assert len(host) == 2 and host["host_cpu_percent"].isna().all()
    assert host["host_mem_available_bytes"].notna().all()
    # A target given by pid is named like one found by port or name.
    name = psutil.Process(demo_target.pid).name()  # python or python3
    assert notes == [f"monitor: target is pid {demo_target.pid} ({name})"]
