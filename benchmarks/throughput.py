"""Requests per second on one core: the harness against its peers, in one run.

How this works
--------------
One nginx (``worker_processes 1``) serves a tiny static 200 at ``/hello``, pinned to
core 0. Every load generator runs pinned to core 1 with the same number of keep-alive
connections for the same time, one after another, and the whole list is repeated
``--repeats`` times, interleaved (wrk, harness, ..., wrk, harness, ...), so a slow
stretch of a shared machine hits every row rather than one. The figures are meant as
ratios between rows measured in the same run, not as absolute numbers.

Rows (``--rows`` picks some; the default is the first five):

* ``wrk``: ``wrk -t1 -cC -dSs``, its "Requests/sec".
* ``harness-fast`` / ``harness-httpx``: ``python -m harness run`` of a closed-model
  profile (C VUs from the start, one GET step), ``--workers 1``, engine ``fast`` or
  ``httpx``. The coordinator process runs on core 1 as well. The rate is the rows of
  the Parquet records whose ``start_ns`` falls in the steady part (the first and the
  last second dropped), over that part's length.
* ``locust``: Locust ``FastHttpUser``, headless, one process, C users spawned at once,
  no wait time; the rate from its final JSON stats, per whole second of completions,
  the first and the last second dropped.
* ``bare-loop``: ``benchmarks/client_loop.py --loops bare-fd``, trio + httptools on
  the raw socket with nothing else: the ceiling of the harness's approach.
* ``fast-client`` (not in the default list): ``client_loop.py --loops fast``, the
  harness's client alone, without scheduler, flow or records.

For each run the script also reads the generator's CPU time (its whole process tree,
sampled with psutil) and core 1's busy time from ``/proc/stat``: ``cpu µs/req`` is the
generator's CPU per request, ``req/CPU-s`` its inverse (what the row would do with the
core to itself), ``others`` the part of core 1 that went to other processes of the
machine during the run (a noisy neighbour shows there).

    .venv/bin/python benchmarks/throughput.py --seconds 15 --connections 50 --repeats 3

Results are printed as a table and written to ``benchmarks/results/`` as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import nginx_binary, run_nginx  # noqa: E402

ROWS = (
    "wrk",
    "harness-fast",
    "harness-httpx",
    "locust",
    "bare-loop",
    "fast-client",
)
DEFAULT_ROWS = ROWS[:5]
BASELINE = "harness-fast"
PATH = "/hello"
SAMPLE_PERIOD_S = 0.1
"""How often the generator's process tree is sampled for its CPU time."""
EDGE_S = 1.0
"""Dropped at each end of a harness run: VU start-up and the drain at the end."""
STOP_GRACE_S = 10.0
"""After SIGTERM, how long a generator gets before it (and its children) are killed."""
LOCUST_INSTALL = (
    "python3 -m venv /tmp/locust-venv && /tmp/locust-venv/bin/pip install locust, "
    "then pass --locust /tmp/locust-venv/bin/locust"
)
WRK_INSTALL = "apt-get install wrk"

LOCUSTFILE = """\
from locust import FastHttpUser, constant, task


class Bench(FastHttpUser):
    wait_time = constant(0)

    @task
    def hello(self):
        self.client.get("{path}")
"""

PROFILE = """\
name: throughput-{engine}
target: {url}
http:
  engine: {engine}
  headers:
    User-Agent: harness-bench
    Accept: "*/*"
load:
  model: closed
  stages:
    - {{name: start, duration: 1ms, target: {vus}}}
    - {{name: hold, duration: {seconds}s, target: {vus}}}
scenarios:
  - name: hello
    flow:
      - name: hello
        path: {path}
        check: {{status: 200}}
"""


class BenchError(Exception):
    """A setting or the machine does not allow the benchmark; the message says why."""


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: int
    connections: int
    repeats: int
    rows: tuple[str, ...]
    server_cpu: int
    client_cpu: int
    locust: str | None
    wrk: str | None
    results_dir: Path


@dataclass(slots=True)
class Measurement:
    """One run of one row. ``req_s`` is None when the row did not run or failed."""

    row: str
    repeat: int
    req_s: float | None = None
    requests: int = 0
    window_s: float = 0.0
    cpu_us_per_req: float | None = None
    gen_share: float | None = None
    others_share: float | None = None
    coordinator_share: float | None = None
    errors: int = 0
    note: str = ""


