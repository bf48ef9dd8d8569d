"""The end-of-run table: per endpoint, requests, errors, throughput and latency.

Every figure is computed from the rows themselves (exact quantiles over
``latency_ns``), never from the live view's histograms.
"""

from __future__ import annotations

import pandas as pd

from .dataset import Run

QUANTILES = (0.5, 0.95, 0.99)


def endpoint_summary(run: Run) -> pd.DataFrame:
    """One row per (method, endpoint), plus a final ``ALL`` row.

    Columns: requests, errors, error_rate, rps, p50_ms, p95_ms, p99_ms, max_ms.
    ``rps`` divides by the span from the first request's start to the last one's end.
    """
    df = run.requests(["method", "endpoint", "error", "start_ns", "latency_ns"])
    columns = [
        "method",
        "endpoint",
        "requests",
        "errors",
        "error_rate",
        "rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
    ]
    if df.empty:
        return pd.DataFrame(columns=columns)
    end_ns = (df["start_ns"] + df["latency_ns"]).max()
    span_s = max((end_ns - df["start_ns"].min()) / 1e9, 1e-9)
    df["method"] = df["method"].astype(str)
    df["endpoint"] = df["endpoint"].astype(str)
    df["failed"] = df["error"].notna()
    df["latency_ms"] = df["latency_ns"] / 1e6

    def summarise(group: pd.DataFrame) -> pd.Series:
        lat = group["latency_ms"]
        q = lat.quantile(list(QUANTILES))
        return pd.Series(
            {
                "requests": len(group),
                "errors": int(group["failed"].sum()),
                "error_rate": float(group["failed"].mean()),
                "rps": len(group) / span_s,
                "p50_ms": q.iloc[0],
                "p95_ms": q.iloc[1],
                "p99_ms": q.iloc[2],
                "max_ms": lat.max(),
            }
        )

    rows = []
    for (method, endpoint), group in df.groupby(["method", "endpoint"], sort=True):
        rows.append({"method": method, "endpoint": endpoint, **summarise(group)})
    rows.append({"method": "ALL", "endpoint": "", **summarise(df)})
    out = pd.DataFrame(rows, columns=columns)
    out["requests"] = out["requests"].astype(int)
    out["errors"] = out["errors"].astype(int)
    return out


def format_summary(table: pd.DataFrame) -> str:
    """A fixed-width text table for the terminal."""
    if table.empty:
        return "no requests were recorded"
    header = (
        f"{'endpoint':<40} {'requests':>9} {'errors':>7} {'req/s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in table.itertuples(index=False):
        name = f"{row.method} {row.endpoint}".strip()
        if len(name) > 40:
            name = name[:37] + "..."
        lines.append(
            f"{name:<40} {row.requests:>9d} {row.errors:>7d} {row.rps:>8.1f} "
            f"{row.p50_ms:>8.2f} {row.p95_ms:>8.2f} {row.p99_ms:>8.2f}"
        )
    return "\n".join(lines)
