"""The end-of-run table: per endpoint, requests, errors, throughput and latency.

Every figure comes from the rows (through :func:`analysis.windows.overall`), never
from the live view's histograms. Quantiles are exact up to
:data:`analysis.windows.DEFAULT_EXACT_ROWS` rows; above, they come from log-linear
histograms and the table says so.
"""

from __future__ import annotations

import pandas as pd

from . import windows
from .dataset import Run

QUANTILES = (0.5, 0.95, 0.99)

COLUMNS = [
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
    "response_p99_ms",
    "lag_mean_ms",
    "quantile_rel_error",
]


def endpoint_summary(
    run: Run, *, exact_rows: int = windows.DEFAULT_EXACT_ROWS
) -> pd.DataFrame:
    """One row per (method, endpoint), plus a final ``ALL`` row.

    Columns (:data:`COLUMNS`): requests, errors, error_rate; ``rps``, the requests
    over the span from the first request's start to the last one's end; service
    time (``latency_ns``) quantiles ``p50_ms``, ``p95_ms``, ``p99_ms`` and
    ``max_ms``; ``response_p99_ms``, the p99 measured from the intended start (it
    exceeds ``p99_ms`` when the harness fell behind its schedule); ``lag_mean_ms``;
    and ``quantile_rel_error``, 0 when the quantiles are exact.
    """
    table = windows.overall(
        run,
        by=("method", "endpoint"),
        quantiles=QUANTILES,
        total=True,
        exact_rows=exact_rows,
    )
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.DataFrame(
        {
            "method": table["method"].fillna("ALL").astype(str),
            "endpoint": table["endpoint"].fillna("").astype(str),
            "requests": table["requests"].astype(int),
            "errors": table["errors"].astype(int),
            "error_rate": table["error_rate"],
            "rps": table["throughput_rps"],
            "p50_ms": table["service_p50_ms"],
            "p95_ms": table["service_p95_ms"],
            "p99_ms": table["service_p99_ms"],
            "max_ms": table["service_max_ms"],
            "response_p99_ms": table["response_p99_ms"],
            "lag_mean_ms": table["lag_mean_ms"],
            "quantile_rel_error": table["quantile_rel_error"],
        }
    )
    return out[COLUMNS]


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
    if "quantile_rel_error" in table and (table["quantile_rel_error"] > 0).any():
        bound = float(table["quantile_rel_error"].max())
        lines.append(
            f"(latency quantiles from histograms, within {bound:.2%} of the exact "
            "values: the run is too large to sort in memory)"
        )
    return "\n".join(lines)
