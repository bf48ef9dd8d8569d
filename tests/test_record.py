from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from harness.record import (
    ERROR_KINDS,
    FIELDS,
    SCHEMA,
    PartWriter,
    RecordBuffer,
    rows_to_table,
)

RUN_METADATA = {"run_id": "20240101-120000-abcd", "profile_sha256": "f00d", "v": "0.1"}

DICTIONARY_COLUMNS = ["scenario", "step", "method", "endpoint", "error", "phase"]


def record(
    vu: int = 1,
    *,
    error: str | None = None,
    status: int | None = 200,
    endpoint: str = "/api/users/{id}",
) -> tuple[Any, ...]:
    """One row in FIELDS order, as a VU appends it."""
    return (
        3,  # worker
        vu,
        7,  # iteration
        "browse",
        "get user",
        "GET",
        endpoint,
        status,
        error,
        1_700_000_000_000_000_000,  # intended_ns
        1_700_000_000_000_500_000,  # start_ns
        2_500_000,  # latency_ns
        2_000_000,  # ttfb_ns
        0,  # connect_ns
        120,  # bytes_out
        4_096,  # bytes_in
        "steady",
        200.0,  # offered
    )


def table_of(n: int, first_vu: int = 0) -> pa.Table:
    return rows_to_table([record(first_vu + i) for i in range(n)])


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# rows_to_table ------------------------------------------------------------------------


def test_rows_to_table_gives_exactly_the_schema() -> None:
    table = rows_to_table([record(1), record(2, error="status", status=503)])
    assert table.schema.equals(SCHEMA)
    assert table.column_names == list(FIELDS)
    for name in DICTIONARY_COLUMNS:
        assert table.schema.field(name).type == pa.dictionary(pa.int32(), pa.string())
    assert table.schema.field("offered").type == pa.float32()
    assert table.schema.field("status").type == pa.uint16()
    assert table.schema.field("vu").type == pa.uint32()
    assert table.schema.field("start_ns").type == pa.int64()
    assert table.column("error").to_pylist() == [None, "status"]
    assert table.column("status").to_pylist() == [200, 503]
    assert table.column("endpoint").to_pylist() == ["/api/users/{id}"] * 2


def test_only_the_error_column_may_be_null() -> None:
    assert [f.name for f in SCHEMA if f.nullable] == ["error"]
    assert "check" in ERROR_KINDS
    assert len(set(ERROR_KINDS)) == len(ERROR_KINDS)


def test_rows_to_table_of_no_rows_is_an_empty_table_of_the_schema() -> None:
    table = rows_to_table([])
    assert table.num_rows == 0
    assert table.schema.equals(SCHEMA)


def test_rows_to_table_refuses_rows_of_the_wrong_length() -> None:
    with pytest.raises(ValueError):
        rows_to_table([record()[:-1]])
    with pytest.raises(ValueError):
        rows_to_table([record(), record()[:-1]])


@pytest.mark.parametrize(
    "row",
    [
        record(status=70_000),
        record(vu=-1),
        record(vu=2**32),
    ],
)
def test_rows_to_table_refuses_values_out_of_their_columns_range(
    row: tuple[Any, ...],
) -> None:
    with pytest.raises((OverflowError, pa.ArrowInvalid)):
        rows_to_table([row])


def test_record_buffer_hands_over_its_rows_and_counts_them() -> None:
    buffer = RecordBuffer()
    buffer.append(record(1))
    buffer.append(record(2))
    assert len(buffer) == 2
    taken = buffer.take()
    assert [r[1] for r in taken] == [1, 2]
    assert len(buffer) == 0
    buffer.append(record(3))
    assert [r[1] for r in buffer.take()] == [3]
    assert buffer.total == 3
    assert buffer.take() == []


# PartWriter ---------------------------------------------------------------------------


def test_part_writer_writes_one_row_group_per_write(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA)
    for first in (0, 10, 20):
        writer.write(table_of(4, first))
    writer.close()
    assert visible_files(tmp_path) == ["part-000001.parquet"]
    part = pq.ParquetFile(tmp_path / "part-000001.parquet")
    assert part.metadata.num_row_groups == 3
    assert [part.metadata.row_group(i).num_rows for i in range(3)] == [4, 4, 4]
    assert writer.rows_written == 12
    assert writer.parts_done == [tmp_path / "part-000001.parquet"]


def test_part_writer_skips_empty_tables(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA)
    writer.write(rows_to_table([]))
    writer.close()
    assert visible_files(tmp_path) == []
    assert writer.parts_done == []


