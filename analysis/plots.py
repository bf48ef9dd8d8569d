"""The report's plots, drawn with matplotlib from frames the analysis computed.

Each function takes the figures it draws (window frames, a heatmap grid, resource
samples) and returns a :class:`matplotlib.figure.Figure`; nothing here reads a run
or computes a statistic, so a notebook can draw the same plots from its own frames.

Conventions, so that every plot reads the same way:

* the x axis is the time since the run started, in seconds, minutes or hours
  (whichever keeps the numbers short), and its label gives the start as UTC clock
  time, so that an overnight run's "02:40" can still be found;
* the load's phases are shaded and named along the top;
* a rate per window is a bar over exactly that window's time, [start, end); the
  run's first and last windows, which it covers only in part, are drawn over the
  part it covered, at the rate over that part (``covered_offset_s`` and
  ``covered_s`` of :func:`analysis.windows.windows`), so nothing is drawn before
  the run's start or past its last response;
* a figure per window (a latency quantile, the offered load) is a point at the
  middle of the window's bar, joined to its neighbours; a point with no
  neighbour is a dot;
* a log axis carries at least two labelled ticks whatever its range;
* a latency quantile resting on too few samples to be trusted (see
  :func:`analysis.windows.min_samples`) is drawn as a thin dotted line, the
  trusted stretches solid;
* every axis says its unit.

The figures use the non-interactive Agg canvas directly, so no display and no
pyplot state are involved: plotting from a worker thread or a server is safe.
"""

from __future__ import annotations

import itertools
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
from matplotlib.ticker import Formatter, FuncFormatter, Locator, MaxNLocator

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
    """Draw ``y`` solid where it rests on enough samples, dotted where not; a
    point with no neighbour to join (a run of one window) is drawn as a dot,
    hollow when it rests on too few samples."""
    values = y.to_numpy(dtype=float)
    if low_n is not None:
        ax.plot(x, values, ":", color=colour, lw=1.0, alpha=0.8)
        _lone_points(ax, x, values, colour, hollow=True)
        values = np.where(low_n.to_numpy(dtype=bool), np.nan, values)
    ax.plot(x, values, linestyle, color=colour, lw=1.5, label=label)
    _lone_points(ax, x, values, colour, hollow=False)


