"""The coordinator: the one process that talks to the user.

How this works
--------------
1. Create ``<out>/<run-id>/``, write ``manifest.json`` with ``status: running`` and open
   ``events.jsonl``.
2. Spawn one worker process per shard (``multiprocessing``, ``spawn`` start method),
   each with its own control pipe and one shared queue back. Wait until every worker
   has compiled its scenarios and said it is ready, then send all of them the same
   start instant, a quarter second ahead, so they begin together. A stop asked for
   before then (Ctrl-C, SIGTERM, ``harness runs stop`` as soon as the manifest
   exists) is a stop, not a failure: the handlers are in place before the first
   manifest is written, each worker is told to stop instead of being started, and
   the run ends ``interrupted`` (exit code 130) with nothing lost.
3. Until every worker is done: merge their one-second snapshots for the live view,
   write their events, watch the processes (a worker that dies is recorded with its
   exit code and the time, and the others go on), and handle signals: the first
   SIGINT or SIGTERM asks every worker to stop gracefully, a second one to stop now.
   SIGHUP (the terminal closed, an ssh connection dropped) is a graceful stop too,
   after which nothing more is printed to the terminal that is gone.
   Once a second it also looks at the free space of the run's disk: under
   ``min_free_bytes`` it stops the run gracefully (:mod:`harness.disk`).
4. Join the workers (ending any that outlive a generous deadline) and write the final
   manifest: status ``completed``, ``interrupted``, ``degraded`` (a worker was lost,
   or the disk ran low), ``aborted`` (a threshold with ``abort_on_fail`` failed
   live) or ``failed``, and the counts. A manifest or event that cannot be written
   (a full disk) is said on stderr and turns the exit code into 3; it never stops
   the workers from closing their parts.

The coordinator never reads the records; the summary after a run comes from the
``analysis`` package reading the finished Parquet files.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from . import pacing
from .abort import first_failure
from .disk import (
    DEFAULT_MIN_FREE_BYTES,
    RESERVE_NAME,
    WORKER_SHARE,
    format_size,
    free_bytes,
)
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_ERROR,
    EXIT_THRESHOLDS_FAILED,
    RunError,
    UsageError,
)
from .live import LiveView, format_target, silence
from .livestats import WindowStats
from .manifest import EventLog, describe_profile, host_info, versions, write_json_atomic
from .messages import Done, Event, Failed, Ready, Snapshot, Start, Stop, WorkerConfig
from .monitor.monitor import Monitor
from .profile.model import OpenModel, Profile
from .record import DEFAULT_FLUSH_S, DEFAULT_ROTATE_S, SCHEMA_VERSION
from .worker import worker_entry

log = logging.getLogger("harness.coordinator")

READY_TIMEOUT_S = 60.0
START_LEAD_S = 0.25
POLL_S = 0.1
OVERRUN_GRACE_S = 30.0
"""Beyond duration + graceful stop, how long workers get before an immediate stop."""
MANIFEST_PROGRESS_S = 2.0
"""How often a running run's manifest is rewritten with its live request count."""
DISK_CHECK_S = 1.0
"""How often the coordinator looks at the free space of the run's disk."""
KILL_AFTER_S = 10.0
"""After an immediate stop, how long workers get before they are killed."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    out_dir: Path
    run_id: str
    workers: int
    seed: int = 1
    progress_interval_s: float = 5.0
    time_scale: float = 1.0
    part_s: float = DEFAULT_ROTATE_S
    """Close a Parquet part this often: a killed worker loses at most this much."""
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    """Refuse to start, and stop gracefully, below this much free disk space; 0
    turns the guard off."""


@dataclass(slots=True)
class RunOutcome:
    run_dir: Path
    status: str
    exit_code: int
    rows: int
    workers_lost: list[int] = field(default_factory=list)
    cancelled: int = 0
    unsaved: int = 0
    """Rows measured but refused by the disk even at the end."""
    problems: list[str] = field(default_factory=list)
    """What the run folder lacks: a manifest or events that could not be written."""


@dataclass(slots=True)
class _Shard:
    index: int
    process: Any
    pipe: Any
    pid: int | None = None
    ready: bool = False
    done: Done | None = None
    failed: str | None = None
    exit_code: int | None = None
    exit_wall_ns: int | None = None


class Coordinator:
    def __init__(
        self,
        profile: Profile,
        options: RunOptions,
        stream: TextIO | None = None,
    ) -> None:
        if options.workers < 1:
            raise RunError(f"--workers must be 1 or more, not {options.workers}")
        self.profile = profile
        self.options = options
        self.stream = stream or sys.stdout
        self.run_dir = options.out_dir / options.run_id
        self.shards: list[_Shard] = []
        self.queue: Any = None
        """The workers' queue back; None until they are spawned."""
        self.status = "running"
        self.stop_reason = ""
        self.abort_reason = ""
        self._signals = 0
        self._hung_up = False
        self._windows: dict[int, tuple[WindowStats, int, int]] = {}
        self._next_second = 0
        self.started_wall_ns = 0
        self.view = LiveView(
            self.stream,
            profile.duration_s,
            interval_s=options.progress_interval_s,
            offered_unit="/s" if isinstance(profile.load, OpenModel) else " VUs",
        )
        self.totals = WindowStats()
        self.monitor: Monitor | None = None
        self.manifest_error = ""
        """Why the manifest could not be written last time; empty when it was."""

    # -- public -------------------------------------------------------------------

    def run(self) -> RunOutcome:
        self._check_free_space()
        if self.run_dir.exists():
            raise self._run_dir_taken()
        self._open_monitor()  # a monitor that cannot start fails before anything
        try:
            self.run_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            self._stop_monitor()
            raise self._run_dir_taken() from None
        except OSError as exc:
            self._stop_monitor()
            raise RunError(f"cannot create run folder {self.run_dir}: {exc}") from None
        self.events = EventLog(self.run_dir / "events.jsonl")
        # The handlers come before the first manifest: once the run can be seen
        # (`harness runs stop`), a stop is a stop, however early it arrives.
        previous = self._install_signal_handlers()
        try:
            self._write_manifest()
            self._start_monitor()
            if not self._signals:
                self._spawn()
                self._watch_workers()
            if self._wait_ready():
                self._start()
                self._supervise()
            else:
                self._stop_before_start()
        except KeyboardInterrupt:
            # Only where the handlers could not be installed: still the user's stop.
            self.stop_reason = "interrupted"
            self._stop_all(graceful=True, reason="interrupted")
        except BaseException as exc:
            self.status = "failed"
            self.stop_reason = f"{type(exc).__name__}: {exc}"
            self.events.write("run_failed", error=self.stop_reason)
            self._stop_all(graceful=False, reason="coordinator failed")
            raise
        finally:
            self._reap()
            self._stop_monitor()
            self._restore_signal_handlers(previous)
            self.view.close()
            self._finish()
        return self._outcome()

    # -- phases of a run ------------------------------------------------------------

    def _spawn(self) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        metadata = {
            "harness.run_id": self.options.run_id,
            "harness.profile_sha256": self.profile.source_sha256,
            "harness.version": versions()["harness"],
            "harness.schema_version": SCHEMA_VERSION,
        }
        for shard in range(self.options.workers):
            parent, child = ctx.Pipe()
            cfg = WorkerConfig(
                run_id=self.options.run_id,
                shard=shard,
                n_shards=self.options.workers,
                profile=self.profile,
                out_dir=self.run_dir,
                seed=self.options.seed,
                metadata={**metadata, "harness.worker": str(shard)},
                log_level=logging.getLogger("harness").getEffectiveLevel(),
                flush_s=min(DEFAULT_FLUSH_S, self.options.part_s / 2),
                rotate_s=self.options.part_s,
                min_free_bytes=self.options.min_free_bytes // WORKER_SHARE,
            )
            process = ctx.Process(
                target=worker_entry,
                args=(cfg, child, self.queue),
                name=f"harness-worker-{shard}",
            )
            process.start()
            child.close()
            self.shards.append(_Shard(shard, process, parent, pid=process.pid))

    def _run_dir_taken(self) -> UsageError:
        return UsageError(
            f"run folder {self.run_dir} already exists\n"
            "  fix: choose another --run-id, or remove that folder"
        )

    def _wait_ready(self) -> bool:
        """Wait until every worker is ready; False when a stop was asked for first."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self._signals:
                return False
            if all(s.ready for s in self.shards):
                return True
            self._drain(timeout_s=POLL_S)
            for s in self.shards:
                if s.failed:
                    raise RunError(f"worker {s.index} failed to start: {s.failed}")
                if not s.ready and not s.process.is_alive():
                    raise RunError(
                        f"worker {s.index} exited with code "
                        f"{s.process.exitcode} before it was ready"
                    )
            if time.monotonic() > deadline:
                raise RunError(
                    f"workers not ready after {READY_TIMEOUT_S:.0f}s; the machine "
                    "may be overloaded"
                )

    def _stop_before_start(self) -> None:
        """A stop asked for while the workers were starting: nothing was sent yet.

        Each worker is told to stop, which it reads after it is ready; it then
        closes its (empty) writer and reports ``Done``, so the run ends
        ``interrupted`` rather than ``failed``. A second signal, or workers that
        still have not ended when the start-up deadline passes, ends them at once.
        """
        self.stop_reason = "interrupted"
        reason = "hangup" if self._hung_up else "interrupted"
        self.view.message("stopping: the load had not started yet")
        self._stop_all(graceful=True, reason=reason)
        handled_signals = self._signals
        deadline = time.monotonic() + READY_TIMEOUT_S
        immediate_at: float | None = None
        while not all(self._finished(s) for s in self.shards):
            self._drain(timeout_s=POLL_S)
            self._check_processes()
            self._monitor_events()
            now = time.monotonic()
            if immediate_at is None and (
                self._signals > handled_signals or now > deadline
            ):
                self._stop_all(graceful=False, reason="interrupted")
                immediate_at = now
            if immediate_at is not None and now - immediate_at > KILL_AFTER_S:
                self._kill_remaining("did not stop in time")
                break
        self._drain(timeout_s=0)

    def _start(self) -> None:
        self.started_wall_ns = time.time_ns() + int(START_LEAD_S * 1e9)
        self._started_mono = time.monotonic() + START_LEAD_S
        for s in self.shards:
            s.pipe.send(Start(self.started_wall_ns))
        self.events.write(
            "run_start",
            self.started_wall_ns,
            run_id=self.options.run_id,
            workers=len(self.shards),
            duration_s=self.profile.duration_s,
            pids=[s.pid for s in self.shards],
        )
        self._write_manifest()

    def _supervise(self) -> None:
        duration_s = self.profile.duration_s
        overrun_at = duration_s + self.profile.graceful_stop_s + OVERRUN_GRACE_S
        immediate_at: float | None = None
        handled_signals = 0
        boundaries = self._phase_boundaries()
        abort_rules = tuple(r for r in self.profile.threshold_rules if r.abort_on_fail)
        next_progress_at = MANIFEST_PROGRESS_S
        next_disk_check_at = 0.0
        while not all(self._finished(s) for s in self.shards):
            self._drain(timeout_s=POLL_S)
            self._check_processes()
            self._monitor_events()
            self._show_windows()
            elapsed = time.monotonic() - self._started_mono
            if elapsed >= next_disk_check_at and not self.stop_reason:
                self._guard_disk(elapsed)
                next_disk_check_at = elapsed + DISK_CHECK_S
            if elapsed >= next_progress_at:
                # So that another process (`harness runs show`) can follow the run.
                self._write_manifest()
                next_progress_at = elapsed + MANIFEST_PROGRESS_S
            if abort_rules and not self.stop_reason:
                failure = first_failure(abort_rules, self.totals, elapsed)
                if failure is not None:
                    rule, observed = failure
                    why = (
                        f"threshold {rule.threshold} failed (live value {observed:.6g})"
                    )
                    self.view.message(f"aborting: {why}")
                    self.events.write(
                        "threshold_abort",
                        threshold=str(rule.threshold),
                        observed=observed,
                        elapsed_s=round(elapsed, 3),
                    )
                    self.stop_reason = "aborted"
                    self.abort_reason = why
                    self._stop_all(graceful=True, reason="aborted")
            while boundaries and boundaries[0][0] <= elapsed and not self.stop_reason:
                start_s, data = boundaries.pop(0)
                wall_ns = self.started_wall_ns + int(start_s * 1e9)
                self.events.write("phase", wall_ns, t_s=start_s, **data)
            if self._signals > handled_signals:
                handled_signals = self._signals
                if handled_signals == 1:
                    self.view.message(
                        "stopping: letting requests in flight finish "
                        f"(up to {self.profile.graceful_stop_s:g}s); "
                        "press Ctrl-C again to stop now"
                    )
                    self.stop_reason = "interrupted"
                    reason = "hangup" if self._hung_up else "interrupted"
                    self._stop_all(graceful=True, reason=reason)
                else:
                    self.view.message("stopping now")
                    self._stop_all(graceful=False, reason="interrupted")
                    immediate_at = time.monotonic()
            elapsed = time.monotonic() - self._started_mono
            if immediate_at is None and elapsed > overrun_at:
                log.warning("workers overran the run by %.0fs; stopping", elapsed)
                self.events.write("overrun", elapsed_s=round(elapsed, 3))
                self.stop_reason = "overrun"
                self._stop_all(graceful=False, reason="overrun")
                immediate_at = time.monotonic()
            if immediate_at is not None and time.monotonic() - immediate_at > (
                KILL_AFTER_S
            ):
                self._kill_remaining("did not stop in time")
        self._drain(timeout_s=0)
        self._show_windows(flush=True)

    def _check_free_space(self) -> None:
        """Refuse to start on a disk that the guard would stop at once."""
        floor = self.options.min_free_bytes
        if not floor:
            return
        free = free_bytes(self.options.out_dir)
        if free < floor:
            raise RunError(
                f"only {format_size(free)} free on the disk holding "
                f"{self.options.out_dir}; a run stops below {format_size(floor)}\n"
                "  fix: free some space, write the run elsewhere with --out, or "
                "lower the margin with --min-free-space (0 turns it off)"
            )

    def _guard_disk(self, elapsed: float) -> None:
        """Stop the run gracefully when the disk is about to fill, while the
        workers still have room to write their last rows and footers."""
        floor = self.options.min_free_bytes
        if not floor:
            return
        try:
            free = free_bytes(self.run_dir)
        except OSError:
            return
        if free >= floor:
            return
        why = (
            f"only {format_size(free)} free on the disk holding {self.run_dir} "
            f"(the run stops below {format_size(floor)})"
        )
        self.view.message(f"stopping: {why}")
        self.events.write("disk_low", free_bytes=free, min_free_bytes=floor,
                          elapsed_s=round(elapsed, 3))  # fmt: skip
        self.stop_reason = "disk_low"
        self.abort_reason = why
        self._stop_all(graceful=True, reason="disk_low")

    def _phase_boundaries(self) -> list[tuple[float, dict[str, Any]]]:
        """Start of each phase or stage, with what it asks for, in time order."""
        found: list[tuple[float, dict[str, Any]]] = []
        start_s = 0.0
        load = self.profile.load
        if isinstance(load, OpenModel):
            for i, p in enumerate(load.phases):
                name = pacing.default_name("phase", i, p.name)
                found.append(
                    (start_s, {"name": name, "rate": p.rate, "ramp_to": p.ramp_to})
                )
                start_s += p.duration_s
        else:
            for i, s in enumerate(load.stages):
                name = pacing.default_name("stage", i, s.name)
                found.append((start_s, {"name": name, "target": s.target}))
                start_s += s.duration_s
        return found

    def _finished(self, shard: _Shard) -> bool:
        return shard.exit_code is not None

    # -- messages -------------------------------------------------------------------

    def _drain(self, timeout_s: float) -> None:
        if self.queue is None:
            return  # no worker was spawned (a stop or a failure came first)
        block = timeout_s > 0
        while True:
            try:
                message = self.queue.get(block=block, timeout=timeout_s or None)
            except queue.Empty:
                return
            except (EOFError, OSError):
                return
            block = False
            self._handle(message)

    def _handle(self, message: object) -> None:
        if isinstance(message, Snapshot):
            self._on_snapshot(message)
        elif isinstance(message, Event):
            self.events.write(
                message.kind, message.wall_ns, worker=message.shard, **message.data
            )
        elif isinstance(message, Ready):
            self.shards[message.shard].ready = True
        elif isinstance(message, Done):
            self.shards[message.shard].done = message
        elif isinstance(message, Failed):
            self.shards[message.shard].failed = message.error
            self.events.write(
                "worker_failed", worker=message.shard, error=message.error
            )
            self.view.message(f"worker {message.shard} failed: {message.error}")

    def _on_snapshot(self, snap: Snapshot) -> None:
        self.totals.merge(snap.stats)
        if snap.second < self._next_second:
            return  # that second is on screen already; the totals have it
        merged, reported, vus = self._windows.get(snap.second, (WindowStats(), 0, 0))
        merged.merge(snap.stats)
        self._windows[snap.second] = (merged, reported + 1, vus + snap.active_vus)

    def _show_windows(self, flush: bool = False) -> None:
        alive = sum(1 for s in self.shards if s.exit_code is None) or 1
        while self._windows:
            second = min(self._windows)
            merged, reported, vus = self._windows[second]
            newest = max(self._windows)
            if not flush and reported < alive and newest - second < 2:
                return
            del self._windows[second]
            self._next_second = second + 1
            if second >= self.profile.duration_s and not merged.requests:
                continue  # the quiet tail after the shape's end
            t_s = second + 0.5
            self.view.window(
                second,
                merged,
                phase=pacing.phase_name_at(self.profile.load, t_s),
                offered=pacing.offered_at(self.profile.load, t_s),
                active_vus=vus,
                target=self._target_text(),
            )

    # -- processes ------------------------------------------------------------------

    def _check_processes(self) -> None:
        for s in self.shards:
            if s.exit_code is not None or s.process.is_alive():
                continue
            s.process.join(timeout=0)
            s.exit_code = s.process.exitcode
            s.exit_wall_ns = time.time_ns()
            self._drain(timeout_s=0)
            # Before the start instant there is no run time to measure from.
            elapsed = (
                (s.exit_wall_ns - self.started_wall_ns) / 1e9
                if self.started_wall_ns
                else 0.0
            )
            self.events.write(
                "worker_exit",
                s.exit_wall_ns,
                worker=s.index,
                pid=s.pid,
                exit_code=s.exit_code,
                elapsed_s=round(elapsed, 3),
                clean=s.done is not None,
            )
            if s.done is None:
                self.view.message(
                    f"worker {s.index} (pid {s.pid}) exited with code {s.exit_code} "
                    f"at {elapsed:.1f}s; the other workers go on"
                )

    def _stop_all(self, *, graceful: bool, reason: str) -> None:
        grace = self.profile.graceful_stop_s
        self.events.write("stop", graceful=graceful, reason=reason)
        for s in self.shards:
            if s.exit_code is None:
                try:
                    s.pipe.send(Stop(graceful, grace, reason))
                except (BrokenPipeError, OSError):
                    continue

    def _kill_remaining(self, why: str) -> None:
        for s in self.shards:
            if s.exit_code is None and s.process.is_alive():
                log.warning("killing worker %d (pid %s): %s", s.index, s.pid, why)
                self.events.write("worker_killed", worker=s.index, pid=s.pid, why=why)
                s.process.kill()

    def _reap(self) -> None:
        """Make sure no worker outlives the coordinator."""
        deadline = time.monotonic() + KILL_AFTER_S
        while time.monotonic() < deadline and any(
            s.process.is_alive() for s in self.shards
        ):
            # Keep reading: a worker cannot exit while its queue pipe is full.
            self._drain(timeout_s=POLL_S)
        self._kill_remaining("still running at shutdown")
        for s in self.shards:
            s.process.join(timeout=5)
            if s.exit_code is None:
                s.exit_code = s.process.exitcode
                self.events.write(
                    "worker_exit", worker=s.index, pid=s.pid, exit_code=s.exit_code
                )
        self._drain(timeout_s=0)

    # -- resource monitor -----------------------------------------------------------

    def _open_monitor(self) -> None:
        """Find the target and connect the remote samplers (MonitorError if not)."""
        settings = self.profile.monitor
        if not settings.enabled:
            return
        monitor = Monitor(settings, self.profile.target, rotate_s=self.options.part_s)
        monitor.open()
        self.monitor = monitor
        self._monitor_notes()

    def _start_monitor(self) -> None:
        """Start a target given as a command, then sampling (before the workers)."""
        if self.monitor is None:
            return
        metadata = {
            "harness.run_id": self.options.run_id,
            "harness.profile_sha256": self.profile.source_sha256,
            "harness.version": versions()["harness"],
        }
        self.monitor.start(self.run_dir, metadata)
        self._monitor_notes()
        self.events.write("monitor_start", **self.monitor.describe())

    def _watch_workers(self) -> None:
        if self.monitor is not None:
            self.monitor.watch_workers({s.index: s.pid for s in self.shards})

    def _monitor_notes(self) -> None:
        assert self.monitor is not None
        notes, self.monitor.notes = self.monitor.notes, []
        for note in notes:
            self.view.message(note)

    def _monitor_events(self) -> None:
        if self.monitor is None:
            return
        for kind, wall_ns, data in self.monitor.events():
            self.events.write(kind, wall_ns, **data)
            if kind == "target_exit":
                code = data.get("exit_code")
                survivors = data.get("survivors")
                survivors = survivors if isinstance(survivors, list) else []
                self.view.message(
                    f"target pid {data.get('pid')} exited"
                    + (f" with code {code}" if code is not None else "")
                    + (
                        f"; {len(survivors)} of its processes still run"
                        if survivors
                        else ""
                    )
                    + "; the run goes on"
                )
            elif kind == "target_restart":
                self.view.message(
                    f"target is back: pid {data.get('new_pid')} "
                    f"(was {data.get('old_pid')})"
                )
            elif kind == "monitor_failed":
                self.view.message(f"resource monitor stopped: {data.get('error')}")

    def _stop_monitor(self) -> None:
        """Last samples and the last part, before the final manifest."""
        if self.monitor is None:
            return
        self.monitor.stop()
        if getattr(self, "events", None) is not None:
            self._monitor_events()

    def _target_text(self) -> str:
        if self.monitor is None:
            return ""
        figures = self.monitor.target_figures()
        if figures is None:
            return ""
        return format_target(figures.cpu_percent, figures.rss_bytes)

    # -- signals --------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            if self._hung_up:
                return  # one hang-up is one request to stop, however it arrives
            self._hung_up = True
            _silence_terminal()
        self._signals += 1

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:
                # Not the main thread (an embedding program): it stops us via stop().
                continue
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def request_stop(self) -> None:
        """Ask for a graceful stop, as the first Ctrl-C does (thread-safe)."""
        self._signals += 1

    # -- manifest -------------------------------------------------------------------

    def _counts(self) -> dict[str, Any]:
        done = [s.done for s in self.shards if s.done is not None]
        return {
            "requests": sum(d.rows for d in done),
            "iterations": sum(d.iterations for d in done),
            "dropped": sum(d.dropped for d in done),
            "cancelled": sum(d.cancelled for d in done),
            "unsaved": sum(d.unsaved for d in done),
            "errors_live": dict(sorted(self.totals.errors.items())),
            "requests_live": self.totals.requests,
        }

    def _finish(self) -> None:
        # A killed worker could not give its reserved disk space back.
        for reserve in (self.run_dir / "requests").glob(f"worker-*/{RESERVE_NAME}"):
            reserve.unlink(missing_ok=True)
        lost = [s.index for s in self.shards if s.done is None]
        if self.status != "failed":
            if (
                lost
                or self._data_errors()
                or self.stop_reason in ("overrun", "disk_low")
            ):
                self.status = "degraded"
            elif self.stop_reason == "interrupted":
                self.status = "interrupted"
            elif self.stop_reason == "aborted":
                self.status = "aborted"
            else:
                self.status = "completed"
        self.events.write("run_end", status=self.status, workers_lost=lost)
        self._write_manifest(final=True)
        self.events.close()

    def _write_manifest(self, final: bool = False) -> None:
        shards = []
        for s in self.shards:
            entry: dict[str, Any] = {"worker": s.index, "pid": s.pid}
            if final:
                entry["exit_code"] = s.exit_code
                entry["status"] = "done" if s.done else "lost"
                if s.done is not None:
                    entry["rows"] = s.done.rows
                    entry["parts"] = [
                        os.path.relpath(p, self.run_dir) for p in s.done.parts
                    ]
                    entry["stop_reason"] = s.done.reason
                if s.failed:
                    entry["error"] = s.failed
            shards.append(entry)
        document: dict[str, Any] = {
            "run_id": self.options.run_id,
            "status": self.status,
            "coordinator_pid": os.getpid(),
            "started_at": self.started_wall_ns / 1e9 if self.started_wall_ns else None,
            "ended_at": time.time() if final else None,
            "time_scale": self.options.time_scale,
            "seed": self.options.seed,
            "workers": self.options.workers,
            # How often parts close: how far a reader of a running run lags behind.
            "part_s": self.options.part_s,
            "shards": shards,
            "profile": describe_profile(self.profile),
            "versions": versions(),
            "host": host_info(),
        }
        if self.monitor is not None:
            document["monitor"] = self.monitor.describe()
        if not final:
            document["progress"] = {
                "requests_live": self.totals.requests,
                "errors_live": dict(sorted(self.totals.errors.items())),
                "updated_at": time.time(),
            }
        if final:
            document["counts"] = self._counts()
            if self.stop_reason:
                document["stop_reason"] = self.stop_reason
            if self.abort_reason:
                document["abort_reason"] = self.abort_reason
        try:
            write_json_atomic(self.run_dir / "manifest.json", document)
        except OSError as exc:
            # The last manifest written stays in place (the write is atomic).
            if not self.manifest_error or final:
                log.error(
                    "cannot write %s (%s); it keeps its earlier content",
                    self.run_dir / "manifest.json",
                    exc,
                )
            self.manifest_error = str(exc)
        else:
            self.manifest_error = ""

    def _data_errors(self) -> list[int]:
        """Workers that stopped sending because their data file could not be read."""
        return [
            s.index
            for s in self.shards
            if s.done is not None and s.done.reason == "data_error"
        ]

    def _problems(self) -> list[str]:
        problems = []
        for index in self._data_errors():
            problems.append(
                f"worker {index} stopped starting iterations: a line of its data "
                "file could not be read (events.jsonl, data_error, says which)"
            )
        if self.manifest_error:
            problems.append(f"manifest.json not updated: {self.manifest_error}")
        if self.events.lost:
            problems.append(
                f"{self.events.lost} event(s) not written to events.jsonl: "
                f"{self.events.error}"
            )
        return problems

    def _outcome(self) -> RunOutcome:
        counts = self._counts()
        code = {
            "completed": EXIT_OK,
            "interrupted": EXIT_INTERRUPTED,
            "aborted": EXIT_THRESHOLDS_FAILED,
        }.get(self.status, EXIT_RUN_ERROR)
        if self.manifest_error or self.events.lost or counts["unsaved"]:
            # What the run folder says is incomplete: never a plain success.
            code = EXIT_RUN_ERROR if code in (EXIT_OK, EXIT_THRESHOLDS_FAILED) else code
        return RunOutcome(
            run_dir=self.run_dir,
            status=self.status,
            exit_code=code,
            rows=counts["requests"],
            workers_lost=[s.index for s in self.shards if s.done is None],
            cancelled=counts["cancelled"],
            unsaved=counts["unsaved"],
            problems=self._problems(),
        )


def _silence_terminal() -> None:
    """Send what would be printed to a terminal that hung up to /dev/null instead:
    writing to it fails (EIO), and a failed print must not stop the shutdown that
    writes the records. Output redirected to a file or a pipe is left alone."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            if stream.isatty():
                silence(stream)
