"""Detectors: does the service leak memory, degrade over a long run, and where does
it break?

How this works
--------------
Each detector reads a run directory, reduces it to a short series (one point per
monitor sample or per window), and judges that series with a rule stated in its
docstring. The judging half is a pure function of a frame
(:func:`leak_from_samples`, :func:`degradation_from_windows`,
:func:`breaking_point_from_windows`), so it can be tested with tables and used on
frames a notebook built; ``detect_*`` only read the run and call it.

Trends are fitted with the Theil–Sen estimator (the median of the slopes between
every pair of points, :func:`scipy.stats.theilslopes`) rather than least squares. A
load test's series are full of outliers that are not the trend: a garbage-collector
pause, a stall, a slow sampler tick. Least squares lets a single such point tilt the
line; the median of pairwise slopes ignores up to about 29 % of wild points. Its
confidence interval comes from the distribution of Kendall's tau, without assuming
normal errors, and a verdict needs the whole interval on one side of zero *and* an
effect large enough to matter, so a tiny but very regular slope (a heap settling by
a few kilobytes) is not called a leak.

Every finding is a frozen dataclass with a ``verdict``, the figures it rests on and
an ``explanation`` (one sentence for a person); ``as_dict()`` gives the same as JSON
values, NaN as None.

Known shortcomings
------------------
* Offered load comes from the ``offered`` column of the rows. An arrival the harness
  dropped (all ``max_vus`` busy) has no row, so a window in which every arrival was
  dropped has no offered load and is not judged; the windows before it, where the
  service already fell behind, are what shows the break. (Dropped arrivals do
  count in the arrivals that goodput is judged against.)
* The leak detector sees resident memory only. A leak into swap, into a file cache
  or in another process (a database) is invisible to it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import stats  # type: ignore[import-untyped]

from . import histogram
from .dataset import Run
from .windows import min_samples, parse_every, quantile_label, windows

MIB = 2**20

DEFAULT_MIN_GROWTH_BYTES = 8 * MIB
"""A leak must add at least this much over the judged span: below it, the growth of
a heap that is still settling (arenas, caches being filled) is hard to tell from a
leak, and would not hurt anyone within the run's length either."""
DEFAULT_MIN_RELATIVE_GROWTH = 0.05
"""... and at least this share of the resident size at the start of the judged span
(5 %), so that a service of several gigabytes is not flagged for a few megabytes."""
MIN_LEAK_SAMPLES = 10
"""Fewer memory samples after the warm-up than this: "not measured". A run of 10 s
sampled every second has 8 after a 20 % warm-up; sample every 250 ms
(``monitor: {interval: 250ms}``) for short runs."""

DEFAULT_LEVEL_TOLERANCE = 0.02
"""Windows whose mean offered load is within ±2 % of the steady level count as at
that level (the offered load of a window is exact for the open model, so only a
ramp moves it)."""
MIN_STEADY_WINDOWS = 8
"""Fewer windows at the steady level than this: "not enough data"."""

DEFAULT_LATENCY_FLOOR_MS = 50.0
"""The response-time criterion of the breaking point needs p95 above both
``latency_factor`` × baseline and baseline + this, so a 1 ms baseline does not
"break" at 3 ms."""
DEFAULT_BASELINE_SHARE = 0.2
"""The baseline is the windows at the lowest fifth of the offered loads seen."""
DEFAULT_BIN_RATIO = 1.1
"""Offered-load bins are geometric, each 10 % wider than the one below."""
DEFAULT_MIN_BIN_REQUESTS = 100
"""A bin with fewer requests than this is shown but not judged."""
BASELINE_MIN_REQUESTS = 1000
"""The baseline is widened, up to the median offered load, until it holds this many
requests: 1000 requests of 3 per iteration measure requests per iteration within
about 6 % (one standard deviation of Poisson arrivals)."""
GOODPUT_Z = 3.29
"""Standard normal quantile for 99.95 %: how far under the expected goodput a level
must fall, in standard deviations of its counting noise, to fail on goodput. The
rule judges every run, so it is set to cry wolf about once in 2000 levels."""
MIN_SPREAD = 1.25
"""Offered load that never rose by this factor above its lowest level "never varied":
one level cannot locate a breaking point."""

MAX_FIT_POINTS = 2000
"""Theil–Sen compares every pair of points (n² / 2 slopes): a longer series is first
reduced to this many medians of consecutive points (a night sampled every second,
28,800 samples, becomes medians of 15), which keeps the fit robust and below a
second."""

_BATCH_ROWS = 1 << 20


class DetectorError(ValueError):
    """A detector's argument that cannot be used (the message says which and why)."""


