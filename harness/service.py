"""Runs as a service: start one in the background, follow it, stop it, read its results.

How this works
--------------
:func:`start` launches ``harness run`` as a child process in its own session, with its
output in ``<out>/.logs/<run-id>.log``, and returns once the run folder's manifest
exists (or raises with the child's last words if it could not start: a bad profile is
a :class:`~harness.errors.ProfileError`-like failure with exit code 2). The run then
belongs to nobody: it survives the program that started it, as a run started from a
terminal does, and anything that can read the run folder can follow it.

Everything else works from the run folder alone, so it works from another terminal,
another program, or after a restart:

* :func:`status` reads ``manifest.json``; a manifest that still says ``running``
  while its coordinator process is gone is reported as ``lost``. A lost run never
  wrote its final counts, so its request count is the rows of its finished parts
  (read from their footers), and its elapsed time ends at the last thing known of it:
  the manifest's last live count or its newest finished part, whichever is later.
* :func:`stop` sends SIGTERM to the coordinator named in the manifest, which is the
  first Ctrl-C: scheduling stops, requests in flight finish, every part is closed and
  the manifest says ``interrupted``. Before signalling, the process is checked to be
  that coordinator (its start time and command line), so a recycled pid is never hit.
* :func:`results` computes the figures from the Parquet records and the monitor's
  samples (nothing is estimated): totals, error rate, mean, p95 and p99, throughput,
  per-scenario figures, and the system metrics that were measured. Only finished
  parts can be read, and a part closes every ``--part-seconds`` (60 s by default):
  while a run goes (and for a lost run) the figures cover the parts closed so far
  and lag the run by up to that much. The result says so (``final``, ``records``:
  how many rows and up to when, ``note``) and carries the manifest's live count
  (``live``, rewritten every 2 s), which ``harness runs show`` prints beside them.
* :func:`list_runs` lists the run folders under ``out``, newest first.

A program that starts runs this way needs no ``if __name__ == "__main__"`` guard:
the workers belong to the child, not to the caller.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .errors import HarnessError, RunError, UsageError

DEFAULT_OUT = Path("runs")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
_POLL_S = 0.1
_PID_CLOCK_SLACK_S = 2.0
"""A coordinator's process may be created a little before the manifest's start
time, never after it; this much slack covers the clock's coarseness."""


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Runs this process started and has not yet seen end: polled by :func:`status`,
so none is left a zombie or dropped while its exit is still unread."""


def _reap_children() -> None:
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid]


class RunNotFoundError(UsageError):
    """No run folder of that id (exit code 2)."""


class StartError(HarnessError):
    """A background run did not start; the message holds its last output."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class RunHandle:
    """A run started by :func:`start`."""

    run_id: str
    run_dir: Path
    pid: int
    """The ``harness run`` process (the coordinator)."""
    log: Path

    def status(self) -> RunStatus:
        return status(self.run_dir)

    def wait(self, timeout_s: float | None = None) -> RunStatus:
        """Block until the run has ended (or ``timeout_s`` passed); its status."""
        return wait(self.run_dir, timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> RunStatus:
        return stop(self.run_dir, timeout_s=timeout_s)

    def results(self) -> dict[str, Any]:
        return results(self.run_dir)


@dataclass(frozen=True, slots=True)
class RunStatus:
    """Where a run stands, from its manifest."""

    run_id: str
    run_dir: Path
    status: str
    """``running``, ``completed``, ``interrupted``, ``degraded``, ``aborted``,
    ``failed``, or ``lost`` (the manifest says running, its process is gone)."""
    profile: str
    target: str
    started_at: float | None
    ended_at: float | None
    elapsed_s: float | None
    duration_s: float | None
    """The planned length of the load."""
    requests: int
    """Requests recorded; while the run goes, the live count (every 2 s); for a
    lost run, the rows in its finished parts."""
    coordinator_pid: int | None
    abort_reason: str = ""
    stop_reason: str = ""
    """Why the run ended before its shape did: ``interrupted``, ``aborted``,
    ``disk_low``, ``overrun``; for a ``failed`` run, the error."""
    requests_live: int | None = None
    """The live count of the manifest's last progress (a running or lost run)."""
    errors_live: dict[str, int] = field(default_factory=dict)
    """Errors by kind in that live count."""
    progress_at: float | None = None
    """When that live count was written (epoch seconds)."""
    last_seen_at: float | None = None
    """A lost run: the last time it was known to be going (epoch seconds)."""
    part_s: float | None = None
    """How often the run closes a Parquet part (None for runs that did not say)."""

    @property
    def running(self) -> bool:
        return self.status == "running"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


@dataclass(frozen=True, slots=True)
class _Figures:
    requests: int = 0
    successful: int = 0
    failed: int = 0
    mean_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def start(
    profile: str | os.PathLike[str],
    *,
    target: str | None = None,
    workers: int | None = None,
    time_scale: float = 1.0,
    duration: str | None = None,
    out: str | os.PathLike[str] = DEFAULT_OUT,
    run_id: str | None = None,
    seed: int = 1,
    report: bool = True,
    extra_args: Sequence[str] = (),
    start_timeout_s: float = START_TIMEOUT_S,
) -> RunHandle:
    """Start ``harness run PROFILE`` in the background and return its handle once
    the run folder exists.

    The options are those of ``harness run``; ``extra_args`` passes any other
    (``["--monitor-port", "8080"]``). Raises :class:`StartError` with the run's
    own message when it stops before starting (a bad profile: exit code 2).
    """
    out_dir = Path(out)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    if "/" in run_id or run_id in (".", ".."):
        raise UsageError(f"run id {run_id!r} must be a plain folder name")
    run_dir = out_dir / run_id
    if run_dir.exists():
        raise UsageError(f"run folder {run_dir} already exists; choose another run id")
    args = [sys.executable, "-m", "harness", "run", os.fspath(profile)]
    args += ["--out", str(out_dir), "--run-id", run_id, "--seed", str(seed)]
    args += ["--time-scale", repr(float(time_scale))]
    if target is not None:
        args += ["--target", target]
    if workers is not None:
        args += ["--workers", str(workers)]
    if duration is not None:
        args += ["--duration", duration]
    if not report:
        args.append("--no-report")
    args += list(extra_args)
    logs = out_dir / ".logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{run_id}.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    deadline = time.monotonic() + start_timeout_s
    manifest = run_dir / "manifest.json"
    while not manifest.exists():
        code = child.poll()
        if code is not None:
            _CHILDREN.pop(child.pid, None)
            tail = _tail(log_path)
            raise StartError(
                f"the run did not start (exit code {code}):\n{tail}", code or 3
            )
        if time.monotonic() > deadline:
            child.terminate()
            child.wait()
            _CHILDREN.pop(child.pid, None)
            raise StartError(
                f"the run did not start within {start_timeout_s:g} s; its output is "
                f"in {log_path}",
                3,
            )
        time.sleep(_POLL_S)
    return RunHandle(run_id, run_dir, child.pid, log_path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def resolve(
    run: str | os.PathLike[str], out: str | os.PathLike[str] = DEFAULT_OUT
) -> Path:
    """A run folder from an id (looked up under ``out``) or a path."""
    given = Path(run)
    for candidate in (given, Path(out) / given):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise RunNotFoundError(
        f"no run {os.fspath(run)!r}: neither {given} nor {Path(out) / given} holds a "
        "manifest.json; `harness runs list` shows the runs (use --out for another "
        "folder)"
    )


def _manifest(run_dir: Path) -> dict[str, Any]:
    # The coordinator replaces the manifest atomically, so a read sees one version.
    with open(run_dir / "manifest.json", encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise RunError(f"{run_dir / 'manifest.json'} is not a JSON object")
    return data


def _is_coordinator(pid: int, started_at: float | None) -> bool:
    """Whether ``pid`` is still the harness process that wrote the manifest."""
    try:
        process = psutil.Process(pid)
        created = process.create_time()
        command = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if started_at is not None and created > started_at + _PID_CLOCK_SLACK_S:
        return False  # a newer process got the same pid
    return "harness" in command


def status(
    run: str | os.PathLike[str], out: str | os.PathLike[str] = DEFAULT_OUT
) -> RunStatus:
    """The run's status from its manifest (see :class:`RunStatus`)."""
    _reap_children()
    run_dir = resolve(run, out)
    m = _manifest(run_dir)
    state = str(m.get("status", "unknown"))
    pid = m.get("coordinator_pid")
    started = m.get("started_at")
    ended = m.get("ended_at")
    if state == "running" and (
        not isinstance(pid, int) or not _is_coordinator(pid, started)
    ):
        state = "lost"
    counts = m.get("counts") or {}
    progress = m.get("progress") or {}
    live = progress.get("requests_live")
    live = live if isinstance(live, int) else None
    progress_at = _number(progress.get("updated_at"))
    last_seen: float | None = None
    if "requests" in counts:
        requests = counts["requests"]  # the final count: the run has ended
    elif state == "lost":
        # Nobody will write the final count: the rows on disk are what was kept.
        requests, _, newest = _on_disk(run_dir)
        known = [t for t in (progress_at, newest) if t is not None]
        last_seen = max(known) if known else _mtime(run_dir / "manifest.json")
    else:
        requests = live or 0
    end = _number(ended)
    if end is None:
        end = last_seen if state == "lost" else time.time()
    elapsed = (
        None if not isinstance(started, int | float) or end is None else (end - started)
    )
    profile = m.get("profile") or {}
    errors_live = progress.get("errors_live") or {}
    return RunStatus(
        run_id=str(m.get("run_id") or run_dir.name),
        run_dir=run_dir,
        status=state,
        profile=str(profile.get("name", "")),
        target=str(profile.get("target", "")),
        started_at=started if isinstance(started, int | float) else None,
        ended_at=ended if isinstance(ended, int | float) else None,
        elapsed_s=None if elapsed is None else max(0.0, elapsed),
        duration_s=profile.get("duration_s"),
        requests=int(requests),
        coordinator_pid=pid if isinstance(pid, int) else None,
        abort_reason=str(m.get("abort_reason") or ""),
        stop_reason=str(m.get("stop_reason") or ""),
        requests_live=live,
        errors_live={str(k): int(v) for k, v in errors_live.items()},
        progress_at=progress_at,
        last_seen_at=last_seen,
        part_s=_number(m.get("part_s")),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _on_disk(run_dir: Path) -> tuple[int, int, float | None]:
    """Rows and number of the finished request parts (from their footers), and
    when the newest finished part, of requests or resources, was written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from analysis.dataset import finished_parts

    rows = 0
    parts = finished_parts(run_dir / "requests")
    for part in parts:
        try:
            rows += pq.read_metadata(part).num_rows
        except (OSError, pa.ArrowException):
            continue  # not a readable part: analysis skips it too
    times = [
        t
        for t in map(_mtime, [*parts, *finished_parts(run_dir / "resources")])
        if t is not None
    ]
    return rows, len(parts), max(times) if times else None


def wait(
    run: str | os.PathLike[str],
    timeout_s: float | None = None,
    out: str | os.PathLike[str] = DEFAULT_OUT,
) -> RunStatus:
    """Poll the run until it is no longer running, or until ``timeout_s``."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        now = status(run, out)
        if not now.running:
            return now
        if deadline is not None and time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def stop(
    run: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] = DEFAULT_OUT,
    timeout_s: float = STOP_TIMEOUT_S,
) -> RunStatus:
    """Stop a running run gracefully (SIGTERM to its coordinator) and wait until
    its manifest says it ended. Stopping a run that has ended changes nothing."""
    now = status(run, out)
    if not now.running:
        return now
    assert now.coordinator_pid is not None
    try:
        os.kill(now.coordinator_pid, signal.SIGTERM)
    except ProcessLookupError:
        return status(run, out)
    final = wait(now.run_dir, timeout_s)
    if final.running:
        raise RunError(
            f"run {now.run_id} is still stopping after {timeout_s:g} s (requests in "
            f"flight finish first); check again with `harness runs show {now.run_id}`"
        )
    return final


def list_runs(out: str | os.PathLike[str] = DEFAULT_OUT) -> list[RunStatus]:
    """Every run folder under ``out``, newest first."""
    folder = Path(out)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        if child.name.startswith(".") or not (child / "manifest.json").is_file():
            continue
        try:
            found.append(status(child, out))
        except (OSError, ValueError, RunError):
            continue  # a manifest being replaced or damaged: skip, never fail the list
    return sorted(found, key=lambda s: s.started_at or 0.0, reverse=True)


def results(
    run: str | os.PathLike[str], out: str | os.PathLike[str] = DEFAULT_OUT
) -> dict[str, Any]:
    """The run's figures, computed from its records and resource samples.

    Keys: ``run`` (the status), ``total_requests``, ``successful_requests``,
    ``failed_requests``, ``error_rate``, ``average_response_time_ms``,
    ``p95_response_time_ms``, ``p99_response_time_ms``, ``throughput_rps``,
    ``duration_s``, ``scenarios`` (the same per scenario), ``errors`` (by kind) and
    ``system`` (the measured resources, or None without samples). Response times
    are service times (``latency_ns``).

    Where the figures come from: ``final`` is False while the run goes and for a
    lost run, whose figures cover only the parts closed so far; ``records`` holds
    ``rows``, ``parts`` and ``up_to_s`` (how far into the run the newest of those
    rows reaches, None without rows); ``live`` holds the manifest's live count
    (``requests``, ``errors`` by kind, ``updated_at`` in epoch seconds), or None
    when the run has ended; ``note`` says all this in a sentence (empty when
    ``final``).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from analysis.dataset import DamagedPart, RunUnreadable, open_run

    run_dir = resolve(run, out)
    try:
        handle = open_run(run_dir)
        table = handle.requests_table(
            columns=["scenario", "error", "start_ns", "latency_ns"]
        )
    except (RunUnreadable, DamagedPart) as exc:
        # A damaged manifest or part: say which file, as harness report does.
        raise UsageError(str(exc)) from None
    now = status(run_dir, out)
    out_dict: dict[str, Any] = {"run": now.as_dict()}
    start = table.column("start_ns").to_numpy()
    latency = table.column("latency_ns").to_numpy()
    last_end_s = int((start + latency).max()) / 1e9 if table.num_rows else None
    parts = len(handle.request_parts())
    out_dict.update(_provenance(now, table.num_rows, parts, last_end_s))
    if table.num_rows == 0:
        out_dict.update(_figures_dict(_Figures(), None))
        out_dict.update({"scenarios": {}, "errors": {}, "system": _system(handle)})
        return out_dict
    span_s = (int((start + latency).max()) - int(start.min())) / 1e9
    failed = table.column("error").is_valid().to_numpy(zero_copy_only=False)
    scenario = table.column("scenario").to_pandas().astype(str).to_numpy()

    def figures(mask: np.ndarray) -> _Figures:
        ms = latency[mask] / 1e6
        n = int(mask.sum())
        bad = int(failed[mask].sum())
        return _Figures(
            requests=n,
            successful=n - bad,
            failed=bad,
            mean_ms=float(ms.mean()) if n else None,
            p95_ms=float(np.quantile(ms, 0.95)) if n else None,
            p99_ms=float(np.quantile(ms, 0.99)) if n else None,
        )

    everything = np.ones(len(latency), dtype=bool)
    out_dict.update(_figures_dict(figures(everything), span_s))
    out_dict["duration_s"] = span_s
    out_dict["scenarios"] = {
        name: _figures_dict(figures(scenario == name), span_s)
        for name in sorted(set(scenario.tolist()))
    }
    errors = table.column("error").drop_null().cast(pa.string())
    out_dict["errors"] = {
        str(item["values"]): int(item["counts"])
        for item in pc.value_counts(errors).to_pylist()
    }
    out_dict["system"] = _system(handle)
    return out_dict


def _provenance(
    now: RunStatus, rows: int, parts: int, last_end_s: float | None
) -> dict[str, Any]:
    """``final``, ``records``, ``live`` and ``note`` of :func:`results`."""
    final = now.status not in ("running", "lost")
    up_to_s = None
    if last_end_s is not None and now.started_at is not None:
        up_to_s = max(0.0, last_end_s - now.started_at)
    records = {"rows": rows, "parts": parts, "up_to_s": up_to_s}
    live = None
    if not final and now.requests_live is not None:
        live = {
            "requests": now.requests_live,
            "errors": dict(now.errors_live),
            "updated_at": now.progress_at,
        }
    return {
        "final": final,
        "records": records,
        "live": live,
        "note": "" if final else _partial_note(now, records, live),
    }


def _partial_note(
    now: RunStatus, records: dict[str, Any], live: dict[str, Any] | None
) -> str:
    """One sentence: where the figures of a run that has not ended come from."""
    lost = now.status == "lost"
    rows, parts, up_to_s = records["rows"], records["parts"], records["up_to_s"]
    closed = "it closed" if lost else "closed so far"
    if rows:
        reach = "" if up_to_s is None else f", up to {up_to_s:.0f} s into the run"
        source = (
            f"these figures come from the {rows} requests in the {parts} "
            f"part(s) {closed}{reach}"
        )
    elif lost:
        source = "it closed no part, so there are no figures from the records"
    else:
        source = "no part has closed yet, so there are no figures from the records"
    if lost:
        text = (
            "the run is lost (its coordinator is gone and wrote no final counts): "
            f"{source}; requests in parts still open when it stopped are not on disk"
        )
    else:
        every = "--part-seconds" if now.part_s is None else f"{now.part_s:g} s"
        text = f"the run is still going: {source} (a part closes every {every})"
    if live is not None:
        errors = sum(live["errors"].values())
        when = ""
        if live["updated_at"] is not None and now.started_at is not None:
            when = f" at {max(0.0, live['updated_at'] - now.started_at):.0f} s"
        label = "last live count" if lost else "live count"
        text += f"; {label}{when}: {live['requests']} requests, {errors} errors"
    return text


def _figures_dict(f: _Figures, span_s: float | None) -> dict[str, Any]:
    return {
        "total_requests": f.requests,
        "successful_requests": f.successful,
        "failed_requests": f.failed,
        "error_rate": f.failed / f.requests if f.requests else None,
        "average_response_time_ms": f.mean_ms,
        "p95_response_time_ms": f.p95_ms,
        "p99_response_time_ms": f.p99_ms,
        "throughput_rps": f.requests / span_s if span_s else None,
    }


def _system(run: Any) -> dict[str, Any] | None:
    """The measured resources: the target's tree summed per sample, the host, and
    the databases and caches that were sampled. None when nothing was sampled."""
    frame = run.resources()
    if frame.empty or "source" not in frame:
        return None
    source = frame["source"].astype(str)
    out: dict[str, Any] = {"samples": len(frame)}
    target = frame[source == "target"]
    if not target.empty:
        per = target.groupby("time_ns")[["cpu_percent", "rss_bytes"]].sum(min_count=1)
        out["target"] = {
            "cpu_percent_mean": _clean(per["cpu_percent"].mean()),
            "cpu_percent_max": _clean(per["cpu_percent"].max()),
            "rss_bytes_max": _clean(per["rss_bytes"].max()),
            "rss_bytes_last": _clean(per["rss_bytes"].dropna().iloc[-1])
            if per["rss_bytes"].notna().any()
            else None,
        }
    for name, columns in (
        ("host", ("host_cpu_percent", "host_mem_available_bytes", "load1")),
        ("postgres", ("db_connections", "db_query_max_ms", "db_cache_hit_ratio")),
        ("redis", ("redis_connections", "redis_used_memory_pct", "redis_hit_rate")),
    ):
        rows = frame[source == name]
        present = [c for c in columns if c in rows and rows[c].notna().any()]
        if rows.empty or not present:
            continue
        out[name] = {f"{c}_max": _clean(rows[c].max()) for c in present} | {
            f"{c}_mean": _clean(rows[c].mean()) for c in present
        }
    return out


def _clean(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN -> None


__all__ = [
    "RunHandle",
    "RunNotFoundError",
    "RunStatus",
    "StartError",
    "list_runs",
    "resolve",
    "results",
    "start",
    "status",
    "stop",
    "wait",
]
