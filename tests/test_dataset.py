"""Opening run directories: finished parts only, filters, empty runs, several runs.

The run folders are written here with the harness's own record writer, so they have
exactly the files and schema a real run has. ``make_records`` and ``write_run`` are
shared with the windows and summary tests.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import Run, RunNotFound, open_run, open_runs
from analysis.dataset import (
    REQUEST_SCHEMA,
    RESOURCE_COLUMNS,
    DamagedPart,
    DuplicateRun,
    PartIndex,
    RunUnreadable,
    to_epoch_ns,
)
from harness.record import SCHEMA, PartWriter

T0_S = 1_767_225_600  # 2026-01-01 00:00:00 UTC
T0_NS = T0_S * 10**9
ENDPOINTS = ("/api/a", "/api/b/{id}", "/healthz")
ERROR_KINDS = ("status", "reset", "read_timeout")


def _text(codes: np.ndarray, values: tuple[str, ...]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(values, pa.string())
    )


def make_records(
    rows: int,
    *,
    seed: int = 0,
    span_s: float = 20.0,
    t0_ns: int = T0_NS,
    worker: int = 0,
    error_rate: float = 0.05,
    endpoints: tuple[str, ...] = ENDPOINTS,
) -> pa.Table:
    """``rows`` request records in time order over ``span_s`` seconds: lognormal
    latencies that differ by endpoint, some errors, a small scheduler lag with a
    few large ones, two phases and two scenarios."""
    rng = np.random.default_rng(seed)
    start = t0_ns + np.sort(rng.integers(0, int(span_s * 1e9), rows))
    endpoint = rng.integers(0, len(endpoints), rows)
    latency = ((1 + endpoint) * 2e6 * np.exp(0.8 * rng.standard_normal(rows))).astype(
        np.int64
    )
    lag = rng.exponential(100_000, rows).astype(np.int64)
    late = rng.random(rows) < 0.02
    lag[late] += rng.exponential(30e6, int(late.sum())).astype(np.int64)
    kind = np.where(
        rng.random(rows) < error_rate, rng.integers(0, len(ERROR_KINDS), rows), -1
    )
    error = pa.DictionaryArray.from_arrays(
        pa.array(kind.astype(np.int32), mask=kind < 0),
        pa.array(ERROR_KINDS, pa.string()),
    )
    phase = (start - t0_ns >= span_s * 1e9 / 4).astype(np.int64)
    columns = {
        "worker": pa.array(np.full(rows, worker, np.uint16)),
        "vu": pa.array(rng.integers(0, 50, rows).astype(np.uint32)),
        "iteration": pa.array(np.arange(rows, dtype=np.uint32)),
        "scenario": _text(endpoint % 2, ("browse", "buy")),
        "step": _text(endpoint, tuple(f"step {i}" for i in range(len(endpoints)))),
        "method": _text((endpoint == 1).astype(np.int64), ("GET", "POST")),
        "endpoint": _text(endpoint, endpoints),
        "status": pa.array(np.where(kind < 0, 200, 503).astype(np.uint16)),
        "error": error,
        "intended_ns": pa.array(start - lag),
        "start_ns": pa.array(start),
        "latency_ns": pa.array(latency),
        "ttfb_ns": pa.array(latency * 9 // 10),
        "connect_ns": pa.array(np.zeros(rows, np.int64)),
        "bytes_out": pa.array(rng.integers(100, 300, rows).astype(np.uint32)),
        "bytes_in": pa.array(rng.integers(200, 4000, rows).astype(np.uint32)),
        "phase": _text(phase, ("warm-up", "steady")),
        "offered": pa.array(np.full(rows, 100.0, np.float32)),
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_run(
    folder: Path,
    tables: list[pa.Table],
    *,
    run_id: str = "r1",
    row_group_rows: int = 500,
    part_rows: int = 2_000,
) -> Run:
    """A run directory whose worker K wrote ``tables[K]`` through the harness's
    part writer, in row groups of ``row_group_rows`` and parts of ``part_rows``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"run_id": run_id, "status": "completed"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    events = [{"time": 1.0, "event": "run_start"}, {"time": 2.0, "event": "run_end"}]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    for k, table in enumerate(tables):
        writer = PartWriter(
            folder / "requests" / f"worker-{k}",
            {"run_id": run_id},
            rotate_rows=part_rows,
            rotate_s=3600.0,
        )
        for offset in range(0, table.num_rows, row_group_rows):
            writer.write(table.slice(offset, row_group_rows))
        writer.close()
    return open_run(folder)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return write_run(
        tmp_path / "r1",
        [make_records(3_000, seed=1), make_records(2_000, seed=2, worker=1)],
    )


