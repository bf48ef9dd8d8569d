"""Data feeders: each iteration takes the next row of a CSV or Parquet file.

How this works
--------------
A profile's ``data`` block names files (:class:`~harness.profile.model.DataSource`).
Row ``i`` of a file (0-based, header excluded) belongs to worker ``i mod n``, the same
interleaving the open model uses for arrivals, so no row is used by two workers and
their shares differ in size by at most one row (:func:`shard_rows`).

A worker never holds its whole share. :class:`RowReader` streams the file once per
pass (pyarrow's CSV stream reader in blocks of :data:`CSV_BLOCK_BYTES`, or Parquet
record batches of :data:`PARQUET_BATCH_ROWS`), keeps the rows of its shard and hands
them out in chunks of ``chunk_rows``. :class:`Feeder` keeps at most about two chunks
decoded: the worker takes rows from it without waiting and refills it in a thread when
it runs low, so reading never stalls the event loop. Every worker reads the whole file
to find its rows; for a million rows that is well under a second of one core per pass.

When the share runs out, ``reuse: true`` starts the next pass from the top (with a new
shuffle when ``order: random``); ``reuse: false`` makes :meth:`Feeder.take` return
:data:`EXHAUSTED`, and the worker starts no more iterations.

``order: random`` shuffles each chunk (seeded), not the whole share: a shuffle of a
million rows would need them all in memory. Rows far apart in the file still come in
file order, chunk by chunk.

Values are text. Nothing here logs or puts a value in an error message: a row may
hold a password, and pyarrow's parse errors quote the offending line, so those are
rewritten (:func:`_describe_arrow_error`).
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from .profile.model import DEFAULT_DATA_CHUNK_ROWS, DataSource

CSV_BLOCK_BYTES = 1 << 18
"""Bytes of CSV text pyarrow decodes at a time. Measured on a 40 MB file: 1 MiB
blocks held about 55 MB more than 256 KiB ones, for no gain in speed that matters."""

PARQUET_BATCH_ROWS = 16_384
"""Rows of a Parquet file decoded at a time."""

PARQUET_BUFFER_BYTES = 1 << 20
"""Read Parquet column chunks through a buffer of this size, page by page, rather
than whole: a file written as one row group of a million rows would otherwise be
read into memory at once."""

HEADER_PEEK_BYTES = 1 << 16
"""How much of a CSV file the loader reads to find its first line."""


class FeederError(Exception):
    """A data file cannot be read. The message names the file and never a value."""


class _Exhausted:
    def __repr__(self) -> str:
        return "EXHAUSTED"


EXHAUSTED: Final = _Exhausted()
"""What :meth:`Feeder.take` returns once the rows have run out for good."""

Row = tuple[str, ...]


def shard_rows(total: int, shard: int, n_shards: int) -> range:
    """The rows (0-based indices) of ``total`` that worker ``shard`` of ``n_shards``
    uses: ``shard, shard + n, shard + 2n, ...``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    return range(shard, total, n_shards)


def csv_first_line(path: str, delimiter: str) -> list[str]:
    """The fields of the first line of a CSV file (the header, when it has one)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            head = f.read(HEADER_PEEK_BYTES)
    except UnicodeDecodeError:
        raise FeederError(f"{path}: the file is not UTF-8 text") from None
    except OSError as exc:
        raise FeederError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not head.strip():
        raise FeederError(f"{path}: the file is empty")
    reader = csv.reader(io.StringIO(head), delimiter=delimiter)
    try:
        return next(reader)
    except (csv.Error, StopIteration):
        raise FeederError(f"{path}: the first line is not CSV") from None


def parquet_columns(path: str) -> dict[str, str]:
    """Column names of a Parquet file, each with a word for its type: ``text``,
    ``integer``, ``number``, ``boolean``, or the Arrow type when it is none of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise FeederError(f"{path}: cannot read it as Parquet ({exc})") from None
    out: dict[str, str] = {}
    for field in schema:
        t = field.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            kind = "text"
        elif pa.types.is_integer(t):
            kind = "integer"
        elif pa.types.is_floating(t):
            kind = "number"
        elif pa.types.is_boolean(t):
            kind = "boolean"
        else:
            kind = str(t)
        out[field.name] = kind
    return out


TEXT_KINDS = ("text", "integer", "number", "boolean")
"""Parquet column kinds a feeder can turn into template text."""


_COLUMN_COUNT = re.compile(r"Expected (\d+) columns, got (\d+)")


def _describe_arrow_error(path: str, exc: Exception) -> str:
    """pyarrow's message without the quoted line (which may hold a secret)."""
    text = str(exc)
    match = _COLUMN_COUNT.search(text)
    if match:
        return (
            f"{path}: a line has {match.group(2)} fields where {match.group(1)} "
            "were expected (the line is not shown: it may hold a secret)"
        )
    if "invalid UTF8" in text or "UTF8" in text:
        return f"{path}: a line is not valid UTF-8 text"
    return f"{path}: cannot parse the file ({type(exc).__name__})"


