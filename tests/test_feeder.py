"""Data feeders: the shard split, lazy reading, reuse, and real runs against nginx.

The end-to-end runs send each row's id in the query string to an nginx that logs
every request URI, so the test can see which rows went out and how often: the
harness's own records hold endpoint templates, not the values sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.feeder import (
    EXHAUSTED,
    Feeder,
    FeederError,
    RowReader,
    check_data_file,
    csv_first_line,
    parquet_columns,
    shard_rows,
)
from harness.profile.model import DataSource

from .servers import run_nginx

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def logging_nginx(root: Path) -> Iterator[tuple[str, Path]]:
    """An nginx that writes every request URI to a log; yields (url, log path)."""
    with run_nginx(root, log_uris=True) as url:
        yield url, root / "access.log"


def sent_ids(log: Path) -> list[int]:
    """The ``user`` query values nginx logged, in order."""
    ids = []
    for line in log.read_text().splitlines():
        if "user=" in line:
            ids.append(int(line.split("user=", 1)[1].split("&", 1)[0]))
    return ids


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as f:
        f.write("id,email,password\n")
        f.writelines(f"{i},user{i}@example.com,secret-{i:07d}\n" for i in range(rows))


def write_parquet(path: Path, rows: int) -> None:
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "email": [f"user{i}@example.com" for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=100_000)


def csv_source(path: Path, **kwargs: object) -> DataSource:
    return DataSource(
        path=str(path),
        format="csv",
        columns=("id", "email", "password"),
        **kwargs,  # type: ignore[arg-type]
    )


# -- the shard split and the reader ----------------------------------------------


@pytest.mark.parametrize(
    ("total", "shard", "n", "expected"),
    [
        (10, 0, 1, list(range(10))),
        (10, 0, 3, [0, 3, 6, 9]),
        (10, 1, 3, [1, 4, 7]),
        (10, 2, 3, [2, 5, 8]),
        (2, 3, 4, []),
        (0, 0, 2, []),
    ],
)
def test_shard_rows_interleaves_rows_by_worker(
    total: int, shard: int, n: int, expected: list[int]
) -> None:
    assert list(shard_rows(total, shard, n)) == expected


def test_shard_rows_refuses_a_shard_outside_the_workers() -> None:
    with pytest.raises(ValueError, match="shard 2"):
        shard_rows(10, 2, 2)


@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_row_reader_shards_are_disjoint_and_cover_the_file(
    tmp_path: Path, n_shards: int
) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 1001)
    seen: list[int] = []
    for shard in range(n_shards):
        reader = RowReader(csv_source(path), shard, n_shards, chunk_rows=64)
        ids = [int(row[0]) for chunk in reader.chunks() for row in chunk]
        assert ids == list(shard_rows(1001, shard, n_shards))
        seen.extend(ids)
    assert sorted(seen) == list(range(1001))


def test_row_reader_reads_parquet_columns_as_text(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    write_parquet(path, 250_001)
    source = DataSource(str(path), "parquet", ("email", "id"), ("email", "id"))
    chunks = list(RowReader(source, 1, 2, chunk_rows=10_000).chunks())
    assert all(len(c) == 10_000 for c in chunks[:-1])
    rows = [row for chunk in chunks for row in chunk]
    assert len(rows) == 125_000
    assert rows[0] == ("user1@example.com", "1")
    assert rows[-1] == ("user249999@example.com", "249999")


def test_csv_header_and_parquet_schema_give_the_column_names(tmp_path: Path) -> None:
    write_csv(tmp_path / "u.csv", 3)
    write_parquet(tmp_path / "u.parquet", 3)
    assert csv_first_line(str(tmp_path / "u.csv"), ",") == ["id", "email", "password"]
    assert parquet_columns(str(tmp_path / "u.parquet")) == {
        "id": "integer",
        "email": "text",
    }


def test_parse_error_names_the_file_but_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,email,password\n1,a@example.com,hunter2-secret\n2,oops\n")
    with pytest.raises(FeederError) as caught:
        for _ in RowReader(csv_source(path), 0, 1).chunks():
            pass
    message = str(caught.value)
    assert "users.csv" in message
    assert "line 3 has 2 fields where 3" in message
    assert "hunter2" not in message and "oops" not in message


def test_parse_error_line_counts_blank_lines_and_quoted_newlines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(
        'id,email,password\n1,"two\nlines",p\n\n2,b,c\n3,d,e,extra-secret\n'
    )
    with pytest.raises(FeederError) as caught:
        check_data_file(csv_source(path))
    message = str(caught.value)
    assert "line 6 has 4 fields where 3" in message, message
    assert "extra-secret" not in message


def test_text_that_is_not_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"id,email,password\n1,a,b\n2,caf\xe9,c\n")
    with pytest.raises(FeederError, match="line 3 is not valid UTF-8"):
        check_data_file(csv_source(path))


def test_check_refuses_a_header_without_data_rows(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,email,password\n\n")
    with pytest.raises(FeederError, match="a header line and no data rows"):
        check_data_file(csv_source(path))
    path.write_text("id,email,password\n1,a,b\n")
    check = check_data_file(csv_source(path))
    assert (check.rows, check.complete) == (1, True)


def test_check_reads_the_start_of_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 100_000)
    with path.open("a") as f:
        f.write("x,y\n")  # line 100 002, past the part checked below
    partial = check_data_file(csv_source(path), limit_bytes=1 << 16)
    assert not partial.complete and 0 < partial.rows < 100_000
    small = tmp_path / "small.csv"
    write_csv(small, 3)
    check = check_data_file(csv_source(small), limit_bytes=0)
    assert (check.rows, check.complete) == (3, True)
    with pytest.raises(FeederError, match="line 100002 has 2 fields"):
        check_data_file(csv_source(path))


def test_byte_order_mark_is_not_part_of_the_first_column_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"\xef\xbb\xbfid,email\n1,a@example.com\n")
    assert csv_first_line(str(path), ",") == ["id", "email"]
    source = DataSource(path=str(path), format="csv", columns=("id", "email"))
    chunks = list(RowReader(source, 0, 1).chunks())
    assert chunks == [[("1", "a@example.com")]]


# -- the feeder ----------------------------------------------------------------------


def drain(feeder: Feeder, limit: int) -> list[str]:
    """Take ids until the feeder is exhausted or ``limit`` rows, refilling inline."""
    ids: list[str] = []
    while len(ids) < limit:
        row = feeder.take()
        if row is None:
            feeder.refill()
            continue
        if row is EXHAUSTED:
            break
        assert isinstance(row, tuple)
        ids.append(row[0])
    return ids


def test_feeder_without_reuse_is_exhausted_after_its_share(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 10)
    feeder = Feeder(csv_source(path), 1, 2, seed=1, chunk_rows=2)
    assert drain(feeder, 100) == ["1", "3", "5", "7", "9"]
    assert feeder.take() is EXHAUSTED
    assert feeder.rows_taken == 5


def test_feeder_with_reuse_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 6)
    feeder = Feeder(csv_source(path, reuse=True), 0, 2, seed=1, chunk_rows=2)
    assert drain(feeder, 7) == ["0", "2", "4", "0", "2", "4", "0"]
    assert feeder.passes == 3


def test_feeder_with_reuse_and_fewer_rows_than_workers_wraps_around(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 3)
    # Five workers, three rows: workers 0-2 have one row each; 3 and 4 have none
    # of their own and take rows 0 and 1, so every arrival gets a row.
    taken = {
        shard: drain(Feeder(csv_source(path, reuse=True), shard, 5, seed=1), 4)
        for shard in range(5)
    }
    assert taken == {
        0: ["0"] * 4,
        1: ["1"] * 4,
        2: ["2"] * 4,
        3: ["0"] * 4,
        4: ["1"] * 4,
    }
    one_row = tmp_path / "one.csv"
    write_csv(one_row, 1)
    feeder = Feeder(csv_source(one_row, reuse=True), 1, 2, seed=1)
    assert drain(feeder, 10) == ["0"] * 10
    assert feeder.wrapped and feeder.file_rows == 1


def test_feeder_without_reuse_and_an_empty_share_knows_the_file_size(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 1)
    feeder = Feeder(csv_source(path), 1, 2, seed=1)
    assert drain(feeder, 10) == []
    assert feeder.file_rows == 1 and not feeder.wrapped and feeder.error is None


def test_feeder_hands_out_the_rows_before_a_bad_line_then_stops(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 20_000)  # about 800 kB: several blocks of CSV_BLOCK_BYTES
    with path.open("a") as f:
        f.write("20000,hunter2-secret\n20001,b,c\n")
    feeder = Feeder(csv_source(path, reuse=True), 0, 1, seed=1, chunk_rows=1000)
    # Refills do not raise: the error is kept, and the rows of the blocks before
    # the bad line's are used, in order.
    ids = drain(feeder, 100_000)
    assert 0 < len(ids) < 20_000
    assert ids == [str(i) for i in range(len(ids))]
    assert feeder.take() is EXHAUSTED
    assert feeder.error is not None
    message = str(feeder.error)
    assert "users.csv: line 20002 has 2 fields where 3" in message
    assert "hunter2" not in message


def test_feeder_random_order_shuffles_within_chunks_reproducibly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 200)

    def ids(seed: int) -> list[str]:
        source = csv_source(path, order="random")
        return drain(Feeder(source, 0, 1, seed=seed, chunk_rows=50), 1000)

    first = ids(7)
    assert sorted(first, key=int) == [str(i) for i in range(200)]
    assert first != [str(i) for i in range(200)]
    # Chunk by chunk: the first 50 taken are the file's first 50 rows.
    assert sorted(first[:50], key=int) == [str(i) for i in range(50)]
    assert ids(7) == first
    assert ids(8) != first


_MEMORY_PROBE = """
import sys
import psutil
from harness.feeder import EXHAUSTED, Feeder
from harness.profile.model import DataSource

