"""A worker process: one ``trio.run`` that plays one shard of the profile.

How this works
--------------
The coordinator spawns the worker with a :class:`~harness.messages.WorkerConfig`. The
worker compiles the scenarios, opens its part writer, says :class:`Ready`, and waits
for :class:`Start`, which names one wall-clock instant shared by all workers. From then
on four tasks run side by side:

* the **scheduler** turns the shard's load shape into work: VU starts and stops for
  the closed model (:func:`harness.pacing.vu_schedule`), iteration arrivals for the
  open model (:class:`harness.pacing.ArrivalSchedule`), where an arrival that finds
  every VU of the shard busy is dropped and counted, never delayed;
* the **writer** swaps the record buffer out every ``flush_s`` seconds or
  ``flush_rows`` rows and writes it as a Parquet row group in a thread; rows it
  cannot write (the disk is nearly full, :mod:`harness.disk`) go back into the
  buffer and wait for the final flush;
* the **ticker** sends one :class:`Snapshot` per second for the live view;
* the **listener** waits for :class:`Stop` from the coordinator (and SIGTERM).

Shutdown always runs in the same order: stop scheduling, let iterations (or, on a
stop request, the requests in flight) finish within the grace period, cancel what is
left (recording what was sent as ``cancelled``), flush the last rows and close the part
inside a shielded scope, then say :class:`Done`. SIGINT and SIGHUP are ignored here: the
terminal sends them to every process of the group, and the coordinator decides what
they mean.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

from . import pacing
from .client import make_client
from .client.base import Origin, make_ssl_context
from .disk import RESERVE_NAME, DiskLow, Reserve
from .feeder import Feeder, FeederError, source_summary
from .flow import (
    VU,
    Clock,
    PreparedScenario,
    Recorder,
    StopFlag,
    compile_scenario,
    run_iteration,
    scenario_picker,
)
from .livestats import WindowStats
from .messages import Done, Event, Failed, Ready, Snapshot, Start, Stop, WorkerConfig
from .profile.model import ClosedModel, OpenModel, Scenario
from .record import (
    DEFAULT_FLUSH_ROWS,
    PartWriter,
    RecordBuffer,
    rows_to_table,
    warm_up,
)

log = logging.getLogger("harness.worker")

WRITER_POLL_S = 0.2
FEED_POLL_S = 0.05
"""How often the data feeders' buffers are checked and topped up."""
SETUP_NAME = "setup"
"""Scenario and phase of the setup's records."""
GC_YOUNG_THRESHOLD = 20_000
PROFILE_ENV = "HARNESS_CPROFILE_DIR"
"""When set to a folder, each worker runs under cProfile and saves its profile there."""


