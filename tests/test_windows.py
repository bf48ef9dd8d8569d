"""Windows and whole-run figures against a direct pandas computation on the same rows.

Every count, sum, quantile and maximum that ``windows``, ``overall`` and
``aggregate`` return is compared with pandas' ``groupby`` on the rows read back from
the run: exactly (to float rounding) where the figure is exact, within the stated
bound where it comes from histograms. The runs are written with the harness's own
writer, in many row groups and parts, and read in many small slices so that slice
edges fall inside the data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis import Run, open_run, open_runs
from analysis.histogram import RELATIVE_ERROR
from analysis.windows import (
    DEFAULT_EXACT_ROWS,
    DEFAULT_QUANTILES,
    WindowSpecError,
    aggregate,
    min_samples,
    overall,
    parse_every,
    quantile_label,
    windows,
)

from .test_dataset import T0_NS, make_records, write_run

QS = DEFAULT_QUANTILES


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("runs") / "w"
    return write_run(
        folder,
        [
            make_records(12_000, seed=11, span_s=30),
            make_records(9_000, seed=12, span_s=30, worker=1),
        ],
    )


def reference(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The figures of one row per group of ``keys``, computed the plain way."""
    df = df.assign(
        response=df["latency_ns"] + df["start_ns"] - df["intended_ns"],
        service=df["latency_ns"],
        lag=df["start_ns"] - df["intended_ns"],
        failed=df["error"].notna(),
    )
    grouped = df.groupby(keys, observed=True, dropna=False) if keys else None
    columns: dict[str, pd.Series] = {}

    def per_group(column: str, how: str, *args: float) -> pd.Series:
        if grouped is None:
            value = getattr(df[column], how)(*args)
            return pd.Series([value])
        return getattr(grouped[column], how)(*args)

    columns["requests"] = per_group("failed", "count")
    columns["errors"] = per_group("failed", "sum")
    for measure in ("response", "service"):
        for q in QS:
            columns[f"{measure}_{quantile_label(q)}_ms"] = (
                per_group(measure, "quantile", q) / 1e6
            )
        columns[f"{measure}_max_ms"] = per_group(measure, "max") / 1e6
    columns["lag_mean_ms"] = per_group("lag", "mean") / 1e6
    columns["bytes_in"] = per_group("bytes_in", "sum")
    columns["bytes_out"] = per_group("bytes_out", "sum")
    out = pd.DataFrame(columns)
    kinds = df.loc[df["failed"], "error"].astype(str)
    for kind in sorted(kinds.unique()):
        is_kind = df["error"].astype(str).eq(kind) & df["failed"]
        if grouped is None:
            out[f"errors_{kind}"] = [int(is_kind.sum())]
        else:
            out[f"errors_{kind}"] = is_kind.groupby(
                [df[k] for k in keys], observed=True, dropna=False
            ).sum()
    return out.reset_index(drop=not keys)


def as_text(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    for key in keys:
        frame[key] = frame[key].astype(str)
    return frame


def assert_same_figures(
    got: pd.DataFrame, want: pd.DataFrame, keys: list[str], rtol: float = 1e-9
) -> None:
    got = as_text(got.copy(), keys).sort_values(keys, ignore_index=True)
    want = as_text(want.copy(), keys).sort_values(keys, ignore_index=True)
    assert len(got) == len(want)
    assert got[keys].equals(want[keys])
    for column in want.columns:
        if column in keys:
            continue
        expected = want[column].to_numpy(dtype=float)
        actual = got[column].to_numpy(dtype=float)
        if column.endswith("_ms") and column != "lag_mean_ms":
            np.testing.assert_allclose(actual, expected, rtol=rtol, err_msg=column)
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-9, err_msg=column)