source = DataSource(path=sys.argv[1], format="csv", columns=("id", "email", "password"))
feeder = Feeder(source, 0, 2, seed=1)
feeder.refill()
process = psutil.Process()
before = process.memory_info().rss
taken = 0  # counted, not kept: a list of 500 000 ids would itself be ~35 MB
for _ in range(2 * 10**6):
    row = feeder.take()
    if row is None:
        feeder.refill()
    elif row is EXHAUSTED:
        break
    else:
        taken += 1
print(taken, process.memory_info().rss - before)
"""


def test_feeder_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    write_csv(path, 1_000_000)
    # In a fresh interpreter: in the test process, what earlier tests left in the
    # allocator's and pyarrow's pools would blur the figure.
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    taken, grown = (int(x) for x in probe.stdout.split())
    assert taken == 500_000
    assert grown < 30 * 2**20, f"RSS grew by {grown >> 20} MB over 500 000 rows"


# -- real runs ---------------------------------------------------------------------


FEEDER_PROFILE = """
name: feeder
target: {url}
graceful_stop: 5s
load:
  model: open
  max_vus: 40
  phases: [{{duration: {duration}, rate: {rate}}}]
data:
  file: {file}
  reuse: false
scenarios:
  - name: user
    flow:
      - path: /u?user={{{{ id }}}}
        headers: {{X-Email: "{{{{ email }}}}"}}