@dataclass(slots=True)
class Sample:
    wall_ns: int
    cpu_s: dict[int, float]
    """CPU time (user + system) of each process of the tree seen so far, by pid."""


@dataclass(slots=True)
class Finished:
    """What running one pinned generator gave: exit code, output, CPU samples."""

    returncode: int | None
    log: str
    wall_s: float
    cpu_s: float
    """User + system time of the whole tree, from the kernel's accounting at exit."""
    busy_share: float
    """Part of the client core that was busy (anyone) while the generator ran."""
    samples: list[Sample] = field(default_factory=list)
    root_pid: int = 0


# -- processes -----------------------------------------------------------------


class _Interrupted(Exception):
    """SIGTERM, turned into an exception so that every cleanup block runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted()


def _cpu_busy(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one core, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(x) for x in line.split()[1:]]
                idle = ticks[3] + ticks[4]
                total = sum(ticks[:8])
                return total - idle, total
    raise BenchError(f"core {cpu} is not in /proc/stat")


class _TreeSampler:
    """Samples the CPU time of a process and its descendants from a thread."""

    def __init__(self, pid: int) -> None:
        self.root_pid = pid
        self.samples: list[Sample] = []
        self._seen: dict[int, psutil.Process] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        # A process already gone leaves nothing to sample.
        with contextlib.suppress(psutil.Error):
            self._seen[pid] = psutil.Process(pid)

    def __enter__(self) -> _TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def descendants(self) -> list[psutil.Process]:
        return [p for pid, p in self._seen.items() if pid != self.root_pid]

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_PERIOD_S)

    def _sample(self) -> None:
        root = self._seen.get(self.root_pid)
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True) if root else ():
                self._seen.setdefault(child.pid, child)
        for pid, proc in list(self._seen.items()):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue  # gone: keep its last value
            self._cpu[pid] = times.user + times.system
        self.samples.append(Sample(time.time_ns(), dict(self._cpu)))


def _stop_tree(proc: subprocess.Popen[bytes], known: list[psutil.Process]) -> None:
    """Stop a generator we started: SIGTERM, then SIGKILL it and its children."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        # Also reached when a second Ctrl-C cuts the wait short: kill at once.
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_GRACE_S)
        for child in known:
            # psutil checks the process's start time, so a recycled pid is spared.
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()


def run_pinned(
    cmd: list[str], cpu: int, timeout_s: float, cwd: Path, env: dict[str, str]
) -> Finished:
    """Run ``cmd`` pinned to ``cpu`` with ``taskset``; stop it after ``timeout_s``.

    The generator runs in its own session, so a Ctrl-C on the terminal reaches this
    script only, which then stops the generator by its pid.
    """
    log_path = cwd / "output.log"
    before = os.times()
    busy0, total0 = _cpu_busy(cpu)
    wall0 = time.monotonic()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sampler: _TreeSampler | None = None
        returncode: int | None = None
        try:
            sampler = _TreeSampler(proc.pid)
            with sampler, contextlib.suppress(subprocess.TimeoutExpired):
                returncode = proc.wait(timeout=timeout_s)
        finally:
            _stop_tree(proc, sampler.descendants() if sampler else [])
    wall_s = time.monotonic() - wall0
    busy1, total1 = _cpu_busy(cpu)
    after = os.times()
    # Children's times count once the child is reaped, its own children included
    # when it reaped them (the harness coordinator joins its workers).
    cpu_s = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return Finished(
        returncode=returncode,
        log=log_path.read_text(errors="replace"),
        wall_s=wall_s,
        cpu_s=cpu_s,
        busy_share=(busy1 - busy0) / max(1, total1 - total0),
        samples=sampler.samples if sampler else [],
        root_pid=proc.pid,
    )


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def _whole_run(m: Measurement, done: Finished) -> None:
    """Fill CPU figures from the whole life of the generator (start-up included)."""
    if m.requests:
        m.cpu_us_per_req = done.cpu_s / m.requests * 1e6
    m.gen_share = done.cpu_s / done.wall_s
    m.others_share = max(0.0, done.busy_share - m.gen_share)


# -- rows ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    settings: Settings
    url: str
    env: dict[str, str]