@pytest.mark.parametrize(
    "by", [("endpoint",), (), ("phase",), ("scenario", "endpoint")], ids=str
)
def test_window_figures_equal_pandas_on_the_same_rows(
    run: Run, by: tuple[str, ...]
) -> None:
    got = windows(run, "1s", by=by, slice_rows=3_000, threads=2, fill=False)
    df = run.requests()
    df["window_start"] = pd.to_datetime(
        df["start_ns"] // 10**9 * 10**9, unit="ns", utc=True
    )
    keys = ["window_start", *by]
    want = reference(df, keys)
    assert_same_figures(got[want.columns], want, keys)
    assert (got["ok"] == got["requests"] - got["errors"]).all()
    assert np.allclose(got["throughput_rps"], got["requests"] / 1.0)
    assert np.allclose(got["goodput_rps"], got["ok"] / 1.0)
    assert (got["quantile_rel_error"] == 0).all()


def test_slicing_and_threads_do_not_change_any_figure(run: Run) -> None:
    one = windows(run, "2s", by=("endpoint",), slice_rows=10**9, threads=1)
    many = windows(run, "2s", by=("endpoint",), slice_rows=1_000, threads=2)
    pd.testing.assert_frame_equal(one, many)


def test_windows_of_a_table_equal_windows_of_the_run(run: Run) -> None:
    from_run = windows(run, "5s", by=("endpoint",))
    from_table = windows(run.requests_table(), "5s", by=("endpoint",))
    from_frame = windows(run.requests(), "5s", by=("endpoint",))
    pd.testing.assert_frame_equal(from_run, from_table)
    pd.testing.assert_frame_equal(from_run, from_frame)


def test_windows_can_be_keyed_on_the_intended_start(run: Run) -> None:
    got = windows(run, "1s", by=(), at="intended", fill=False)
    df = run.requests()
    df["window_start"] = pd.to_datetime(
        df["intended_ns"] // 10**9 * 10**9, unit="ns", utc=True
    )
    want = reference(df, ["window_start"])
    assert_same_figures(got[want.columns], want, ["window_start"])


def test_windows_start_on_multiples_of_their_length_since_the_epoch(
    run: Run,
) -> None:
    got = windows(run, "1min", by=())
    assert list(got["window_start"]) == [pd.Timestamp("2026-01-01", tz="UTC")]
    assert got["requests"].sum() == 21_000
    assert got["partial"].all()


def test_partial_marks_only_the_first_and_last_window(run: Run) -> None:
    got = windows(run, "1s", by=())
    assert list(got["partial"]) == [True] + [False] * (len(got) - 2) + [True]


def test_a_window_without_requests_is_a_row_of_zeros(tmp_path: Path) -> None:
    before = make_records(300, seed=5, span_s=3)
    after = make_records(300, seed=6, span_s=3, t0_ns=T0_NS + 6 * 10**9)
    table = pa.concat_tables([before, after])
    got = windows(table, "1s", by=())
    assert len(got) == 9
    empty = got[got["requests"] == 0]
    assert len(empty) == 3
    assert (empty["throughput_rps"] == 0).all()
    assert empty["response_p50_ms"].isna().all()
    assert empty["response_p50_ms_low_n"].all()
    assert len(windows(table, "1s", by=(), fill=False)) == 6


def test_filling_stays_inside_each_groups_first_and_last_window() -> None:
    early = make_records(200, seed=7, span_s=2, endpoints=("/early",))
    late = make_records(200, seed=8, span_s=2, endpoints=("/late",))
    late = late.set_column(
        late.schema.get_field_index("start_ns"),
        late.schema.field("start_ns"),
        pa.array(late.column("start_ns").to_numpy() + 5 * 10**9),
    )
    got = windows(pa.concat_tables([early, late]), "1s")
    starts = got.groupby("endpoint")["window_start"]
    assert starts.max()["/early"] < starts.min()["/late"]
    assert (got["requests"] > 0).all()


@pytest.mark.parametrize("q", [0.5, 0.99, 0.999])
def test_a_quantile_is_flagged_when_its_window_has_under_10_over_1_minus_q_samples(
    q: float,
) -> None:
    need = min_samples(q)
    assert need == round(10 / (1 - q))
    short = make_records(need - 1, seed=9, span_s=0.5)
    enough = make_records(need, seed=10, span_s=0.5, t0_ns=T0_NS + 10**9)
    got = windows(pa.concat_tables([short, enough]), "1s", by=(), quantiles=(q,))
    column = f"response_{quantile_label(q)}_ms"
    assert list(got["requests"]) == [need - 1, need]
    assert list(got[f"{column}_low_n"]) == [True, False]
    assert list(got[f"service_{quantile_label(q)}_ms_low_n"]) == [True, False]
    # The flag marks the figure; the figure is still there.
    assert got[column].notna().all()