def _lone_points(
    ax: Axes,
    x: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    colour: str,
    *,
    hollow: bool,
) -> None:
    """Dots for the values whose neighbours are both missing: a line through one
    point draws nothing."""
    present = np.isfinite(values)
    before = np.concatenate([[False], present[:-1]])
    after = np.concatenate([present[1:], [False]])
    lone = present & ~before & ~after
    if lone.any():
        ax.plot(
            x[lone],
            values[lone],
            "o",
            color=colour,
            ms=4,
            mfc="none" if hollow else colour,
        )


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
    every = _WindowShape.of(per_endpoint, axis) if len(per_endpoint) else None
    for ax, name in zip(axes.flat, shown, strict=False):
        frame = per_endpoint[per_endpoint["label"] == name]
        shape = _WindowShape.of(frame, axis)
        x = shape.middle
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
        if every is not None:
            ax.set_xlim(*every.limits())
    for col in range(columns):
        visible = [ax for ax in axes[:, col] if ax.get_visible()]
        if visible:
            visible[-1].set_xlabel(axis.label(), fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    title = "service time quantiles (dotted: too few samples in the window)"
    if every is not None and every.single_window:
        title += (
            "\none window, longer than the run: one point per quantile, at the "
            "middle of the run; use shorter windows to see changes over time"
        )
    if handles:
        figure.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=len(labels),
            fontsize=9,
            title=title,
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
    kind, phases shaded. ``total`` is a windows frame over every endpoint.

    Each window is a bar over exactly its own time, [start, end). The first and
    last windows, which the run covers only in part, are drawn over the part it
    covered (``covered_offset_s`` and ``covered_s`` of
    :func:`analysis.windows.windows`) at the rate over that part, so the run's
    edges neither vanish nor look like a fall in throughput. A sliver of a window
    shorter than a fifth of the window is drawn over its own time too, at its
    requests per fifth of a window, so one request in a run's last millisecond
    does not draw a spike.

    ``offered``, when given, has ``window_start`` and ``offered`` columns: the
    load the profile asked for, drawn on its own axis at the middle of each
    window's bar.
    """
    frame = total.reset_index(drop=True)
    shape = _WindowShape.of(frame, axis)
    figure = new_figure(6.0)
    figure.suptitle("Throughput and errors over time", fontsize=13)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    shade_phases(top, phases, axis)
    goodput = shape.rate(frame["ok"])
    error_rps = shape.rate(frame["errors"])
    _bars(top, shape, goodput, np.zeros_like(goodput), _OK, "successful")
    _bars(top, shape, error_rps, goodput, _ERROR_COLOURS[0], "failed")
    top.set_ylabel("requests/s")
    # Headroom above the highest window, so the legend covers no data.
    top.set_ylim(0, _headroom(goodput + error_rps))
    top.grid(True, alpha=0.3)
    handles, labels = top.get_legend_handles_labels()
    if offered is not None and not offered.empty:
        twin = top.twinx()
        level = offered["offered"].to_numpy(dtype=float)
        x = shape.middle_of(offered["window_start"], axis)
        style = "o--" if np.isfinite(level).sum() == 1 else "--"
        twin.plot(x, level, style, color="#333333", lw=1.2, ms=4, label=offered_label)
        twin.set_ylabel(offered_label)
        twin.set_ylim(0, _headroom(level))
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        top.legend(handles, labels, loc="upper left", fontsize=9, ncols=3)
    _note_single_window(top, shape)
    shade_phases(bottom, (), axis)
    kinds = [c for c in frame.columns if c.startswith("errors_")]
    series = [shape.rate(frame[c]) for c in kinds]
    if kinds and len(frame) and float(np.nansum(series)) > 0:
        below = np.zeros(len(frame))
        for kind, values, colour in zip(
            kinds, series, itertools.cycle(_ERROR_COLOURS), strict=False
        ):
            _bars(bottom, shape, values, below, colour, kind.removeprefix("errors_"))
            below = below + values
        bottom.set_ylim(0, _headroom(below))
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
        bottom.set_ylim(0, 1)
    bottom.set_ylabel("errors/s")
    bottom.grid(True, alpha=0.3)
    bottom.set_xlabel(axis.label(), fontsize=9)
    if len(frame):
        bottom.set_xlim(*shape.limits())
    return figure


SLIVER_SHARE = 0.2
"""A partial window's rate is taken over at least this share of a window."""


@dataclass(frozen=True, slots=True)
class _WindowShape:
    """Where each window of a frame is drawn and over how many seconds its rates
    are taken: the whole window, or for a partial one the part the run covered."""

    left: npt.NDArray[np.float64]
    """In the axis's unit, since the run's start."""
    right: npt.NDArray[np.float64]
    seconds: npt.NDArray[np.float64]
    every_s: float
    starts_ns: npt.NDArray[np.int64]
    partial: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, frame: pd.DataFrame, axis: TimeAxis) -> _WindowShape:
        starts = _epoch_ns(frame["window_start"])
        every_s = _window_seconds(frame)
        if "covered_s" in frame and "covered_offset_s" in frame:
            covered = frame["covered_s"].to_numpy(dtype=float)
            offset = frame["covered_offset_s"].to_numpy(dtype=float)
            if not every_s:
                every_s = float(covered.max()) if len(covered) else 0.0
        else:
            covered = np.full(len(frame), every_s or 1.0)
            offset = np.zeros(len(frame))
        left = axis.of(starts) + offset / axis.divisor_s
        right = left + covered / axis.divisor_s
        seconds = np.maximum(covered, SLIVER_SHARE * every_s)
        partial = (
            frame["partial"].to_numpy(dtype=bool)
            if "partial" in frame
            else np.zeros(len(frame), dtype=bool)
        )
        return cls(left, right, seconds, every_s, starts, partial)

    def rate(self, counts: pd.Series) -> npt.NDArray[np.float64]:
        """Per window, ``counts`` per second of the time the run covered."""
        values = counts.to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.seconds > 0, values / self.seconds, 0.0)

    @property
    def middle(self) -> npt.NDArray[np.float64]:
        return (self.left + self.right) / 2

    def middle_of(
        self, window_start: pd.Series, axis: TimeAxis
    ) -> npt.NDArray[np.float64]:
        """The middle of the windows starting at ``window_start``: of the part the
        run covered for a window of this frame, else of the whole window."""
        starts = _epoch_ns(window_start)
        found = pd.Series(self.middle, index=self.starts_ns)
        found = found[~found.index.duplicated()]
        whole = axis.of(starts) + self.every_s / 2 / axis.divisor_s
        return np.asarray(found.reindex(starts).fillna(pd.Series(whole, index=starts)))

    def limits(self) -> tuple[float, float]:
        low, high = float(self.left.min()), float(self.right.max())
        margin = max(high - low, 1e-9) * 0.02
        return low - margin, high + margin

    @property
    def single_window(self) -> bool:
        """One window, that the run covers only in part."""
        return len(np.unique(self.starts_ns)) == 1 and bool(self.partial.all())