def _json_value(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _json_value(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


class _AsDict:
    """``as_dict()`` for the findings: JSON values, NaN as None."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_value(self)
        return out


def _check_share(name: str, value: float, *, inclusive_zero: bool = True) -> None:
    low_ok = value >= 0 if inclusive_zero else value > 0
    if not (math.isfinite(value) and low_ok and value < 1):
        raise DetectorError(
            f"{name}={value!r} must be a fraction between 0 and 1 (like 0.2 for 20 %)"
        )


def _confidence(alpha: float) -> float:
    """scipy's ``theilslopes`` takes the confidence level, 1 - alpha."""
    _check_share("alpha", alpha, inclusive_zero=False)
    return 1.0 - alpha


def _fit(
    y: npt.NDArray[np.float64], x: npt.NDArray[np.float64], confidence: float
) -> Any:
    """Theil–Sen fit of ``y`` against ``x`` (sorted), on at most
    :data:`MAX_FIT_POINTS` points."""
    if len(x) > MAX_FIT_POINTS:
        groups = np.array_split(np.arange(len(x)), MAX_FIT_POINTS)
        x = np.array([np.median(x[g]) for g in groups])
        y = np.array([np.median(y[g]) for g in groups])
    return stats.theilslopes(y, x, confidence)


def _mib(value: float) -> str:
    return f"{value / MIB:.1f} MiB"


def _size(value: float) -> str:
    if abs(value) >= MIB:
        return _mib(value)
    if abs(value) >= 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value:.0f} B"


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """``no windows``, ``one window``, ``6 windows``."""
    many = plural if plural is not None else singular + "s"
    if n == 0:
        return f"no {many}"
    return f"one {singular}" if n == 1 else f"{n} {many}"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _whole_windows(frame: pd.DataFrame) -> tuple[int, int]:
    """How many windows hold requests, and how many of those are whole (not
    partial: the run's first and last windows are partial)."""
    busy = (
        frame["requests"].to_numpy() > 0
        if "requests" in frame
        else np.ones(len(frame), dtype=bool)
    )
    if "partial" in frame.columns:
        whole = busy & ~frame["partial"].fillna(True).to_numpy(bool)
    else:
        whole = busy
    return int(busy.sum()), int(whole.sum())


def _too_short(busy: int, needed: str) -> str:
    """Why a run whose windows are all partial cannot be judged."""
    which = (
        "its one window with requests is partial (the run covers only part of it)"
        if busy == 1
        else f"its {busy} windows with requests are all partial (the run's first "
        "and last, which it covers only in part)"
    )
    return (
        f"The run is shorter than two windows: {which}, and partial windows are not "
        f"judged. Use shorter windows: {needed}."
    )


# ---------------------------------------------------------------------- memory leak


@dataclass(frozen=True, slots=True)
class LeakFinding(_AsDict):
    """Whether resident memory grew during the run, and how fast."""

    verdict: str
    """"leak suspected", "no leak" or "not measured"."""
    source: str
    samples: int
    """Sampling instants judged (after the warm-up, in the stretch judged)."""
    judged_start_s: float
    """Start and end of the judged span, seconds since the first sample."""
    judged_end_s: float
    slope_bytes_per_s: float
    slope_low_bytes_per_s: float
    """Confidence interval of the slope at 1 - alpha."""
    slope_high_bytes_per_s: float
    start_bytes: float
    """Fitted resident size at the start of the judged span."""
    growth_bytes: float
    """slope × judged span."""
    relative_growth: float
    requests: int | None
    """Requests started in the judged span (None when the run has no rows)."""
    request_rate_rps: float
    bytes_per_request: float
    """slope / request rate: memory kept per request."""
    restarts: int
    """Times every process of the source was replaced by new ones."""
    explanation: str


RequestCounter: TypeAlias = Callable[[int, int], int]
"""``count(start_ns, end_ns)``: requests whose start lies in ``[start_ns, end_ns)``."""


def detect_leak(
    run: Run,
    *,
    source: str = "target",
    warmup_fraction: float = 0.2,
    min_growth_bytes: float = DEFAULT_MIN_GROWTH_BYTES,
    min_relative_growth: float = DEFAULT_MIN_RELATIVE_GROWTH,
    alpha: float = 0.01,
) -> LeakFinding:
    """Whether the ``source``'s resident memory kept growing during the run.

    How it works: the monitor writes one row per process per sample; the rows of one
    instant are summed (the whole process tree counts). Only the samples taken while
    requests were being sent are judged: the monitor starts before the load and
    stops after it, and idle seconds at either end would stretch the span that the
    slope is multiplied by. Of that load span, the first ``warmup_fraction`` is left
    out, because a fresh service fills its
    caches, pools and allocator arenas at first and that growth stops. On the rest,
    the Theil–Sen slope (bytes per second) with its 1 - ``alpha`` confidence interval
    is robust to the spikes a garbage collector or a burst of large responses cause.
    Dividing the slope by the request rate over the same span gives the bytes kept
    per request, the figure a developer can look for in the code.

    "leak suspected" needs all three: the interval's lower bound above zero, growth
    over the judged span above ``min_growth_bytes``, and above
    ``min_relative_growth`` of the starting size. A restart (every pid of the source
    replaced) resets memory, so only the longest stretch without one is judged.
    """
    has_requests = bool(run.request_parts())
    return leak_from_samples(
        run.resources(),
        _request_counter(run) if has_requests else None,
        load_span_ns=_load_span(run) if has_requests else None,
        source=source,
        warmup_fraction=warmup_fraction,
        min_growth_bytes=min_growth_bytes,
        min_relative_growth=min_relative_growth,
        alpha=alpha,
    )


def _request_counter(run: Run) -> RequestCounter:
    parts = run.request_parts()

    def count(start_ns: int, end_ns: int) -> int:
        total = 0
        for path in parts:
            for batch in pq.ParquetFile(path).iter_batches(
                batch_size=_BATCH_ROWS, columns=["start_ns"]
            ):
                start = batch.column(0)
                inside = pc.and_(
                    pc.greater_equal(start, start_ns), pc.less(start, end_ns)
                )
                total += int(pc.sum(inside.cast(pa.int64())).as_py() or 0)
        return total

    return count


def _load_span(run: Run) -> tuple[int, int] | None:
    """First and last request start of the run, epoch nanoseconds (None without
    rows). Read from the parts' column statistics where they have them."""
    low: int | None = None
    high: int | None = None
    for path in run.request_parts():
        meta = pq.ParquetFile(path).metadata
        index = meta.schema.to_arrow_schema().get_field_index("start_ns")
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.num_rows == 0:
                continue
            st = group.column(index).statistics
            if st is not None and st.has_min_max:
                a, b = int(st.min), int(st.max)
            else:
                column = pq.ParquetFile(path).read_row_group(g, columns=["start_ns"])
                bounds = pc.min_max(column.column(0))
                a, b = int(bounds["min"].as_py()), int(bounds["max"].as_py())
            low = a if low is None else min(low, a)
            high = b if high is None else max(high, b)
    if low is None or high is None:
        return None
    return low, high


def _stretches(
    instant: npt.NDArray[np.int64], pid: npt.NDArray[np.float64], instants: int
) -> list[tuple[int, int]]:
    """``[first, last)`` ranges of instants between restarts, from one row per
    process per instant (``instant`` numbers 0..instants-1, ``pid`` NaN when not
    known). A restart is an instant that shares no pid with the last instant that
    had pids; a worker that comes and goes under the same parent is not one."""
    known = np.isfinite(pid)
    if not known.any():
        return [(0, instants)] if instants else []
    rows = pd.DataFrame({"instant": instant[known], "pid": pid[known]})
    rows = rows.drop_duplicates()
    with_pids = np.unique(rows["instant"].to_numpy())
    # Number the instants that have pids 0, 1, 2...: instants without any are
    # skipped, so each is compared with the last one that had some.
    rows["rank"] = np.searchsorted(with_pids, rows["instant"].to_numpy())
    before = rows[["rank", "pid"]].assign(rank=rows["rank"] + 1)
    common = rows[["rank", "pid"]].merge(before, on=["rank", "pid"])["rank"]
    restart = np.ones(len(with_pids), bool)
    restart[0] = False
    restart[common.to_numpy()] = False
    bounds = [0, *with_pids[restart].tolist(), instants]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _not_measured(source: str, why: str, restarts: int = 0) -> LeakFinding:
    nan = math.nan
    return LeakFinding(
        verdict="not measured",
        source=source,
        samples=0,
        judged_start_s=nan,
        judged_end_s=nan,
        slope_bytes_per_s=nan,
        slope_low_bytes_per_s=nan,
        slope_high_bytes_per_s=nan,
        start_bytes=nan,
        growth_bytes=nan,
        relative_growth=nan,
        requests=None,
        request_rate_rps=nan,
        bytes_per_request=nan,
        restarts=restarts,
        explanation=why,
    )


def leak_from_samples(
    resources: pd.DataFrame,
    count_requests: RequestCounter | None = None,
    *,
    load_span_ns: tuple[int, int] | None = None,
    source: str = "target",
    warmup_fraction: float = 0.2,
    min_growth_bytes: float = DEFAULT_MIN_GROWTH_BYTES,
    min_relative_growth: float = DEFAULT_MIN_RELATIVE_GROWTH,
    alpha: float = 0.01,
) -> LeakFinding:
    """The judgement of :func:`detect_leak` on a frame of monitor samples (columns
    ``time_ns``, ``source``, ``pid``, ``rss_bytes``), with ``count_requests`` giving
    the requests started in a span (None: no request rows) and ``load_span_ns`` the
    first and last request start (None: every sample is judged)."""
    _check_share("warmup_fraction", warmup_fraction)
    confidence = _confidence(alpha)
    needed = {"time_ns", "source", "rss_bytes"}
    if not needed <= set(resources.columns):
        missing = sorted(needed - set(resources.columns))
        raise DetectorError(
            f"the resource samples lack column(s) {missing}; pass the frame "
            "open_run(path).resources() returns"
        )
    rows = resources[(resources["source"] == source) & resources["rss_bytes"].notna()]
    if rows.empty:
        return _not_measured(
            source,
            f"No memory samples of {source!r}: the monitor was off or did not find "
            "the target (give --monitor-port or --monitor-pid).",
        )
    total = rows.groupby("time_ns", sort=True)["rss_bytes"].sum().astype(np.float64)
    times_ns = total.index.to_numpy(np.int64)
    instant = np.searchsorted(times_ns, rows["time_ns"].to_numpy(np.int64))
    pid = (
        rows["pid"].to_numpy(np.float64, na_value=np.nan)
        if "pid" in rows.columns
        else np.full(len(rows), np.nan)
    )
    spans = _stretches(instant, pid, len(times_ns))
    restarts = len(spans) - 1
    first, last = max(spans, key=lambda s: (times_ns[s[1] - 1] - times_ns[s[0]], -s[0]))
    t_ns = times_ns[first:last]
    rss = np.asarray(total.to_numpy()[first:last], dtype=np.float64)
    if load_span_ns is not None:
        during = (t_ns >= load_span_ns[0]) & (t_ns <= load_span_ns[1])
        t_ns, rss = t_ns[during], rss[during]
    if len(t_ns):
        cut_ns = t_ns[0] + warmup_fraction * (t_ns[-1] - t_ns[0])
        keep = t_ns >= cut_ns
        t_ns, rss = t_ns[keep], rss[keep]
    restart_note = (
        f" Every process of {source!r} was replaced {_times(restarts)} (a "
        "restart); only the longest stretch between restarts was judged."
        if restarts
        else ""
    )
    if len(t_ns) < MIN_LEAK_SAMPLES or t_ns[-1] == t_ns[0]:
        return _not_measured(
            source,
            f"Only {len(t_ns)} memory samples of {source!r} while requests were "
            "sent, after the warm-up; "
            f"{MIN_LEAK_SAMPLES} are needed: run longer or sample more often "
            "(monitor: {interval: 250ms})." + restart_note,
            restarts,
        )
    run_start_ns = int(times_ns[0])
    x_s = (t_ns - t_ns[0]) / 1e9
    fit = _fit(rss, x_s, confidence)
    slope, low, high = float(fit.slope), float(fit.low_slope), float(fit.high_slope)
    span_s = float(x_s[-1])
    start = float(fit.intercept)
    if not start > 0:
        start = float(np.median(rss))
    growth = slope * span_s
    relative = growth / start
    requests: int | None = None
    rate = per_request = math.nan
    if count_requests is not None:
        requests = count_requests(int(t_ns[0]), int(t_ns[-1]))
        rate = requests / span_s
        if requests > 0:
            per_request = slope / rate
    suspected = low > 0 and growth > min_growth_bytes and relative > min_relative_growth
    figures = (
        f"{_mib(growth)} over {span_s:.0f} s ({relative:+.0%} of "
        f"{_mib(start)}), {_size(slope)}/s ({confidence:.0%} interval "
        f"{_size(low)} to {_size(high)}/s)"
    )
    if suspected:
        per = (
            f", about {_size(per_request)} kept per request at {rate:.0f} requests/s"
            if math.isfinite(per_request)
            else ""
        )
        why = (
            f"The resident memory of {source!r} kept growing after the warm-up: "
            f"{figures}{per}. Unless a cache is still filling up, this is a leak; "
            "a longer run at the same load tells the two apart."
        )
    else:
        if not low > 0:
            reason = "the slope is not distinguishable from zero"
        elif not growth > min_growth_bytes:
            reason = f"the growth stays under {_mib(min_growth_bytes)}"
        else:
            reason = f"the growth stays under {min_relative_growth:.0%} of the size"
        why = f"No leak in the resident memory of {source!r}: {reason} ({figures})."
    return LeakFinding(
        verdict="leak suspected" if suspected else "no leak",
        source=source,
        samples=len(t_ns),
        judged_start_s=(int(t_ns[0]) - run_start_ns) / 1e9,
        judged_end_s=(int(t_ns[-1]) - run_start_ns) / 1e9,
        slope_bytes_per_s=slope,
        slope_low_bytes_per_s=low,
        slope_high_bytes_per_s=high,
        start_bytes=start,
        growth_bytes=growth,
        relative_growth=relative,
        requests=requests,
        request_rate_rps=rate,
        bytes_per_request=per_request,
        restarts=restarts,
        explanation=why + restart_note,
    )


# ------------------------------------------------------------- per-window offered load


def window_load(run: Run, every: str | float, *, at: str = "start") -> pd.DataFrame:
    """Per window: the mean offered load of the requests keyed in it, and the
    requests that *ended* in it (``completed``, ``completed_ok``).

    The mean is harmonic: at a rate r(t), requests arrive in proportion to r, so an
    arithmetic mean of their labels leans to the busy end of a ramp (a window half
    at 10/s and half ramping to 30/s reads 20 instead of 16). Weighting each
    request by 1/r undoes that: n / sum(1/r) is the rate averaged over the time
    the window's requests span.

    ``arrivals`` counts the iterations that arrived in the window: the rows of each
    scenario's first step, keyed like the offered load, plus the arrivals the
    harness dropped (``drops`` events) in that second. It is what the load
    generator actually offered, Poisson noise and all; NaN for the closed model
    and for a run whose manifest does not name its scenarios' steps.

    ``at`` keys the offered load on ``start_ns`` or ``intended_ns``; completions
    are always keyed on their end (``start_ns + latency_ns``), which is when the
    service delivered them. Setup requests (phase ``setup``) carry no offered load
    and are left out of the mean. The run is streamed part by part, a million rows
    at a time. Columns: ``window_start`` (UTC), ``offered``, ``completed``,
    ``completed_ok``.
    """
    every_ns = parse_every(every)
    if at not in ("start", "intended"):
        raise DetectorError(f"at={at!r} must be 'start' or 'intended'")
    key = f"{at}_ns"
    columns = sorted({key, "start_ns", "latency_ns", "error", "phase", "offered"})
    inverse_sum: dict[int, float] = {}
    offered_n: dict[int, int] = {}
    done: dict[int, int] = {}
    ok: dict[int, int] = {}

    def add(target: dict[Any, Any], index: npt.NDArray[Any], weights: Any) -> None:
        if index.size == 0:
            return
        base = int(index.min())
        sums = np.bincount(index - base, weights=weights)
        for offset in np.flatnonzero(sums):
            target[base + int(offset)] = (
                target.get(base + int(offset), 0) + sums[offset]
            )

    firsts = _first_steps(run)
    arrived: dict[int, int] = {}
    if firsts:
        columns = sorted({*columns, "scenario", "step"})
    for path in run.request_parts():
        for batch in pq.ParquetFile(path).iter_batches(
            batch_size=_BATCH_ROWS, columns=columns
        ):
            table = pa.Table.from_batches([batch])
            loaded = _not_setup(table.column("phase"))
            if firsts:
                first = _first_step_rows(table, firsts)
                add(arrived, table.column(key).to_numpy()[first] // every_ns, None)
            keyed = table.column(key).to_numpy() // every_ns
            offered = table.column("offered").to_numpy(zero_copy_only=False)
            offered = offered.astype(np.float64)
            mask = (
                loaded.to_numpy(zero_copy_only=False)
                & np.isfinite(offered)
                & (offered > 0)
            )
            add(inverse_sum, keyed[mask], 1.0 / offered[mask])
            add(offered_n, keyed[mask], None)
            start = table.column("start_ns").to_numpy()
            end = (start + table.column("latency_ns").to_numpy()) // every_ns
            good = table.column("error").is_null().to_numpy(zero_copy_only=False)
            add(done, end, None)
            add(ok, end[good], None)
    if firsts:
        for second_ns, count in _dropped_arrivals(run):
            window = second_ns // every_ns
            arrived[window] = arrived.get(window, 0) + count
    index = sorted(set(offered_n) | set(done))
    mean = [offered_n[i] / inverse_sum[i] if i in offered_n else math.nan
            for i in index]  # fmt: skip
    return pd.DataFrame(
        {
            "window_start": pd.to_datetime(
                np.array(index, dtype=np.int64) * every_ns, unit="ns", utc=True
            ),
            "offered": np.array(mean, dtype=np.float64),
            "completed": np.array([done.get(i, 0) for i in index], dtype=np.int64),
            "completed_ok": np.array([ok.get(i, 0) for i in index], dtype=np.int64),
            "arrivals": np.array(
                [arrived.get(i, 0) if firsts else math.nan for i in index],
                dtype=np.float64,
            ),
        }
    )


def _first_steps(run: Run) -> dict[str, str]:
    """Scenario name → the name of its first step, from the manifest; empty for
    the closed model (whose load is VUs, not arrivals) or when it is not there."""
    profile = run.manifest.get("profile") or {}
    if (profile.get("load") or {}).get("model") != "open":
        return {}
    firsts = {}
    for scenario in profile.get("scenarios") or []:
        steps = scenario.get("steps") or []
        if not steps or "name" not in steps[0]:
            return {}
        firsts[str(scenario["name"])] = str(steps[0]["name"])
    return firsts


def _first_step_rows(table: pa.Table, firsts: Mapping[str, str]) -> npt.NDArray[Any]:
    """True for the rows of a scenario's first step: one per arrival (or a fixed
    number per arrival, when a loop opens the flow).

    Both columns are dictionaries in the harness's parts: a table of (scenario,
    step) pairs over their few distinct names is looked up by the two index
    arrays in one pass, rather than comparing strings row by row (3 ms per
    million rows instead of 30)."""
    out = []
    scenarios = table.column("scenario").chunks
    steps = table.column("step").chunks
    if [len(c) for c in scenarios] != [len(c) for c in steps]:
        scenarios = [table.column("scenario").combine_chunks()]
        steps = [table.column("step").combine_chunks()]
    for scenario, step in zip(scenarios, steps, strict=True):
        if not pa.types.is_dictionary(scenario.type):
            scenario = pc.dictionary_encode(scenario)
        if not pa.types.is_dictionary(step.type):
            step = pc.dictionary_encode(step)
        names = scenario.dictionary.to_pylist()
        where = {name: i for i, name in enumerate(step.dictionary.to_pylist())}
        # One spare row and column, left false, for the rows whose value is null.
        pairs = np.zeros((len(names) + 1, len(where) + 1), dtype=bool)
        for i, name in enumerate(names):
            first = firsts.get(name)
            if first is not None and first in where:
                pairs[i, where[first]] = True
        out.append(pairs[_indices(scenario, len(names)), _indices(step, len(where))])
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def _indices(array: pa.DictionaryArray, spare: int) -> npt.NDArray[Any]:
    """A dictionary array's indices as numpy, nulls as ``spare``."""
    indices = array.indices
    if indices.null_count:
        indices = pc.fill_null(indices, spare)
    return indices.to_numpy(zero_copy_only=False)


def _dropped_arrivals(run: Run) -> list[tuple[int, int]]:
    """(instant in epoch ns, count) of the arrivals the workers dropped, from
    their per-second ``drops`` events, placed in the middle of their second."""
    started = run.manifest.get("started_at")
    if not started:
        return []
    events = run.events()
    if "second" not in events.columns:
        return []
    drops = events[events["event"] == "drops"]
    return [
        (int((float(started) + float(second) + 0.5) * 1e9), int(count))
        for second, count in zip(drops["second"], drops["count"], strict=True)
    ]


def _not_setup(phase: pa.ChunkedArray) -> pa.ChunkedArray:
    """True for the rows whose phase is not ``setup`` (a null phase included)."""
    chunks = []
    for chunk in phase.chunks:
        if pa.types.is_dictionary(chunk.type):
            # Compare the few distinct names, not a string per row.
            names = pc.not_equal(chunk.dictionary, "setup")
            chunk = pc.take(names, chunk.indices)
        else:
            chunk = pc.not_equal(chunk, "setup")
        chunks.append(pc.fill_null(chunk, True))
    return pa.chunked_array(chunks, pa.bool_())


def _offered_unit(run: Run) -> str:
    model = run.manifest.get("profile", {}).get("load", {}).get("model")
    return "VUs" if model == "closed" else "iterations/s"


# ---------------------------------------------------------------------- degradation


@dataclass(frozen=True, slots=True)
class DegradationFinding(_AsDict):
    """Whether latency drifted over time at one constant offered load."""

    verdict: str
    """"degrading", "improving", "stable" or "not enough data"."""
    quantile: str
    """The per-window service-time quantile followed (``p50``)."""
    offered_level: float
    """The steady offered load judged (most common level, ±tolerance)."""
    unit: str
    """Of the offered load: "iterations/s" (open model) or "VUs" (closed)."""
    windows: int
    """Windows at that level with enough samples, judged."""
    windows_usable: int
    """Windows with enough samples at any level."""
    judged_span_s: float
    slope_ms_per_h: float
    slope_low_ms_per_h: float
    """Confidence interval of the slope at 1 - alpha."""
    slope_high_ms_per_h: float
    start_ms: float
    """Fitted latency at the first judged window."""
    relative_change: float
    """slope × judged span / start."""
    explanation: str


def detect_degradation(
    run: Run,
    *,
    every: str | float = "5s",
    quantile: str = "p50",
    min_relative: float = 0.10,
    alpha: float = 0.01,
    level_tolerance: float = DEFAULT_LEVEL_TOLERANCE,
    total_windows: pd.DataFrame | None = None,
) -> DegradationFinding:
    """Whether the service got slower over the run at a constant offered load.

    ``total_windows``: the run's windows of ``every`` over all requests
    (``windows(run, every, by=())`` with ``quantile`` among its quantiles), when the
    caller has them already; they are computed otherwise. A report passes its own,
    which saves a pass over the records.

    How it works: per window of ``every``, the exact service-time quantile (from
    :func:`analysis.windows.windows`), keeping windows that are not partial and have
    enough requests for the quantile. Only windows at the run's most common offered
    load (±``level_tolerance``) are judged: under a ramp, latency rises because the
    load rises, and that is the service's capacity speaking, not a degradation.
    Holding the load fixed leaves time as the only variable. The Theil–Sen slope of
    latency against time (ms per hour) with its interval says whether there is a
    trend, and relative change (slope × span / starting level) whether it matters.

    Service time (from the request's start) is followed rather than response time,
    so a load generator that falls behind is not mistaken for a slower service.
    """
    q = _parse_quantile(quantile)
    if total_windows is None:
        frame = windows(run, every, by=(), quantiles=(q,))
    else:
        column = f"service_{quantile_label(q)}_ms"
        if column not in total_windows.columns:
            raise DetectorError(
                f"total_windows has no {column!r} column: compute them with "
                f"quantiles that include {q}"
            )
        frame = total_windows
    load = window_load(run, every, at="start")
    frame = frame.merge(
        load[["window_start", "offered"]], on="window_start", how="left"
    )
    return degradation_from_windows(
        frame,
        quantile=quantile,
        unit=_offered_unit(run),
        min_relative=min_relative,
        alpha=alpha,
        level_tolerance=level_tolerance,
    )


def _parse_quantile(quantile: str) -> float:
    text = quantile.strip().lower()
    try:
        q = float(text[1:].replace("_", ".")) / 100 if text.startswith("p") else -1.0
    except ValueError:
        q = -1.0
    if not 0 < q < 1:
        raise DetectorError(
            f"quantile {quantile!r} is not understood; write p50, p95, p99 or p99_9"
        )
    return q


def _steady_level(
    offered: npt.NDArray[np.float64], tolerance: float
) -> tuple[float, npt.NDArray[np.bool_]]:
    """The offered load most windows share (±tolerance), and which windows do."""
    ordered = np.sort(offered)
    low = np.searchsorted(ordered, ordered * (1 - tolerance), side="left")
    high = np.searchsorted(ordered, ordered * (1 + tolerance), side="right")
    best = int(np.argmax(high - low))
    level = float(np.median(ordered[low[best] : high[best]]))
    near = np.abs(offered - level) <= tolerance * abs(level)
    return level, near


def degradation_from_windows(
    frame: pd.DataFrame,
    *,
    quantile: str = "p50",
    unit: str = "iterations/s",
    min_relative: float = 0.10,
    alpha: float = 0.01,
    level_tolerance: float = DEFAULT_LEVEL_TOLERANCE,
    min_windows: int = MIN_STEADY_WINDOWS,
) -> DegradationFinding:
    """The judgement of :func:`detect_degradation` on a frame of windows: columns
    ``window_start``, ``offered``, ``partial``, ``service_<q>_ms`` and
    ``service_<q>_ms_low_n`` (as :func:`analysis.windows.windows` names them)."""
    q = _parse_quantile(quantile)
    label = quantile_label(q)
    column = f"service_{label}_ms"
    confidence = _confidence(alpha)
    if not level_tolerance >= 0:
        raise DetectorError(f"level_tolerance={level_tolerance!r} must be 0 or more")
    needed = {"window_start", "offered", column}
    if not needed <= set(frame.columns):
        raise DetectorError(
            f"the windows lack column(s) {sorted(needed - set(frame.columns))}; "
            f"compute them with windows(run, every, quantiles=({q},)) and add the "
            "mean offered load per window (window_load)"
        )
    value = frame[column].to_numpy(np.float64)
    offered = frame["offered"].to_numpy(np.float64)
    usable = np.isfinite(value) & np.isfinite(offered) & (offered > 0)
    low_n = frame.get(f"{column}_low_n")
    if low_n is not None:
        usable &= ~low_n.fillna(True).to_numpy(bool)
    if "partial" in frame.columns:
        usable &= ~frame["partial"].fillna(True).to_numpy(bool)
    nan = math.nan

    def not_enough(level: float, kept: int, why: str) -> DegradationFinding:
        return DegradationFinding(
            "not enough data", label, level, unit, kept, int(usable.sum()),
            nan, nan, nan, nan, nan, nan, why,
        )  # fmt: skip

    if usable.sum() < min_windows:
        busy, whole = _whole_windows(frame)
        if busy == 0:
            why = "The run has no requests: there is no latency to follow."
        elif whole == 0:
            why = _too_short(busy, f"{min_windows} whole windows are needed")
        elif whole < min_windows:
            enough = int(usable.sum())
            if whole == 1:
                has = f"only one whole window, with{'' if enough else 'out'} enough"
            else:
                of_them = "none" if enough == 0 else str(enough)
                has = f"{whole} whole windows, {of_them} of them with enough"
            why = (
                f"The run has {has} requests for a {label} ({min_samples(q)} each); "
                f"{min_windows} are needed: run longer or use shorter windows."
            )
        else:
            why = (
                f"Only {int(usable.sum())} of the run's {whole} whole windows have "
                f"enough requests for a {label} ({min_samples(q)} each); "
                f"{min_windows} are needed: run longer, with windows long enough to "
                f"hold {min_samples(q)} requests each."
            )
        return not_enough(nan, 0, why)
    level, near = _steady_level(offered[usable], level_tolerance)
    kept = np.flatnonzero(usable)[near]
    if kept.size < min_windows:
        return not_enough(
            level,
            int(kept.size),
            f"The offered load never held still: its most common level, "
            f"{_number(level)} {unit}, lasted only {kept.size} windows ({min_windows} "
            "needed). Degradation is judged at a constant load; add a steady phase.",
        )
    stamps = pd.DatetimeIndex(pd.to_datetime(frame["window_start"], utc=True))[kept]
    x_h = ((stamps - stamps[0]) / pd.Timedelta(hours=1)).to_numpy(np.float64)
    y = value[kept]
    fit = _fit(y, x_h, confidence)
    slope, low, high = float(fit.slope), float(fit.low_slope), float(fit.high_slope)
    span_h = float(x_h[-1])
    start = float(fit.intercept)
    if not start > 0:
        start = float(np.median(y))
    relative = slope * span_h / start
    if low > 0 and relative > min_relative:
        verdict = "degrading"
    elif high < 0 and relative < -min_relative:
        verdict = "improving"
    else:
        verdict = "stable"
    figures = (
        f"service {label} went from {start:.3g} ms by {slope * span_h:+.3g} ms "
        f"({relative:+.0%}) over {span_h * 3600:.0f} s at {_number(level)} {unit}, "
        f"a trend of {slope:+.4g} ms/h ({confidence:.0%} interval {low:+.4g} to "
        f"{high:+.4g}), from {kept.size} windows"
    )
    why = {
        "degrading": f"Latency rose at a constant load: {figures}. A service that "
        "slows down while the load stays the same is accumulating something "
        "(data, fragmentation, connections).",
        "improving": f"Latency fell at a constant load: {figures} (caches "
        "warming up, or contention from something else that went away).",
        "stable": f"Latency held steady at a constant load: {figures}; the trend "
        f"stays within ±{min_relative:.0%} or is not distinguishable from zero.",
    }[verdict]
    return DegradationFinding(
        verdict=verdict,
        quantile=label,
        offered_level=level,
        unit=unit,
        windows=int(kept.size),
        windows_usable=int(usable.sum()),
        judged_span_s=span_h * 3600,
        slope_ms_per_h=slope,
        slope_low_ms_per_h=low,
        slope_high_ms_per_h=high,
        start_ms=start,
        relative_change=relative,
        explanation=why,
    )


# ------------------------------------------------------------------- breaking point


@dataclass(frozen=True, slots=True)
class LoadLevel:
    """One offered-load bin of the breaking-point walk."""

    offered: float
    windows: int
    requests: int
    goodput_rps: float
    error_rate: float
    response_p95_ms: float
    judged: bool
    tripped: tuple[str, ...]
    """Criteria this level failed: ``goodput``, ``errors``, ``latency``."""


@dataclass(frozen=True, slots=True)
class BreakingPointFinding(_AsDict):
    """The lowest offered load at which the service stopped keeping up."""

    verdict: str
    """"broke at X <unit>", "held up to X <unit>" or "not enough data"."""
    unit: str
    """"iterations/s" (open model) or "VUs" (closed)."""
    break_offered: float
    """Offered load of the first level that failed (NaN when none did)."""
    last_good_offered: float
    """The highest judged level below the break that passed."""
    highest_offered: float
    capacity_rps: float
    """The highest goodput of any window: the measured capacity, requests/s."""
    criteria: tuple[str, ...]
    """What tripped at the break, in the order goodput, errors, latency."""
    baseline_requests_per_iteration: float
    """Goodput / offered at the lowest loads (requests per iteration, or per VU
    per second for the closed model)."""
    baseline_p95_ms: float
    latency_limit_ms: float
    levels: tuple[LoadLevel, ...]
    explanation: str


def detect_breaking_point(
    run: Run,
    *,
    every: str | float = "5s",
    error_rate_max: float = 0.01,
    latency_factor: float = 3.0,
    goodput_ratio_min: float = 0.9,
    latency_floor_ms: float = DEFAULT_LATENCY_FLOOR_MS,
    min_bin_requests: int = DEFAULT_MIN_BIN_REQUESTS,
) -> BreakingPointFinding:
    """The lowest offered load at which the service stopped keeping up.

    How it works: per window of ``every``, keyed on each request's *intended*
    start, the mean offered load, the error rate and the p95 of response time from
    the intended start; and the goodput, counted from successful requests by the
    time they *ended*. Response time from the intended start grows with the queue
    once arrivals outpace the service, even when each request's own service time
    hides it, and completions by end time cap at what the service can deliver,
    whereas requests counted by their start would follow the offered load.

    The baseline is the lowest fifth of the offered loads: requests per unit of load
    (goodput / offered) and the p95 there, by their medians. The windows are
    grouped into offered-load bins 10 % wide and walked upward; a bin with at
    least ``min_bin_requests`` requests fails when goodput falls under
    ``goodput_ratio_min`` × baseline ratio × offered, the error rate passes
    ``error_rate_max``, or the p95 passes ``latency_factor`` × the baseline and
    the baseline + ``latency_floor_ms``. The break is the first failing bin that the
    next judged bin confirms (or the last bin), so one noisy window on a busy
    machine does not place it.
    """
    frame = windows(run, every, by=(), quantiles=(0.95,), at="intended")
    load = window_load(run, every, at="intended")
    every_s = parse_every(every) / 1e9
    load["goodput_rps"] = load["completed_ok"] / every_s
    load["arrival_rate"] = load["arrivals"] / every_s
    frame = frame.drop(columns=["goodput_rps"]).merge(
        load[["window_start", "offered", "goodput_rps", "arrival_rate"]],
        on="window_start",
        how="left",
    )
    return breaking_point_from_windows(
        frame,
        unit=_offered_unit(run),
        error_rate_max=error_rate_max,
        latency_factor=latency_factor,
        goodput_ratio_min=goodput_ratio_min,
        latency_floor_ms=latency_floor_ms,
        min_bin_requests=min_bin_requests,
    )


def _levels(
    frame: pd.DataFrame, bin_ratio: float, min_bin_requests: int
) -> pd.DataFrame:
    lowest = float(frame["offered"].min())
    bins = np.floor(np.log(frame["offered"] / lowest) / math.log(bin_ratio) + 1e-9)
    grouped = frame.assign(
        _bin=bins.astype(np.int64),
        _errors=frame["error_rate"] * frame["requests"],
    ).groupby("_bin", sort=True)
    levels = pd.DataFrame(
        {
            "offered": grouped["offered"].mean(),
            "windows": grouped.size(),
            "requests": grouped["requests"].sum(),
            "goodput_rps": grouped["goodput_rps"].mean(),
            "demand": grouped["_demand"].mean(),
            "errors": grouped["_errors"].sum(),
            "response_p95_ms": grouped["response_p95_ms"].median(),
        }
    ).reset_index(drop=True)
    levels["error_rate"] = levels["errors"] / levels["requests"].where(
        levels["requests"] > 0
    )
    levels["judged"] = levels["requests"] >= min_bin_requests
    return levels


def _baseline_cut(rows: pd.DataFrame, share: float) -> float:
    """The highest offered load of the baseline: the lowest ``share`` of the
    windows' offered loads, raised (up to the median) until the baseline holds
    :data:`BASELINE_MIN_REQUESTS` requests, so its requests per unit of load is not
    read off a few dozen arrivals."""
    cut = float(np.quantile(rows["offered"], share))
    ceiling = float(np.quantile(rows["offered"], max(share, 0.5)))
    by_load = rows.sort_values("offered", kind="stable")
    enough = by_load["requests"].cumsum().to_numpy() >= BASELINE_MIN_REQUESTS
    if enough.any():
        needed = float(by_load["offered"].to_numpy()[int(np.argmax(enough))])
        cut = max(cut, min(needed, ceiling))
    return cut


def _goodput_short(kept: float, ratio_min: float, relative_noise: float) -> bool:
    """True when the share of the expected goodput that was delivered, ``kept``,
    is under ``ratio_min`` *and* under 1 beyond what counting noise explains.

    The expected goodput scales the baseline's requests per unit of load, itself
    measured on few arrivals, and the level's own count varies with its arrivals
    (Poisson arrivals of 40 iterations vary by 16 %); ``relative_noise`` is the
    combined relative standard deviation. A level falls short only when ``kept``
    times (1 + z × noise) at 99.95 % (z = 3.29) still stays under 1: its goodput is
    then short of the load with that confidence, not by chance.
    """
    return kept < ratio_min and kept * (1.0 + GOODPUT_Z * relative_noise) < 1.0


def breaking_point_from_windows(
    frame: pd.DataFrame,
    *,
    unit: str = "iterations/s",
    error_rate_max: float = 0.01,
    latency_factor: float = 3.0,
    goodput_ratio_min: float = 0.9,
    latency_floor_ms: float = DEFAULT_LATENCY_FLOOR_MS,
    baseline_share: float = DEFAULT_BASELINE_SHARE,
    bin_ratio: float = DEFAULT_BIN_RATIO,
    min_bin_requests: int = DEFAULT_MIN_BIN_REQUESTS,
) -> BreakingPointFinding:
    """The judgement of :func:`detect_breaking_point` on a frame of windows:
    columns ``offered``, ``requests``, ``goodput_rps``, ``error_rate``,
    ``response_p95_ms`` and optionally ``partial`` and ``arrival_rate``.

    With ``arrival_rate`` (iterations that really arrived per second, open model),
    goodput is measured against it instead of the nominal offered load: the
    arrivals' own Poisson noise then cancels out, and only the scenario mix is
    left to vary."""
    _check_share("error_rate_max", error_rate_max)
    _check_share("baseline_share", baseline_share, inclusive_zero=False)
    if not goodput_ratio_min > 0:
        raise DetectorError(f"goodput_ratio_min={goodput_ratio_min!r} must be above 0")
    if not latency_factor >= 1:
        raise DetectorError(f"latency_factor={latency_factor!r} must be 1 or more")
    if not bin_ratio > 1:
        raise DetectorError(f"bin_ratio={bin_ratio!r} must be above 1 (1.1: 10 %)")
    needed = {"offered", "requests", "goodput_rps", "error_rate", "response_p95_ms"}
    if not needed <= set(frame.columns):
        raise DetectorError(
            f"the windows lack column(s) {sorted(needed - set(frame.columns))}; "
            "build them as detect_breaking_point does (windows at='intended' plus "
            "window_load)"
        )
    offered = frame["offered"].to_numpy(np.float64)
    usable = np.isfinite(offered) & (offered > 0) & (frame["requests"] > 0).to_numpy()
    if "partial" in frame.columns:
        usable &= ~frame["partial"].fillna(True).to_numpy(bool)
    rows = frame.loc[usable].reset_index(drop=True)
    nan = math.nan

    def unjudged(why: str, **figures: float) -> BreakingPointFinding:
        return BreakingPointFinding(
            "not enough data", unit, nan, nan, figures.get("highest", nan),
            figures.get("capacity", nan), (), nan, nan, nan, (), why,
        )  # fmt: skip

    if rows.empty:
        busy, whole = _whole_windows(frame)
        if busy == 0:
            why = "The run has no requests: there is no load to judge."
        elif whole == 0:
            why = _too_short(busy, "two offered-load levels are needed")
        else:
            why = (
                f"None of the run's {_count(whole, 'whole window')} with requests "
                "carries an offered load (the records' offered column is empty or "
                "zero), so there is no load to judge."
            )
        return unjudged(why)
    lowest, highest = float(rows["offered"].min()), float(rows["offered"].max())
    capacity = float(rows["goodput_rps"].max())
    if highest < lowest * MIN_SPREAD:
        level = (
            f"at {_number(lowest)} {unit}"
            if _number(lowest) == _number(highest)
            else f"between {_number(lowest)} and {_number(highest)} {unit}"
        )
        return unjudged(
            f"The offered load stayed {level}, with a highest goodput of "
            f"{_number(capacity)} requests/s: one level cannot show where the "
            "service breaks; ramp the load (a stress profile).",
            highest=highest,
            capacity=capacity,
        )
    realized = (
        unit == "iterations/s"
        and "arrival_rate" in rows.columns
        and bool(np.isfinite(rows["arrival_rate"].to_numpy(np.float64)).all())
        and float(rows["arrival_rate"].sum()) > 0
    )
    demand = "arrival_rate" if realized else "offered"
    cut = _baseline_cut(rows, baseline_share)
    base = rows[rows["offered"] <= cut]
    # A ratio of sums: at the lowest loads a window holds a few arrivals, and the
    # median of per-window ratios follows their noise.
    ratio = float(base["goodput_rps"].sum() / base[demand].sum())
    base_requests = float(base["requests"].sum())
    # Requests come in clumps of an iteration's requests, so a count of n
    # requests varies by about sqrt(n * per_arrival) when the arrivals are only
    # known on average; counted arrivals leave the scenario mix alone to vary.
    per_arrival = max(1.0, ratio) if unit == "iterations/s" and not realized else 1.0
    base_p95 = float(np.nanmedian(base["response_p95_ms"]))
    limit_ms = max(latency_factor * base_p95, base_p95 + latency_floor_ms)
    levels = _levels(rows.assign(_demand=rows[demand]), bin_ratio, min_bin_requests)

    def trips(level: Mapping[Any, Any]) -> tuple[str, ...]:
        if not level["judged"]:
            return ()
        failed = []
        if _goodput_short(
            level["goodput_rps"] / (ratio * level["demand"]),
            goodput_ratio_min,
            math.sqrt(
                per_arrival / max(float(level["requests"]), 1.0)
                + per_arrival / max(base_requests, 1.0)
            ),
        ):
            failed.append("goodput")
        if level["error_rate"] > error_rate_max:
            failed.append("errors")
        if level["response_p95_ms"] > limit_ms:
            failed.append("latency")
        return tuple(failed)

    table = tuple(
        LoadLevel(
            offered=float(level["offered"]),
            windows=int(level["windows"]),
            requests=int(level["requests"]),
            goodput_rps=float(level["goodput_rps"]),
            error_rate=float(level["error_rate"]),
            response_p95_ms=float(level["response_p95_ms"]),
            judged=bool(level["judged"]),
            tripped=trips(level),
        )
        for level in levels.to_dict("records")
    )
    judged = [lv for lv in table if lv.judged]
    if len(judged) < 2:
        return unjudged(
            f"{'Only one' if judged else 'No'} offered-load level had "
            f"{min_bin_requests} requests or more; two are needed. Run longer, or "
            "ramp the load more slowly so that each level gathers more requests.",
            highest=highest,
            capacity=capacity,
        )
    broken = None
    for i, lv in enumerate(judged):
        confirmed = i + 1 == len(judged) or bool(judged[i + 1].tripped)
        if lv.tripped and confirmed:
            broken = i
            break
    top = judged[-1].offered
    per = (
        "requests per iteration"
        if unit == "iterations/s"
        else f"requests/s per {unit[:-1]}"
    )
    basis = (
        f"baseline below {_number(cut)} {unit}: p95 {base_p95:.3g} ms, "
        f"{ratio:.2f} {per}"
    )
    if broken is None:
        return BreakingPointFinding(
            verdict=f"held up to {_number(top)} {unit}",
            unit=unit,
            break_offered=nan,
            last_good_offered=top,
            highest_offered=top,
            capacity_rps=capacity,
            criteria=(),
            baseline_requests_per_iteration=ratio,
            baseline_p95_ms=base_p95,
            latency_limit_ms=limit_ms,
            levels=table,
            explanation=(
                f"The service kept up with every judged level up to {_number(top)} "
                f"{unit} ({basis}); the highest goodput was {_number(capacity)} "
                "requests/s. Its limit lies above the load offered."
            ),
        )
    at = judged[broken]
    last_good = judged[broken - 1].offered if broken > 0 else nan
    said = {
        "goodput": f"goodput fell under {goodput_ratio_min:.0%} of the offered load "
        f"({_number(at.goodput_rps)} requests/s)",
        "errors": f"errors passed {error_rate_max:.1%} ({at.error_rate:.1%})",
        "latency": f"response p95 from the intended start passed {limit_ms:.0f} ms "
        f"({at.response_p95_ms:.0f} ms)",
    }
    below = (
        f"; it held at {_number(last_good)} {unit}"
        if math.isfinite(last_good)
        else "; it failed already at the lowest judged level"
    )
    return BreakingPointFinding(
        verdict=f"broke at {_number(at.offered)} {unit}",
        unit=unit,
        break_offered=at.offered,
        last_good_offered=last_good,
        highest_offered=top,
        capacity_rps=capacity,
        criteria=at.tripped,
        baseline_requests_per_iteration=ratio,
        baseline_p95_ms=base_p95,
        latency_limit_ms=limit_ms,
        levels=table,
        explanation=(
            f"At {_number(at.offered)} {unit} "
            + " and ".join(said[c] for c in at.tripped)
            + f"{below} ({basis}). The highest goodput, {_number(capacity)} "
            "requests/s, is the measured capacity."
        ),
    )


# ------------------------------------------------------------------- load generator

DEFAULT_LAG_LIMIT_MS = 10.0
"""A request that started more than this after its intended start was late."""
DEFAULT_LAG_SHARE_MAX = 0.01
"""More than this share of late requests: the harness fell behind its schedule."""
CPU_BUSY_PERCENT = 90.0
"""A worker sample at or above this share of one core counts as busy."""


@dataclass(frozen=True, slots=True)
class GeneratorFinding(_AsDict):
    """Did the harness itself deliver the load it was asked for?"""

    verdict: str
    """"kept up", "fell behind", "dropped arrivals" or "not enough data"."""
    requests: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    """Scheduler lag: actual start minus intended start, per request."""
    lagged_share: float
    """Share of the requests that started more than ``lag_limit_ms`` late."""
    lag_limit_ms: float
    dropped: int
    """Arrivals dropped because every VU of a worker was busy (open model)."""
    dropped_share: float
    worker_busy_share: float
    """Share of the harness workers' monitor samples at 90 % of a core or more
    (NaN when the harness was not sampled)."""
    worker_cpu_p95_percent: float
    explanation: str


def detect_generator(
    run: Run,
    *,
    lag_limit_ms: float = DEFAULT_LAG_LIMIT_MS,
    lag_share_max: float = DEFAULT_LAG_SHARE_MAX,
) -> GeneratorFinding:
    """Whether the figures describe the service or the load generator.

    How it works: every request records when it was meant to start and when it
    did. A worker whose event loop is short of CPU starts requests late, and then
    response time from the intended start counts the harness's own delay (it is
    still free of coordinated omission, but it no longer says only how the service
    did). The share of requests that started more than ``lag_limit_ms`` late is
    read in one streaming pass (lag quantiles from a log-linear histogram, within
    0.4 %), beside the workers' CPU from the resource samples and the arrivals the
    open model dropped because every VU was busy (``load.max_vus`` too low for the
    rate × the time an iteration takes, or a service so slow that the VUs wait).

    Verdicts, first match: ``fell behind`` (over ``lag_share_max`` of the requests
    late), ``dropped arrivals`` (any), ``kept up``; ``not enough data`` for a run
    without requests.
    """
    _check_share("lag_share_max", lag_share_max)
    if not lag_limit_ms > 0:
        raise DetectorError(f"lag_limit_ms={lag_limit_ms!r} must be above 0")
    limit_ns = int(lag_limit_ms * 1e6)
    counts = np.zeros((1, histogram.BUCKETS), dtype=np.int64)
    n = late = 0
    lag_max = 0
    for path in run.request_parts():
        for batch in pq.ParquetFile(path).iter_batches(
            batch_size=_BATCH_ROWS, columns=["intended_ns", "start_ns", "phase"]
        ):
            table = pa.Table.from_batches([batch])
            keep = _not_setup(table.column("phase")).to_numpy(zero_copy_only=False)
            lag = (
                table.column("start_ns").to_numpy()
                - table.column("intended_ns").to_numpy()
            )[keep]
            if lag.size == 0:
                continue
            np.maximum(lag, 0, out=lag)
            histogram.add_counts(counts, np.zeros(lag.size, dtype=np.int64), lag)
            n += int(lag.size)
            late += int(np.count_nonzero(lag > limit_ns))
            lag_max = max(lag_max, int(lag.max()))
    manifest_counts = run.manifest.get("counts") or {}
    dropped = int(manifest_counts.get("dropped") or 0)
    offered = dropped + int(manifest_counts.get("iterations") or 0)
    dropped_share = dropped / offered if offered else 0.0
    busy, cpu_p95 = _worker_cpu(run)
    nan = math.nan
    if n == 0:
        return GeneratorFinding(
            "not enough data", 0, nan, nan, nan, nan, lag_limit_ms, dropped,
            dropped_share, busy, cpu_p95,
            "The run recorded no request, so there is no schedule to have kept.",
        )  # fmt: skip
    p50, p99 = (
        histogram.quantiles(
            counts, (0.5, 0.99), np.array([0.0]), np.array([float(lag_max)])
        )[0]
        / 1e6
    )
    share = late / n
    cpu = (
        f"; the workers were at {CPU_BUSY_PERCENT:.0f} % of a core or more in "
        f"{busy:.0%} of their samples (p95 {cpu_p95:.0f} %)"
        if math.isfinite(busy)
        else "; the workers' CPU was not sampled"
    )
    lag_text = (
        f"{share:.1%} of {n} requests started more than {lag_limit_ms:g} ms late "
        f"(scheduler lag p50 {p50:.3g} ms, p99 {p99:.3g} ms, "
        f"max {lag_max / 1e6:.3g} ms)"
    )
    if share > lag_share_max:
        verdict = "fell behind"
        explanation = (
            f"The harness fell behind its schedule: {lag_text}{cpu}. Response times "
            "from the intended start include that delay; give the run more workers "
            "or machines, or a lower rate, to measure the service alone."
        )
    elif dropped:
        verdict = "dropped arrivals"
        explanation = (
            f"{dropped} arrivals ({dropped_share:.1%} of those offered) were dropped "
            "because every VU of a worker was busy, so the load offered was not all "
            f"delivered; raise load.max_vus to at least the rate times the time an "
            f"iteration takes, unless the service's slowness is the point. {lag_text}"
            f"{cpu}."
        )
    else:
        verdict = "kept up"
        explanation = (
            f"The harness kept to its schedule: {lag_text}{cpu}. The figures "
            "describe the service, not the load generator."
        )
    return GeneratorFinding(
        verdict, n, float(p50), float(p99), lag_max / 1e6, share, lag_limit_ms,
        dropped, dropped_share, busy, cpu_p95, explanation,
    )  # fmt: skip


def _worker_cpu(run: Run) -> tuple[float, float]:
    """Share of the harness workers' samples at :data:`CPU_BUSY_PERCENT` or more,
    and their p95 CPU %; NaN, NaN when they were not sampled."""
    resources = run.resources()
    if resources.empty or "cpu_percent" not in resources.columns:
        return math.nan, math.nan
    source = resources["source"].astype(str)
    cpu = resources.loc[source.str.startswith("harness-worker-"), "cpu_percent"]
    cpu = cpu.dropna()
    if cpu.empty:
        return math.nan, math.nan
    return float((cpu >= CPU_BUSY_PERCENT).mean()), float(cpu.quantile(0.95))


# ------------------------------------------------------------------------------ all

Finding: TypeAlias = (
    LeakFinding | DegradationFinding | BreakingPointFinding | GeneratorFinding
)


def detect_all(run: Run, *, every: str | float = "5s") -> dict[str, Finding]:
    """The four detectors, windows of ``every`` for the two that use windows:
    keys ``leak``, ``degradation``, ``breaking_point``, ``generator``."""
    return {
        "leak": detect_leak(run),
        "degradation": detect_degradation(run, every=every),
        "breaking_point": detect_breaking_point(run, every=every),
        "generator": detect_generator(run),
    }