class RowReader:
    """One pass over a data file, yielding chunks of one shard's rows as tuples of
    text in the order of ``source.columns``."""

    def __init__(
        self,
        source: DataSource,
        shard: int,
        n_shards: int,
        chunk_rows: int = DEFAULT_DATA_CHUNK_ROWS,
    ) -> None:
        shard_rows(0, shard, n_shards)  # checks the shard number
        self.source = source
        self.shard = shard
        self.n_shards = n_shards
        self.chunk_rows = chunk_rows
        self._seen = 0

    def chunks(self) -> Iterator[list[Row]]:
        """Chunks of at most ``chunk_rows`` rows, in file order; the last may be
        shorter. Raises :class:`FeederError` if the file cannot be read."""
        import pyarrow as pa

        pending: list[Row] = []
        self._seen = 0
        try:
            for batch in self._batches():
                pending.extend(self._own_rows(batch))
                while len(pending) >= self.chunk_rows:
                    yield pending[: self.chunk_rows]
                    del pending[: self.chunk_rows]
        except (OSError, pa.ArrowException) as exc:
            raise FeederError(_describe_arrow_error(self.source.path, exc)) from None
        if pending:
            yield pending

    def _batches(self) -> Iterator[Any]:
        """Record batches of the whole file, columns in ``source.columns`` order,
        every column as text."""
        import pyarrow as pa
        import pyarrow.compute as pc

        source = self.source
        if source.format == "csv":
            from pyarrow import csv as pa_csv

            # A Python file object, not the path: given a path, pyarrow reads
            # ahead in the background and held most of a 40 MB file at once.
            with open(source.path, "rb") as stream:
                reader = pa_csv.open_csv(
                    stream,
                    read_options=pa_csv.ReadOptions(
                        column_names=list(source.columns),
                        skip_rows=1 if source.header else 0,
                        block_size=CSV_BLOCK_BYTES,
                        use_threads=False,
                    ),
                    parse_options=pa_csv.ParseOptions(delimiter=source.delimiter),
                    convert_options=pa_csv.ConvertOptions(
                        column_types={c: pa.string() for c in source.columns},
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
                try:
                    yield from reader
                finally:
                    reader.close()
            return
        import pyarrow.parquet as pq

        file_columns = list(source.file_columns or source.columns)
        with pq.ParquetFile(
            source.path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False
        ) as parquet:
            for batch in parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, columns=file_columns, use_threads=False
            ):
                arrays = []
                for name in file_columns:
                    column = batch.column(name)
                    if not pa.types.is_string(column.type):
                        column = pc.cast(column, pa.string())
                    arrays.append(pc.fill_null(column, ""))
                yield pa.RecordBatch.from_arrays(arrays, names=list(source.columns))

    def _own_rows(self, batch: Any) -> list[Row]:
        """This shard's rows of ``batch``; ``self._seen`` counts rows before it."""
        import numpy as np

        seen = self._seen
        size = batch.num_rows
        self._seen = seen + size
        first = (self.shard - seen) % self.n_shards
        if first >= size:
            return []
        if self.n_shards > 1:
            batch = batch.take(np.arange(first, size, self.n_shards))
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        return list(zip(*columns, strict=True))


class Feeder:
    """One worker's rows of one data file, taken one per iteration.

    :meth:`take` never blocks: it returns a row, None when the buffer is empty but
    more rows are coming (call :meth:`refill`, in a thread), or :data:`EXHAUSTED`.
    Only one :meth:`refill` may run at a time; the worker makes sure of that.
    """

    def __init__(
        self,
        source: DataSource,
        shard: int,
        n_shards: int,
        seed: int,
        chunk_rows: int = DEFAULT_DATA_CHUNK_ROWS,
    ) -> None:
        self.source = source
        self.shard = shard
        self.n_shards = n_shards
        self.chunk_rows = chunk_rows
        self.rng = random.Random(f"{seed}:{shard}:{source.path}")
        self.rows: deque[Row] = deque()
        self.rows_taken = 0
        self.passes = 0
        """Passes started over the file (more than 1 only with ``reuse``)."""
        self.finished = False
        """No row will be added any more (the buffer may still hold some)."""
        self._chunks: Iterator[list[Row]] | None = None
        self._rows_this_pass = 0

    @property
    def names(self) -> tuple[str, ...]:
        return self.source.columns

    def take(self) -> Row | _Exhausted | None:
        try:
            row = self.rows.popleft()
        except IndexError:
            return EXHAUSTED if self.finished else None
        self.rows_taken += 1
        return row

    def wants_rows(self) -> bool:
        """True when the buffer is below one chunk and the file has more."""
        return not self.finished and len(self.rows) < self.chunk_rows

    def refill(self) -> None:
        """Read the next chunk into the buffer (blocking: run it in a thread).

        At the end of a pass: start the next one when ``reuse`` is set and the pass
        found rows for this worker; otherwise mark the feeder finished."""
        while not self.finished:
            if self._chunks is None:
                self.passes += 1
                self._rows_this_pass = 0
                reader = RowReader(
                    self.source, self.shard, self.n_shards, self.chunk_rows
                )
                self._chunks = reader.chunks()
            chunk = next(self._chunks, None)
            if chunk is not None:
                self._rows_this_pass += len(chunk)
                if self.source.order == "random":
                    self.rng.shuffle(chunk)
                self.rows.extend(chunk)
                return
            self._chunks = None
            if not self.source.reuse or self._rows_this_pass == 0:
                self.finished = True


def source_summary(source: DataSource) -> dict[str, object]:
    """A description of a data file for events and the manifest: its name, format
    and columns, never a value."""
    return {
        "file": Path(source.path).name,
        "format": source.format,
        "columns": list(source.columns),
        "order": source.order,
        "reuse": source.reuse,
    }


__all__ = [
    "EXHAUSTED",
    "Feeder",
    "FeederError",
    "RowReader",
    "csv_first_line",
    "parquet_columns",
    "shard_rows",
    "source_summary",
]