def test_request_schema_copy_matches_the_harness_record_schema() -> None:
    assert REQUEST_SCHEMA.names == SCHEMA.names
    assert [f.type for f in REQUEST_SCHEMA] == [f.type for f in SCHEMA]


def test_open_run_reads_every_row_of_every_worker(run: Run) -> None:
    df = run.requests()
    assert len(df) == 5_000
    assert list(df.columns) == list(SCHEMA.names)
    assert sorted(df["worker"].unique()) == [0, 1]
    assert len(run.request_parts()) == 3  # parts of 2000 rows: 2 + 1
    assert run.requests_dataset().count_rows() == 5_000
    assert run.run_id == "r1"


def test_open_run_on_a_folder_without_manifest_says_what_to_pass(
    tmp_path: Path, run: Run
) -> None:
    with pytest.raises(RunNotFound, match=r"no manifest\.json.*runs/<run-id>"):
        open_run(tmp_path / "nowhere")
    with pytest.raises(RunNotFound, match=r"looks like the run directory"):
        open_run(run.path / "requests")


def test_requests_filters_select_the_same_rows_as_pandas(run: Run) -> None:
    df = run.requests()
    start, end = T0_NS + 5 * 10**9, T0_NS + 12 * 10**9
    got = run.requests(
        start=pd.Timestamp(start, unit="ns"),
        end=pd.Timestamp(end, unit="ns"),
        endpoint="/api/a",
        phase="steady",
    )
    want = df[
        (df["start_ns"] >= start)
        & (df["start_ns"] < end)
        & (df["endpoint"] == "/api/a")
        & (df["phase"] == "steady")
    ]
    assert len(got) == len(want) > 0
    assert sorted(got["start_ns"]) == sorted(want["start_ns"])
    several = run.requests(
        columns=["endpoint"], endpoint=["/api/a", "/healthz"], scenario="browse"
    )
    want = df[
        df["endpoint"].isin(["/api/a", "/healthz"]) & (df["scenario"] == "browse")
    ]
    assert len(several) == len(want) > 0
    assert list(several.columns) == ["endpoint"]


def test_requests_accept_timestamps_as_well_as_epoch_seconds(run: Run) -> None:
    stamp = pd.Timestamp("2026-01-01 00:00:05", tz="UTC")
    by_stamp = run.requests_table(["start_ns"], start=stamp)
    by_ns = run.requests_table(["start_ns"], start=pd.Timestamp(T0_NS + 5 * 10**9))
    by_s = run.requests_table(["start_ns"], start=T0_S + 5)
    by_float = run.requests_table(["start_ns"], start=T0_S + 5.0)
    naive = run.requests_table(["start_ns"], start="2026-01-01T00:00:05")
    assert by_stamp.num_rows == by_ns.num_rows == naive.num_rows > 0
    assert by_s.num_rows == by_float.num_rows == by_stamp.num_rows
    assert to_epoch_ns(stamp) == T0_NS + 5 * 10**9


def test_a_number_is_epoch_seconds_like_the_manifests_started_at(run: Run) -> None:
    starts = run.requests(["start_ns"])["start_ns"]
    # The first five and a half seconds of the run, as a notebook would ask.
    got = run.requests(["start_ns"], start=T0_S, end=T0_S + 5.5)
    want = starts[(starts >= T0_NS) & (starts < T0_NS + 5_500_000_000)]
    assert len(got) == len(want) > 0
    assert to_epoch_ns(T0_S) == T0_NS
    assert to_epoch_ns(np.int64(T0_S)) == T0_NS
    assert to_epoch_ns(T0_S + 0.25) == T0_NS + 250_000_000