def run_wrk(ctx: Context, m: Measurement, cwd: Path) -> None:
    s = ctx.settings
    assert s.wrk is not None
    cmd = [s.wrk, "-t1", f"-c{s.connections}", f"-d{s.seconds}s", ctx.url + PATH]
    done = run_pinned(cmd, s.client_cpu, s.seconds + 30, cwd, ctx.env)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.log)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", done.log)
    if done.returncode != 0 or rate is None or total is None:
        m.note = f"wrk failed (exit {done.returncode}): {_tail(done.log)}"
        return
    m.req_s = float(rate.group(1))
    m.requests = int(total.group(1))
    m.window_s = m.requests / m.req_s
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.log)
    sockets = re.search(r"Socket errors: (.*)", done.log)
    m.errors = int(errors.group(1)) if errors else 0
    if sockets:
        m.note = f"socket errors: {sockets.group(1)}"
    _whole_run(m, done)


def _harness_row(engine: str) -> Callable[[Context, Measurement, Path], None]:
    def run(ctx: Context, m: Measurement, cwd: Path) -> None:
        s = ctx.settings
        profile = cwd / "profile.yaml"
        profile.write_text(
            PROFILE.format(
                engine=engine,
                url=ctx.url,
                vus=s.connections,
                seconds=s.seconds,
                path=PATH,
            )
        )
        cmd = [sys.executable, "-m", "harness", "run", str(profile), "--workers", "1"]
        cmd += ["--out", str(cwd), "--run-id", "run", "--progress-interval", "60"]
        done = run_pinned(cmd, s.client_cpu, s.seconds + 90, cwd, ctx.env)
        requests = cwd / "run" / "requests"
        if done.returncode != 0 or not requests.is_dir():
            m.note = f"harness failed (exit {done.returncode}): {_tail(done.log)}"
            return
        _harness_figures(m, done, requests)

    return run


def _harness_figures(m: Measurement, done: Finished, requests: Path) -> None:
    table = pq.read_table(requests, columns=["start_ns", "error"])
    starts = np.sort(table.column("start_ns").to_numpy())
    m.errors = int(table.column("error").is_valid().to_numpy().sum())
    lo = int(starts[0] + EDGE_S * 1e9)
    hi = int(starts[-1] - EDGE_S * 1e9)
    if hi <= lo:
        m.note = f"run too short: {len(starts)} rows"
        return
    count = int(np.searchsorted(starts, hi) - np.searchsorted(starts, lo))
    m.requests = count
    m.window_s = (hi - lo) / 1e9
    m.req_s = count / m.window_s
    _window_cpu(m, done, lo, hi, coordinator=True)


def _window_cpu(
    m: Measurement, done: Finished, lo_ns: int, hi_ns: int, *, coordinator: bool
) -> None:
    """Fill CPU figures for the steady part ``[lo_ns, hi_ns)`` (epoch ns).

    With ``coordinator``, the root process is the harness coordinator and its own
    part of the core is reported apart.

    The generator's CPU time is read at the samples nearest to both ends (they are
    0.1 s apart, so the span is within 1 % of the window for runs of 10 s or more).
    """
    if m.req_s is None:
        return
    walls = np.array([x.wall_ns for x in done.samples], dtype=np.int64)
    if len(walls) >= 2:
        a = done.samples[int(np.abs(walls - lo_ns).argmin())]
        b = done.samples[int(np.abs(walls - hi_ns).argmin())]
        span_s = (b.wall_ns - a.wall_ns) / 1e9
        if span_s > 0:
            tree_s = sum(b.cpu_s.values()) - sum(a.cpu_s.values())
            m.gen_share = tree_s / span_s
            if coordinator:
                root = done.root_pid
                coord_s = b.cpu_s.get(root, 0.0) - a.cpu_s.get(root, 0.0)
                m.coordinator_share = coord_s / span_s
            m.cpu_us_per_req = m.gen_share / m.req_s * 1e6
    m.others_share = max(0.0, done.busy_share - done.cpu_s / done.wall_s)


