"""Windows and the end-of-run summary over 10^8 request records: methods side by side.

How this works
--------------
``generate`` writes a synthetic run folder with the harness's own part writer (so
the files are encoded exactly as a real run's: zstd, dictionary pages, row groups of
50 000 rows as a worker's flushes, parts of 5 million rows): 2 workers, 10 endpoints
with lognormal latencies, 1 % errors of five kinds, a scheduler lag with rare long
stalls, two phases, one hour of timestamps. A folder made once is reused (its
``bench.json`` says how it was made); ``--regenerate`` makes it again.

Each method then runs alone in a child process (``--child``), which computes the
1-second windows by endpoint and the per-(method, endpoint) summary, writes both to
Parquet, and exits; the parent reads the child's own wall time, CPU time and peak
RSS from ``os.wait4``. Methods:

* ``exact``: what ``analysis`` ships. ``analysis.windows.aggregate``: one pass over
  time slices, exact window quantiles by sorting, the summary from histograms fed by
  the same slices (above ``DEFAULT_EXACT_ROWS`` rows).
* ``duckdb``: DuckDB over the same Parquet files, ``quantile_cont`` (exact) per
  window and per summary row, two threads.
* ``histogram``: the same time slices, but every window's quantiles read from a
  log-linear histogram (``analysis.histogram``) instead of sorting.

The parent compares every window quantile and maximum of each method with
``exact``'s (``agrees``: within the histogram's stated error for ``histogram``,
within 1e-9 for the others) and, with DuckDB's exact summary, the summary that
``exact`` reads from histograms at this size (``summary_within_histogram_bound``).
It prints the medians of ``--repeats`` interleaved rounds and writes every round
to ``benchmarks/results/analysis-scale-<date>.json``.

    .venv/bin/python benchmarks/analysis_scale.py                 # 10^8 rows
    .venv/bin/python benchmarks/analysis_scale.py --rows 20000000 --methods exact \\
        --repeats 1

Generated data goes under /tmp (``--data DIR`` to change); it takes about 27 bytes
a row on disk, so the script checks the free space first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
SUMMARY_QUANTILES = (0.5, 0.95, 0.99)
T0_NS = 1_767_225_600 * 10**9  # 2026-01-01 00:00 UTC
SPAN_S = 3_600
WORKERS = 2
PART_ROWS = 5_000_000
ROW_GROUP_ROWS = 50_000  # a worker flushes every 50 000 rows or 2 s
BYTES_PER_ROW = 27  # measured on disk, with the harness's writer settings
METHODS = ("exact", "exact-split", "duckdb", "histogram")

ENDPOINTS = (  # method, path template, median latency in ms, lognormal sigma
    ("GET", "/api/user/profile", 3.0, 0.5),
    ("POST", "/api/auth/login", 25.0, 0.4),
    ("GET", "/api/accounts", 6.0, 0.6),
    ("GET", "/api/accounts/{id}", 4.0, 0.5),
    ("POST", "/api/orders", 15.0, 0.8),
    ("GET", "/api/orders/{id}", 5.0, 0.7),
    ("GET", "/api/dashboard", 60.0, 0.9),
    ("POST", "/api/simulations", 120.0, 1.0),
    ("GET", "/api/markets", 2.0, 0.3),
    ("GET", "/healthz", 0.5, 0.3),
)
ERROR_KINDS = ("status", "read_timeout", "reset", "check", "connect_refused")


# ------------------------------------------------------------------ generation


def _text(codes: np.ndarray, values: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(values, pa.string())
    )


def make_rows(
    rng: np.random.Generator, worker: int, first: int, rows: int, per_worker: int
) -> pa.Table:
    """Rows ``first`` .. ``first + rows`` of one worker, in time order."""
    from harness.record import SCHEMA

    index = np.arange(first, first + rows, dtype=np.int64)
    start = (
        T0_NS
        + (index * (SPAN_S * 1e9 / per_worker)).astype(np.int64)
        + rng.integers(0, 1_000, rows)
    )
    endpoint = rng.integers(0, len(ENDPOINTS), rows)
    median_ns = np.array([e[2] for e in ENDPOINTS])[endpoint] * 1e6
    sigma = np.array([e[3] for e in ENDPOINTS])[endpoint]
    latency = (median_ns * np.exp(sigma * rng.standard_normal(rows))).astype(np.int64)
    lag = rng.exponential(50_000, rows).astype(np.int64)
    stalled = rng.random(rows) < 0.001
    lag[stalled] += rng.exponential(50e6, int(stalled.sum())).astype(np.int64)
    kind = np.where(
        rng.random(rows) < 0.01, rng.integers(0, len(ERROR_KINDS), rows), -1
    )
    phase = (start - T0_NS >= SPAN_S * 1e9 / 12).astype(np.int64)
    is_post = np.array([e[0] == "POST" for e in ENDPOINTS])[endpoint]
    columns = {
        "worker": pa.array(np.full(rows, worker, np.uint16)),
        "vu": pa.array(rng.integers(0, 500, rows).astype(np.uint32)),
        "iteration": pa.array((index // 500).astype(np.uint32)),
        "scenario": _text(endpoint % 3, ["browse", "trade", "admin"]),
        "step": _text(endpoint, [f"step {i}" for i in range(len(ENDPOINTS))]),
        "method": _text(is_post.astype(np.int64), ["GET", "POST"]),
        "endpoint": _text(endpoint, [e[1] for e in ENDPOINTS]),
        "status": pa.array(np.where(kind < 0, 200, 500).astype(np.uint16)),
        "error": pa.DictionaryArray.from_arrays(
            pa.array(kind.astype(np.int32), mask=kind < 0),
            pa.array(ERROR_KINDS, pa.string()),
        ),
        "intended_ns": pa.array(start - lag),
        "start_ns": pa.array(start),
        "latency_ns": pa.array(latency),
        "ttfb_ns": pa.array(latency * 9 // 10),
        "connect_ns": pa.array(np.zeros(rows, np.int64)),
        "bytes_out": pa.array(rng.integers(150, 400, rows).astype(np.uint32)),
        "bytes_in": pa.array(rng.integers(300, 5_000, rows).astype(np.uint32)),
        "phase": _text(phase, ["warm-up", "steady"]),
        "offered": pa.array(np.full(rows, 28_000.0, np.float32)),
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


class _DeltaWriter:
    """Parts like the harness's writer makes them, but with the encoding this
    benchmark suggests for it: dictionary pages for the text columns only, and
    DELTA_BINARY_PACKED for the nanosecond columns (``--encoding delta``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.part = 0
        self.rows = 0
        self.writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.part += 1
            text = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
            times = [n for n in table.schema.names if n.endswith("_ns")]
            self.writer = pq.ParquetWriter(
                self.folder / f"part-{self.part:06d}.parquet",
                table.schema,
                compression="zstd",
                use_dictionary=text,
                column_encoding=dict.fromkeys(times, "DELTA_BINARY_PACKED"),
            )
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows
        if self.rows >= PART_ROWS:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.rows = None, 0


def write_worker(
    folder: str, worker: int, per_worker: int, seed: int, encoding: str
) -> None:
    """One worker's parts, through the harness's own writer (or, with the
    ``delta`` encoding, :class:`_DeltaWriter`)."""
    from harness.record import PartWriter

    rng = np.random.default_rng([seed, worker])
    where = Path(folder) / "requests" / f"worker-{worker}"
    writer: PartWriter | _DeltaWriter
    if encoding == "delta":
        writer = _DeltaWriter(where)
    else:
        writer = PartWriter(
            where, {"run_id": "analysis-scale"}, rotate_rows=PART_ROWS, rotate_s=1e9
        )
    chunk = 1_000_000
    for first in range(0, per_worker, chunk):
        table = make_rows(
            rng, worker, first, min(chunk, per_worker - first), per_worker
        )
        for offset in range(0, table.num_rows, ROW_GROUP_ROWS):
            writer.write(table.slice(offset, ROW_GROUP_ROWS))
    writer.close()


def generate(
    folder: Path, rows: int, seed: int, encoding: str, regenerate: bool
) -> float:
    """Make (or reuse) the run folder; the seconds it took, 0 when reused."""
    recipe = {
        "rows": rows,
        "seed": seed,
        "workers": WORKERS,
        "span_s": SPAN_S,
        "encoding": encoding,
    }
    marker = folder / "bench.json"
    reusable = marker.exists() and not regenerate
    if reusable and json.loads(marker.read_text()) == recipe:
        return 0.0
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    free = shutil.disk_usage(folder).free
    if free < rows * BYTES_PER_ROW * 1.5:
        raise SystemExit(
            f"{folder} has {free / 1e9:.1f} GB free; {rows} rows need about "
            f"{rows * BYTES_PER_ROW * 1.5 / 1e9:.1f} GB: pass --data on a larger disk "
            "or fewer --rows"
        )
    manifest = {"run_id": "analysis-scale", "status": "completed", "synthetic": True}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "events.jsonl").write_text("")
    began = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:
        pool.starmap(
            write_worker,
            [(str(folder), w, rows // WORKERS, seed, encoding) for w in range(WORKERS)],
        )
    marker.write_text(json.dumps(recipe))
    return time.perf_counter() - began


# ---------------------------------------------------------------------- methods


Timings = dict[str, float]


def method_exact(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, Timings]:
    from analysis import open_run
    from analysis.windows import aggregate

    began = time.perf_counter()
    result = aggregate(
        open_run(folder),
        "1s",
        by=("endpoint",),
        quantiles=QUANTILES,
        overall_by=("method", "endpoint"),
        total=True,
    )
    return result.windows, result.overall, {"one_pass_s": time.perf_counter() - began}


def method_exact_split(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, Timings]:
    from analysis import open_run
    from analysis.summary import endpoint_summary
    from analysis.windows import windows

    run = open_run(folder)
    began = time.perf_counter()
    frame = windows(run, "1s", by=("endpoint",), quantiles=QUANTILES)
    middle = time.perf_counter()
    summary = endpoint_summary(run)
    end = time.perf_counter()
    return frame, summary, {"windows_s": middle - began, "summary_s": end - middle}


def method_duckdb(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, Timings]:
    import duckdb

    from analysis import open_run

    files = [str(p) for p in open_run(folder).request_parts()]
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET enable_progress_bar = false")
    qs = "[" + ", ".join(str(q) for q in QUANTILES) + "]"
    response = "latency_ns + start_ns - intended_ns"
    began = time.perf_counter()
    windows = con.execute(
        f"""
        SELECT start_ns // 1000000000 * 1000000000 AS window_ns, endpoint,
               count(*) AS requests,
               count(*) FILTER (WHERE error IS NULL) AS ok,
               histogram(error) AS errors_by_kind,
               quantile_cont({response}, {qs}) AS response_q,
               max({response}) AS response_max,
               quantile_cont(latency_ns, {qs}) AS service_q,
               max(latency_ns) AS service_max,
               avg(start_ns - intended_ns) AS lag_mean_ns,
               sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out
        FROM read_parquet(?) GROUP BY ALL ORDER BY ALL
        """,
        [files],
    ).df()
    middle = time.perf_counter()
    sqs = "[" + ", ".join(str(q) for q in SUMMARY_QUANTILES) + "]"
    summary = con.execute(
        f"""
        SELECT method, endpoint, count(*) AS requests,
               count(*) FILTER (WHERE error IS NOT NULL) AS errors,
               quantile_cont(latency_ns, {sqs}) AS service_q,
               max(latency_ns) AS service_max,
               quantile_cont({response}, 0.99) AS response_p99
        FROM read_parquet(?) GROUP BY GROUPING SETS ((method, endpoint), ())
        ORDER BY ALL
        """,
        [files],
    ).df()
    timings = {"windows_s": middle - began, "summary_s": time.perf_counter() - middle}
    frame = pd.DataFrame(
        {
            "window_start": pd.to_datetime(windows["window_ns"], unit="ns", utc=True),
            "endpoint": windows["endpoint"],
            "requests": windows["requests"],
        }
    )
    for measure in ("response", "service"):
        values = np.array(windows[f"{measure}_q"].tolist(), dtype=np.float64) / 1e6
        for j, q in enumerate(QUANTILES):
            frame[f"{measure}_{_label(q)}_ms"] = values[:, j]
        frame[f"{measure}_max_ms"] = windows[f"{measure}_max"] / 1e6
    service = np.array(summary.pop("service_q").tolist(), dtype=np.float64) / 1e6
    for j, q in enumerate(SUMMARY_QUANTILES):
        summary[f"service_{_label(q)}_ms"] = service[:, j]
    summary["service_max_ms"] = summary.pop("service_max") / 1e6
    summary["response_p99_ms"] = summary.pop("response_p99") / 1e6
    return frame, summary, timings


def method_histogram(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, Timings]:
    from analysis import histogram, open_run
    from analysis.windows import overall

    run = open_run(folder)
    index = run.part_index()
    every_ns = 10**9
    columns = ["start_ns", "intended_ns", "latency_ns", "endpoint"]
    names: dict[str, int] = {}

    def codes(column: pa.ChunkedArray) -> np.ndarray:
        pieces = []
        for chunk in column.chunks:
            lookup = np.array(
                [names.setdefault(v, len(names)) for v in chunk.dictionary.to_pylist()]
            )
            pieces.append(lookup[chunk.indices.to_numpy()])
        return np.concatenate(pieces)

    def one_slice(span: tuple[int, int]) -> pd.DataFrame:
        table = index.read(columns, span)
        start = table.column("start_ns").to_numpy()
        latency = table.column("latency_ns").to_numpy()
        response = latency + start - table.column("intended_ns").to_numpy()
        window = start // every_ns
        cell = (window - window.min()) * 1_024 + codes(table.column("endpoint"))
        present, cell = np.unique(cell, return_inverse=True)
        out = {
            "window_start": pd.to_datetime(
                (present // 1_024 + window.min()) * every_ns, unit="ns", utc=True
            ),
            "endpoint_code": present % 1_024,
            "requests": np.bincount(cell),
        }
        for measure, values in (("response", response), ("service", latency)):
            counts = np.zeros((present.size, histogram.BUCKETS), dtype=np.int64)
            histogram.add_counts(counts, cell, values)
            low = np.full(present.size, -np.inf)
            high = np.zeros(present.size, dtype=np.int64)
            np.maximum.at(high, cell, values)  # int64 on int64: ufunc.at's fast path
            top = high.astype(np.float64)
            figures = histogram.quantiles(counts, QUANTILES, low, top) / 1e6
            for j, q in enumerate(QUANTILES):
                out[f"{measure}_{_label(q)}_ms"] = figures[:, j]
            out[f"{measure}_max_ms"] = high / 1e6
        return pd.DataFrame(out)

    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        # A dense histogram per (window, endpoint) is 5504 counts: keep a slice to
        # 300 windows (3000 histograms, 130 MB a measure) whatever its rows.
        plan = index.plan(every_ns, 4_000_000, max_steps=300)
        frames = list(pool.map(one_slice, plan))
    frame = pd.concat(frames, ignore_index=True)
    labels = np.array(list(names), dtype=object)
    frame.insert(1, "endpoint", labels[frame.pop("endpoint_code").to_numpy()])
    middle = time.perf_counter()
    summary = overall(
        run,
        by=("method", "endpoint"),
        quantiles=SUMMARY_QUANTILES,
        total=True,
        exact_rows=0,
    )
    end = time.perf_counter()
    return frame, summary, {"windows_s": middle - began, "summary_s": end - middle}


def _label(q: float) -> str:
    return "p" + f"{q * 100:.6g}".replace(".", "_")


def child(method: str, folder: Path, out: Path) -> None:
    """Run one method and write its windows and summary to ``out``."""
    compute = {
        "exact": method_exact,
        "exact-split": method_exact_split,
        "duckdb": method_duckdb,
        "histogram": method_histogram,
    }[method]
    frame, summary, timings = compute(folder)
    frame.to_parquet(out / f"{method}-windows.parquet")
    summary.to_parquet(out / f"{method}-summary.parquet")
    timings = {k: round(v, 2) for k, v in timings.items()}
    (out / f"{method}.json").write_text(json.dumps({**timings, "windows": len(frame)}))


# ------------------------------------------------------------------- the parent


def run_child(method: str, folder: Path, out: Path) -> dict[str, Any]:
    began = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            method,
            "--data",
            str(folder),
            "--out",
            str(out),
        ],
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {
        "method": method,
        "ok": process.returncode == 0,
        "wall_s": round(wall_s, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }
    if row["ok"]:
        row.update(json.loads((out / f"{method}.json").read_text()))
    return row


def _worst(merged: pd.DataFrame, figures: list[str]) -> float:
    worst = 0.0
    for column in figures:
        a = merged[column].to_numpy(dtype=np.float64)
        b = merged[f"{column}_other"].to_numpy(dtype=np.float64)
        worst = max(worst, float(np.nanmax(np.abs(b - a) / np.abs(a))))
    return worst


def compare(out: Path, method: str) -> dict[str, Any]:
    """How far ``method``'s figures are from exact's: the largest relative
    difference of any window quantile or maximum, and, where the method computes
    the summary exactly (DuckDB), of the summary's quantiles, which ``exact`` reads
    from histograms at this size."""
    from analysis.histogram import RELATIVE_ERROR

    exact = pd.read_parquet(out / "exact-windows.parquet")
    other = pd.read_parquet(out / f"{method}-windows.parquet")
    keys = ["window_start", "endpoint"]
    exact["endpoint"] = exact["endpoint"].astype(str)
    other["endpoint"] = other["endpoint"].astype(str)
    merged = exact.merge(other, on=keys, suffixes=("", "_other"))
    figures = [
        f"{m}_{_label(q)}_ms" for m in ("response", "service") for q in QUANTILES
    ]
    figures += ["response_max_ms", "service_max_ms"]
    worst = _worst(merged, figures)
    bound = RELATIVE_ERROR if method == "histogram" else 1e-9
    found: dict[str, Any] = {
        "windows_compared": len(merged),
        "windows_missing": len(exact) - len(merged),
        "max_rel_diff": worst,
        "agrees": bool(worst <= bound and len(merged) == len(exact)),
    }
    if method == "duckdb":
        keys = ["method", "endpoint"]
        mine = pd.read_parquet(out / "exact-summary.parquet")
        theirs = pd.read_parquet(out / "duckdb-summary.parquet")
        for frame in (mine, theirs):
            for key in keys:
                frame[key] = frame[key].astype(object).where(frame[key].notna(), "*")
                frame[key] = frame[key].astype(str)
        merged = mine.merge(theirs, on=keys, suffixes=("", "_other"))
        figures = [f"service_{_label(q)}_ms" for q in SUMMARY_QUANTILES]
        figures += ["response_p99_ms", "service_max_ms"]
        found["summary_rows_compared"] = len(merged)
        found["summary_max_rel_diff"] = _worst(merged, figures)
        found["summary_within_histogram_bound"] = bool(
            found["summary_max_rel_diff"] <= RELATIVE_ERROR
        )
    return found


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("numpy", "pandas", "pyarrow", "duckdb"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--encoding",
        choices=("harness", "delta"),
        default="harness",
        help="harness: the record writer as it is; delta: see _DeltaWriter",
    )
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    suffix = "" if args.encoding == "harness" else f"-{args.encoding}"
    folder = args.data or Path(tempfile.gettempdir()) / (
        f"analysis-scale-{args.rows}{suffix}"
    )
    if args.child:
        child(args.child, folder, args.out)
        return

    generate_s = generate(folder, args.rows, args.seed, args.encoding, args.regenerate)
    from analysis import open_run

    on_disk = sum(p.stat().st_size for p in open_run(folder).request_parts())
    print(
        f"data: {folder}, {args.rows} rows, {on_disk / 1e9:.2f} GB"
        + (f", generated in {generate_s:.0f} s" if generate_s else " (reused)")
    )
    rows = []
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="analysis-scale-") as scratch:
        out = Path(scratch)
        # Rounds interleave the methods (exact, duckdb, ..., exact, duckdb, ...) so
        # that a busy stretch of a shared machine falls on every method.
        for repeat in range(args.repeats):
            for method in methods:
                load_before = os.getloadavg()[0]
                row = {"repeat": repeat, **run_child(method, folder, out)}
                row["load_before"] = round(load_before, 2)
                if (
                    row["ok"]
                    and method != "exact"
                    and (out / "exact-windows.parquet").exists()
                ):
                    row.update(compare(out, method))
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    medians = table.drop(columns=["repeat", "ok"]).groupby("method", sort=False)
    summary = medians.median(numeric_only=True).round(3)
    print(f"\nmedians of {args.repeats} rounds:")
    print(summary.to_string())
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC)
    path = RESULTS / f"analysis-scale-{stamp:%Y%m%d-%H%M%S}.json"
    document = {
        "when": stamp.isoformat(timespec="seconds"),
        "rows": args.rows,
        "encoding": args.encoding,
        "bytes_on_disk": on_disk,
        "parts": len(open_run(folder).request_parts()),
        "task": "1-second windows by endpoint + summary by (method, endpoint)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
            "max_rss_units": "MB (ru_maxrss of each child, from os.wait4)",
        },
        "versions": versions(),
        "repeats": args.repeats,
        "medians": summary.reset_index().to_dict(orient="records"),
        "results": rows,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