def test_overall_equals_pandas_per_group_and_in_total(run: Run) -> None:
    got = overall(run, by=("endpoint",), total=True)
    df = run.requests()
    want = reference(df, ["endpoint"])
    assert_same_figures(got.iloc[:-1][want.columns], want, ["endpoint"])
    everything = reference(df, [])
    last = got.iloc[[-1]].reset_index(drop=True)
    assert last["endpoint"].isna().all()
    assert_same_figures(last[everything.columns], everything, [])
    span_s = ((df["start_ns"] + df["latency_ns"]).max() - df["start_ns"].min()) / 1e9
    assert np.allclose(got["duration_s"], span_s)
    assert np.allclose(got["throughput_rps"], got["requests"] / span_s)
    assert (got["quantile_rel_error"] == 0).all()


def test_overall_from_histograms_is_within_the_stated_error(run: Run) -> None:
    got = overall(run, by=("method", "endpoint"), total=True, exact_rows=0)
    assert (got["quantile_rel_error"] == RELATIVE_ERROR).all()
    exact = overall(run, by=("method", "endpoint"), total=True)
    quantiles = [c for c in got.columns if c.endswith("_ms") and "_p" in c]
    assert len(quantiles) == 2 * len(QS)
    np.testing.assert_allclose(
        got[quantiles].to_numpy(), exact[quantiles].to_numpy(), rtol=RELATIVE_ERROR
    )
    # Everything that is not a quantile is exact on either path.
    others = [
        c for c in exact.columns if c not in quantiles and c != "quantile_rel_error"
    ]
    pd.testing.assert_frame_equal(got[others], exact[others])


def test_aggregate_in_one_pass_equals_windows_and_overall(run: Run) -> None:
    one_pass = aggregate(
        run,
        "1s",
        by=("endpoint",),
        overall_by=("phase",),
        exact_rows=0,
        slice_rows=2_000,
    )
    pd.testing.assert_frame_equal(one_pass.windows, windows(run, "1s"))
    pd.testing.assert_frame_equal(
        one_pass.overall, overall(run, by=("phase",), total=True, exact_rows=0)
    )
    small = aggregate(run, "1s", overall_by=("phase",))
    assert (small.overall["quantile_rel_error"] == 0).all()
    pd.testing.assert_frame_equal(small.windows, one_pass.windows)
    assert one_pass.total_windows is None


@pytest.mark.parametrize("exact_rows", [0, 10**9])
def test_aggregate_gives_the_windows_over_all_requests_from_the_same_pass(
    run: Run, exact_rows: int
) -> None:
    both = aggregate(
        run,
        "1s",
        by=("endpoint",),
        total_windows=True,
        exact_rows=exact_rows,
        slice_rows=2_000,
    )
    pd.testing.assert_frame_equal(both.windows, windows(run, "1s"))
    assert both.total_windows is not None
    pd.testing.assert_frame_equal(both.total_windows, windows(run, "1s", by=()))


def test_several_runs_are_kept_apart_by_their_run_column(
    tmp_path: Path, run: Run
) -> None:
    other = write_run(tmp_path / "other", [make_records(500, seed=13)], run_id="o")
    got = overall(open_runs([run.path, other.path]), by=("run",))
    assert dict(zip(got["run"], got["requests"], strict=True)) == {
        "r1": 21_000,
        "o": 500,
    }


def test_an_empty_run_gives_empty_frames_with_the_columns(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"run_id": "empty"}')
    run = open_run(folder)
    reference_columns = windows(make_records(50), "1s").columns
    got = windows(run, "1s")
    assert got.empty
    assert list(got.columns) == [
        c for c in reference_columns if not c.startswith("errors_")
    ]
    whole = overall(run, total=True)
    assert whole.empty
    assert "response_p99_ms" in whole.columns
    assert aggregate(run).windows.empty