def run_locust(ctx: Context, m: Measurement, cwd: Path) -> None:
    s = ctx.settings
    assert s.locust is not None
    (cwd / "locustfile.py").write_text(LOCUSTFILE.format(path=PATH))
    stats = cwd / "stats.json"  # locust adds ".json" to the name it is given
    cmd = [s.locust, "-f", "locustfile.py", "--headless", "--only-summary"]
    cmd += ["-u", str(s.connections), "-r", str(s.connections)]
    cmd += ["-t", f"{s.seconds}s", "-H", ctx.url, "--json-file", str(cwd / "stats")]
    cmd += ["--loglevel", "WARNING"]
    done = run_pinned(cmd, s.client_cpu, s.seconds + 60, cwd, ctx.env)
    # Locust exits 1 when some requests failed; the stats still count.
    if done.returncode not in (0, 1) or not stats.exists():
        m.note = f"locust failed (exit {done.returncode}): {_tail(done.log)}"
        return
    # --json-file holds the final counts; the --csv files are written on a timer
    # and their last write can miss the final second.
    entries = json.loads(stats.read_text())
    if not entries:
        m.note = "locust recorded no request"
        return
    m.errors = sum(e["num_failures"] for e in entries)
    per_second: dict[int, int] = {}
    for e in entries:
        for second, n in e["num_reqs_per_sec"].items():
            per_second[int(second)] = per_second.get(int(second), 0) + n
    # Whole seconds of completions, the first and the last (partial) ones dropped,
    # as for the harness rows.
    seconds = sorted(per_second)[1:-1]
    if not seconds:
        m.note = f"run too short: {sum(per_second.values())} requests"
        return
    lo, hi = seconds[0], seconds[-1] + 1
    m.requests = sum(per_second.get(t, 0) for t in range(lo, hi))
    m.window_s = float(hi - lo)
    m.req_s = m.requests / m.window_s
    _window_cpu(m, done, lo * 1_000_000_000, hi * 1_000_000_000, coordinator=False)


def _client_loop_row(loop: str) -> Callable[[Context, Measurement, Path], None]:
    def run(ctx: Context, m: Measurement, cwd: Path) -> None:
        s = ctx.settings
        cmd = [sys.executable, str(REPO / "benchmarks" / "client_loop.py")]
        cmd += ["--url", ctx.url, "--path", PATH, "--loops", loop, "--repeat", "1"]
        cmd += ["--duration", str(s.seconds), "--connections", str(s.connections)]
        cmd += ["--client-cpu", str(s.client_cpu)]
        done = run_pinned(cmd, s.client_cpu, s.seconds + 60, cwd, ctx.env)
        found = re.search(
            rf"^{re.escape(loop)}\s+median\s+([\d,.]+) req/s,\s+([\d.]+) µs",
            done.log,
            re.MULTILINE,
        )
        if done.returncode != 0 or found is None:
            m.note = f"client_loop failed (exit {done.returncode}): {_tail(done.log)}"
            return
        m.req_s = float(found.group(1).replace(",", ""))
        m.window_s = float(s.seconds)
        m.requests = round(m.req_s * m.window_s)
        # client_loop measures its own CPU over the loop only, without imports.
        m.cpu_us_per_req = float(found.group(2))
        m.gen_share = m.cpu_us_per_req * m.req_s / 1e6
        m.others_share = max(0.0, done.busy_share - done.cpu_s / done.wall_s)

    return run


RUNNERS: dict[str, Callable[[Context, Measurement, Path], None]] = {
    "wrk": run_wrk,
    "harness-fast": _harness_row("fast"),
    "harness-httpx": _harness_row("httpx"),
    "locust": run_locust,
    "bare-loop": _client_loop_row("bare-fd"),
    "fast-client": _client_loop_row("fast"),
}


# -- the run -------------------------------------------------------------------


def _missing(s: Settings, row: str) -> str | None:
    """Why ``row`` cannot run on this machine, or None."""
    if row == "wrk" and s.wrk is None:
        return f"wrk not found: {WRK_INSTALL}"
    if row == "locust" and s.locust is None:
        return f"locust not found: {LOCUST_INSTALL}"
    return None


def measure(s: Settings, url: str, work: Path, results: list[Measurement]) -> None:
    """Run every row ``s.repeats`` times, interleaved, appending to ``results`` as
    it goes (so that an interrupted run keeps what it measured)."""
    env = dict(os.environ)
    env.pop("HARNESS_CPROFILE_DIR", None)  # a profiled worker is several times slower
    ctx = Context(s, url, env)
    for repeat in range(1, s.repeats + 1):
        for row in s.rows:
            m = Measurement(row, repeat)
            results.append(m)
            missing = _missing(s, row)
            if missing:
                m.note = missing
                continue
            cwd = work / f"{row}-{repeat}"
            cwd.mkdir()
            try:
                RUNNERS[row](ctx, m, cwd)
            except BaseException:
                m.req_s, m.note = None, "interrupted"
                raise
            print(_progress_line(m), flush=True)


