"""The report's plots, drawn with matplotlib from frames the analysis computed.

Each function takes the figures it draws (window frames, a heatmap grid, resource
samples) and returns a :class:`matplotlib.figure.Figure`; nothing here reads a run
or computes a statistic, so a notebook can draw the same plots from its own frames.

Conventions, so that every plot reads the same way:

* the x axis is the time since the run started, in seconds, minutes or hours
  (whichever keeps the numbers short), and its label gives the start as UTC clock
  time, so that an overnight run's "02:40" can still be found;
* the load's phases are shaded and named along the top;
* a latency quantile resting on too few samples to be trusted (see
  :func:`analysis.windows.min_samples`) is drawn as a thin dotted line, the
  trusted stretches solid;
* every axis says its unit.

The figures use the non-interactive Agg canvas directly, so no display and no
pyplot state are involved: plotting from a worker thread or a server is safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

WIDTH_IN = 11.0
"""Figure width in inches; at :data:`DPI` it fills a 1100-pixel report column."""
DPI = 100
MAX_ENDPOINT_PANELS = 12
"""Endpoints drawn one panel each, the busiest first; the others are named below
the figure."""

_QUANTILE_STYLE = (
    ("service_p50_ms", "p50", "#1f77b4"),
    ("service_p95_ms", "p95", "#ff7f0e"),
    ("service_p99_ms", "p99", "#d62728"),
)
_PHASE_COLOURS = ("#e8eef7", "#f7f0e4")
_OK = "#2ca02c"
_ERROR_COLOURS = (
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase (or stage) of the load, as seconds since the run's start."""

    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class TimeAxis:
    """How times since the start are shown: a divisor and its unit."""

    start_ns: int
    divisor_s: float
    unit: str

    @classmethod
    def for_span(cls, start_ns: int, span_s: float) -> TimeAxis:
        if span_s <= 300:
            return cls(start_ns, 1.0, "s")
        if span_s <= 3 * 3600:
            return cls(start_ns, 60.0, "min")
        return cls(start_ns, 3600.0, "h")

    def of(self, times: pd.Series | npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Epoch nanoseconds (or UTC timestamps) as elapsed units since the start."""
        if isinstance(times, pd.Series) and isinstance(times.dtype, pd.DatetimeTZDtype):
            ns = times.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
            values = ns.astype("int64").to_numpy()
        else:
            values = np.asarray(times, dtype=np.int64)
        return np.asarray((values - self.start_ns) / 1e9 / self.divisor_s)

    def label(self) -> str:
        start = pd.Timestamp(self.start_ns, unit="ns", tz="UTC")
        return f"time since start ({self.unit}); start {start:%Y-%m-%d %H:%M:%S} UTC"


def new_figure(height_in: float) -> Figure:
    """A figure on the Agg canvas, sized for the report."""
    figure = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def shade_phases(ax: Axes, phases: Sequence[Phase], axis: TimeAxis) -> None:
    """Shade each phase in turn and name it at the top of the axes."""
    for i, phase in enumerate(phases):
        left = phase.start_s / axis.divisor_s
        right = phase.end_s / axis.divisor_s
        if right <= left:
            continue
        ax.axvspan(left, right, color=_PHASE_COLOURS[i % 2], zorder=0, lw=0)
        ax.text(
            (left + right) / 2,
            1.0,
            phase.name,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="#555555",
            clip_on=False,
        )


def _trusted_line(
    ax: Axes,
    x: npt.NDArray[np.float64],
    y: pd.Series,
    low_n: pd.Series | None,
    label: str,
    colour: str,
    linestyle: str = "-",
) -> None:
    """Draw ``y`` solid where it rests on enough samples, dotted where not."""
    values = y.to_numpy(dtype=float)
    if low_n is None:
        ax.plot(x, values, linestyle, color=colour, lw=1.5, label=label)
        return
    weak = low_n.to_numpy(dtype=bool)
    ax.plot(x, values, ":", color=colour, lw=1.0, alpha=0.8)
    trusted = np.where(weak, np.nan, values)
    ax.plot(x, trusted, linestyle, color=colour, lw=1.5, label=label)


def latency_over_time(
    per_endpoint: pd.DataFrame,
    endpoints: Sequence[str],
    axis: TimeAxis,
    phases: Sequence[Phase] = (),
) -> Figure:
    """Service-time p50, p95 and p99 per window, one panel per endpoint, and the
    p99 of response time (from the intended start) dashed.

    ``per_endpoint`` is a :func:`analysis.windows.windows` frame with a ``label``
    column naming the endpoint; ``endpoints`` lists the labels to draw, in order.
    """
    shown = list(endpoints[:MAX_ENDPOINT_PANELS])
    columns = 2 if len(shown) > 1 else 1
    rows = max(1, math.ceil(len(shown) / columns))
    figure = new_figure(1.0 + 2.3 * rows)
    figure.suptitle("Latency per endpoint over time", fontsize=13)
    # Not sharex: a hidden last panel would take the tick labels of the one above.
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    times = axis.of(per_endpoint["window_start"]) if len(per_endpoint) else None
    for ax, name in zip(axes.flat, shown, strict=False):
        frame = per_endpoint[per_endpoint["label"] == name]
        x = axis.of(frame["window_start"])
        shade_phases(ax, phases, axis)
        for column, label, colour in _QUANTILE_STYLE:
            _trusted_line(
                ax, x, frame[column], frame.get(f"{column}_low_n"), label, colour
            )
        _trusted_line(
            ax,
            x,
            frame["response_p99_ms"],
            frame.get("response_p99_ms_low_n"),
            "p99 from intended start",
            "#555555",
            "--",
        )
        ax.set_title(name, fontsize=10, loc="left", pad=12)
        ax.set_ylabel("latency (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if times is not None and len(times):
            ax.set_xlim(
                float(times.min()) - 0.5 * _step(times),
                float(times.max()) + _step(times),
            )
    for col in range(columns):
        visible = [ax for ax in axes[:, col] if ax.get_visible()]
        if visible:
            visible[-1].set_xlabel(axis.label(), fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=len(labels),
            fontsize=9,
            title="service time quantiles (dotted: too few samples in the window)",
            title_fontsize=9,
        )
    hidden = list(endpoints[MAX_ENDPOINT_PANELS:])
    if hidden:
        figure.text(
            0.01,
            0.0,
            f"not drawn ({len(hidden)} quieter endpoints): "
            + ", ".join(hidden[:8])
            + (" ..." if len(hidden) > 8 else ""),
            fontsize=8,
        )
    return figure


def throughput_and_errors(
    total: pd.DataFrame,
    axis: TimeAxis,
    phases: Sequence[Phase] = (),
    offered: pd.DataFrame | None = None,
    offered_label: str = "offered (iterations/s)",
) -> Figure:
    """Requests per second split into successes and errors, errors per second by
    kind, phases shaded. ``total`` is a windows frame over every endpoint; the
    first and last windows, which the run covers only in part, are left out.

    ``offered``, when given, has ``window_start`` and ``offered`` columns: the
    load the profile asked for, drawn on its own axis.
    """
    frame = total[~total["partial"]] if "partial" in total else total
    if frame.empty:
        frame = total
    x = axis.of(frame["window_start"])
    figure = new_figure(6.0)
    figure.suptitle("Throughput and errors over time", fontsize=13)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    shade_phases(top, phases, axis)
    goodput = frame["goodput_rps"].to_numpy(dtype=float)
    error_rps = (frame["throughput_rps"] - frame["goodput_rps"]).to_numpy(dtype=float)
    top.stackplot(
        x,
        goodput,
        error_rps,
        labels=("successful", "failed"),
        colors=(_OK, _ERROR_COLOURS[0]),
        alpha=0.8,
        step="mid",
    )
    top.set_ylabel("requests/s")
    # Headroom above the highest window, so the legend covers no data.
    top.set_ylim(0, _headroom(goodput + error_rps))
    top.grid(True, alpha=0.3)
    handles, labels = top.get_legend_handles_labels()
    if offered is not None and not offered.empty:
        twin = top.twinx()
        twin.plot(
            axis.of(offered["window_start"]),
            offered["offered"].to_numpy(dtype=float),
            color="#333333",
            lw=1.2,
            ls="--",
            label=offered_label,
        )
        twin.set_ylabel(offered_label)
        twin.set_ylim(0, _headroom(offered["offered"].to_numpy(dtype=float)))
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    top.legend(handles, labels, loc="upper left", fontsize=9, ncols=3)
    shade_phases(bottom, (), axis)
    kinds = [c for c in frame.columns if c.startswith("errors_")]
    seconds = _window_seconds(frame)
    if kinds and seconds:
        series = [frame[c].to_numpy(dtype=float) / seconds for c in kinds]
        bottom.stackplot(
            x,
            *series,
            labels=[c.removeprefix("errors_") for c in kinds],
            colors=_ERROR_COLOURS[: len(kinds)] or None,
            step="mid",
        )
        bottom.set_ylim(0, _headroom(np.sum(series, axis=0)))
        bottom.legend(loc="upper left", fontsize=9, title="error kind", ncols=6)
    else:
        bottom.text(
            0.5,
            0.5,
            "no errors",
            transform=bottom.transAxes,
            ha="center",
            va="center",
            color="#555555",
        )
    bottom.set_ylabel("errors/s")
    if not (kinds and seconds):
        bottom.set_ylim(0, 1)
    bottom.grid(True, alpha=0.3)
    bottom.set_xlabel(axis.label(), fontsize=9)
    return figure


def _headroom(values: npt.NDArray[np.float64]) -> float:
    """An axis top 40 % above the highest value (1 when there is none)."""
    finite = values[np.isfinite(values)] if len(values) else values
    peak = float(finite.max()) if len(finite) else 0.0
    return peak * 1.4 if peak > 0 else 1.0


def _step(times: npt.NDArray[np.float64]) -> float:
    """The spacing of window starts, in the axis's unit (1 for a single window)."""
    distinct = np.unique(times)
    return float(np.min(np.diff(distinct))) if len(distinct) > 1 else 1.0


def _window_seconds(frame: pd.DataFrame) -> float:
    starts = frame["window_start"]
    if len(starts) < 2:
        return 0.0
    step = (starts.iloc[1] - starts.iloc[0]).total_seconds()
    return float(step)


@dataclass(frozen=True, slots=True)
class Heatmap:
    """Request counts on a grid of time windows by log-spaced latency bins."""

    counts: npt.NDArray[np.int64]
    """Shape (time bins, latency bins)."""
    time_edges_ns: npt.NDArray[np.int64]
    latency_edges_ms: npt.NDArray[np.float64]


def latency_heatmap(heatmap: Heatmap, axis: TimeAxis) -> Figure:
    """Where the requests' service times fall, window by window: a dense band is
    the usual latency, a second band a slow path, a smear a degradation."""
    figure = new_figure(4.5)
    ax = figure.subplots()
    figure.suptitle("Latency heatmap: requests by service time and time", fontsize=13)
    counts = heatmap.counts.T.astype(float)
    counts[counts == 0] = np.nan
    x = axis.of(heatmap.time_edges_ns)
    mesh = ax.pcolormesh(
        x,
        heatmap.latency_edges_ms,
        counts,
        norm=LogNorm(vmin=1, vmax=max(1.0, float(np.nanmax(counts, initial=1.0)))),
        cmap="viridis",
        shading="flat",
    )
    ax.set_yscale("log")
    _plain_log_labels(ax)
    ax.set_ylabel("service time (ms, log scale)")
    ax.set_xlabel(axis.label(), fontsize=9)
    colourbar = figure.colorbar(mesh, ax=ax, pad=0.01)
    colourbar.set_label("requests in the cell (log scale)")
    return figure


def _plain_log_labels(ax: Axes) -> None:
    """Label a log axis 0.5, 1, 2 rather than 5x10^-1, 10^0, 2x10^0."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))


def _minor_label(value: float, _: object) -> str:
    """Only the 2s and 5s of each decade, so the minor labels do not crowd."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 5.0) else ""


def latency_against_load(
    points: pd.DataFrame, offered_label: str, *, quantile_column: str
) -> Figure:
    """Latency and goodput against the offered load, one point per window.

    ``points`` has ``offered``, ``goodput_rps``, ``response_p50_ms`` and
    ``quantile_column`` (a tail quantile of response time, which includes the time
    a request waited for a free VU). Where the goodput stops following the offered
    load and the latency turns up, the service has reached its limit.
    """
    figure = new_figure(4.5)
    figure.suptitle("Latency and goodput against offered load", fontsize=13)
    left, right = figure.subplots(1, 2)
    offered = points["offered"].to_numpy(dtype=float)
    tail = quantile_column.removeprefix("response_").removesuffix("_ms")
    left.scatter(offered, points["response_p50_ms"], s=14, label="p50", color="#1f77b4")
    left.scatter(offered, points[quantile_column], s=14, label=tail, color="#d62728")
    left.set_xlabel(offered_label)
    left.set_ylabel("response time from intended start (ms)")
    left.set_yscale("log")
    _plain_log_labels(left)
    left.grid(True, alpha=0.3, which="both")
    left.legend(fontsize=9, title="per window", title_fontsize=9)
    right.scatter(offered, points["goodput_rps"], s=14, color=_OK)
    right.set_xlabel(offered_label)
    right.set_ylabel("goodput (successful requests/s)")
    right.set_ylim(bottom=0)
    right.set_xlim(left=0)
    right.grid(True, alpha=0.3)
    return figure


def resources_over_time(
    target: pd.DataFrame,
    harness: pd.DataFrame,
    axis: TimeAxis,
    phases: Sequence[Phase] = (),
) -> Figure:
    """The target's CPU and memory (its process tree summed per sample) and the
    harness's own CPU, over time.

    Both frames have ``time_ns``, ``cpu_percent`` and ``rss_bytes``, one row per
    sample instant. The harness's CPU is drawn so a saturated load generator is
    not mistaken for a slow target.
    """
    figure = new_figure(5.5)
    figure.suptitle("Resources over time", fontsize=13)
    top, bottom = figure.subplots(2, 1, sharex=True)
    shade_phases(top, phases, axis)
    if not target.empty:
        top.plot(
            axis.of(target["time_ns"].to_numpy()),
            target["cpu_percent"].to_numpy(dtype=float),
            color="#1f77b4",
            lw=1.5,
            label="target",
        )
        bottom.plot(
            axis.of(target["time_ns"].to_numpy()),
            target["rss_bytes"].to_numpy(dtype=float) / 2**20,
            color="#1f77b4",
            lw=1.5,
            label="target",
        )
    if not harness.empty:
        top.plot(
            axis.of(harness["time_ns"].to_numpy()),
            harness["cpu_percent"].to_numpy(dtype=float),
            color="#7f7f7f",
            lw=1.2,
            ls="--",
            label="harness (all its processes)",
        )
    top.set_ylabel("CPU (% of one core)")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    bottom.set_ylabel("target resident memory (MiB)")
    # From zero: a zoomed axis makes a few hundred kilobytes look like a leak.
    bottom.set_ylim(bottom=0)
    bottom.grid(True, alpha=0.3)
    bottom.set_xlabel(axis.label(), fontsize=9)
    return figure