def test_a_negative_duration_is_clamped_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = make_records(100, seed=14, span_s=0.5)
    intended = table.column("intended_ns").to_numpy().copy()
    intended[0] += 10**12  # scheduled 1000 s after it was sent: a broken clock
    table = table.set_column(
        table.schema.get_field_index("intended_ns"),
        table.schema.field("intended_ns"),
        pa.array(intended),
    )
    with caplog.at_level(logging.WARNING, logger="analysis.windows"):
        got = windows(table, "1s", by=())
    assert "1 durations" in caplog.text
    assert got["response_p50_ms"].iloc[0] >= 0


def test_grouping_by_an_unknown_column_names_the_columns(run: Run) -> None:
    with pytest.raises(WindowSpecError, match=r"\['path'\] are not in the records"):
        windows(run, "1s", by=("path",))
    with pytest.raises(WindowSpecError, match="are not in the records"):
        overall(run.requests_table(), by=("path",))


@pytest.mark.parametrize(
    ("every", "ns"),
    [
        ("1s", 10**9),
        ("10s", 10**10),
        ("1min", 6 * 10**10),
        ("250ms", 25 * 10**7),
        (0.5, 5 * 10**8),
        (2, 2 * 10**9),
        ("1.5 h", 5_400 * 10**9),
    ],
)
def test_window_lengths_in_words_or_seconds(every: str | float, ns: int) -> None:
    assert parse_every(every) == ns


@pytest.mark.parametrize(
    "every", ["1 fortnight", "s", "-1s", 0, "0s", True, float("inf"), float("nan")]
)
def test_a_window_length_that_is_not_one_says_how_to_write_it(
    every: str | float,
) -> None:
    with pytest.raises(WindowSpecError, match="window length"):
        parse_every(every)


def test_quantiles_outside_zero_and_one_are_refused(run: Run) -> None:
    with pytest.raises(WindowSpecError, match=r"write 0\.99 for p99"):
        windows(run, "1s", quantiles=(99,))


def test_quantile_labels() -> None:
    assert [quantile_label(q) for q in (0.5, 0.9, 0.99, 0.999, 0.9999)] == [
        "p50",
        "p90",
        "p99",
        "p99_9",
        "p99_99",
    ]