def _epoch_ns(times: pd.Series) -> npt.NDArray[np.int64]:
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        ns = times.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        return np.asarray(ns.astype("int64").to_numpy())
    return np.asarray(times, dtype=np.int64)


def _bars(
    ax: Axes,
    shape: _WindowShape,
    height: npt.NDArray[np.float64],
    bottom: npt.NDArray[np.float64],
    colour: str,
    label: str,
) -> None:
    """Stacked bars, each over exactly its window's time: one filled outline per
    stretch of adjoining windows, so no seam shows between them."""
    if not len(height):
        return
    gap = np.abs(shape.left[1:] - shape.right[:-1]) > 1e-9 * max(
        1.0, float(np.abs(shape.right).max())
    )
    breaks = [0, *(np.flatnonzero(gap) + 1).tolist(), len(height)]
    for n, (a, b) in enumerate(itertools.pairwise(breaks)):
        edges = np.concatenate([shape.left[a : a + 1], shape.right[a:b]])
        ax.stairs(
            bottom[a:b] + height[a:b],
            edges,
            baseline=bottom[a:b],
            fill=True,
            color=colour,
            alpha=0.8,
            lw=0,
            label=label if n == 0 else None,
        )


def _note_single_window(ax: Axes, shape: _WindowShape) -> None:
    """Say so when the window is longer than the run: the plot then holds one
    window, drawn over the part the run covered."""
    if not shape.single_window:
        return
    ax.set_title(
        "one window, longer than the run: drawn over the "
        f"{shape.seconds[0]:.3g} s the run covered; use shorter windows to see "
        "changes over time",
        fontsize=8,
        color="#555555",
        pad=14,
    )


def _headroom(values: npt.NDArray[np.float64]) -> float:
    """An axis top 40 % above the highest value (1 when there is none)."""
    finite = values[np.isfinite(values)] if len(values) else values
    peak = float(finite.max()) if len(finite) else 0.0
    return peak * 1.4 if peak > 0 else 1.0


def _window_seconds(frame: pd.DataFrame) -> float:
    """The window length: the closest spacing of window starts (0 for one)."""
    starts = np.unique(_epoch_ns(frame["window_start"]))
    if len(starts) < 2:
        return 0.0
    return float(np.min(np.diff(starts))) / 1e9


@dataclass(frozen=True, slots=True)
class Heatmap:
    """Request counts on a grid of time windows by log-spaced latency bins."""

    counts: npt.NDArray[np.int64]
    """Shape (time bins, latency bins)."""
    time_edges_ns: npt.NDArray[np.int64]
    latency_edges_ms: npt.NDArray[np.float64]


def latency_heatmap(heatmap: Heatmap, axis: TimeAxis) -> Figure:
    """Where the requests' service times fall, window by window: a dense band is
    the usual latency, a second band a slow path, a smear a degradation.

    The time cells are windows aligned on multiples of their length, so the first
    one usually begins before the run did; the axis starts at the run's start
    (time 0), where the first request can be, rather than at that cell's edge.
    The last cell is drawn to its window's end, which may lie past the run's."""
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
    if len(x) > 1 and x[0] < 0 < x[-1]:
        ax.set_xlim(0, float(x[-1]))
    if heatmap.counts.shape[0] == 1:
        ax.set_title(
            "one window, longer than the run: its service times in one column; "
            "use shorter windows to see changes over time",
            fontsize=8,
            color="#555555",
        )
    ax.set_yscale("log")
    _plain_log_labels(ax)
    ax.set_ylabel("service time (ms, log scale)")
    ax.set_xlabel(axis.label(), fontsize=9)
    colourbar = figure.colorbar(mesh, ax=ax, pad=0.01)
    colourbar.set_label("requests in the cell (log scale)")
    return figure