def test_part_writer_rotates_once_a_part_has_enough_rows(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA, rotate_rows=5)
    for i in range(4):
        writer.write(table_of(3, first_vu=3 * i))
    writer.close()
    # The check comes before each write, so a part ends at the first write that
    # takes it to 5 rows or more.
    assert visible_files(tmp_path) == ["part-000001.parquet", "part-000002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in writer.parts_done] == [6, 6]
    frame = pd.read_parquet(tmp_path)
    assert sorted(frame["vu"].tolist()) == list(range(12))


def test_part_writer_rotates_every_write_when_parts_may_not_age(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA, rotate_s=0.0)
    for i in range(3):
        writer.write(table_of(2, first_vu=2 * i))
    writer.close()
    assert len(writer.parts_done) == 3
    assert pd.read_parquet(tmp_path).shape == (6, len(FIELDS))


def test_rotate_if_due_closes_an_old_part_without_new_rows(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA, rotate_s=0.05)
    writer.write(table_of(2))
    time.sleep(0.1)
    writer.rotate_if_due()
    assert visible_files(tmp_path) == ["part-000001.parquet"]
    writer.rotate_if_due()
    assert writer.parts_done == [tmp_path / "part-000001.parquet"]


def test_rotate_if_due_keeps_a_young_part_open(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA, rotate_s=3600.0)
    writer.write(table_of(2))
    writer.rotate_if_due()
    assert visible_files(tmp_path) == [".part-000001.parquet"]
    writer.close()
    assert visible_files(tmp_path) == ["part-000001.parquet"]


def test_part_in_progress_is_hidden_from_pandas_and_pyarrow(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA)
    writer.write(table_of(5))
    assert visible_files(tmp_path) == [".part-000001.parquet"]
    assert len(pd.read_parquet(tmp_path)) == 0
    assert ds.dataset(tmp_path, format="parquet").count_rows() == 0
    writer.close()
    assert len(pd.read_parquet(tmp_path)) == 5
    assert ds.dataset(tmp_path, format="parquet").count_rows() == 5


def test_finished_parts_carry_the_run_metadata_and_the_exact_types(
    tmp_path: Path,
) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA)
    writer.write(rows_to_table([record(1), record(2, error="check")]))
    writer.close()
    metadata = pq.read_schema(tmp_path / "part-000001.parquet").metadata
    for key, value in RUN_METADATA.items():
        assert metadata[key.encode()] == value.encode()
    table = pq.read_table(tmp_path / "part-000001.parquet")
    assert table.schema.equals(SCHEMA, check_metadata=False)
    frame = pd.read_parquet(tmp_path)
    assert isinstance(frame["endpoint"].dtype, pd.CategoricalDtype)
    assert str(frame["status"].dtype) == "uint16"
    assert frame["error"].isna().tolist() == [True, False]


def test_parts_with_different_dictionaries_read_as_one_frame(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA, rotate_rows=1)
    writer.write(rows_to_table([record(1, endpoint="/a")]))
    writer.write(rows_to_table([record(2, endpoint="/b", error="reset", status=0)]))
    writer.close()
    frame = pd.read_parquet(tmp_path).sort_values("vu")
    assert frame["endpoint"].tolist() == ["/a", "/b"]
    assert frame["error"].tolist()[1] == "reset"


def test_close_twice_is_harmless(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA)
    writer.write(table_of(3))
    writer.close()
    writer.close()
    assert writer.parts_done == [tmp_path / "part-000001.parquet"]
    assert visible_files(tmp_path) == ["part-000001.parquet"]
    assert len(pd.read_parquet(tmp_path)) == 3


def test_unfinished_part_does_not_hide_the_finished_ones(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA, rotate_rows=3)
    writer.write(table_of(3, first_vu=0))
    writer.write(table_of(3, first_vu=3))  # rotates: part 1 is finished
    assert visible_files(tmp_path) == [".part-000002.parquet", "part-000001.parquet"]
    assert sorted(pd.read_parquet(tmp_path)["vu"].tolist()) == [0, 1, 2]
    assert ds.dataset(tmp_path, format="parquet").count_rows() == 3


def test_part_cut_short_by_a_dying_process_loses_only_itself(tmp_path: Path) -> None:
    # A real process writes one finished part and one in progress, then exits
    # without closing anything, as a killed worker would.
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from harness.record import PartWriter, rows_to_table
        from tests.test_record import record

        writer = PartWriter(Path({str(tmp_path)!r}), {{"run_id": "r"}}, rotate_rows=2)
        writer.write(rows_to_table([record(0), record(1)]))
        writer.write(rows_to_table([record(2), record(3)]))
        os._exit(0)
        """
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=60)
    assert visible_files(tmp_path) == [".part-000002.parquet", "part-000001.parquet"]
    with pytest.raises(pa.ArrowInvalid):
        pq.ParquetFile(tmp_path / ".part-000002.parquet")
    assert sorted(pd.read_parquet(tmp_path)["vu"].tolist()) == [0, 1]
    assert ds.dataset(tmp_path, format="parquet").count_rows() == 2


def test_null_in_a_required_column_is_refused(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA)
    # pyarrow's ArrowInvalid is a ValueError; a check of its own may raise either.
    with pytest.raises(ValueError, match="status"):
        writer.write(rows_to_table([record(status=None)]))
    assert writer.rows_written == 0


def test_failed_write_leaves_the_finished_parts_readable(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, RUN_METADATA, rotate_rows=2)
    writer.write(table_of(2, first_vu=0))
    writer.write(table_of(1, first_vu=2))  # part 1 finished, part 2 in progress
    with pytest.raises(ValueError, match="status"):
        writer.write(rows_to_table([record(status=None)]))
    writer.close()
    assert sorted(pd.read_parquet(tmp_path)["vu"].tolist())[:2] == [0, 1]


def test_second_writer_on_a_folder_keeps_the_first_ones_parts(tmp_path: Path) -> None:
    first = PartWriter(tmp_path, RUN_METADATA)
    first.write(table_of(3, first_vu=0))
    first.close()
    second = PartWriter(tmp_path, RUN_METADATA)
    second.write(table_of(2, first_vu=10))
    second.close()
    assert sorted(pd.read_parquet(tmp_path)["vu"].tolist()) == [0, 1, 2, 10, 11]