@pytest.mark.slow
def test_windows_of_a_real_run_against_the_demo_target_equal_pandas(
    tmp_path: Path, demo_target: object
) -> None:
    from harness.coordinator import Coordinator, RunOptions
    from harness.profile.load import load_profile_text

    url = demo_target.url  # type: ignore[attr-defined]
    profile = load_profile_text(
        f"""
name: windows
target: {url}
http: {{timeout: 5s}}
load:
  model: open
  arrivals: poisson
  max_vus: 50
  phases: [{{name: steady, duration: 2s, rate: 200}}]
scenarios:
  - name: health
    flow:
      - {{name: health, path: /healthz, check: {{status: 200}}}}
      - {{name: profile-missing, path: /api/user/profile}}
""",
        "windows.yaml",
    )
    outcome = Coordinator(
        profile, RunOptions(out_dir=tmp_path, run_id="real", workers=2)
    ).run()
    run = open_run(outcome.run_dir)
    df = run.requests()
    assert len(df) == outcome.rows > 300
    got = windows(run, "1s", by=("endpoint",), fill=False, slice_rows=200)
    df["window_start"] = pd.to_datetime(
        df["start_ns"] // 10**9 * 10**9, unit="ns", utc=True
    )
    want = reference(df, ["window_start", "endpoint"])
    assert_same_figures(got[want.columns], want, ["window_start", "endpoint"])
    whole = overall(run, by=("endpoint",), total=True)
    assert whole["requests"].iloc[-1] == len(df)
    # The profile step without a token is refused by the target: a real error kind.
    assert whole["errors"].iloc[-1] > 0


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two 10 s runs, the second starting 32 s after the first began (start times
    at 0.3 s and 32.6 s past a whole second, so no run fills its first window)."""
    folder = tmp_path_factory.mktemp("pair")
    first = make_records(300, seed=21, span_s=10, t0_ns=T0_NS + 3 * 10**8)
    second = make_records(300, seed=22, span_s=10, t0_ns=T0_NS + 32_600 * 10**6)
    a = write_run(folder / "a", [first], run_id="a")
    b = write_run(folder / "b", [second], run_id="b")
    return a.path, b.path


def span_s(df: pd.DataFrame) -> float:
    return float((df["start_ns"] + df["latency_ns"]).max() - df["start_ns"].min()) / 1e9


@pytest.mark.parametrize("exact_rows", [DEFAULT_EXACT_ROWS, 0], ids=["exact", "hist"])
def test_over_several_runs_each_run_has_its_own_span(
    two_runs: tuple[Path, Path], exact_rows: int
) -> None:
    runs = open_runs(two_runs)
    df = runs.requests()
    spans = {r: span_s(df[df["run"] == r]) for r in ("a", "b")}
    assert 9.5 < spans["a"] < 10.5 and 9.5 < spans["b"] < 10.5

    got = overall(runs, by=("run",), exact_rows=exact_rows).set_index("run")
    for r in ("a", "b"):
        assert got.loc[r, "duration_s"] == pytest.approx(spans[r])
        assert got.loc[r, "throughput_rps"] == pytest.approx(300 / spans[r])

    # Grouped by something else, and in total: the time the runs were going,
    # without the 22 s between them.
    by_endpoint = overall(runs, by=("endpoint",), total=True, exact_rows=exact_rows)
    both = spans["a"] + spans["b"]
    assert by_endpoint["duration_s"].to_numpy() == pytest.approx(both)
    total = by_endpoint.iloc[-1]
    assert total["throughput_rps"] == pytest.approx(600 / both)
    assert by_endpoint.iloc[:-1]["throughput_rps"].sum() == pytest.approx(
        total["throughput_rps"]
    )


def test_a_group_in_one_run_only_is_judged_over_that_run(
    two_runs: tuple[Path, Path],
) -> None:
    runs = open_runs(two_runs)
    df = runs.requests()
    got = overall(df[df["run"] == "a"].assign(endpoint="/only-a"), by=("endpoint",))
    mixed = pd.concat(
        [df[df["run"] == "a"].assign(endpoint="/only-a"), df[df["run"] == "b"]]
    )
    both = overall(mixed, by=("endpoint",)).set_index("endpoint")
    assert both.loc["/only-a", "duration_s"] == pytest.approx(got["duration_s"].iloc[0])


def test_each_runs_first_and_last_windows_are_partial(
    two_runs: tuple[Path, Path],
) -> None:
    runs = open_runs(two_runs)
    df = runs.requests()
    got = windows(runs, "1s", by=("run",))
    for r in ("a", "b"):
        mine = got[got["run"] == r].reset_index(drop=True)
        assert list(mine["partial"]) == [True] + [False] * (len(mine) - 2) + [True]
        rows = df[df["run"] == r]
        first, end = (
            rows["start_ns"].min(),
            (rows["start_ns"] + rows["latency_ns"]).max(),
        )
        head, tail = mine.iloc[0], mine.iloc[-1]
        head_start = head["window_start"].value
        assert head["covered_offset_s"] == pytest.approx((first - head_start) / 1e9)
        assert head["covered_s"] == pytest.approx(1 - (first - head_start) / 1e9)
        tail_start = tail["window_start"].value
        assert tail["covered_offset_s"] == 0
        assert tail["covered_s"] == pytest.approx(min(1.0, (end - tail_start) / 1e9))
        inner = mine.iloc[1:-1]
        assert (inner["covered_s"] == 1.0).all()
        assert (inner["covered_offset_s"] == 0).all()

    # Not grouped by run: the edges of both runs, and the empty windows between
    # them, are partial.
    mixed = windows(runs, "1s", by=())
    starts = mixed["window_start"].astype("int64").to_numpy()
    edges = {
        int(mine["window_start"].iloc[i].value)
        for r in ("a", "b")
        for mine in [got[got["run"] == r]]
        for i in (0, -1)
    }
    gap = mixed["requests"].to_numpy() == 0
    assert gap.sum() > 15
    assert (mixed["covered_s"].to_numpy()[gap] == 0).all()
    expected = [s in edges or g for s, g in zip(starts, gap, strict=True)]
    assert list(mixed["partial"]) == expected