def _plain_log_labels(ax: Axes) -> None:
    """Label a log y axis 0.5, 1, 2 rather than 5x10^-1, 10^0, 2x10^0, with at
    least two labelled ticks whatever its range (see :class:`_LogMinorTicks`)."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(_LogMinorTicks())
    ax.yaxis.set_minor_formatter(_LogMinorLabels())


_MANY_DECADES = 6
"""A log axis over more decades than this is labelled at the decades only."""


def _mantissa(value: float) -> float:
    return round(value / 10 ** math.floor(math.log10(value)), 6)


def _decades_inside(low: float, high: float) -> int:
    """How many powers of ten lie in [low, high]."""
    first = math.ceil(math.log10(low) - 1e-9)
    last = math.floor(math.log10(high) + 1e-9)
    return max(0, last - first + 1)


class _LogMinorTicks(Locator):
    """Minor ticks of a log axis: 2 to 9 times each power of ten, and, when the
    axis is so narrow that fewer than two ticks (decades included) fall on it,
    round values evenly spaced across it (a service time between 20 and 24 ms has
    no 1, 2 or 5 of a decade to label)."""

    def __call__(self) -> Sequence[float]:
        assert self.axis is not None
        low, high = self.axis.get_view_interval()
        return self.tick_values(low, high)

    def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
        low, high = sorted((float(vmin), float(vmax)))
        if not (low > 0 and math.isfinite(high)):
            return []
        first = math.floor(math.log10(low))
        last = math.ceil(math.log10(high))
        if last - first > _MANY_DECADES:
            return []
        ticks = [m * 10.0**d for d in range(first, last + 1) for m in range(2, 10)]
        shown = sum(low <= t <= high for t in ticks) + _decades_inside(low, high)
        if shown >= 2:
            return ticks
        spaced = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        extra = [float(t) for t in spaced if low <= t <= high]
        return sorted({*ticks, *extra})


class _LogMinorLabels(Formatter):
    """Labels for :class:`_LogMinorTicks`: the 2s and 5s of each decade, so the
    labels do not crowd, and more of the ticks (up to all of them) when that
    leaves fewer than two labels on the axis."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return self.format_ticks([x])[0]

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        assert self.axis is not None
        low, high = sorted(float(v) for v in self.axis.get_view_interval())
        if not low > 0:
            return ["" for _ in values]
        slack = (high - low) * 1e-9
        inside = [v > 0 and low - slack <= v <= high + slack for v in values]
        decades = _decades_inside(low, high)
        chosen = inside
        for mantissas in ((2.0, 5.0), (2.0, 3.0, 5.0)):
            picked = [
                i and _mantissa(v) in mantissas
                for v, i in zip(values, inside, strict=True)
            ]
            if decades + sum(picked) >= 2:
                chosen = picked
                break
        return [f"{v:g}" if c else "" for v, c in zip(values, chosen, strict=True)]


def latency_against_load(
    points: pd.DataFrame, offered_label: str, *, quantile_column: str
) -> Figure:
    """Latency and goodput against the offered load, one point per window.

    ``points`` has ``offered``, ``goodput_rps``, ``response_p50_ms`` and
    ``quantile_column`` (a tail quantile of response time, which includes the time
    a request waited for a free VU). Where the goodput stops following the offered
    load and the latency turns up, the service has reached its limit.

    Goodput counts requests and the offered load of the open model iterations
    (each of which sends one request per step), so goodput sits at a multiple of
    the offered load. The dashed line is that multiple as measured at the lower
    half of the loads (requests per iteration, or requests/s per VU for the
    closed model), and the axis and legend say so: where the points fall below
    it, the service no longer keeps up.
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
    goodput = points["goodput_rps"].to_numpy(dtype=float)
    right.scatter(offered, goodput, s=14, color=_OK, label="per window")
    right.set_xlabel(offered_label)
    per_vu = "virtual user" in offered_label or "VU" in offered_label
    right.set_ylabel(
        "goodput (successful requests/s)"
        if per_vu
        else "goodput (successful requests/s, not iterations/s)"
    )
    ratio = _requests_per_unit(offered, goodput)
    if math.isfinite(ratio):
        reach = np.array([0.0, float(np.nanmax(offered))])
        unit = "requests/s per VU" if per_vu else "requests per iteration"
        right.plot(
            reach,
            ratio * reach,
            "--",
            color="#555555",
            lw=1.0,
            label=f"{ratio:.3g} {unit} (as at the lower loads)",
        )
    right.legend(fontsize=9, loc="upper left")
    right.set_ylim(bottom=0)
    right.set_xlim(left=0)
    right.grid(True, alpha=0.3)
    return figure


def _requests_per_unit(
    offered: npt.NDArray[np.float64], goodput: npt.NDArray[np.float64]
) -> float:
    """Goodput per unit of offered load over the windows at or under the median
    offered load (NaN when there is none)."""
    ok = np.isfinite(offered) & np.isfinite(goodput) & (offered > 0)
    if not ok.any():
        return math.nan
    low = ok & (offered <= np.median(offered[ok]))
    ratio = float(goodput[low].sum() / offered[low].sum())
    return ratio if ratio > 0 else math.nan


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