def worker_entry(cfg: WorkerConfig, ctrl: Connection, out: Any) -> None:
    """Process entry point (must be importable for the ``spawn`` start method)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(
        level=cfg.log_level, format=f"%(asctime)s worker-{cfg.shard} %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    profile_dir = os.environ.get(PROFILE_ENV)
    try:
        if profile_dir:
            _run_profiled(cfg, ctrl, out, Path(profile_dir))
        else:
            trio.run(Worker(cfg, ctrl, out).main)
    except BaseException as exc:
        log.exception("worker %d failed", cfg.shard)
        out.put(Failed(cfg.shard, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    finally:
        # A worker that failed gives its reserved space back too.
        reserve = cfg.out_dir / "requests" / f"worker-{cfg.shard}" / RESERVE_NAME
        reserve.unlink(missing_ok=True)


def _run_profiled(cfg: WorkerConfig, ctrl: Connection, out: Any, folder: Path) -> None:
    """Run the worker under cProfile and save ``worker-K.prof`` in ``folder``.

    For finding where a worker's CPU goes (``python -m pstats`` or snakeviz read the
    file); profiling slows the worker down, so figures measured this way are relative.
    """
    import cProfile

    folder.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    try:
        profiler.runcall(trio.run, Worker(cfg, ctrl, out).main)
    finally:
        profiler.dump_stats(folder / f"worker-{cfg.shard}.prof")


class Worker:
    def __init__(self, cfg: WorkerConfig, ctrl: Connection, out: Any) -> None:
        self.cfg = cfg
        self.ctrl = ctrl
        self.out = out
        profile = cfg.profile
        self.profile = profile
        self.scenarios: tuple[PreparedScenario, ...] = tuple(
            compile_scenario(profile, s) for s in profile.scenarios
        )
        self.setup = (
            compile_scenario(profile, Scenario(SETUP_NAME, 1.0, profile.setup))
            if profile.setup
            else None
        )
        self.rng = random.Random(cfg.seed * 1_000_003 + cfg.shard)
        self.pick = scenario_picker(
            self.scenarios, tuple(s.weight for s in profile.scenarios), self.rng
        )
        self.base_variables = {v.name: v.value for v in profile.variables}
        self.feeders = [
            Feeder(source, cfg.shard, cfg.n_shards, cfg.seed) for source in profile.data
        ]
        self.choices = tuple(
            (v.name, v.choices) for v in profile.variables if v.choices
        )
        self.per_iteration = bool(self.feeders or self.choices)
        self.feed_lock = trio.Lock()
        self.out_of_data = False
        self.origin = Origin.parse(profile.target)
        self.ssl_context = (
            make_ssl_context(profile.http.verify_tls)
            if self.origin.scheme == "https"
            else None
        )
        warm_up()
        self.buffer = RecordBuffer()
        self.writer = PartWriter(
            cfg.out_dir / "requests" / f"worker-{cfg.shard}",
            cfg.metadata,
            rotate_s=cfg.rotate_s,
            min_free_bytes=cfg.min_free_bytes,
        )
        self.reserve = Reserve(self.writer.folder / RESERVE_NAME, cfg.min_free_bytes)
        self.write_trouble = ""
        """Why the last write was refused or failed; empty while writes succeed."""
        self.stop = StopFlag()
        self.stats = WindowStats()
        self.recorder = Recorder(cfg.shard, self.buffer, self.stats, Clock())
        self.iterations = 0
        self.dropped = 0
        self.in_flight = 0
        self.active_vus = 0
        self.vus_created = 0
        self.stop_reason = "completed"
        self.t0 = 0.0
        self.load_scope: trio.CancelScope | None = None
        self.iterations_scope: trio.CancelScope | None = None
        self.clients: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------

    async def main(self) -> None:
        # The first rows are read before Ready, so the first iterations never wait;
        # a line that cannot be read is a data_error when the load starts.
        for feeder in self.feeders:
            feeder.refill()
        self.out.put(Ready(self.cfg.shard, os.getpid()))
        message = await trio.to_thread.run_sync(self.ctrl.recv, abandon_on_cancel=True)
        if isinstance(message, Stop):
            self.writer.close()
            self.reserve.release()
            self._done("stopped before start")
            return
        assert isinstance(message, Start)
        # Everything made so far lives for the whole run: move it out of the
        # collector's sight, and collect young objects less often. Measured: the
        # collector's full passes took 15-20 % of a busy worker's CPU without this.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD)
        delay_s = (message.start_wall_ns - time.time_ns()) / 1e9
        if delay_s > 0:
            await trio.sleep(delay_s)
        self.recorder.clock = Clock()
        self.t0 = trio.current_time()
        self._event("worker_start", pid=os.getpid())
        if self.setup is not None:
            await self._run_setup(self.setup)
        async with trio.open_nursery() as helpers:
            helpers.start_soon(self._listen)
            helpers.start_soon(self._on_sigterm)
            helpers.start_soon(self._tick)
            helpers.start_soon(self._write_loop)
            if self.feeders:
                helpers.start_soon(self._feed)
            try:
                await self._run_load()
            finally:
                helpers.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await self._final_flush()
            for client in self.clients:
                with trio.move_on_after(1):
                    await client.aclose()
        self._send_snapshot(int(self._elapsed()))
        self._event("worker_stop", reason=self.stop_reason)
        self._done(self.stop_reason)

    async def _run_setup(self, setup: PreparedScenario) -> None:
        """Run the profile's setup steps once, on a VU of their own, and make what
        they captured a variable of every iteration. Their requests are recorded
        (scenario and phase ``setup``). A setup that fails is an event; the load
        still runs, and steps that need a missing capture fail as ``template``."""
        captured = dict(self.base_variables)
        vu = self._new_vu()
        now = time.perf_counter_ns()
        await run_iteration(
            vu,
            setup,
            self.base_variables,
            self.recorder,
            self.stop,
            now,
            SETUP_NAME,
            0.0,
            variables=captured,
        )
        wanted = {c.name for step in self.profile.setup for c in step.captures}
        missing = sorted(name for name in wanted if name not in captured)
        if missing:
            self._event("setup_failed", missing=missing)
            log.warning("setup did not capture %s; see the setup rows", missing)
        self.base_variables = captured

    def _done(self, reason: str) -> None:
        self.out.put(
            Done(
                shard=self.cfg.shard,
                rows=self.writer.rows_finished,
                iterations=self.iterations,
                dropped=self.dropped,
                cancelled=self.recorder.cancelled,
                parts=tuple(str(p) for p in self.writer.parts_done),
                reason=reason,
                unsaved=max(0, self.buffer.total - self.writer.rows_finished),
            )
        )

    async def _run_load(self) -> None:
        with trio.CancelScope() as self.load_scope:
            if isinstance(self.profile.load, OpenModel):
                await self._run_open(self.profile.load)
            else:
                await self._run_closed(self.profile.load)

    def request_stop(self, message: Stop) -> None:
        if not message.graceful:
            self.stop_reason = message.reason
            self.stop.set()
            if self.load_scope is not None:
                self.load_scope.cancel()
            return
        if not self.stop.stopping:
            self.stop_reason = message.reason
        self.stop.set()
        self._set_grace(message.grace_s)

    def _set_grace(self, grace_s: float) -> None:
        if self.iterations_scope is not None:
            deadline = trio.current_time() + grace_s
            self.iterations_scope.deadline = min(
                self.iterations_scope.deadline, deadline
            )

    async def _listen(self) -> None:
        while True:
            try:
                message = await trio.to_thread.run_sync(
                    self.ctrl.recv, abandon_on_cancel=True
                )
            except (EOFError, OSError):
                # The coordinator is gone: nobody will read what we measure next.
                self.request_stop(Stop(False, 0.0, "coordinator lost"))
                return
            if isinstance(message, Stop):
                self.request_stop(message)

    async def _on_sigterm(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                self.request_stop(
                    Stop(True, self.profile.graceful_stop_s, "interrupted")
                )

    # -- load models --------------------------------------------------------------

    def _elapsed(self) -> float:
        return trio.current_time() - self.t0

    async def _wait_until(self, t_s: float) -> None:
        deadline = self.t0 + t_s
        if trio.current_time() < deadline and not self.stop.stopping:
            with trio.move_on_at(deadline):
                await self.stop.event.wait()

    def _new_vu(self) -> VU:
        vu_id = self.cfg.shard + self.cfg.n_shards * self.vus_created
        self.vus_created += 1
        client = make_client(
            self.profile.http.engine, self.origin, self.profile.http, self.ssl_context
        )
        self.clients.append(client)
        return VU(vu_id, client)

    async def _run_open(self, model: OpenModel) -> None:
        cfg = self.cfg
        schedule = pacing.ArrivalSchedule(
            model.phases, cfg.shard, cfg.n_shards, model.arrivals, cfg.seed
        )
        cap = pacing.split_count(model.max_vus, cfg.shard, cfg.n_shards)
        idle: list[VU] = []
        perf_anchor = self.recorder.clock.perf_anchor_ns
        # Per phase: name, start, start rate and rate slope, so that each arrival's
        # phase and offered load cost a few operations, not a scan of the phases.
        starts = [0.0]
        for p in model.phases:
            starts.append(starts[-1] + p.duration_s)
        phases = [
            (
                pacing.default_name("phase", i, p.name),
                starts[i],
                p.rate,
                (p.end_rate - p.rate) / p.duration_s if p.duration_s > 0 else 0.0,
            )
            for i, p in enumerate(model.phases)
        ]
        async with trio.open_nursery() as iterations:
            self.iterations_scope = iterations.cancel_scope
            for t_s in schedule:
                await self._wait_until(t_s)
                if self.stop.stopping:
                    break
                if self.in_flight >= cap:
                    self.dropped += 1
                    self.stats.dropped += 1
                    continue
                variables = await self._iteration_variables()
                if variables is None:
                    break
                vu = idle.pop() if idle else self._new_vu()
                self.in_flight += 1
                self.iterations += 1
                self.stats.iterations += 1
                name, start_s, rate, slope = phases[schedule.phase_index]
                iterations.start_soon(
                    self._arrival,
                    vu,
                    self.pick(),
                    perf_anchor + int(t_s * 1e9),
                    name,
                    rate + slope * (t_s - start_s),
                    idle,
                    variables,
                )
            if not self.stop.stopping:
                await self._wait_until(model.duration_s)
            self._set_grace(self.profile.graceful_stop_s)
        self.iterations_scope = None

    async def _arrival(
        self,
        vu: VU,
        scenario: PreparedScenario,
        intended_perf_ns: int,
        phase: str,
        offered: float,
        idle: list[VU],
        variables: dict[str, str],
    ) -> None:
        self.active_vus += 1
        try:
            await run_iteration(
                vu,
                scenario,
                variables,
                self.recorder,
                self.stop,
                intended_perf_ns,
                phase,
                offered,
            )
        finally:
            self.active_vus -= 1
            self.in_flight -= 1
            vu.client.clear_cookies()
            idle.append(vu)

    async def _run_closed(self, model: ClosedModel) -> None:
        cfg = self.cfg
        schedule = pacing.vu_schedule(model.stages, cfg.shard, cfg.n_shards)
        running: list[tuple[VU, StopFlag, trio.CancelScope]] = []
        async with trio.open_nursery() as vus:
            self.iterations_scope = vus.cancel_scope
            for t_s, count in schedule:
                await self._wait_until(t_s)
                if self.stop.stopping:
                    break
                while len(running) < count:
                    vu = self._new_vu()
                    own_stop = StopFlag()
                    scope = trio.CancelScope()
                    running.append((vu, own_stop, scope))
                    vus.start_soon(self._vu_loop, vu, own_stop, scope, model)
                while len(running) > count:
                    _, own_stop, scope = running.pop()
                    own_stop.set()
                    scope.deadline = trio.current_time() + model.graceful_ramp_down_s
                self._event("vus", t_s=t_s, vus=count)
            if not self.stop.stopping:
                await self._wait_until(model.duration_s)
            for _, own_stop, _ in running:
                own_stop.set()
            self._set_grace(self.profile.graceful_stop_s)
        self.iterations_scope = None

    async def _vu_loop(
        self, vu: VU, own_stop: StopFlag, scope: trio.CancelScope, model: ClosedModel
    ) -> None:
        self.active_vus += 1
        # The stage name and VU target only change during ramps; while a stage
        # holds, reuse them rather than look them up for every iteration.
        label_from = label_until = 0.0
        phase, offered = "", 0.0
        try:
            with scope:
                while not own_stop.stopping and not self.stop.stopping:
                    variables = await self._iteration_variables()
                    if variables is None:
                        break
                    scenario = self.pick()
                    t_s = self._elapsed()
                    if not label_from <= t_s < label_until:
                        phase = pacing.phase_name_at(model, t_s)
                        offered = pacing.offered_at(model, t_s)
                        label_from, label_until = _steady_span(model, t_s)
                    self.iterations += 1
                    self.stats.iterations += 1
                    self.in_flight += 1
                    try:
                        sent = await run_iteration(
                            vu,
                            scenario,
                            variables,
                            self.recorder,
                            self.stop,
                            time.perf_counter_ns(),
                            phase,
                            offered,
                        )
                    finally:
                        self.in_flight -= 1
                    if scenario.think_s:
                        await own_stop.pause(scenario.think_s)
                    elif not sent:
                        # Nothing went out, so nothing yielded: let others run.
                        await trio.lowlevel.checkpoint()
        finally:
            self.active_vus -= 1

    # -- data feeders ----------------------------------------------------------------

    async def _iteration_variables(self) -> dict[str, str] | None:
        """The variables of a new iteration: the profile's, plus the next row of
        each data file and one draw of each list-valued variable. None once a data
        file (without ``reuse``) has no row left for this worker: from then on no
        iteration starts here, and the worker idles to the end of the load shape."""
        if not self.per_iteration:
            return self.base_variables
        if self.out_of_data:
            return None
        variables = dict(self.base_variables)
        for feeder in self.feeders:
            row = feeder.take()
            while row is None:
                # The buffer ran dry before the feed task topped it up.
                await self._refill(feeder)
                row = feeder.take()
            if not isinstance(row, tuple):
                self._data_exhausted(feeder)
                return None
            variables.update(zip(feeder.names, row, strict=True))
        for name, choices in self.choices:
            variables[name] = self.rng.choice(choices)
        return variables

    async def _refill(self, feeder: Feeder) -> None:
        async with self.feed_lock:
            if not feeder.wants_rows():
                return
            await trio.to_thread.run_sync(feeder.refill)
            if feeder.error is not None:
                self._data_error(feeder.error)

    async def _feed(self) -> None:
        """Keep every data file's buffer topped up, reading in a thread."""
        for feeder in self.feeders:
            if feeder.error is not None:
                # The first read, before the start, already met a bad line.
                self._data_error(feeder.error)
        while True:
            for feeder in self.feeders:
                if feeder.wants_rows():
                    await self._refill(feeder)
            await trio.sleep(FEED_POLL_S)

    def _data_error(self, error: FeederError) -> None:
        """A data file cannot be read past a line: say so once, as one line (its
        message names the file and the line, never a value), and end the worker
        with the reason ``data_error`` so the run is not taken for a clean one.
        Rows read before the bad line are used; then no iteration starts here."""
        log.error(
            "worker %d: %s; this worker starts no new iteration once the rows "
            "before it are used",
            self.cfg.shard,
            error,
        )
        self._event("data_error", error=str(error))
        if not self.stop.stopping:
            self.stop_reason = "data_error"

    def _data_exhausted(self, feeder: Feeder) -> None:
        if self.out_of_data:
            return
        self.out_of_data = True
        summary = source_summary(feeder.source)
        self._event("data_exhausted", rows_used=feeder.rows_taken, **summary)
        if feeder.error is not None:
            return  # said by _data_error
        shard, n_shards = self.cfg.shard, self.cfg.n_shards
        file_rows = feeder.file_rows
        short = file_rows is not None and 0 < file_rows < n_shards
        if short and not feeder.source.reuse and feeder.rows_taken == 0:
            # With reuse, an empty share wraps around instead.
            log.warning(
                "worker %d: data file %s has %d row%s for %d workers, so none is "
                "this worker's (each row goes to one worker); no iteration starts "
                "here. Give the file a row per worker at least, or set reuse: true "
                "in its data block to share rows",
                shard,
                summary["file"],
                file_rows,
                "" if file_rows == 1 else "s",
                n_shards,
            )
        elif feeder.source.reuse:
            log.warning(
                "worker %d: data file %s had no row for this worker on its last "
                "pass (did the file change during the run?); no new iteration "
                "starts here",
                shard,
                summary["file"],
            )
        else:
            log.warning(
                "worker %d: data file %s has no rows left for this worker after %d "
                "rows; no new iteration starts here (set reuse: true in its data "
                "block to start over)",
                shard,
                summary["file"],
                feeder.rows_taken,
            )

    # -- recording and reporting -------------------------------------------------

    async def _write_loop(self) -> None:
        last_flush = trio.current_time()
        while True:
            await trio.sleep(WRITER_POLL_S)
            now = trio.current_time()
            due = now - last_flush >= self.cfg.flush_s
            if due or len(self.buffer) >= DEFAULT_FLUSH_ROWS:
                last_flush = now
                rows = self.buffer.take()
                # Rows taken out of the buffer exist nowhere else: the write must
                # finish even if the worker is being stopped right now.
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(self._write_rows, rows)
                    except OSError as exc:
                        self._write_refused(rows, exc)
                    else:
                        self._write_works()

    def _write_refused(self, rows: list[tuple[Any, ...]], exc: OSError) -> None:
        """Keep the rows for a later write and say so once per spell of trouble."""
        self.buffer.put_back(rows)
        if not self.write_trouble:
            kind = "disk_low" if isinstance(exc, DiskLow) else "write_failed"
            log.warning(
                "worker %d: %s; keeping %d rows in memory until it can write",
                self.cfg.shard,
                exc,
                len(rows),
            )
            self._event(kind, error=str(exc), rows_held=len(rows))
        self.write_trouble = str(exc)

    def _write_works(self) -> None:
        if self.write_trouble:
            self._event("write_resumed", rows_held=0)
            self.write_trouble = ""

    def _write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Runs in a thread: encode and write one row group (or rotate if due)."""
        if rows:
            self.writer.write(rows_to_table(rows))
        else:
            self.writer.rotate_if_due()

    async def _final_flush(self) -> None:
        rows = self.buffer.take()
        if not self.write_trouble:
            try:
                await trio.to_thread.run_sync(self._write_rows, rows)
                await trio.to_thread.run_sync(self.writer.close)
                self.reserve.release()
                return
            except OSError as exc:
                self._write_refused(rows, exc)
                rows = self.buffer.take()
        # The disk is (nearly) full. Give back the space set aside at the start,
        # close the part in progress, so that whatever happens to the last rows
        # the rows already written stay readable, then write the rows held back.
        self.reserve.release()
        try:
            await trio.to_thread.run_sync(self.writer.close_part)
            await trio.to_thread.run_sync(self._write_last, rows)
        except OSError as exc:
            log.error(
                "worker %d: %d rows could not be written (%s); the parts finished "
                "before hold the rest",
                self.cfg.shard,
                len(rows),
                exc,
            )
            self._event("rows_unsaved", rows=len(rows), error=str(exc))
        else:
            self._event("write_resumed", rows_held=0)

    def _write_last(self, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.writer.write(rows_to_table(rows), keep_margin=False)
        self.writer.close()

    async def _tick(self) -> None:
        second = 0
        while True:
            second += 1
            await trio.sleep_until(self.t0 + second)
            self._send_snapshot(second - 1)
            if self.stats.dropped:
                self._event("drops", second=second - 1, count=self.stats.dropped)
            self.stats = WindowStats()
            self.recorder.stats = self.stats

    def _send_snapshot(self, second: int) -> None:
        self.out.put(
            Snapshot(
                self.cfg.shard,
                max(second, 0),
                self.stats,
                self.active_vus,
                self.in_flight,
            )
        )

    def _event(self, kind: str, **data: Any) -> None:
        self.out.put(Event(self.cfg.shard, kind, time.time_ns(), data))


def _steady_span(model: ClosedModel, t_s: float) -> tuple[float, float]:
    """Where the stage around ``t_s`` holds its VU count: that stage's span;
    during a ramp an empty span, so the caller looks again next time."""
    start_s = 0.0
    previous = 0
    for stage in model.stages:
        end_s = start_s + stage.duration_s
        if t_s < end_s:
            return (start_s, end_s) if stage.target == previous else (0.0, 0.0)
        start_s, previous = end_s, stage.target
    return 0.0, 0.0