def test_a_number_too_large_for_seconds_is_refused_with_the_way_to_pass_ns(
    run: Run,
) -> None:
    with pytest.raises(ValueError, match=r"epoch seconds.*unit='ns'"):
        run.requests(start=T0_NS)
    with pytest.raises(ValueError, match=r"too large to be seconds"):
        to_epoch_ns(T0_S * 1000)  # milliseconds
    with pytest.raises(ValueError, match="finite"):
        to_epoch_ns(float("nan"))
    with pytest.raises(TypeError):
        to_epoch_ns(True)


def test_requests_with_an_unknown_column_name_the_columns(run: Run) -> None:
    with pytest.raises(KeyError, match=r"latency_ms.*the columns are"):
        run.requests(["latency_ms"])


def test_a_run_still_being_written_reads_only_finished_parts(tmp_path: Path) -> None:
    run = write_run(tmp_path / "live", [make_records(1_000)])
    folder = run.path / "requests" / "worker-0"
    # A part in progress: named with a leading dot, its footer not yet written.
    (folder / ".part-000009.parquet").write_bytes(b"PAR1 half a part")
    assert len(run.requests()) == 1_000
    assert run.part_index().rows == 1_000


def test_an_empty_run_reads_as_an_empty_frame_with_every_column(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"run_id": "empty"}')
    run = open_run(folder)
    df = run.requests()
    assert df.empty
    assert list(df.columns) == list(SCHEMA.names)
    assert str(df["start_ns"].dtype) == "int64"
    assert run.requests(endpoint="/x", start=T0_S).empty
    (folder / "requests" / "worker-0").mkdir(parents=True)
    assert list(run.requests().columns) == list(SCHEMA.names)
    assert list(run.events().columns) == ["time", "event"]
    assert list(run.resources().columns) == list(RESOURCE_COLUMNS)


def test_a_damaged_manifest_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    manifest = folder / "manifest.json"
    manifest.write_text("{not json\n")
    with pytest.raises(
        RunUnreadable, match=r"manifest\.json cannot be read: it is not JSON"
    ):
        open_run(folder)
    manifest.write_text("[1, 2]")
    with pytest.raises(RunUnreadable, match=r"JSON list, not an object") as caught:
        open_run(folder)
    assert caught.value.path == manifest
    manifest.write_bytes(b"\xff\xfe{}")
    with pytest.raises(RunUnreadable, match="not UTF-8"):
        open_run(folder)


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_damaged_part_is_named_and_the_rest_can_be_read(run: Run) -> None:
    parts = run.request_parts()
    damaged = parts[-1]
    lost_rows = pq.ParquetFile(damaged).metadata.num_rows
    _cut_in_half(damaged)
    for read in (run.requests, run.requests_table, run.part_index):
        with pytest.raises(DamagedPart, match="without_parts") as caught:
            read()
        assert caught.value.path == damaged
        assert str(damaged) in str(caught.value)
    check = run.check_parts()
    assert list(check.damaged) == [damaged]
    assert check.total_rows == 5_000 - lost_rows
    rest = run.without_parts(check.damaged)
    assert len(rest.requests()) == rest.part_index().rows == 5_000 - lost_rows
    assert damaged not in rest.request_parts()


def test_a_damaged_resource_part_is_named(run: Run) -> None:
    folder = run.path / "resources"
    folder.mkdir()
    part = folder / "part-000001.parquet"
    pq.write_table(pa.table({"time_ns": [T0_NS], "source": ["target"]}), part)
    _cut_in_half(part)
    with pytest.raises(DamagedPart, match="part-000001"):
        run.resources()
    assert run.without_parts([part]).resources().empty


