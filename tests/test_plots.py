"""The report's plots, read back from the matplotlib figures they return: where the
bars and lines are, which tick labels a log axis shows, and what the axes say.

Most tests draw windows computed (by :mod:`analysis.windows`) from request records
written the harness's way; the last one makes a real run against the demo target
and builds its report.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch

from analysis import open_run
from analysis.plots import (
    Heatmap,
    TimeAxis,
    latency_against_load,
    latency_heatmap,
    latency_over_time,
    throughput_and_errors,
)
from analysis.windows import windows

from .test_dataset import T0_NS, make_records

RUN_START_NS = T0_NS + 200 * 10**6
"""The run starts 0.2 s past a whole second; its first request a little later."""


@pytest.fixture(scope="module")
def records() -> pa.Table:
    """About 10 s of requests, the first 0.3 s past a whole second."""
    return make_records(3_000, seed=31, span_s=10, t0_ns=T0_NS + 300 * 10**6)


def drawn(figure: Figure) -> Figure:
    """The figure after a full draw (layout, ticks and labels settled)."""
    figure.savefig(io.BytesIO(), format="png")
    return figure


def bars(ax: Axes) -> list[StepPatch]:
    return [p for p in ax.patches if isinstance(p, StepPatch)]


def extent(patches: list[StepPatch]) -> tuple[float, float]:
    edges = np.concatenate([p.get_data().edges for p in patches])
    return float(edges.min()), float(edges.max())


def first_and_last(table: pa.Table) -> tuple[float, float]:
    """The first request's start and the last one's end, in s since the run start."""
    start = table.column("start_ns").to_numpy()
    end = start + table.column("latency_ns").to_numpy()
    return (start.min() - RUN_START_NS) / 1e9, (end.max() - RUN_START_NS) / 1e9


AXIS = TimeAxis(RUN_START_NS, 1.0, "s")


# ------------------------------------------------------------- throughput and errors


def test_bars_span_from_the_first_request_to_the_last_response(
    records: pa.Table,
) -> None:
    frame = windows(records, "1s", by=())
    top, bottom = drawn(throughput_and_errors(frame, AXIS)).axes
    first, last = first_and_last(records)
    successful = [p for p in bars(top) if p.get_label() == "successful"]
    assert extent(successful) == pytest.approx((first, last))
    assert extent(bars(bottom)) == pytest.approx((first, last))
    # Nothing before the run's start, nothing past its end.
    assert top.get_xlim()[0] > -0.5


def test_every_bar_covers_exactly_its_window(records: pa.Table) -> None:
    frame = windows(records, "1s", by=())
    top = drawn(throughput_and_errors(frame, AXIS)).axes[0]
    (successful,) = [p for p in bars(top) if p.get_label() == "successful"]
    edges = successful.get_data().edges
    starts = (frame["window_start"].astype("int64").to_numpy() - RUN_START_NS) / 1e9
    # The inner edges are the window boundaries, not half a window off them.
    assert edges[1:-1] == pytest.approx(starts[1:])
    assert np.diff(edges)[1:-1] == pytest.approx(1.0)


def test_a_partial_window_is_a_rate_over_the_part_the_run_covered(
    records: pa.Table,
) -> None:
    frame = windows(records, "1s", by=())
    top = drawn(throughput_and_errors(frame, AXIS)).axes[0]
    (successful,) = [p for p in bars(top) if p.get_label() == "successful"]
    values, edges, _ = successful.get_data()
    first, last = frame.iloc[0], frame.iloc[-1]
    assert first["partial"] and last["partial"]
    assert edges[1] - edges[0] == pytest.approx(first["covered_s"])
    assert values[0] == pytest.approx(first["ok"] / first["covered_s"])
    assert values[-1] == pytest.approx(last["ok"] / last["covered_s"])
    # Whole windows read as before: ok per second of the window.
    assert values[1:-1] == pytest.approx(frame["goodput_rps"].to_numpy()[1:-1])
    # A rate over the covered part is not understated: the last window reads
    # like its neighbours, not a fraction of them.
    assert values[0] > 0.5 * np.median(values[1:-1])
    assert values[-1] > 0.5 * np.median(values[1:-1])


def test_a_sliver_of_a_window_is_not_drawn_as_a_spike() -> None:
    # 300 requests over 3 s, then one more 1 ms into the next window.
    table = make_records(300, seed=32, span_s=2.9, t0_ns=T0_NS + 10**8)
    late = make_records(1, seed=33, span_s=0.001, t0_ns=T0_NS + 3 * 10**9)
    late = late.set_column(
        late.schema.get_field_index("error"),
        late.schema.field("error"),
        pa.nulls(1, late.schema.field("error").type),
    )
    frame = windows(pa.concat_tables([table, late]), "1s", by=())
    assert frame["covered_s"].iloc[-1] < 0.2
    top = drawn(throughput_and_errors(frame, AXIS)).axes[0]
    (successful,) = [p for p in bars(top) if p.get_label() == "successful"]
    assert successful.get_data().values[-1] == pytest.approx(1 / 0.2)


def test_one_window_longer_than_the_run_still_shows_the_run(
    records: pa.Table,
) -> None:
    frame = windows(records, "1min", by=())
    assert len(frame) == 1 and frame["partial"].iloc[0]
    offered = pd.DataFrame({"window_start": frame["window_start"], "offered": [100.0]})
    figure = drawn(throughput_and_errors(frame, AXIS, offered=offered))
    top = figure.axes[0]
    first, last = first_and_last(records)
    assert extent(bars(top)) == pytest.approx((first, last))
    low, high = top.get_xlim()
    assert low > -1 and high < last + 1
    assert "longer than the run" in top.get_title()
    # The offered load is a visible dot at the middle of the run.
    twin = figure.axes[-1]
    (line,) = twin.get_lines()
    assert line.get_marker() == "o"
    assert line.get_xdata()[0] == pytest.approx((first + last) / 2)


# ------------------------------------------------------------------ latency lines


def test_latency_is_drawn_at_the_middle_of_each_window(records: pa.Table) -> None:
    frame = windows(records, "1s", by=("endpoint",))
    frame["label"] = frame["endpoint"].astype(str)
    figure = drawn(latency_over_time(frame, ["/api/a"], AXIS))
    ax = figure.axes[0]
    mine = frame[frame["label"] == "/api/a"]
    starts = (mine["window_start"].astype("int64").to_numpy() - RUN_START_NS) / 1e9
    begins = starts + mine["covered_offset_s"].to_numpy()
    middles = begins + mine["covered_s"].to_numpy() / 2
    x = ax.get_lines()[0].get_xdata()
    assert x == pytest.approx(middles)
    assert x[1:-1] == pytest.approx(starts[1:-1] + 0.5)
    assert min(x) > 0
    assert ax.get_xlim()[0] >= first_and_last(records)[0] - 0.5


def test_a_series_of_one_window_is_drawn_as_dots(records: pa.Table) -> None:
    frame = windows(records, "1min", by=("endpoint",))
    frame["label"] = frame["endpoint"].astype(str)
    figure = drawn(latency_over_time(frame, ["/api/a", "/api/b/{id}"], AXIS))
    for ax in figure.axes[:2]:
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
        # p50, p95, p99 and the p99 from the intended start: one dot each.
        assert len(dots) >= 4
    assert "longer than the run" in figure.legends[0].get_title().get_text()


# --------------------------------------------------------------------- log axes


def labelled_ticks(ax: Axes) -> list[str]:
    """The y tick labels drawn on the axes (major and minor, inside the view)."""
    low, high = ax.get_ylim()
    out = []
    for tick in [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]:
        text = tick.label1.get_text()
        if text and low <= tick.get_loc() <= high:
            out.append(text)
    return out


@pytest.mark.parametrize(
    ("low_ms", "high_ms"),
    [(20.5, 25.5), (20.0, 30.0), (21.0, 21.8), (31.0, 45.0), (0.31, 0.45), (1, 900)],
)
def test_a_log_latency_axis_always_has_two_labels(
    low_ms: float, high_ms: float
) -> None:
    edges_ms = np.geomspace(low_ms, high_ms, 31)
    heat = Heatmap(
        np.ones((5, 30), dtype=np.int64),
        RUN_START_NS + np.arange(6, dtype=np.int64) * 10**9,
        edges_ms,
    )
    ax = drawn(latency_heatmap(heat, AXIS)).axes[0]
    labels = labelled_ticks(ax)
    assert len(labels) >= 2, labels
    assert len(labels) <= 12, labels
    values = [float(t) for t in labels]
    assert all(low_ms <= v <= high_ms for v in values), labels


def test_the_heatmap_starts_at_the_run_start() -> None:
    heat = Heatmap(
        np.ones((3, 4), dtype=np.int64),
        T0_NS + np.arange(4, dtype=np.int64) * 10**9,  # the first cell from -0.2 s
        np.geomspace(1, 10, 5),
    )
    ax = drawn(latency_heatmap(heat, AXIS)).axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 2.8))


# ------------------------------------------------------------ against offered load


def test_goodput_against_offered_load_says_requests_per_iteration() -> None:
    offered = np.array([5.0, 10.0, 15.0, 20.0, 25.0, 30.0])
    points = pd.DataFrame(
        {
            "offered": offered,
            "goodput_rps": 2 * np.minimum(offered, 22.0),
            "response_p50_ms": np.linspace(21, 23, 6),
            "response_p95_ms": np.linspace(22, 26, 6),
        }
    )
    figure = drawn(
        latency_against_load(
            points, "offered load (iterations/s)", quantile_column="response_p95_ms"
        )
    )
    left, right = figure.axes
    assert "not iterations/s" in right.get_ylabel()
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert "2 requests per iteration (as at the lower loads)" in labels
    (line,) = [x for x in right.get_lines() if x.get_linestyle() == "--"]
    assert line.get_ydata()[-1] == pytest.approx(60.0)
    assert len(labelled_ticks(left)) >= 2


# -------------------------------------------------------------- a real run's report


@pytest.mark.slow
def test_a_real_runs_report_draws_its_whole_span(
    tmp_path: Path, demo_target: object
) -> None:
    from analysis.report import build_report
    from harness.coordinator import Coordinator, RunOptions
    from harness.profile.load import load_profile_text

    url = demo_target.url  # type: ignore[attr-defined]
    profile = load_profile_text(
        f"""
name: plots
target: {url}
http: {{timeout: 5s}}
load:
  model: open
  arrivals: uniform
  max_vus: 20
  phases: [{{name: steady, duration: 3s, rate: 40}}]
scenarios:
  - name: health
    flow: [{{name: health, path: /healthz, check: {{status: 200}}}}]
""",
        "plots.yaml",
    )
    outcome = Coordinator(
        profile, RunOptions(out_dir=tmp_path, run_id="plots", workers=1)
    ).run()
    run = open_run(outcome.run_dir)
    df = run.requests()
    start_ns = int(run.manifest["started_at"] * 1e9)
    first = (df["start_ns"].min() - start_ns) / 1e9
    last = ((df["start_ns"] + df["latency_ns"]).max() - start_ns) / 1e9
    for every in ("1s", "1min"):
        report = build_report(run, every=every)
        figures = {stem: drawn(figure) for stem, _, figure in report.figures}
        top = figures["throughput"].axes[0]
        assert extent(bars(top)) == pytest.approx((first, last), abs=1e-6)
        assert top.get_xlim()[0] > -0.5
        for ax in figures["latency"].axes:
            for line in ax.get_lines():
                assert min(line.get_xdata()) >= first - 1e-9
