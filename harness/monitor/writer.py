"""Resource rows to Parquet parts in ``runs/<id>/resources/``.

The monitor produces a few rows per second (one per process, one for the host, one
per remote sampler), so rows are kept in memory until a part is due: every
``rotate_s`` seconds (the run's ``--part-seconds``, 60 s by default) or every
:data:`DEFAULT_ROTATE_ROWS` rows, the rows so far are written as one file,
``.part-NNNNNN.parquet`` first and renamed to ``part-NNNNNN.parquet`` once complete.
Readers skip dot names, so ``analysis.open_run(...).resources()`` reads the finished
parts of a run still going. A coordinator killed outright loses at most the rows of
one part; every normal end, a Ctrl-C or a SIGTERM included, writes the last part.

Schema: every part has all the known columns of
:data:`~harness.monitor.base.COLUMNS` (nullable, so a sampler leaves out what it does
not measure), plus one float64 column per ``prom_<name>`` that appears among the
part's rows. Parts of one run may thus differ in their ``prom_*`` columns (a metric
that appears late); read them with a schema-unifying reader, as
``pyarrow.dataset`` with ``unify_schemas`` or pandas per file then concatenated.
A key that is neither is a programming error in a sampler: it is dropped, with one
warning per name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .base import COLUMNS, PROM_PREFIX, Row

log = logging.getLogger("harness.monitor")

DEFAULT_ROTATE_S = 60.0
DEFAULT_ROTATE_ROWS = 200_000
"""A bound on the memory held between parts (a huge process tree)."""

_REQUIRED = ("time_ns", "source")


class ResourceWriter:
    """Collects rows and writes them as rotating Parquet parts. Thread-safe: each
    sampling thread of the monitor adds its rows through it."""

    def __init__(
        self,
        folder: Path,
        metadata: dict[str, str],
        *,
        rotate_s: float = DEFAULT_ROTATE_S,
        rotate_rows: int = DEFAULT_ROTATE_ROWS,
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metadata = dict(metadata)
        self.rotate_s = rotate_s
        self.rotate_rows = rotate_rows
        self.parts_done: list[Path] = []
        self.rows_written = 0
        self._rows: list[Row] = []
        self._opened = time.monotonic()
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._closed = False
        self._index = max(
            (
                int(p.name[5:11])
                for p in folder.glob("part-*.parquet")
                if p.name[5:11].isdigit()
            ),
            default=0,
        )

    def add(self, rows: Iterable[Row]) -> None:
        """Keep ``rows`` (each with ``time_ns`` and ``source``); write a part if one
        is due. Raises what the write raises (a full disk): never swallowed."""
        with self._lock:
            if self._closed:
                return
            for row in rows:
                for key in _REQUIRED:
                    if row.get(key) is None:
                        raise ValueError(f"a resource row has no {key}: {row!r}")
                self._rows.append(row)
            if self._due():
                self._write_part()

    def rotate_if_due(self) -> None:
        with self._lock:
            if not self._closed and self._due():
                self._write_part()

    def close(self) -> None:
        """Write the rows held (the last part). Calling it again is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._write_part()

    def _due(self) -> bool:
        return (
            len(self._rows) >= self.rotate_rows
            or time.monotonic() - self._opened >= self.rotate_s
        )

    def _write_part(self) -> None:
        rows, self._rows = self._rows, []
        self._opened = time.monotonic()
        if not rows:
            return
        table = self.table(rows)
        self._index += 1
        name = f"part-{self._index:06d}.parquet"
        tmp = self.folder / f".{name}"
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, self.folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.parts_done.append(self.folder / name)
        self.rows_written += table.num_rows

    def table(self, rows: list[Row]) -> pa.Table:
        """The rows as a table: the known columns, then the ``prom_*`` ones."""
        extra: set[str] = set()
        for row in rows:
            for key in row:
                if key in COLUMNS:
                    continue
                if key.startswith(PROM_PREFIX):
                    extra.add(key)
                elif key not in self._warned:
                    self._warned.add(key)
                    log.warning("resource column %r is not known; dropped", key)
        fields = [
            pa.field(n, t, nullable=n not in _REQUIRED) for n, t in COLUMNS.items()
        ]
        fields += [pa.field(n, pa.float64()) for n in sorted(extra)]
        schema = pa.schema(fields, metadata=self.metadata)
        arrays = [
            pa.array([_value(row.get(f.name), f.type) for row in rows], f.type)
            for f in fields
        ]
        return pa.Table.from_arrays(arrays, schema=schema)


def _value(value: object, kind: pa.DataType) -> object:
    """Ints become floats in float columns; a bool or NaN is not a measurement."""
    if value is None or isinstance(value, bool):
        return None
    if pa.types.is_floating(kind) and isinstance(value, int | float):
        number = float(value)
        return None if number != number else number
    if pa.types.is_integer(kind) and isinstance(value, float):
        return None if value != value else int(value)
    return value
