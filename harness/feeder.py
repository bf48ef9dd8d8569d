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

A file with fewer rows than there are workers leaves some shares empty. With
``reuse: true`` such a worker takes row ``shard mod rows`` instead (rows are dealt
round-robin and wrap around), so every arrival still gets a row, as in Artillery,
whose workers each read the whole file. With ``reuse: false`` the worker starts no
iteration; :attr:`Feeder.file_rows` lets it say why.

A malformed line (too few or too many fields, text that is not UTF-8) ends the
feeder where it is found: :attr:`Feeder.error` names the file and the line number,
and the rows of the blocks before the one holding it are still handed out (pyarrow
refuses a block of :data:`CSV_BLOCK_BYTES` as a whole). The profile loader parses the
first :data:`CHECK_BYTES` of a CSV file the same way (:func:`check_data_file`), so
a mistake there is refused before anything starts; only a larger file can hold one
that a worker meets during the run.

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
from dataclasses import dataclass
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

CHECK_BYTES = 64 << 20
"""How much of a CSV file :func:`check_data_file` parses when a profile is loaded:
all of a file up to this size. Measured: a million rows (43 MB) take about 0.1 s of
one core."""


class FeederError(Exception):
    """A data file cannot be read. The message names the file and never a value."""


class NoDataRows(FeederError):
    """A data file holds no data row (a header line alone, or nothing)."""


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
    """The fields of the first line of a CSV file (the header, when it has one).
    A UTF-8 byte order mark at the start is not part of the first name."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            head = f.read(HEADER_PEEK_BYTES)
    except UnicodeDecodeError:
        line = _first_line_not_utf8(path)
        where = f"line {line}" if line else "the file"
        raise FeederError(f"{path}: {where} is not valid UTF-8 text") from None
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
_ROW_NUMBER = re.compile(r"Row #(\d+)")


def _describe_arrow_error(
    source: DataSource, exc: Exception, row: int | None = None
) -> str:
    """pyarrow's message without the quoted line (which may hold a secret), with
    the line's number. ``row`` is pyarrow's number of the bad row, when known."""
    path = source.path
    text = str(exc)
    match = _COLUMN_COUNT.search(text)
    if match:
        if row is None:
            number = _ROW_NUMBER.search(text)
            row = int(number.group(1)) if number else None
        line = _physical_line(source, row) if row is not None else None
        where = f"line {line}" if line is not None else "a line"
        return (
            f"{path}: {where} has {match.group(2)} fields where {match.group(1)} "
            "were expected (the line is not shown: it may hold a secret)"
        )
    if "UTF8" in text:
        line = _first_line_not_utf8(path)
        where = f"line {line}" if line is not None else "a line"
        return f"{path}: {where} is not valid UTF-8 text"
    return f"{path}: cannot parse the file ({type(exc).__name__})"


def _physical_line(source: DataSource, row: int) -> int | None:
    """The line number (1-based, as an editor shows it) where pyarrow's row ``row``
    starts: pyarrow counts records from 1, header included, skipping empty lines,
    and a quoted value may span lines."""
    seen = 0
    try:
        with open(source.path, encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.reader(f, delimiter=source.delimiter)
            start = 1
            for record in reader:
                if record:
                    seen += 1
                    if seen == row:
                        return start
                start = reader.line_num + 1
    except (OSError, csv.Error):
        return None
    return None


def _first_line_not_utf8(path: str) -> int | None:
    """The number of the first line of a file that is not valid UTF-8."""
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except OSError:
        return None
    return None


class _BadRows:
    """pyarrow's handler for malformed rows: notes the first one's number and lets
    pyarrow raise (its own message quotes the line, so it is rewritten)."""

    def __init__(self) -> None:
        self.first: int | None = None

    def __call__(self, row: Any) -> str:
        if self.first is None:
            self.first = row.number
        return "error"


def _open_csv(source: DataSource, stream: Any, bad_rows: _BadRows) -> Any:
    """pyarrow's streaming CSV reader over ``stream``: every column as text."""
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    return pa_csv.open_csv(
        stream,
        read_options=pa_csv.ReadOptions(
            column_names=list(source.columns),
            skip_rows=1 if source.header else 0,
            block_size=CSV_BLOCK_BYTES,
            use_threads=False,
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter=source.delimiter, invalid_row_handler=bad_rows
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types={c: pa.string() for c in source.columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


@dataclass(frozen=True, slots=True)
class DataCheck:
    """What :func:`check_data_file` found."""

    rows: int
    """Data rows found (header excluded): all of them when ``complete``."""
    complete: bool
    """The whole file was read."""


def check_data_file(source: DataSource, limit_bytes: int = CHECK_BYTES) -> DataCheck:
    """Read a data file as the workers will, to refuse a bad one before the run.

    CSV: parse the first ``limit_bytes`` (all of a smaller file, and on past the
    limit until a first data row); ``limit_bytes=0`` reads a block or two, enough
    to count the rows of a small file. Parquet: read the row count the file
    records.
    Raises :class:`FeederError` for a malformed line (naming its number, never its
    content) or a file without any data row.
    """
    import pyarrow as pa

    if source.format == "parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(source.path).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise FeederError(
                f"{source.path}: cannot read it as Parquet ({exc})"
            ) from None
        if rows == 0:
            raise NoDataRows(f"{source.path}: the file has no rows")
        return DataCheck(rows, True)
    rows = 0
    complete = True
    bad_rows = _BadRows()
    try:
        with open(source.path, "rb") as stream:
            reader = _open_csv(source, stream, bad_rows)
            try:
                batches = iter(reader)
                for batch in batches:
                    rows += batch.num_rows
                    if rows and stream.tell() >= limit_bytes:
                        # Past the limit: one more batch only tells whether the
                        # file ends here.
                        more = next(batches, None)
                        if more is not None:
                            rows += more.num_rows
                            complete = False
                        break
            finally:
                reader.close()
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, pa.ArrowInvalid) and "Empty CSV file" in str(exc):
            rows = 0
        else:
            message = _describe_arrow_error(source, exc, bad_rows.first)
            raise FeederError(message) from None
    if rows == 0:
        if source.header:
            raise NoDataRows(
                f"{source.path}: the file has a header line and no data rows"
            )
        raise NoDataRows(f"{source.path}: the file has no data rows")
    return DataCheck(rows, complete)


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
        self._bad_rows = _BadRows()

    @property
    def rows_seen(self) -> int:
        """Rows of the whole file (every shard's) read so far in this pass."""
        return self._seen

    def chunks(self) -> Iterator[list[Row]]:
        """Chunks of at most ``chunk_rows`` rows, in file order; the last may be
        shorter. Raises :class:`FeederError` if the file cannot be read; its
        message names the line."""
        import pyarrow as pa

        pending: list[Row] = []
        self._seen = 0
        self._bad_rows = _BadRows()
        try:
            for batch in self._batches():
                pending.extend(self._own_rows(batch))
                while len(pending) >= self.chunk_rows:
                    yield pending[: self.chunk_rows]
                    del pending[: self.chunk_rows]
        except (OSError, pa.ArrowException) as exc:
            message = _describe_arrow_error(self.source, exc, self._bad_rows.first)
            raise FeederError(message) from None
        if pending:
            yield pending

    def _batches(self) -> Iterator[Any]:
        """Record batches of the whole file, columns in ``source.columns`` order,
        every column as text."""
        import pyarrow as pa
        import pyarrow.compute as pc

        source = self.source
        if source.format == "csv":
            # A Python file object, not the path: given a path, pyarrow reads
            # ahead in the background and held most of a 40 MB file at once.
            with open(source.path, "rb") as stream:
                reader = _open_csv(source, stream, self._bad_rows)
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
    :meth:`refill` does not raise for a file it cannot read: it sets :attr:`error`
    and ``finished``, so the rows already read are still used.
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
        self.error: FeederError | None = None
        """Why the file could not be read to its end (file and line, no value)."""
        self.file_rows: int | None = None
        """Rows in the whole file (every worker's), known after a complete pass."""
        self.wrapped = False
        """The file has fewer rows than there are workers and this worker's share
        was empty: with ``reuse`` it uses row ``shard mod file_rows`` instead."""
        self._chunks: Iterator[list[Row]] | None = None
        self._reader: RowReader | None = None
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
        found rows for this worker; otherwise mark the feeder finished. A pass that
        found none because the file has fewer rows than workers is followed, with
        ``reuse``, by one over this worker's wrapped-around row. A file that cannot
        be read sets :attr:`error` and finishes the feeder."""
        while not self.finished:
            if self._chunks is None:
                self.passes += 1
                self._rows_this_pass = 0
                shard, n_shards = self.shard, self.n_shards
                if self.wrapped and self.file_rows:
                    shard, n_shards = self.shard % self.file_rows, self.file_rows
                self._reader = RowReader(self.source, shard, n_shards, self.chunk_rows)
                self._chunks = self._reader.chunks()
            try:
                chunk = next(self._chunks, None)
            except FeederError as exc:
                self.error = exc
                self.finished = True
                self._chunks = None
                return
            if chunk is not None:
                self._rows_this_pass += len(chunk)
                if self.source.order == "random":
                    self.rng.shuffle(chunk)
                self.rows.extend(chunk)
                return
            self._chunks = None
            assert self._reader is not None
            self.file_rows = self._reader.rows_seen
            if (
                self._rows_this_pass == 0
                and self.source.reuse
                and not self.wrapped
                and 0 < self.file_rows <= self.shard
            ):
                self.wrapped = True
                continue
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
    "CHECK_BYTES",
    "EXHAUSTED",
    "DataCheck",
    "Feeder",
    "FeederError",
    "NoDataRows",
    "RowReader",
    "check_data_file",
    "csv_first_line",
    "parquet_columns",
    "shard_rows",
    "source_summary",
]
