"""Open one or several run directories written by the harness.

A run directory holds ``manifest.json``, ``events.jsonl``, ``requests/`` (one folder
of Parquet parts per worker) and, when the monitor ran, ``resources/``. Only finished
parts are read: a part still being written has a name starting with a dot and is
renamed when its footer is on disk, so a run that is still going can be opened too,
and an empty run reads as an empty frame that still has every record column.

Filters (time range, phase, scenario, endpoint) become pyarrow dataset expressions, so
row groups outside them are skipped using the Parquet statistics instead of being
read and dropped. A number given as a time is epoch seconds, like the manifest's
``started_at``: ``run.requests(end=run.manifest["started_at"] + 5)`` is the first five
seconds (see :func:`to_epoch_ns`).

A damaged file is named, never read around silently: a ``manifest.json`` that is not
a JSON object raises :class:`RunUnreadable`, and a finished part whose Parquet footer
cannot be read (a file cut short by a crash or a copy that stopped) raises
:class:`DamagedPart` from every method that reads requests. To read the rest anyway,
:meth:`Run.check_parts` names the damaged parts and :meth:`Run.without_parts` leaves
them out; the report does exactly that, and says so (docs/report.md).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

# The record's columns, copied from the harness's schema rather than imported: this
# package must stay importable without ``harness`` (a notebook needs only analysis,
# pandas and pyarrow), yet an empty run must still read as a frame with every column
# and its type. tests/test_dataset.py checks this copy against the harness's schema.
_TEXT = pa.dictionary(pa.int32(), pa.string())
REQUEST_SCHEMA = pa.schema(
    [
        ("worker", pa.uint16()),
        ("vu", pa.uint32()),
        ("iteration", pa.uint32()),
        ("scenario", _TEXT),
        ("step", _TEXT),
        ("method", _TEXT),
        ("endpoint", _TEXT),
        ("status", pa.uint16()),
        ("error", _TEXT),
        ("intended_ns", pa.int64()),
        ("start_ns", pa.int64()),
        ("latency_ns", pa.int64()),
        ("ttfb_ns", pa.int64()),
        ("connect_ns", pa.int64()),
        ("bytes_out", pa.uint32()),
        ("bytes_in", pa.uint32()),
        ("phase", _TEXT),
        ("offered", pa.float32()),
    ]
)
"""Columns of one request record (names and types, without nullability)."""

RESOURCE_COLUMNS: dict[str, str] = {
    "time_ns": "int64",
    "source": "object",
    "pid": "int64",
    "cpu_percent": "float64",
    "rss_bytes": "int64",
}
"""The columns an empty ``resources()`` frame has; a monitor may write more."""

TimeLike = int | float | pd.Timestamp | dt.datetime | str
"""An instant: epoch seconds (an int or a float, like the manifest's ``started_at``),
a pandas Timestamp, a datetime or an ISO string. Naive timestamps are taken as UTC.
Epoch nanoseconds (the records' ``*_ns`` columns) go in as
``pd.Timestamp(ns, unit="ns")``; a bare number above :data:`MAX_EPOCH_S` is refused,
since it can only be nanoseconds."""

MAX_EPOCH_S = 1e11
"""The largest number :func:`to_epoch_ns` takes as epoch seconds (the year 5138);
anything larger can only be milli-, micro- or nanoseconds."""

Names = str | Sequence[str]


class RunNotFound(FileNotFoundError):
    """The path is not a run directory."""


class DuplicateRun(ValueError):
    """Two runs given to :func:`open_runs` have the same run id."""


class RunUnreadable(ValueError):
    """The run directory's ``manifest.json`` cannot be read or is not a JSON object.

    ``path`` is the manifest; the message says what is wrong with it."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(
            f"{path} cannot be read: {problem}. The harness writes it whole at the "
            "start and at the end of a run, so it was damaged afterwards (a copy "
            "that stopped, a full disk, an edit): restore it from a copy of the run"
        )


class DamagedPart(ValueError):
    """A finished Parquet part cannot be read (its footer is missing or invalid).

    ``path`` is the part; the message names it, says why, and how to read the rest
    of the run (:meth:`Run.without_parts`)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path} is damaged and cannot be read ({problem}); the other parts "
            "are intact: leave this one out with run.without_parts(run.check_parts()"
            ".damaged) to read them, or run `harness report` on the run, which "
            "skips it and counts its records as missing"
        )


def part_rows(path: Path) -> int:
    """The rows of one Parquet part, from its footer alone.

    Raises :class:`DamagedPart` when the footer cannot be read."""
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise DamagedPart(path, str(exc).strip() or type(exc).__name__) from None


@dataclass(frozen=True, slots=True)
class PartCheck:
    """What the footers of a run's finished request parts say."""

    rows: dict[Path, int]
    """Each readable part and its row count."""
    damaged: dict[Path, str]
    """Each part whose footer cannot be read, and why."""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def finished_parts(folder: Path) -> list[Path]:
    """Parquet files under ``folder`` whose writer has finished them, in name order.

    A name starting with a dot (a part in progress) or an underscore (a Spark-style
    marker), in the file or any folder above it, is skipped.
    """
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*.parquet"):
        parts = path.relative_to(folder).parts
        if any(p.startswith((".", "_")) for p in parts):
            continue
        if path.is_file():
            found.append(path)
    return sorted(found)


def to_epoch_ns(value: TimeLike) -> int:
    """An instant as epoch nanoseconds (see :data:`TimeLike`).

    A number is epoch seconds: ``to_epoch_ns(1767225600.5)`` is half a second past
    midnight on 2026-01-01. A number larger than :data:`MAX_EPOCH_S` raises
    ValueError saying how to pass nanoseconds (``pd.Timestamp(ns, unit="ns")``).
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"expected a time, got {value!r}")
    if isinstance(value, numbers.Real):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"time {value!r} is not a finite number of seconds")
        if abs(seconds) > MAX_EPOCH_S:
            raise ValueError(
                f"time {value!r}: a number is read as epoch seconds (like the "
                f"manifest's started_at), and this one is too large to be seconds; "
                f"for epoch nanoseconds pass pd.Timestamp({value!r}, unit='ns')"
            )
        if isinstance(value, numbers.Integral):
            return int(value) * 10**9
        # Whole seconds and the fraction apart: a float's fraction is exact, so
        # the result is the float's own instant to the nanosecond.
        whole = math.floor(seconds)
        return whole * 10**9 + round((seconds - whole) * 1e9)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value)


def _as_list(names: Names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def request_filter(
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    phase: Names | None = None,
    scenario: Names | None = None,
    endpoint: Names | None = None,
) -> ds.Expression | None:
    """The dataset expression for these filters, or None when there is none.

    ``start <= start_ns < end``; a name filter takes one name or several.
    """
    terms: list[ds.Expression] = []
    if start is not None:
        terms.append(pc.field("start_ns") >= to_epoch_ns(start))
    if end is not None:
        terms.append(pc.field("start_ns") < to_epoch_ns(end))
    for column, names in (("phase", phase), ("scenario", scenario)):
        if names is not None:
            terms.append(pc.field(column).isin(_as_list(names)))
    if endpoint is not None:
        terms.append(pc.field("endpoint").isin(_as_list(endpoint)))
    if not terms:
        return None
    expression = terms[0]
    for term in terms[1:]:
        expression = expression & term
    return expression


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # The coordinator appends one line at a time; only the last one can
                # be cut short (a crash mid-write), and it carries nothing to keep.
                continue
    return rows


@dataclass(frozen=True, slots=True)
class RowGroup:
    """One row group of one part, with the range of its key column."""

    path: Path
    index: int
    rows: int
    low: int
    high: int


_UNKNOWN = (-(2**63), 2**63 - 1)


class PartIndex:
    """The row groups of a run's parts and their time ranges, for reading a large
    run in time slices.

    The ranges come from the Parquet statistics of the key column (``start_ns`` or
    ``intended_ns``), so building the index reads only the files' footers. A run's
    parts are written in time order, a row group holding a couple of seconds of one
    worker, so the rows of a slice live in few row groups and a slice costs about
    its own rows.
    """

    def __init__(self, paths: Sequence[Path], key: str = "start_ns") -> None:
        self.key = key
        self.groups: list[RowGroup] = []
        self.names: list[str] = []
        for path in paths:
            try:
                meta = pq.ParquetFile(path).metadata
            except (pa.ArrowException, OSError) as exc:
                raise DamagedPart(path, str(exc).strip()) from None
            names = meta.schema.to_arrow_schema().names
            self.names += [n for n in names if n not in self.names]
            # Statistics are kept per Parquet leaf column, found by its path.
            leaves = [meta.schema.column(i).path for i in range(meta.num_columns)]
            column = leaves.index(key) if key in leaves else -1
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                if group.num_rows == 0:
                    continue
                low, high = _UNKNOWN
                stats = group.column(column).statistics if column >= 0 else None
                if stats is not None and stats.has_min_max:
                    low, high = int(stats.min), int(stats.max)
                self.groups.append(RowGroup(path, i, group.num_rows, low, high))

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.groups)

    def plan(
        self, step_ns: int, slice_rows: int, max_steps: int = 1 << 16
    ) -> list[tuple[int, int]]:
        """``[start, end)`` slices of the key, on multiples of ``step_ns``, of about
        ``slice_rows`` rows and at most ``max_steps`` steps each, covering every row.
        """
        if not self.groups:
            return []
        lows = np.array([g.low for g in self.groups], dtype=np.int64)
        highs = np.array([g.high for g in self.groups], dtype=np.int64)
        rows = np.array([g.rows for g in self.groups], dtype=np.float64)
        first = int(lows.min()) // step_ns * step_ns
        last = int(highs.max()) // step_ns * step_ns + step_ns
        count = max(1, math.ceil(rows.sum() / max(1, slice_rows)))
        # Cut where the row groups' midpoints, weighted by their rows, reach each
        # 1/count of the run: for parts written in time order that splits the rows
        # about evenly without reading any of them.
        middles = lows // 2 + highs // 2
        order = np.argsort(middles)
        cumulative = np.cumsum(rows[order])
        targets = cumulative[-1] * np.arange(1, count) / count
        cuts = middles[order][np.searchsorted(cumulative, targets)]
        edges = sorted({first, last, *(int(c) // step_ns * step_ns for c in cuts)})
        bounded: list[int] = [edges[0]]
        for edge in edges[1:]:
            while (edge - bounded[-1]) // step_ns > max_steps:
                bounded.append(bounded[-1] + max_steps * step_ns)
            bounded.append(edge)
        return list(itertools.pairwise(bounded))

    def read(
        self, columns: Sequence[str], span: tuple[int, int] | None = None
    ) -> pa.Table:
        """The rows whose key is in ``span`` (every row when None)."""
        # Row groups wholly inside the span are read as they are; only those that
        # straddle one of its ends are filtered row by row.
        wanted: dict[tuple[Path, bool], list[int]] = {}
        for g in self.groups:
            if span is None:
                wanted.setdefault((g.path, False), []).append(g.index)
            elif g.high >= span[0] and g.low < span[1]:
                straddles = g.low < span[0] or g.high >= span[1]
                wanted.setdefault((g.path, straddles), []).append(g.index)
        tables = []
        for (path, straddles), indexes in wanted.items():
            table = pq.ParquetFile(path).read_row_groups(
                indexes, columns=list(columns), use_threads=True
            )
            if straddles and span is not None:
                key = table.column(self.key)
                inside = pc.and_(pc.greater_equal(key, span[0]), pc.less(key, span[1]))
                table = table.filter(inside)
            tables.append(table)
        if not tables:
            return REQUEST_SCHEMA.empty_table().select(list(columns))
        return pa.concat_tables(tables, promote_options="default")

    def batches(self, columns: Sequence[str], batch_rows: int) -> Iterator[pa.Table]:
        """Every row, in tables of whole row groups of about ``batch_rows`` rows."""
        for path, groups in itertools.groupby(self.groups, key=lambda g: g.path):
            reader = pq.ParquetFile(path)
            pending: list[int] = []
            size = 0
            for g in groups:
                pending.append(g.index)
                size += g.rows
                if size >= batch_rows:
                    yield reader.read_row_groups(pending, columns=list(columns))
                    pending, size = [], 0
            if pending:
                yield reader.read_row_groups(pending, columns=list(columns))


@dataclass(frozen=True, slots=True)
class Run:
    """One run directory. Reading is lazy: nothing is read until a method asks."""

    path: Path
    manifest: dict[str, Any]
    skipped: frozenset[Path] = field(default_factory=frozenset)
    """Parts left out of every read (see :meth:`without_parts`)."""

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    def request_parts(self) -> list[Path]:
        """The finished request parts of this run, less any :attr:`skipped`."""
        parts = finished_parts(self.path / "requests")
        return [p for p in parts if p not in self.skipped]

    def check_parts(self) -> PartCheck:
        """Read the footer of every finished request part: its rows, or why it
        cannot be read. Reads no rows."""
        rows: dict[Path, int] = {}
        damaged: dict[Path, str] = {}
        for path in self.request_parts():
            try:
                rows[path] = part_rows(path)
            except DamagedPart as exc:
                damaged[path] = exc.problem
        return PartCheck(rows, damaged)

    def without_parts(self, parts: Iterable[str | Path]) -> Run:
        """This run with ``parts`` (request or resource parts) left out of every
        read, for reading around damaged files."""
        return replace(self, skipped=self.skipped | {Path(p) for p in parts})

    def _damaged(self, exc: Exception) -> Exception:
        """The :class:`DamagedPart` behind a failed read, or ``exc`` itself when
        every footer reads."""
        first = next(iter(self.check_parts().damaged.items()), None)
        return exc if first is None else DamagedPart(*first)

    def part_index(self, key: str = "start_ns") -> PartIndex:
        """The row groups of the finished request parts and their ranges of
        ``key``, read from the footers only (see :class:`PartIndex`)."""
        return PartIndex(self.request_parts(), key)

    def requests_dataset(self) -> ds.Dataset:
        """A lazy pyarrow dataset over the finished request parts.

        The schema comes from the parts themselves when there are some (so a column a
        newer harness added is kept), from :data:`REQUEST_SCHEMA` otherwise.
        """
        parts = [str(p) for p in self.request_parts()]
        if not parts:
            return ds.dataset([], schema=REQUEST_SCHEMA, format="parquet")
        try:
            return ds.dataset(parts, format="parquet")
        except (pa.ArrowException, OSError) as exc:
            raise self._damaged(exc) from None

    def requests_table(
        self,
        columns: Sequence[str] | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        phase: Names | None = None,
        scenario: Names | None = None,
        endpoint: Names | None = None,
    ) -> pa.Table:
        """The request records as an Arrow table, filters pushed down to the scan."""
        dataset = self.requests_dataset()
        wanted = list(columns) if columns is not None else None
        if wanted is not None:
            unknown = [c for c in wanted if c not in dataset.schema.names]
            if unknown:
                raise KeyError(
                    f"unknown request column(s) {unknown} in run {self.run_id}; "
                    f"the columns are {dataset.schema.names}"
                )
        where = request_filter(start, end, phase, scenario, endpoint)
        try:
            return dataset.to_table(columns=wanted, filter=where)
        except (pa.ArrowException, OSError) as exc:
            raise self._damaged(exc) from None

    def requests(
        self,
        columns: Sequence[str] | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        phase: Names | None = None,
        scenario: Names | None = None,
        endpoint: Names | None = None,
    ) -> pd.DataFrame:
        """The request records as a DataFrame; text columns are categoricals."""
        table = self.requests_table(columns, start, end, phase, scenario, endpoint)
        return table.to_pandas()

    def event_records(self) -> list[dict[str, Any]]:
        """``events.jsonl`` as it was written, one dict per event (integers stay
        integers; a line cut short by a crash is skipped)."""
        return _read_jsonl(self.path / "events.jsonl")

    def events(self) -> pd.DataFrame:
        """``events.jsonl`` as a frame: ``time`` (epoch seconds), ``event`` and the
        fields each event has."""
        rows = _read_jsonl(self.path / "events.jsonl")
        if not rows:
            return pd.DataFrame({"time": pd.Series(dtype="float64"), "event": []})
        return pd.DataFrame(rows)

    def resources(self) -> pd.DataFrame:
        """Monitor samples from ``resources/``, or an empty frame when there are
        none (see :data:`RESOURCE_COLUMNS`)."""
        parts = [
            str(p)
            for p in finished_parts(self.path / "resources")
            if p not in self.skipped
        ]
        if not parts:
            return pd.DataFrame(
                {name: pd.Series(dtype=kind) for name, kind in RESOURCE_COLUMNS.items()}
            )
        # Parts may differ in columns (a Prometheus metric that appeared later):
        # read them under the union of their schemas so none is dropped.
        schemas = []
        for part in parts:
            try:
                schemas.append(pq.read_schema(part))
            except (pa.ArrowException, OSError) as exc:
                raise DamagedPart(Path(part), str(exc).strip()) from None
        schema = pa.unify_schemas(schemas)
        table = ds.dataset(parts, schema=schema, format="parquet").to_table()
        return table.to_pandas()


def open_run(path: str | Path) -> Run:
    """Open one run directory (``runs/<run-id>``).

    Raises :class:`RunNotFound` when it has no ``manifest.json`` and
    :class:`RunUnreadable` when that file is not a JSON object."""
    folder = Path(path)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        hint = (
            f"; {folder.parent} looks like the run directory"
            if folder.name in ("requests", "resources")
            else ""
        )
        raise RunNotFound(
            f"{folder} is not a run directory (no manifest.json){hint}; pass the "
            "folder that `harness run` printed, like runs/<run-id>"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RunUnreadable(manifest_path, f"it is not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RunUnreadable(
            manifest_path,
            f"it is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
        ) from None
    except OSError as exc:
        raise RunUnreadable(manifest_path, exc.strerror or str(exc)) from None
    if not isinstance(manifest, dict):
        raise RunUnreadable(
            manifest_path, f"it holds a JSON {type(manifest).__name__}, not an object"
        )
    return Run(folder, manifest)


def _with_run_column(table: pa.Table, run_id: str) -> pa.Table:
    values = pa.DictionaryArray.from_arrays(
        pa.array([0] * table.num_rows, pa.int32()), pa.array([run_id], pa.string())
    )
    return table.append_column(pa.field("run", _TEXT), values)


@dataclass(frozen=True, slots=True)
class RunSet:
    """Several runs read as one, each row tagged with its ``run`` (the run id)."""

    runs: tuple[Run, ...]

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    def requests_table(
        self,
        columns: Sequence[str] | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        phase: Names | None = None,
        scenario: Names | None = None,
        endpoint: Names | None = None,
    ) -> pa.Table:
        tables = [
            _with_run_column(
                r.requests_table(columns, start, end, phase, scenario, endpoint),
                r.run_id,
            )
            for r in self.runs
        ]
        if not tables:
            base = REQUEST_SCHEMA
            if columns is not None:
                base = pa.schema([base.field(c) for c in columns])
            return base.append(pa.field("run", _TEXT)).empty_table()
        # Runs written by different harness versions may differ in columns;
        # promote so that a column missing from one run reads as nulls there.
        return pa.concat_tables(tables, promote_options="default")

    def requests(
        self,
        columns: Sequence[str] | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        phase: Names | None = None,
        scenario: Names | None = None,
        endpoint: Names | None = None,
    ) -> pd.DataFrame:
        table = self.requests_table(columns, start, end, phase, scenario, endpoint)
        return table.to_pandas()

    def _concat(self, frames: Iterable[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
        tagged = [f.assign(run=run_id) for run_id, f in frames]
        return pd.concat(tagged, ignore_index=True) if tagged else pd.DataFrame()

    def events(self) -> pd.DataFrame:
        return self._concat((r.run_id, r.events()) for r in self.runs)

    def resources(self) -> pd.DataFrame:
        return self._concat((r.run_id, r.resources()) for r in self.runs)


def open_runs(paths: Iterable[str | Path]) -> RunSet:
    """Open several run directories; their rows carry a ``run`` column."""
    runs = tuple(open_run(p) for p in paths)
    seen: dict[str, Path] = {}
    for r in runs:
        if r.run_id in seen:
            raise DuplicateRun(
                f"runs {seen[r.run_id]} and {r.path} both have run id {r.run_id!r}; "
                "pass each run once (or give the runs distinct --run-id values)"
            )
        seen[r.run_id] = r.path
    return RunSet(runs)