def _progress_line(m: Measurement) -> str:
    if m.req_s is None:
        return f"round {m.repeat} {m.row:14s} failed: {m.note}"
    cpu = "" if m.cpu_us_per_req is None else f", {m.cpu_us_per_req:6.1f} µs CPU/req"
    share = "" if m.gen_share is None else f", core share {m.gen_share:.2f}"
    others = "" if m.others_share is None else f", others {m.others_share:.2f}"
    errors = f", {m.errors} errors" if m.errors else ""
    rate = f"{m.req_s:9,.0f} req/s"
    return f"round {m.repeat} {m.row:14s} {rate}{cpu}{share}{others}{errors}"


def summarise(s: Settings, results: list[Measurement]) -> dict[str, dict[str, Any]]:
    base = {
        m.repeat: m.req_s for m in results if m.row == BASELINE and m.req_s is not None
    }
    base_median = statistics.median(base.values()) if base else None
    summary: dict[str, dict[str, Any]] = {}
    for row in s.rows:
        runs = [m for m in results if m.row == row and m.req_s is not None]
        if not runs:
            notes = {m.note for m in results if m.row == row and m.note}
            summary[row] = {
                "runs": 0,
                "note": "; ".join(sorted(notes)) or "no run finished",
            }
            continue
        rates = [m.req_s for m in runs if m.req_s is not None]
        cpus = [m.cpu_us_per_req for m in runs if m.cpu_us_per_req is not None]
        others = [m.others_share for m in runs if m.others_share is not None]
        median = statistics.median(rates)
        # The same round's ratio: both rows met the same stretch of machine noise.
        paired = [
            rate / base[m.repeat]
            for m in runs
            if (rate := m.req_s) is not None and base.get(m.repeat)
        ]
        summary[row] = {
            "runs": len(rates),
            "median_req_s": median,
            "min_req_s": min(rates),
            "max_req_s": max(rates),
            "ratio_to_harness_fast": median / base_median if base_median else None,
            "paired_ratio_median": statistics.median(paired) if paired else None,
            "median_cpu_us_per_req": statistics.median(cpus) if cpus else None,
            # What the row would do with the core to itself: steadier than req/s
            # when neighbours take part of the core.
            "req_per_cpu_s": 1e6 / statistics.median(cpus) if cpus else None,
            "median_others_share": statistics.median(others) if others else None,
            "errors": sum(m.errors for m in runs),
        }
    return summary


def format_table(s: Settings, summary: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'row':14s} {'median req/s':>12s} {'min-max req/s':>17s} "
        f"{'x fast':>7s} {'cpu µs/req':>10s} {'req/CPU-s':>9s} {'others':>6s} "
        f"{'errors':>6s}"
    )
    lines = [head, "-" * len(head)]
    for row in s.rows:
        r = summary[row]
        if not r["runs"]:
            lines.append(f"{row:14s} not run: {r['note']}")
            continue
        span = f"{r['min_req_s']:,.0f}-{r['max_req_s']:,.0f}"
        ratio = r["ratio_to_harness_fast"]
        cpu = r["median_cpu_us_per_req"]
        others = r["median_others_share"]
        alone = r["req_per_cpu_s"]
        lines.append(
            f"{row:14s} {r['median_req_s']:12,.0f} {span:>17s} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>7s} "
            f"{'-' if cpu is None else f'{cpu:.1f}':>10s} "
            f"{'-' if alone is None else f'{alone:,.0f}':>9s} "
            f"{'-' if others is None else f'{others:.2f}':>6s} {r['errors']:6d}"
        )
    return "\n".join(lines)