def test_event_records_keep_integers_as_written(run: Run) -> None:
    with open(run.path / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": 3.5, "event": "worker_exit", "worker": 1}) + "\n")
    records = run.event_records()
    assert records[-1] == {"time": 3.5, "event": "worker_exit", "worker": 1}
    assert isinstance(records[-1]["worker"], int)


def test_events_skip_a_line_cut_short_by_a_crash(run: Run) -> None:
    with open(run.path / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"time": 3.0, "event": "wor')
    events = run.events()
    assert list(events["event"]) == ["run_start", "run_end"]


def test_resources_read_finished_monitor_parts(run: Run) -> None:
    folder = run.path / "resources"
    folder.mkdir()
    samples = pa.table(
        {
            "time_ns": [T0_NS, T0_NS + 10**9],
            "source": ["target", "host"],
            "pid": [10, 0],
            "cpu_percent": [12.5, 40.0],
            "rss_bytes": [1 << 20, 1 << 30],
        }
    )
    pq.write_table(samples, folder / "part-000001.parquet")
    pq.write_table(samples, folder / ".part-000002.parquet")
    resources = run.resources()
    assert len(resources) == 2
    assert list(resources["source"]) == ["target", "host"]


def test_resources_keep_a_column_that_only_later_parts_have(run: Run) -> None:
    folder = run.path / "resources"
    folder.mkdir()
    first = pa.table({"time_ns": [T0_NS], "source": ["prometheus"]})
    later = pa.table(
        {"time_ns": [T0_NS + 10**9], "source": ["prometheus"], "prom_queue": [3.0]}
    )
    pq.write_table(first, folder / "part-000001.parquet")
    pq.write_table(later, folder / "part-000002.parquet")
    resources = run.resources().sort_values("time_ns")
    assert resources["prom_queue"].isna().tolist() == [True, False]
    assert resources["prom_queue"].iloc[1] == 3.0


def test_open_runs_tags_each_row_with_its_run(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a", [make_records(300, seed=3)], run_id="a")
    second = write_run(tmp_path / "b", [make_records(200, seed=4)], run_id="b")
    runs = open_runs([first.path, second.path])
    df = runs.requests(columns=["endpoint", "latency_ns"])
    assert df.groupby("run", observed=True).size().to_dict() == {"a": 300, "b": 200}
    assert runs.requests_table(endpoint="/healthz").num_rows == (
        first.requests_table(endpoint="/healthz").num_rows
        + second.requests_table(endpoint="/healthz").num_rows
    )
    assert set(runs.events()["run"]) == {"a", "b"}
    assert runs.run_ids == ["a", "b"]


def test_open_runs_refuses_two_runs_with_one_id(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a", [make_records(10)], run_id="same")
    second = write_run(tmp_path / "b", [make_records(10)], run_id="same")
    with pytest.raises(DuplicateRun, match="both have run id 'same'"):
        open_runs([first.path, second.path])


def test_open_runs_of_nothing_has_the_record_columns_and_run() -> None:
    table = open_runs([]).requests_table()
    assert table.num_rows == 0
    assert table.schema.names == [*SCHEMA.names, "run"]


def test_part_index_slices_cover_every_row_exactly_once(run: Run) -> None:
    index: PartIndex = run.part_index()
    plan = index.plan(step_ns=10**9, slice_rows=700)
    assert len(plan) > 3
    assert all(start % 10**9 == 0 and end % 10**9 == 0 for start, end in plan)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
    seen = np.concatenate(
        [index.read(["start_ns"], span).column("start_ns").to_numpy() for span in plan]
    )
    assert np.array_equal(np.sort(seen), np.sort(run.requests()["start_ns"]))
    batches = list(index.batches(["start_ns"], batch_rows=1_200))
    assert sum(b.num_rows for b in batches) == 5_000


def test_part_index_bounds_the_windows_of_one_slice(run: Run) -> None:
    plan = run.part_index().plan(step_ns=10**6, slice_rows=10**9, max_steps=1_000)
    assert all((end - start) // 10**6 <= 1_000 for start, end in plan)
    assert len(plan) >= 20
