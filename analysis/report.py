"""The run report: ``report/index.html``, ``summary.json`` and ``junit.xml``.

How this works
--------------
:func:`build_report` reads a run directory once per kind of figure and keeps
everything it found in a :class:`Report`:

1. per-endpoint windows and whole-run figures in one pass
   (:func:`analysis.windows.aggregate`, exact quantiles), and windows over every
   endpoint;
2. one streaming pass over ``start_ns``, ``latency_ns`` and ``offered`` for the
   latency heatmap and the mean offered load of each window (the heatmap's
   latency bins are log-spaced between the run's fastest and slowest request);
3. the thresholds and SLOs declared in the manifest, judged on the records
   (:mod:`analysis.thresholds`, :mod:`analysis.slo`);
4. the monitor's samples, when ``resources/`` holds some;
5. the records themselves against the manifest: the parts and the request count
   it lists against what is on disk (:func:`records_check`), and the run's
   status, so that a run with records missing, or one that did not complete, is
   never reported as passed (:func:`fails_check`);
6. the status codes per endpoint, in one more streaming pass.

A finished part whose Parquet footer cannot be read is skipped with a warning
naming it; the report is made from the intact parts and counts the damaged one's
records as missing.

:func:`write_report` then writes three files. ``summary.json`` holds every figure
the HTML shows (the tables, the verdicts, and the window series the plots draw), so
a CI job or a notebook never has to scrape the page. ``index.html``
(:mod:`analysis.page`) is a single file with the plots embedded as PNG, no script
and no external link, so it can be attached to a ticket or opened from an artefact
store. ``junit.xml`` (:mod:`analysis.junit`) holds one test case per threshold and
SLO entry, and one for the run's own status.

The window length is chosen from the run's span (about 200 windows, at least one
second) unless given.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import math
import os
import socket
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from . import __version__, detect, plots, windows
from .dataset import DamagedPart, PartCheck, Run, finished_parts, open_run, part_rows
from .junit import render_junit
from .page import records_missing_text, render_html
from .slo import SloVerdict, evaluate_slos, parse_slos
from .thresholds import Verdict, evaluate

log = logging.getLogger("analysis.report")

FORMAT_VERSION = 1
"""Version of the ``summary.json`` layout; a change that removes or renames a
field raises it."""

TARGET_WINDOWS = 200
"""About how many windows the automatic window length gives."""
_NICE_WINDOWS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
HEATMAP_LATENCY_BINS = 60
QUANTILES = (0.5, 0.9, 0.95, 0.99)
_NOTABLE_EVENTS = {
    "worker_exit",
    "threshold_abort",
    "overrun",
    "drops",
    "target_exit",
    "target_restart",
    "monitor_sampler_error",
    "monitor_sampler_recovered",
    "monitor_failed",
    "stop",
}
"""Events listed in the report: anything that explains odd figures."""


_BATCH_ROWS = 1 << 20


def _batches(run: Run, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The run's rows, a part at a time and a batch at a time.

    Not a dataset scanner: its read-ahead runs far ahead of a consumer that does
    work per batch (measured over 10^8 rows: 2.1 GB peak against 0.3 GB this way)."""
    for path in run.request_parts():
        with pq.ParquetFile(path) as part:
            yield from part.iter_batches(batch_size=_BATCH_ROWS, columns=columns)


class ReportError(ValueError):
    """The report cannot be made; the message says why and what to do."""


class ReportWriteError(ReportError):
    """The report's folder cannot be created or written to."""

    def __init__(self, folder: Path, exc: OSError) -> None:
        self.folder = folder
        why = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        super().__init__(
            f"cannot write the report into {folder}: {why}{where}; choose another "
            "--out (a folder you can write to)"
        )


def window_length_s(span_s: float) -> int:
    """The shortest round window length giving at most about
    :data:`TARGET_WINDOWS` windows over ``span_s`` seconds."""
    for length in _NICE_WINDOWS_S:
        if span_s / length <= TARGET_WINDOWS:
            return length
    return _NICE_WINDOWS_S[-1]