"""


def run_harness(
    profile: Path, out: Path, workers: int = 2
) -> tuple[subprocess.CompletedProcess[str], dict[int, int]]:
    """Run the profile with the CLI; return the result and each worker's peak RSS
    in bytes, sampled every 50 ms."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "harness", "run", str(profile)),
            *("--workers", str(workers), "--out", str(out), "--run-id", "r"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    peaks: dict[int, int] = {}
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for child in children:
            try:
                # Workers are spawned interpreters; the resource tracker is not.
                if "spawn_main" in " ".join(child.cmdline()):
                    rss = child.memory_info().rss
                    peaks[child.pid] = max(peaks.get(child.pid, 0), rss)
            except psutil.Error:
                continue
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, stdout, stderr
    ), peaks


def events(run_dir: Path) -> list[dict[str, object]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_million_row_file_gives_each_row_to_one_worker_once(
    tmp_path: Path, fmt: str
) -> None:
    data = tmp_path / f"users.{fmt}"
    if fmt == "csv":
        write_csv(data, 1_000_000)
    else:
        write_parquet(data, 1_000_000)
    with logging_nginx(tmp_path / "nginx") as (url, log):
        profile = tmp_path / "feeder.yaml"
        profile.write_text(
            FEEDER_PROFILE.format(url=url, file=data.name, duration="3s", rate=500)
        )
        result, peaks = run_harness(profile, tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    ids = sent_ids(log)
    assert len(ids) == 1500
    assert len(set(ids)) == len(ids), "a row was sent twice"
    # Each worker takes its own rows in file order: worker 0 the even ids, worker 1
    # the odd ones, 750 each, from the start of the file.
    assert sorted(i for i in ids if i % 2 == 0) == list(range(0, 1500, 2))
    assert sorted(i for i in ids if i % 2 == 1) == list(range(1, 1500, 2))
    # Bounded memory. Measured here: a worker of this run peaks near 160 MB
    # without data, 200 MB with the CSV and 175 MB with the Parquet file; its
    # 500 000 rows held as Python tuples would add 134 MB.
    assert len(peaks) == 2
    assert max(peaks.values()) < 280 * 2**20, peaks
    print(f"peak worker RSS with 10^6 rows ({fmt}):", sorted(peaks.values()))


@pytest.mark.slow
def test_run_stops_new_iterations_when_rows_run_out_and_logs_no_secret(
    tmp_path: Path,
) -> None:
    data = tmp_path / "users.csv"
    write_csv(data, 10)
    with logging_nginx(tmp_path / "nginx") as (url, log):
        profile = tmp_path / "feeder.yaml"
        profile.write_text(
            FEEDER_PROFILE.format(url=url, file=data.name, duration="2s", rate=20)
        )
        result, _ = run_harness(profile, tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    assert sorted(sent_ids(log)) == list(range(10))
    run_dir = tmp_path / "runs" / "r"
    exhausted = [e for e in events(run_dir) if e["event"] == "data_exhausted"]
    assert sorted(e["worker"] for e in exhausted) == [0, 1]  # type: ignore[type-var]
    assert all(e["rows_used"] == 5 and e["file"] == "users.csv" for e in exhausted)
    assert "no rows left for this worker" in result.stderr
    # The password column's values are nowhere: not in the records, events,
    # manifest or report, nor in what the command printed.
    assert "secret-" not in result.stdout + result.stderr
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"secret-" not in path.read_bytes(), path


# -- the data block of a native profile ---------------------------------------------

NATIVE = """
target: http://127.0.0.1:1
variables: {{region: eu}}
load: {{model: closed, stages: [{{duration: 1s, target: 1}}]}}
data: {data}
scenarios:
  - name: s
    flow: [{{path: "/u/{{{{ id }}}}?e={{{{ email }}}}"}}]
"""


def test_data_block_names_columns_from_the_header_or_schema(tmp_path: Path) -> None:
    write_csv(tmp_path / "users.csv", 3)
    write_parquet(tmp_path / "users.parquet", 3)
    text = NATIVE.format(
        data="[{file: users.csv, columns: [id, mail, password], order: random}, "
        "{file: users.parquet, columns: [email], reuse: true}]"
    )
    from harness.profile.load import load_profile_text

    profile = load_profile_text(text, str(tmp_path / "p.yaml"))
    csv_data, parquet_data = profile.data
    assert csv_data.columns == ("id", "mail", "password")
    assert csv_data.secret_columns == ("password",)
    assert (csv_data.order, csv_data.reuse, csv_data.header) == ("random", False, True)
    assert parquet_data.path == str(tmp_path / "users.parquet")
    assert (parquet_data.columns, parquet_data.reuse) == (("email",), True)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("{file: nothing.csv}", "does not exist"),
        ("{file: users.csv, header: false}", "needs its columns named"),
        ("{file: users.csv, columns: [a, b]}", "2 column names are given"),
        ("{file: users.csv, columns: [id, region, x]}", "already used"),
        ("{file: users.csv, columns: [id, 2nd, x]}", "cannot be used in a template"),
        ("{file: users.data}", "cannot tell the format"),
        ("{file: users.csv, delimiter: ';;'}", "one character"),
        ("{file: users.csv, shuffle: true}", "unknown key 'shuffle'"),
    ],
)
def test_data_block_errors_say_what_is_wrong(
    tmp_path: Path, data: str, problem: str
) -> None:
    write_csv(tmp_path / "users.csv", 3)
    (tmp_path / "users.data").write_text("id\n1\n")
    from harness.errors import ProfileError
    from harness.profile.load import load_profile_text

    with pytest.raises(ProfileError, match=problem) as caught:
        load_profile_text(NATIVE.format(data=data), str(tmp_path / "p.yaml"))
    assert caught.value.location.line == 5
    assert caught.value.location.path.startswith("data")


def test_data_block_refuses_a_header_only_file_and_a_malformed_line(
    tmp_path: Path,
) -> None:
    from harness.errors import ProfileError
    from harness.profile.load import load_profile_text

    data = tmp_path / "users.csv"
    data.write_text("id,email,password\n")
    text = NATIVE.format(data="{file: users.csv}")
    with pytest.raises(ProfileError, match="header line and no data rows") as caught:
        load_profile_text(text, str(tmp_path / "p.yaml"))
    assert caught.value.location.path == "data.file"
    assert "header: false" in caught.value.fix
    # A short line deep in a 2 MB file is found when the profile is loaded, by
    # its line number, and its content is not repeated.
    write_csv(data, 50_000)
    lines = data.read_text().splitlines(keepends=True)
    lines[9000] = "8999,hunter2-secret\n"
    data.write_text("".join(lines))
    with pytest.raises(ProfileError) as caught:
        load_profile_text(text, str(tmp_path / "p.yaml"))
    assert "line 9001 has 2 fields where 3 were expected" in caught.value.problem
    assert "hunter2" not in str(caught.value)


def test_header_only_data_file_makes_the_command_exit_with_code_2(
    tmp_path: Path,
) -> None:
    (tmp_path / "users.csv").write_text("id,email,password\n")
    profile = tmp_path / "p.yaml"
    profile.write_text(NATIVE.format(data="{file: users.csv}"))
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(profile)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "no data rows" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_file_with_fewer_rows_than_workers_without_reuse_says_so(
    tmp_path: Path,
) -> None:
    data = tmp_path / "users.csv"
    write_csv(data, 1)
    with logging_nginx(tmp_path / "nginx") as (url, log):
        profile = tmp_path / "feeder.yaml"
        profile.write_text(
            FEEDER_PROFILE.format(url=url, file=data.name, duration="1s", rate=4)
        )
        result, _ = run_harness(profile, tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    assert sent_ids(log) == [0]
    assert "users.csv has 1 row for 2 workers" in result.stderr
    assert "set reuse: true in its data block" in result.stderr


def _run_in_process(profile_text: str, data: Path, bad: str, out: Path) -> Any:
    """Load the profile while its data file is sound, then spoil the file (as a
    file changed after the check would be) and run it on 2 workers."""
    from harness.coordinator import Coordinator, RunOptions
    from harness.profile.load import load_profile_text

    profile = load_profile_text(profile_text, str(data.parent / "p.yaml"))
    with data.open("a") as f:
        f.write(bad)
    coordinator = Coordinator(profile, RunOptions(out_dir=out, run_id="r", workers=2))
    return coordinator.run()


@pytest.mark.slow
@pytest.mark.parametrize("rows", [3, 16_000])
def test_malformed_line_met_by_a_worker_is_one_clear_message(
    tmp_path: Path, rows: int, nginx: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Near the top (read before the start) or deep in the file (read during the
    run), a malformed line gives one message per worker with the file and the
    line, no traceback and no value; both workers run and end as ``data_error``."""
    data = tmp_path / "users.csv"
    write_csv(data, rows)
    text = FEEDER_PROFILE.format(url=nginx, file=data.name, duration="1s", rate=20)
    outcome = _run_in_process(text, data, f"{rows},hunter2-secret\n", tmp_path / "runs")
    line = rows + 2
    run_dir = tmp_path / "runs" / "r"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["status"] for s in manifest["shards"]] == ["done", "done"]
    assert [s["stop_reason"] for s in manifest["shards"]] == ["data_error"] * 2
    assert manifest["status"] == "degraded" and outcome.exit_code == 3
    assert any("data file could not be read" in p for p in outcome.problems)
    errors = [e for e in events(run_dir) if e["event"] == "data_error"]
    assert len(errors) == 2
    assert all(f"line {line} has 2 fields" in str(e["error"]) for e in errors)
    captured = capfd.readouterr()
    logged = captured.out + captured.err
    assert logged.count(f"users.csv: line {line} has 2 fields") == 2, logged
    assert "Traceback" not in logged and "hunter2" not in logged
    if rows == 3:
        assert outcome.rows == 0
    else:
        assert outcome.rows == 20  # the rows before the bad line's block are used