def _version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info(s: Settings) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in ("loadharness", "trio", "httptools", "httpx", "pyarrow"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "missing"
    nginx = nginx_binary()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": packages,
        "wrk": _version([s.wrk, "-v"]) if s.wrk else None,
        "nginx": _version([nginx, "-v"]) if nginx else None,
        "locust": _version([s.locust, "--version"]) if s.locust else None,
        "git_head": _version(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
    }


@contextmanager
def pinned_nginx(cpu: int, root: Path) -> Iterator[str]:
    """nginx on ``cpu``: it inherits this process's mask, which stays on ``cpu``.

    This script then mostly sleeps beside nginx, leaving the client core to the
    generators; sampling their CPU ten times a second costs well under 1 % of a core.
    """
    os.sched_setaffinity(0, {cpu})
    with run_nginx(root) as url:
        for proc in psutil.Process().children(recursive=True):
            if proc.name().startswith("nginx") and proc.cpu_affinity() != [cpu]:
                raise BenchError(f"nginx pid {proc.pid} is not pinned to core {cpu}")
        yield url


def _find_locust(given: str | None) -> str | None:
    if given:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BenchError(
                f"--locust {given}: not an executable file; give the path of a "
                f"locust command, e.g. {LOCUST_INSTALL}"
            )
        return str(path)
    beside = Path(sys.executable).parent / "locust"
    if beside.is_file():
        return str(beside)
    return shutil.which("locust")


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=int, default=15, help="length of each run")
    p.add_argument("--connections", type=int, default=50, help="keep-alive conns/VUs")
    p.add_argument("--repeats", type=int, default=3, help="rounds of every row")
    p.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"comma-separated, from: {', '.join(ROWS)} (default: the first five)",
    )
    p.add_argument("--locust", help="path to a locust executable")
    p.add_argument("--server-cpu", type=int, default=0, help="core for nginx")
    p.add_argument("--client-cpu", type=int, default=1, help="core for generators")
    p.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "results",
        help="folder for the JSON results",
    )
    a = p.parse_args(argv)
    rows = tuple(r.strip() for r in a.rows.split(",") if r.strip())
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise BenchError(f"--rows: unknown row {unknown[0]!r}; use {', '.join(ROWS)}")
    if a.seconds < 2 * EDGE_S + 1:
        raise BenchError(f"--seconds {a.seconds}: too short, use at least 3")
    if a.connections < 1 or a.repeats < 1:
        raise BenchError("--connections and --repeats must be at least 1")
    cpus = os.sched_getaffinity(0)
    for name, cpu in (("--server-cpu", a.server_cpu), ("--client-cpu", a.client_cpu)):
        if cpu not in cpus:
            raise BenchError(
                f"{name} {cpu}: this process may only use cores {sorted(cpus)}"
            )
    if a.server_cpu == a.client_cpu:
        raise BenchError("--server-cpu and --client-cpu must be different cores")
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found: apt-get install util-linux")
    if nginx_binary() is None:
        raise BenchError("nginx not found: apt-get install nginx-light")
    return Settings(
        seconds=a.seconds,
        connections=a.connections,
        repeats=a.repeats,
        rows=rows,
        server_cpu=a.server_cpu,
        client_cpu=a.client_cpu,
        locust=_find_locust(a.locust),
        wrk=shutil.which("wrk"),
        results_dir=a.results,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        s = parse_args(argv)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.strftime("%Y%m%d-%H%M%S")
    info = machine_info(s)
    load_before = os.getloadavg()
    results: list[Measurement] = []
    status = "completed"
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        work = Path(tmp)
        try:
            with pinned_nginx(s.server_cpu, work / "nginx") as url:
                print(
                    f"nginx {url}{PATH} on core {s.server_cpu}; generators on core "
                    f"{s.client_cpu} (the harness coordinator too), "
                    f"{s.connections} connections, {s.seconds} s, {s.repeats} rounds"
                )
                for row in s.rows:
                    missing = _missing(s, row)
                    if missing:
                        print(f"{row}: {missing}")
                measure(s, url, work, results)
        except (KeyboardInterrupt, _Interrupted):
            status = "interrupted"
            print("\ninterrupted: every generator and nginx were stopped")
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    summary = summarise(s, results)
    print()
    print(format_table(s, summary))
    out = s.results_dir / f"throughput-{started}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "status": status,
        "started": started,
        "settings": {
            "seconds": s.seconds,
            "connections": s.connections,
            "repeats": s.repeats,
            "rows": list(s.rows),
            "server_cpu": s.server_cpu,
            "client_cpu": s.client_cpu,
            "path": PATH,
        },
        "machine": info,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "summary": summary,
        "runs": [asdict(m) for m in results],
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 130 if status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