@dataclass
class Report:
    """Everything a report shows, computed from one run."""

    run: Run
    every_s: int
    summary: dict[str, Any]
    """What ``summary.json`` holds."""
    figures: list[tuple[str, str, Figure]] = field(default_factory=list)
    """(file stem, caption, figure), in the order the HTML shows them."""
    threshold_verdicts: list[Verdict] = field(default_factory=list)
    slo_verdicts: list[SloVerdict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when a threshold or SLO entry failed."""
        return any(v.passed is False for v in self.threshold_verdicts) or any(
            v.passed is False for v in self.slo_verdicts
        )


@dataclass(frozen=True, slots=True)
class ReportFiles:
    folder: Path
    html: Path
    summary_json: Path
    junit_xml: Path


# -- building -------------------------------------------------------------------


def build_report(source: Run | str | Path, *, every: str | None = None) -> Report:
    """Compute the report of a run (finished, or still being written).

    Damaged parts (a Parquet footer that cannot be read) are left out with a
    warning; ``summary["records"]`` says what the manifest lists, what was found
    and what is missing (:func:`records_check`)."""
    run = source if isinstance(source, Run) else open_run(source)
    manifest = run.manifest
    parts = run.check_parts()
    for path, problem in parts.damaged.items():
        log.warning(
            "skipping damaged part %s (%s); the report is made from the other parts "
            "and counts its records as missing",
            path,
            problem,
        )
    damaged_samples = _damaged_resource_parts(run)
    if parts.damaged or damaged_samples:
        run = run.without_parts([*parts.damaged, *damaged_samples])
    status = run_status(manifest)
    records = records_check(run, parts, status)
    bounds = _Bounds.of(run)
    run_start_ns = _run_start_ns(manifest, bounds.first_start_ns)
    run_end_ns = _run_end_ns(manifest, bounds.last_end_ns, run_start_ns)
    span_s = max(1e-9, (run_end_ns - run_start_ns) / 1e9)
    every_s = _whole_seconds(every) if every else window_length_s(span_s)
    every_text = f"{every_s}s"

    by = ("method", "endpoint")
    agg = windows.aggregate(
        run, every_text, by=by, quantiles=QUANTILES, total=True, total_windows=True
    )
    per_endpoint = agg.windows.copy()
    per_endpoint["label"] = _labels(per_endpoint)
    whole = agg.overall
    assert agg.total_windows is not None
    total = agg.total_windows
    heat, offered, statuses = _stream_pass(run, every_s, bounds)
    axis = plots.TimeAxis.for_span(run_start_ns, span_s)
    phases = _phases(run, run_start_ns, run_end_ns)
    offered_label = _offered_label(manifest)

    threshold_verdicts = evaluate(run) if _thresholds(manifest) else []
    slo_block = manifest.get("profile", {}).get("slos")
    slo_verdicts = evaluate_slos(run, parse_slos(slo_block)) if slo_block else []
    resources = run.resources()
    target_res, harness_res = _resource_series(resources)
    findings = _findings(run, every_text, total)

    endpoints = _endpoint_rows(whole, statuses)
    order = [
        f"{r['method']} {r['endpoint']}" for r in endpoints if r["method"] != "ALL"
    ]
    summary: dict[str, Any] = {
        "format": "harness-report",
        "format_version": FORMAT_VERSION,
        "generated_at": _iso(dt.datetime.now(dt.UTC).timestamp()),
        "generated_by": f"analysis {__version__}",
        "run": _run_block(run, run_start_ns, run_end_ns, status),
        "verdict": _verdict(threshold_verdicts, slo_verdicts, status, records),
        "incomplete_reasons": _incomplete_reasons(run, status, records),
        "records": records,
        "thresholds": [_threshold_json(v) for v in threshold_verdicts],
        "slos": [_slo_json(v) for v in slo_verdicts],
        "findings": findings,
        "totals": next((r for r in endpoints if r["method"] == "ALL"), None),
        "endpoints": [r for r in endpoints if r["method"] != "ALL"],
        "errors": _errors(whole),
        "phases": [
            {"name": p.name, "start_s": p.start_s, "end_s": p.end_s} for p in phases
        ],
        "events": _notable_events(run),
        "resources": _resource_summary(target_res, harness_res, resources),
        "windows": {
            "every_s": every_s,
            "total": _window_rows(total, offered, run_start_ns),
            "endpoints": {
                name: _window_rows(
                    per_endpoint[per_endpoint["label"] == name], None, run_start_ns
                )
                for name in order
            },
        },
    }
    report = Report(run, every_s, summary, [], threshold_verdicts, slo_verdicts)
    if table_has_rows(whole):
        report.figures.append(
            (
                "latency",
                "Service time p50, p95 and p99 per endpoint in each window; the dashed "
                "line is the p99 measured from each request's intended start, which "
                "includes any wait for the load generator.",
                plots.latency_over_time(per_endpoint, order, axis, phases),
            )
        )
        report.figures.append(
            (
                "throughput",
                "Requests per second, successful and failed, and errors per second by "
                "kind; shaded bands are the load's phases.",
                plots.throughput_and_errors(
                    total, axis, phases, offered, offered_label
                ),
            )
        )
        if heat is not None:
            report.figures.append(
                (
                    "heatmap",
                    "How many requests fell in each service-time band in each window.",
                    plots.latency_heatmap(heat, axis),
                )
            )
        points = _load_points(total, offered)
        if len(points) >= 2:
            report.figures.append(
                (
                    "load",
                    "One point per window: where goodput stops rising with the "
                    "offered load and latency turns up, the service is at its limit.",
                    plots.latency_against_load(
                        points, offered_label, quantile_column="response_p95_ms"
                    ),
                )
            )
    if not target_res.empty or not harness_res.empty:
        report.figures.append(
            (
                "resources",
                "CPU and resident memory of the target's process tree, summed per "
                "sample, and the CPU of the harness's own processes.",
                plots.resources_over_time(target_res, harness_res, axis, phases),
            )
        )
    summary["plots"] = [
        {"file": f"{stem}.png", "caption": caption}
        for stem, caption, _ in report.figures
    ]
    return report


def _whole_seconds(every: str) -> int:
    """The report's window length: whole seconds, one or more."""
    try:
        every_ns = windows.parse_every(every)
    except windows.WindowSpecError:
        every_ns = 0
    if every_ns < 10**9 or every_ns % 10**9:
        raise ReportError(
            f"--every {every!r}: the report's windows are whole seconds, one or "
            "more: e.g. 1s, 10s or 1min"
        )
    return every_ns // 10**9


def _findings(run: Run, every: str, total: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """What the detectors say (:mod:`analysis.detect`), each as a JSON object.

    A detector that fails is reported as such, and the rest of the report is still
    written: the findings are an opinion on the records, the records are the facts."""
    out: dict[str, dict[str, Any]] = {}
    detectors = {
        "leak": lambda: detect.detect_leak(run),
        "degradation": lambda: detect.detect_degradation(
            run, every=every, total_windows=total
        ),
        "breaking_point": lambda: detect.detect_breaking_point(run, every=every),
        "generator": lambda: detect.detect_generator(run),
    }
    for name, call in detectors.items():
        try:
            out[name] = call().as_dict()
        except Exception as exc:  # see the docstring
            log.warning("detector %s failed", name, exc_info=True)
            out[name] = {
                "verdict": "detector failed",
                "explanation": f"the {name} detector failed: {exc}",
            }
    return out


# -- records and status -----------------------------------------------------------


def run_status(manifest: Mapping[str, Any]) -> str | None:
    """The run's status as the manifest gives it, except that a run whose manifest
    says ``running`` while its coordinator process is gone (on this host) is
    ``lost``: it stopped without recording its end."""
    status = manifest.get("status")
    if not isinstance(status, str) or not status:
        return None
    if status == "running" and _coordinator_gone(manifest):
        return "lost"
    return status


def _coordinator_gone(manifest: Mapping[str, Any]) -> bool:
    """True when the manifest's coordinator pid names no process on this host.

    A run folder copied from another host, or a pid now taken by another process,
    reads as still running: the report then says ``running``, which does not pass
    either."""
    pid = manifest.get("coordinator_pid")
    host = (manifest.get("host") or {}).get("hostname")
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _damaged_resource_parts(run: Run) -> list[Path]:
    """Monitor parts whose footer cannot be read, each logged as skipped."""
    damaged = []
    for path in finished_parts(run.path / "resources"):
        try:
            part_rows(path)
        except DamagedPart as exc:
            log.warning("skipping damaged resource samples %s (%s)", path, exc.problem)
            damaged.append(path)
    return damaged


def records_check(run: Run, parts: PartCheck, status: str | None) -> dict[str, Any]:
    """What the manifest says was written against what is on disk.

    A run that ended lists each worker's parts and rows (``shards[].parts``,
    ``shards[].rows``) and the total (``counts.requests``); every listed part must be
    there and readable, and hold those rows. ``complete`` is False when a listed
    part is missing, a part is damaged (skipped; its rows count as missing) or rows
    are short; None when the manifest cannot tell (a run still being written, whose
    parts in progress are expected to be absent, or a manifest that lists nothing).
    Parts not listed (those of a worker that was lost) are read, not judged.
    """
    manifest = run.manifest
    found_rows = {_relative(run, p): n for p, n in parts.rows.items()}
    damaged = {_relative(run, p): why for p, why in parts.damaged.items()}
    shards = [s for s in manifest.get("shards") or () if isinstance(s, dict)]
    listing = [s for s in shards if isinstance(s.get("parts"), list)]
    counts = manifest.get("counts") or {}
    expected = counts.get("requests") if isinstance(counts, dict) else None
    if not isinstance(expected, int) or isinstance(expected, bool):
        expected = None
    listed_parts: list[str] | None = None
    if listing:
        listed_parts = [str(p) for s in listing for p in s["parts"]]
        if expected is None and all(isinstance(s.get("rows"), int) for s in listing):
            expected = sum(int(s["rows"]) for s in listing)
        found = sum(found_rows.get(p, 0) for p in listed_parts)
    else:
        found = parts.total_rows
    missing_parts = [
        p for p in listed_parts or () if p not in found_rows and p not in damaged
    ]
    missing_rows = None if expected is None else max(0, expected - found)
    complete: bool | None
    if damaged or missing_parts or missing_rows:
        complete = False
    elif listed_parts is None and (expected is None or status in ("running", "lost")):
        complete = None
    else:
        complete = True
    block: dict[str, Any] = {
        "complete": complete,
        "listed_requests": expected,
        "found_requests": found,
        "missing_requests": missing_rows,
        "read_requests": parts.total_rows,
        "listed_parts": None if listed_parts is None else len(listed_parts),
        "found_parts": len(parts.rows),
        "missing_parts": missing_parts,
        "damaged_parts": [{"part": p, "problem": why} for p, why in damaged.items()],
    }
    block["note"] = _records_note(block, status)
    return block


def _relative(run: Run, path: Path) -> str:
    try:
        return path.relative_to(run.path).as_posix()
    except ValueError:
        return str(path)


def _records_note(block: Mapping[str, Any], status: str | None) -> str:
    complete = block["complete"]
    if complete is None:
        if status in ("running", "lost"):
            return (
                "The run has not recorded its end, so its manifest lists no parts "
                "yet: the report uses the finished parts found "
                f"({block['read_requests']:,} requests) and cannot tell what is "
                "missing."
            )
        return (
            "The manifest lists no parts and no request count, so whether records "
            "are missing cannot be told; the report uses the "
            f"{block['read_requests']:,} requests found."
        )
    if complete:
        return (
            f"All {block['found_requests']:,} requests the manifest lists were found "
            f"in {block['found_parts']} part(s)."
        )
    listed, found = block["listed_requests"], block["found_requests"]
    if listed is None:
        text = "Records are missing (the manifest gives no request count)."
    else:
        text = (
            f"The manifest lists {listed:,} requests; {found:,} were found "
            f"({block['missing_requests']:,} missing)."
        )
    if block["missing_parts"]:
        text += (
            f" {len(block['missing_parts'])} part(s) listed in the manifest are not "
            f"on disk: {', '.join(block['missing_parts'])}."
        )
    if block["damaged_parts"]:
        names = ", ".join(d["part"] for d in block["damaged_parts"])
        text += f" Damaged part(s) skipped: {names}."
    text += (
        f" Every figure here rests on the {block['read_requests']:,} requests that "
        "could be read."
    )
    return text


_STATUS_REASONS = {
    "interrupted": "the run was interrupted before its end (Ctrl-C, SIGTERM or a "
    "hang-up)",
    "running": "the run is still going (or its coordinator cannot be checked from "
    "here): this report covers the parts finished so far",
    "lost": "the manifest says running, but its coordinator process is gone: the run "
    "stopped without recording its end",
    "failed": "the run failed",
}


def _incomplete_reasons(
    run: Run, status: str | None, records: Mapping[str, Any]
) -> list[str]:
    """Why the run cannot pass whatever its thresholds say: its status and
    missing records, one sentence each."""
    reasons = []
    manifest = run.manifest
    if status is None:
        reasons.append("manifest.json records no status for the run")
    elif status == "degraded":
        lost = [
            s.get("worker")
            for s in manifest.get("shards") or ()
            if isinstance(s, dict) and s.get("status") == "lost"
        ]
        why = "the run ended degraded"
        if lost:
            why += f": worker(s) {', '.join(str(w) for w in lost)} lost"
        stop = manifest.get("stop_reason")
        if stop in ("overrun", "disk_low"):
            why += f" (stopped itself: {stop})"
        reasons.append(why)
    elif status == "aborted":
        reasons.append(
            f"the run was aborted: {manifest.get('abort_reason') or 'by a threshold'}"
        )
    elif status != "completed":
        reasons.append(_STATUS_REASONS.get(status, f"the run ended {status}"))
    if records.get("complete") is False:
        reasons.append(records_missing_text(records))
    return reasons


def fails_check(summary: Mapping[str, Any]) -> bool:
    """True when ``harness report --check`` exits 1: a threshold or SLO entry
    failed, or the run did not complete, or records are missing."""
    verdict = str(summary.get("verdict"))
    return verdict == "failed" or verdict.startswith("incomplete")


StatusCounts = dict[tuple[str, str], Counter[int]]
"""Requests per (method, endpoint) and HTTP status (0: no response)."""

_STATUS_KEYS = ["method", "endpoint", "status"]


def _count_statuses(batch: pa.RecordBatch, counts: StatusCounts) -> None:
    grouped = pa.Table.from_batches([batch.select(_STATUS_KEYS)]).group_by(_STATUS_KEYS)
    for row in grouped.aggregate([([], "count_all")]).to_pylist():
        key = (str(row["method"]), str(row["endpoint"]))
        counts.setdefault(key, Counter())[int(row["status"])] += row["count_all"]


def table_has_rows(frame: pd.DataFrame) -> bool:
    return not frame.empty and int(frame["requests"].sum()) > 0


def _run_start_ns(manifest: Mapping[str, Any], first_start_ns: int | None) -> int:
    started = manifest.get("started_at")
    if isinstance(started, int | float):
        return int(started * 1e9)
    if first_start_ns is not None:
        return int(first_start_ns)
    return 0


def _run_end_ns(
    manifest: Mapping[str, Any], last_end_ns: int | None, start_ns: int
) -> int:
    ended = manifest.get("ended_at")
    candidates = [start_ns]
    if isinstance(ended, int | float):
        candidates.append(int(ended * 1e9))
    if last_end_ns is not None:
        candidates.append(int(last_end_ns))
    return max(candidates)


def _labels(frame: pd.DataFrame) -> pd.Series:
    return frame["method"].astype(str) + " " + frame["endpoint"].astype(str)


@dataclass(frozen=True, slots=True)
class _Bounds:
    """The extremes of a run's records, from one streaming pass (bounded memory)."""

    first_start_ns: int | None = None
    last_start_ns: int | None = None
    last_end_ns: int | None = None
    min_latency_ns: int | None = None
    max_latency_ns: int | None = None

    @classmethod
    def of(cls, run: Run) -> _Bounds:
        found: dict[str, int] = {}

        def keep(name: str, value: int, pick: Any) -> None:
            found[name] = value if name not in found else pick(found[name], value)

        columns = ["start_ns", "latency_ns"]
        for batch in _batches(run, columns):
            if batch.num_rows == 0:
                continue
            start = pc.min_max(batch.column("start_ns")).as_py()
            latency = pc.min_max(batch.column("latency_ns")).as_py()
            end = pc.max(pc.add(batch.column("start_ns"), batch.column("latency_ns")))
            keep("first_start_ns", start["min"], min)
            keep("last_start_ns", start["max"], max)
            keep("last_end_ns", end.as_py(), max)
            keep("min_latency_ns", latency["min"], min)
            keep("max_latency_ns", latency["max"], max)
        return cls(**found)


def _stream_pass(
    run: Run, every_s: int, bounds: _Bounds
) -> tuple[plots.Heatmap | None, pd.DataFrame, StatusCounts]:
    """The heatmap grid, the mean offered load per window and the status codes
    per endpoint, in one scan."""
    columns = ["start_ns", "latency_ns", "offered", *_STATUS_KEYS]
    statuses: StatusCounts = {}
    every_ns = every_s * 10**9
    first, last = bounds.first_start_ns, bounds.last_start_ns
    low, high = bounds.min_latency_ns, bounds.max_latency_ns
    if first is None or last is None or low is None or high is None:
        empty = pd.DataFrame({"window_start": [], "offered": []})
        return None, empty, statuses
    t0 = (first // every_ns) * every_ns
    n_windows = int((last - t0) // every_ns) + 1
    lo_ms = max(low / 1e6, 1e-3)
    hi_ms = max(high / 1e6, lo_ms * 1.01)
    edges_ms = np.geomspace(lo_ms, hi_ms * 1.0001, HEATMAP_LATENCY_BINS + 1)
    counts = np.zeros((n_windows, HEATMAP_LATENCY_BINS), dtype=np.int64)
    offered_sum = np.zeros(n_windows, dtype=np.float64)
    offered_n = np.zeros(n_windows, dtype=np.int64)
    cells = n_windows * HEATMAP_LATENCY_BINS
    for batch in _batches(run, columns):
        if batch.num_rows == 0:
            continue
        start = batch.column("start_ns").to_numpy(zero_copy_only=False)
        window = (start - t0) // every_ns
        latency_ms = batch.column("latency_ns").to_numpy(zero_copy_only=False) / 1e6
        bins = np.searchsorted(edges_ms, np.maximum(latency_ms, lo_ms), "right") - 1
        bins = np.clip(bins, 0, HEATMAP_LATENCY_BINS - 1)
        flat = window * HEATMAP_LATENCY_BINS + bins
        counts += np.bincount(flat, minlength=cells).reshape(counts.shape)
        offered = batch.column("offered").to_numpy(zero_copy_only=False)
        offered_sum += np.bincount(window, weights=offered, minlength=n_windows)
        offered_n += np.bincount(window, minlength=n_windows)
        _count_statuses(batch, statuses)
    edges_ns = t0 + np.arange(n_windows + 1, dtype=np.int64) * every_ns
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_offered = np.where(offered_n > 0, offered_sum / offered_n, np.nan)
    frame = pd.DataFrame(
        {
            "window_start": pd.to_datetime(edges_ns[:-1], unit="ns", utc=True),
            "offered": mean_offered,
        }
    )
    return plots.Heatmap(counts, edges_ns, edges_ms), frame, statuses


def _phases(run: Run, start_ns: int, end_ns: int) -> list[plots.Phase]:
    events = run.events()
    if events.empty or "event" not in events:
        return []
    marks = events[events["event"] == "phase"].sort_values("time")
    if marks.empty:
        return []
    starts = [(float(t) * 1e9 - start_ns) / 1e9 for t in marks["time"]]
    names = [str(n) for n in marks["name"]]
    end_s = (end_ns - start_ns) / 1e9
    out = []
    for i, (name, begin) in enumerate(zip(names, starts, strict=True)):
        finish = starts[i + 1] if i + 1 < len(starts) else end_s
        out.append(plots.Phase(name, round(begin, 3), round(max(begin, finish), 3)))
    return out


def _offered_label(manifest: Mapping[str, Any]) -> str:
    model = manifest.get("profile", {}).get("load", {}).get("model")
    if model == "closed":
        return "offered load (virtual users)"
    return "offered load (iterations/s)"


def _thresholds(manifest: Mapping[str, Any]) -> bool:
    return bool(manifest.get("profile", {}).get("thresholds"))


def _resource_series(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    empty = pd.DataFrame({"time_ns": [], "cpu_percent": [], "rss_bytes": []})
    if frame.empty or "source" not in frame:
        return empty, empty
    source = frame["source"].astype(str)

    def summed(mask: pd.Series) -> pd.DataFrame:
        picked = frame[mask]
        if picked.empty:
            return empty
        columns = [c for c in ("cpu_percent", "rss_bytes") if c in picked]
        out = picked.groupby("time_ns")[columns].sum(min_count=1).reset_index()
        return out.sort_values("time_ns")

    harness = source.str.startswith("harness-worker") | (source == "coordinator")
    return summed(source == "target"), summed(harness)


def _resource_summary(
    target: pd.DataFrame, harness: pd.DataFrame, raw: pd.DataFrame
) -> dict[str, Any] | None:
    if raw.empty:
        return None
    out: dict[str, Any] = {
        "samples": len(raw),
        "sources": sorted(raw["source"].astype(str).unique().tolist())
        if "source" in raw
        else [],
    }
    if not target.empty:
        rss = target["rss_bytes"].dropna()
        cpu = target["cpu_percent"].dropna()
        out["target"] = {
            "samples": len(target),
            "cpu_percent_mean": _num(cpu.mean()) if len(cpu) else None,
            "cpu_percent_max": _num(cpu.max()) if len(cpu) else None,
            "rss_bytes_first": _num(rss.iloc[0]) if len(rss) else None,
            "rss_bytes_last": _num(rss.iloc[-1]) if len(rss) else None,
            "rss_bytes_max": _num(rss.max()) if len(rss) else None,
        }
    if not harness.empty:
        cpu = harness["cpu_percent"].dropna()
        out["harness"] = {
            "cpu_percent_mean": _num(cpu.mean()) if len(cpu) else None,
            "cpu_percent_max": _num(cpu.max()) if len(cpu) else None,
        }
    return out


def _load_points(total: pd.DataFrame, offered: pd.DataFrame) -> pd.DataFrame:
    if total.empty or offered.empty:
        return pd.DataFrame()
    frame = total[~total["partial"]] if "partial" in total else total
    merged = frame.merge(offered, on="window_start", how="inner")
    merged = merged[merged["requests"] > 0]
    return merged.dropna(subset=["offered"])


# -- JSON ------------------------------------------------------------------------


def _num(value: Any) -> float | int | None:
    """A JSON-safe number: NaN and infinities become None."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return None
    return number


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_ENDPOINT_FIELDS = {
    "requests": "requests",
    "ok": "ok",
    "errors": "errors",
    "error_rate": "error_rate",
    "throughput_rps": "rps",
    "goodput_rps": "goodput_rps",
    "service_p50_ms": "p50_ms",
    "service_p90_ms": "p90_ms",
    "service_p95_ms": "p95_ms",
    "service_p99_ms": "p99_ms",
    "service_max_ms": "max_ms",
    "response_p50_ms": "response_p50_ms",
    "response_p95_ms": "response_p95_ms",
    "response_p99_ms": "response_p99_ms",
    "response_max_ms": "response_max_ms",
    "lag_mean_ms": "lag_mean_ms",
    "bytes_in": "bytes_in",
    "bytes_out": "bytes_out",
    "quantile_rel_error": "quantile_rel_error",
}


def _status_json(counts: Counter[int]) -> dict[str, int]:
    return {str(code): int(counts[code]) for code in sorted(counts)}


def _endpoint_rows(
    whole: pd.DataFrame, statuses: Mapping[tuple[str, str], Counter[int]]
) -> list[dict[str, Any]]:
    rows = []
    every: Counter[int] = Counter()
    for counts in statuses.values():
        every.update(counts)
    ordered = whole.copy()
    ordered["_total"] = ordered["method"].isna()
    ordered = ordered.sort_values(["_total", "requests"], ascending=[True, False])
    for _, row in ordered.iterrows():
        out: dict[str, Any] = {
            "method": "ALL" if row["_total"] else str(row["method"]),
            "endpoint": "" if row["_total"] else str(row["endpoint"]),
        }
        for column, name in _ENDPOINT_FIELDS.items():
            if column in row:
                out[name] = _num(row[column])
        out["low_samples"] = sorted(
            name
            for column, name in _ENDPOINT_FIELDS.items()
            if bool(row.get(f"{column}_low_n", False))
        )
        out["errors_by_kind"] = {
            c.removeprefix("errors_"): int(row[c])
            for c in whole.columns
            if c.startswith("errors_") and int(row[c]) > 0
        }
        key = (out["method"], out["endpoint"])
        out["statuses"] = _status_json(
            every if row["_total"] else statuses.get(key, Counter())
        )
        rows.append(out)
    return rows


def _errors(whole: pd.DataFrame) -> list[dict[str, Any]]:
    totals = whole[whole["method"].isna()]
    if totals.empty:
        return []
    row = totals.iloc[0]
    kinds = [c for c in whole.columns if c.startswith("errors_")]
    found = [
        {"kind": c.removeprefix("errors_"), "count": int(row[c])}
        for c in kinds
        if int(row[c]) > 0
    ]
    return sorted(found, key=lambda e: -e["count"])


def _window_rows(
    frame: pd.DataFrame, offered: pd.DataFrame | None, start_ns: int
) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    frame = frame.copy()
    if offered is not None and not offered.empty:
        frame = frame.merge(offered, on="window_start", how="left")
    starts = frame["window_start"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    elapsed = (starts.astype("int64").to_numpy() - start_ns) / 1e9
    fields = [
        "requests",
        "ok",
        "errors",
        "throughput_rps",
        "goodput_rps",
        "service_p50_ms",
        "service_p95_ms",
        "service_p99_ms",
        "response_p99_ms",
        "lag_mean_ms",
        "offered",
        "partial",
        "covered_offset_s",
        "covered_s",
    ]
    present = [f for f in fields if f in frame]
    records = []
    for t, values in zip(
        elapsed, frame[present].itertuples(index=False, name=None), strict=True
    ):
        record: dict[str, Any] = {"t_s": round(float(t), 3)}
        record.update({name: _num(v) for name, v in zip(present, values, strict=True)})
        records.append(record)
    return records


def _run_block(
    run: Run, start_ns: int, end_ns: int, status: str | None
) -> dict[str, Any]:
    m = run.manifest
    profile = m.get("profile", {})
    block: dict[str, Any] = {
        "run_id": run.run_id,
        "path": str(run.path),
        "status": status,
        "profile": profile.get("name"),
        "profile_file": profile.get("source_file"),
        "target": profile.get("target"),
        "model": profile.get("load", {}).get("model"),
        "started_at": _iso(start_ns / 1e9) if start_ns else None,
        "ended_at": _iso(m["ended_at"]) if m.get("ended_at") else None,
        "duration_s": round((end_ns - start_ns) / 1e9, 3),
        "workers": m.get("workers"),
        "time_scale": m.get("time_scale"),
        "seed": m.get("seed"),
        "counts": m.get("counts", {}),
        "versions": m.get("versions", {}),
    }
    if m.get("abort_reason"):
        block["abort_reason"] = m["abort_reason"]
    return block


def _threshold_json(v: Verdict) -> dict[str, Any]:
    return {
        "metric": v.threshold.key,
        "expression": v.threshold.expression,
        "status": v.status,
        "observed": _num(v.observed),
        "samples": v.samples,
        "note": v.note,
    }


def _slo_json(v: SloVerdict) -> dict[str, Any]:
    return {
        "slo": v.slo,
        "target": v.target,
        "status": v.status,
        "observed": _num(v.observed),
        "samples": v.samples,
        "note": v.note,
    }


def _verdict(
    thresholds: Sequence[Verdict],
    slos: Sequence[SloVerdict],
    status: str | None,
    records: Mapping[str, Any],
) -> str:
    """``failed`` when a threshold or SLO entry failed or the run failed or was
    aborted; else ``incomplete: <status>`` for a run that did not complete and
    ``incomplete: records missing``; else what the thresholds say."""
    judged = [v.passed for v in thresholds] + [v.passed for v in slos]
    if any(p is False for p in judged) or status in ("failed", "aborted"):
        return "failed"
    if status != "completed":
        return f"incomplete: {status or 'status unknown'}"
    if records.get("complete") is False:
        return "incomplete: records missing"
    if any(p is True for p in judged):
        return "passed"
    return "none declared" if not judged else "not judged"


def _notable_events(run: Run) -> list[dict[str, Any]]:
    """The events worth a line on the page, each as written in ``events.jsonl``
    (so integers stay integers) with its time in ISO 8601."""
    out = []
    for record in run.event_records():
        kind = record.get("event")
        if kind not in _NOTABLE_EVENTS:
            continue
        if kind == "worker_exit" and record.get("exit_code") in (0, None):
            continue
        clean: dict[str, Any] = {
            str(k): _num(v) if isinstance(v, float) else v
            for k, v in record.items()
            if not (isinstance(v, float) and math.isnan(v))
        }
        time = record.get("time")
        clean["time"] = _iso(time) if isinstance(time, int | float) else None
        out.append(clean)
    return out


# -- writing ---------------------------------------------------------------------


def write_report(
    source: Run | str | Path,
    out_dir: str | Path | None = None,
    *,
    every: str | None = None,
) -> ReportFiles:
    """Build the report of a run and write it to ``out_dir`` (default
    ``<run>/report/``). Returns the paths written."""
    run = source if isinstance(source, Run) else open_run(source)
    folder = Path(out_dir) if out_dir is not None else run.path / "report"
    # The folder is made before the figures, so a folder that cannot be written
    # is said at once rather than after reading the whole run.
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportWriteError(folder, exc) from None
    report = build_report(run, every=every)
    try:
        images: list[tuple[str, str]] = []
        for stem, caption, figure in report.figures:
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=plots.DPI)
            data = buffer.getvalue()
            (folder / f"{stem}.png").write_bytes(data)
            images.append((caption, base64.b64encode(data).decode("ascii")))
        summary_path = folder / "summary.json"
        summary_text = json.dumps(report.summary, indent=1, allow_nan=False)
        _write_text(summary_path, summary_text)
        html_path = folder / "index.html"
        _write_text(html_path, render_html(report.summary, images))
        junit_path = folder / "junit.xml"
        _write_text(junit_path, render_junit(report.summary))
    except OSError as exc:
        raise ReportWriteError(folder, exc) from None
    return ReportFiles(folder, html_path, summary_path, junit_path)


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary name, so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def iter_failures(summary: Mapping[str, Any]) -> Iterable[str]:
    """The failed thresholds and SLO entries, one line each."""
    for t in summary["thresholds"]:
        if t["status"] == "failed":
            yield f"{t['metric']}: {t['expression']}"
    for s in summary["slos"]:
        if s["status"] == "failed":
            yield s["slo"]
