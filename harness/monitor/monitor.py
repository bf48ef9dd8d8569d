"""The resource monitor: samplers driven by threads of the coordinator.

How this works
--------------
1. :meth:`Monitor.open`, before the run folder exists, finds the target as the
   profile's ``monitor.target`` (or ``--monitor-pid`` and friends) says, or, when
   nothing is said and the target URL is on loopback, the process listening on its
   port. For a target given as a command it checks that nothing already listens on
   (or answers) its ``ready_url``. It also connects the remote samplers
   (Prometheus, PostgreSQL, Redis). Whatever is wrong raises
   :class:`~harness.monitor.base.MonitorError`: nothing has been started yet.
2. :meth:`Monitor.start`, once the run folder exists and before the workers are
   spawned, starts a target given as a command (and waits until it is ready and
   checks that the port's listener is its own), then the sampling threads: one for
   the local samplers (target tree, host, harness processes) and one per remote
   sampler, so a slow database cannot make the process samples irregular. Each
   thread samples every ``interval_s`` on the monotonic clock, stamps each
   sampler's rows with one wall-clock ``time_ns``, and hands them to the
   :class:`~harness.monitor.writer.ResourceWriter`. A sampler that fails,
   by raising or (the remote ones) by recording nulls, gives one
   ``monitor_sampler_error`` event per outage and one ``monitor_sampler_recovered``
   when it works again. CPU figures need half an interval since the previous one
   (:data:`MIN_CPU_SPAN`), so the last sample at the stop gives none.
3. The coordinator names its workers (:meth:`Monitor.watch_workers`), reads events
   (:meth:`Monitor.events`) in its loop and writes them to ``events.jsonl``, and
   shows :meth:`Monitor.target_figures` in the live view.
4. :meth:`Monitor.stop`, in the coordinator's shutdown path after the workers are
   joined and before the final manifest: stop the threads (each takes one last
   sample), write the last part, close the samplers, stop a target the harness
   started (SIGTERM, then SIGKILL after the grace period).

Threads rather than a process of its own: psutil reads ``/proc`` and spends a few
milliseconds per second; the coordinator is not on the timing path of any request
(the workers are), and the writer's Parquet encoding releases the GIL. A thread
shares the coordinator's pids, event log and shutdown path without any message
passing. The cost is measured by ``benchmarks/monitor_cost.py`` (docs/monitor.md).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..profile.model import MonitorSettings, MonitorTarget
from .base import MonitorError, Row, Sampler, failure_of, redact_credentials
from .host import HostSampler
from .process import (
    HarnessSampler,
    LaunchedTarget,
    Relocate,
    TargetSampler,
    TreeFigures,
    check_nothing_answers,
    describe_process,
    find_by_name,
    find_by_pid,
    find_by_port,
    loopback_port,
)
from .writer import DEFAULT_ROTATE_S, ResourceWriter

log = logging.getLogger("harness.monitor")

MIN_CPU_SPAN = 0.5
"""A CPU percentage needs a span of at least this fraction of the interval since
the previous figure: the last sample, taken at once when the monitor stops, gives
memory and the rest but a null CPU (over a few milliseconds it is noise)."""

JOIN_TIMEOUT_S = 10.0
"""How long :meth:`Monitor.stop` waits for a sampling thread (a remote sampler's
last sample may wait for its timeout)."""

MonitorEvent = tuple[str, int, dict[str, object]]
"""An event for ``events.jsonl``: kind, wall-clock ns, data."""


@dataclass(slots=True)
class _Found:
    """The target as found by :meth:`Monitor.open`."""

    how: str
    root: psutil.Process | None = None
    relocate: Relocate | None = None
    auto: bool = False
    detail: dict[str, object] = field(default_factory=dict)


def _describe_tree(root: psutil.Process) -> str:
    """``pid 1234 (nginx) and its 2 descendants``: what will be sampled."""
    try:
        count = len(root.children(recursive=True))
    except psutil.Error:
        count = 0
    if not count:
        return describe_process(root)
    return f"{describe_process(root)} and its {count} descendant" + (
        "s" if count > 1 else ""
    )


class _Loop:
    """One sampling thread over some samplers."""

    def __init__(self, monitor: Monitor, name: str, samplers: list[Sampler]) -> None:
        self.monitor = monitor
        self.samplers = samplers
        self.failing: set[str] = set()
        self.thread = threading.Thread(
            target=self._run, name=f"harness-monitor-{name}", daemon=True
        )

    def _run(self) -> None:
        monitor = self.monitor
        interval_s = monitor.interval_s
        next_s = time.monotonic()
        while True:
            self.tick()
            next_s += interval_s
            delay_s = next_s - time.monotonic()
            if delay_s < 0:  # a slow sample: skip the missed ticks, keep the rhythm
                next_s = time.monotonic()
                delay_s = 0.0
            if monitor.stopping.wait(delay_s) or monitor.failed:
                break
        if not monitor.failed:
            self.tick()  # the last instant, up to the stop

    def tick(self) -> None:
        monitor = self.monitor
        for sampler in self.samplers:
            now_ns = time.time_ns()
            try:
                rows = sampler.sample(now_ns)
            except Exception as exc:  # one failing sampler must not stop the others
                self._failing(sampler, f"{type(exc).__name__}: {exc}", raised=True)
                continue
            # A remote sampler records its own failures as rows of nulls.
            error = failure_of(sampler)
            if error is not None:
                self._failing(sampler, error, raised=False)
            elif sampler.name in self.failing:
                self.failing.discard(sampler.name)
                monitor.emit("monitor_sampler_recovered", {"sampler": sampler.name})
            for row in rows:
                row["time_ns"] = now_ns
            monitor.write(rows)

    def _failing(self, sampler: Sampler, error: str, *, raised: bool) -> None:
        """One event per run of failures of ``sampler``."""
        if sampler.name in self.failing:
            return
        self.failing.add(sampler.name)
        error = redact_credentials(error)
        if raised:  # a sampler that records its own failures has logged them
            log.warning("monitor sampler %s failed: %s", sampler.name, error)
        self.monitor.emit(
            "monitor_sampler_error", {"sampler": sampler.name, "error": error}
        )


class Monitor:
    """Samples the target, the host, the harness and remote servers during a run."""

    def __init__(
        self,
        settings: MonitorSettings,
        target_url: str,
        *,
        rotate_s: float = DEFAULT_ROTATE_S,
    ) -> None:
        self.settings = settings
        self.target_url = target_url
        self.interval_s = settings.interval_s
        self.rotate_s = rotate_s
        self.stopping = threading.Event()
        self.failed = ""
        self.notes: list[str] = []
        self.target: TargetSampler | None = None
        self.launched: LaunchedTarget | None = None
        self.min_cpu_span_s = self.interval_s * MIN_CPU_SPAN
        self.harness = HarnessSampler(
            {"coordinator": os.getpid()}, min_cpu_span_s=self.min_cpu_span_s
        )
        self.remote: list[Sampler] = []
        self.writer: ResourceWriter | None = None
        self._found: _Found | None = None
        self._loops: list[_Loop] = []
        self._events: queue.SimpleQueue[MonitorEvent] = queue.SimpleQueue()
        self._opened: list[Sampler] = []
        self._local: list[Sampler] = []
        self._stopped = False

    # -- before the run -----------------------------------------------------------

    def open(self) -> None:
        """Find the target and connect the remote samplers; raise
        :class:`MonitorError` if any cannot be. Notes for the user go to
        :attr:`notes`."""
        self._found = self._find_target(self.settings.target)
        try:
            for sampler in self._remote_samplers():
                sampler.open()
                self._opened.append(sampler)
                self.remote.append(sampler)
        except BaseException:
            self._close_samplers()
            raise

    def _find_target(self, target: MonitorTarget | None) -> _Found:
        harness = {os.getpid()}
        if target is None:
            port = loopback_port(self.target_url)
            if port is None:
                self.notes.append(
                    f"monitor: {redact_credentials(self.target_url)} is not on this "
                    "machine's loopback, so only the host and the harness are "
                    "sampled; give "
                    "--monitor-pid (or monitor.target) to sample the target"
                )
                return _Found("none")
            root = find_by_port(port, harness)
            if root is None:
                self.notes.append(
                    f"monitor: nothing listens on port {port} of "
                    f"{redact_credentials(self.target_url)} yet, so only the host and "
                    "the harness are sampled"
                )
                return _Found("none")
            self.notes.append(
                f"monitor: target is {_describe_tree(root)}, listening on port "
                f"{port} of {redact_credentials(self.target_url)}"
            )
            return _Found(
                "port",
                root,
                self._by_port(port),
                auto=True,
                detail={"port": port},
            )
        if target.pid is not None:
            root = find_by_pid(target.pid)
            self.notes.append(f"monitor: target is {_describe_tree(root)}")
            return _Found("pid", root)
        if target.port is not None:
            root = find_by_port(target.port, harness)
            if root is None:
                raise MonitorError(
                    f"--monitor-port / monitor.target.port {target.port}: nothing "
                    "listens on this TCP port; start the target first, or check the "
                    "port with `ss -ltnp`"
                )
            self.notes.append(
                f"monitor: target is {_describe_tree(root)}, listening on port "
                f"{target.port}"
            )
            return _Found(
                "port", root, self._by_port(target.port), detail={"port": target.port}
            )
        if target.name is not None:
            name = target.name
            root = find_by_name(name, harness)
            assert root is not None  # required=True raises instead
            self.notes.append(f"monitor: target is {_describe_tree(root)}")

            def again(survivors: Collection[int]) -> psutil.Process | None:
                exclude = self._harness_pids() | set(survivors)
                return find_by_name(name, exclude, required=False)

            return _Found("name", root, again, detail={"name": name})
        if target.ready_url is not None:
            check_nothing_answers(target.ready_url)
        return _Found("command")

    def _harness_pids(self) -> set[int]:
        return self.harness.pids()

    def _by_port(self, port: int) -> Relocate:
        def again(survivors: Collection[int]) -> psutil.Process | None:
            return find_by_port(port, self._harness_pids() | set(survivors))

        return again

    def _remote_samplers(self) -> list[Sampler]:
        """The remote samplers of the profile; their modules load only when used
        (their client libraries are optional)."""
        out: list[Sampler] = []
        for prom in self.settings.prometheus:
            from .prometheus import PrometheusSampler

            out.append(
                PrometheusSampler(
                    prom.url,
                    prom.metrics,
                    timeout_s=prom.timeout_s,
                    source=prom.source,
                    min_cpu_span_s=self.min_cpu_span_s,
                )
            )
        for pg in self.settings.postgres:
            from .postgres import PostgresSampler

            out.append(PostgresSampler(pg.dsn, source=pg.source))
        for rd in self.settings.redis:
            from .redis import RedisSampler

            out.append(RedisSampler(rd.url, source=rd.source))
        return out

    # -- the run ------------------------------------------------------------------

    def start(self, run_dir: Path, metadata: Mapping[str, str]) -> None:
        """Start a target given as a command, then the sampling threads."""
        if self._found is None:
            raise RuntimeError("Monitor.open() must come before start()")
        target = self.settings.target
        found = self._found
        if found.how == "command" and target is not None:
            assert target.ready_url is not None
            self.launched = LaunchedTarget.start(
                target.command,
                target.ready_url,
                target.ready_timeout_s,
                run_dir / "target.log",
            )
            found.root = psutil.Process(self.launched.pid)
            self.notes.append(
                f"monitor: started the target, pid {self.launched.pid}; its output "
                f"goes to {run_dir / 'target.log'}"
            )
        if found.root is not None:
            self.target = TargetSampler(
                found.root,
                self.emit,
                relocate=found.relocate,
                launched=self.launched,
                min_cpu_span_s=self.min_cpu_span_s,
            )
        self.writer = ResourceWriter(
            run_dir / "resources", dict(metadata), rotate_s=self.rotate_s
        )
        local: list[Sampler] = [
            HostSampler(min_cpu_span_s=self.min_cpu_span_s),
            self.harness,
        ]
        if self.target is not None:
            local.insert(0, self.target)
        for sampler in local:
            sampler.open()
            self._opened.append(sampler)
        self._local = local
        self._loops = [_Loop(self, "local", local)]
        self._loops += [_Loop(self, s.name, [s]) for s in self.remote]
        for loop in self._loops:
            loop.thread.start()

    def watch_workers(self, pids: Mapping[int, int | None]) -> None:
        """Sample the worker processes: shard index to pid."""
        self.harness.watch(
            {f"harness-worker-{k}": pid for k, pid in pids.items() if pid is not None}
        )

    def emit(self, kind: str, data: dict[str, object]) -> None:
        """Queue an event for the coordinator (any thread)."""
        self._events.put((kind, time.time_ns(), data))

    def events(self) -> list[MonitorEvent]:
        """The events queued since the last call."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def write(self, rows: list[Row]) -> None:
        """Hand rows to the writer; a write error stops sampling and is reported
        (an event, the manifest), never swallowed."""
        if self.writer is None or self.failed:
            return
        try:
            self.writer.add(rows)
        except Exception as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            log.error("monitor cannot write resources/: %s", self.failed)
            self.emit("monitor_failed", {"error": self.failed})
            self.stopping.set()

    def target_figures(self) -> TreeFigures | None:
        """The target tree's CPU and memory at its latest sample, if monitored."""
        return None if self.target is None else self.target.latest

    # -- the end ------------------------------------------------------------------

    def stop(self) -> None:
        """Last samples, last part, samplers closed, a started target stopped.
        Calling it again is harmless."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        for loop in self._loops:
            loop.thread.join(timeout=JOIN_TIMEOUT_S)
            if loop.thread.is_alive():
                log.warning("monitor thread %s did not stop in time", loop.thread.name)
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as exc:
                self.failed = self.failed or f"{type(exc).__name__}: {exc}"
                log.error("monitor cannot write resources/: %s", self.failed)
                self.emit("monitor_failed", {"error": self.failed})
        self._close_samplers()
        if self.launched is not None:
            target = self.settings.target
            grace_s = target.stop_grace_s if target is not None else 10.0
            code = self.launched.stop(grace_s)
            self.emit("target_stopped", {"pid": self.launched.pid, "exit_code": code})

    def _close_samplers(self) -> None:
        opened, self._opened = self._opened, []
        for sampler in opened:
            try:
                sampler.close()
            except Exception as exc:  # close the others anyway
                log.warning("closing monitor sampler %s: %s", sampler.name, exc)

    def describe(self) -> dict[str, Any]:
        """What the manifest says about the monitor (nothing secret)."""
        found = self._found
        target: dict[str, Any] | None = None
        if found is not None and found.how != "none":
            target = {"how": found.how, "auto": found.auto, **found.detail}
            if self.target is not None:
                target["pid"] = self.target.first_pid
                target["exits"] = self.target.exits
                target["restarts"] = self.target.restarts
        out: dict[str, Any] = {
            "interval_s": self.interval_s,
            "target": target,
            "samplers": [s.name for s in self._local + self.remote],
            "remote_sources": [getattr(s, "source", s.name) for s in self.remote],
        }
        if self.writer is not None:
            out["rows"] = self.writer.rows_written
            out["parts"] = len(self.writer.parts_done)
        if self.failed:
            out["error"] = self.failed
        return out
