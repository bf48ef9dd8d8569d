"""Per-window and whole-run aggregates of the request records, at 10^8 rows.

How this works
--------------
Every figure is computed from the rows. Window quantiles are exact: the rows of a
group of windows are packed into one int64 per row (the window-and-group number in
the high bits, the duration in the low bits), sorted once, and each quantile is read
at its rank, with the same linear interpolation as pandas' default. Nothing is
averaged across windows.

Memory stays bounded because a run is read in time slices. The Parquet statistics
of every row group (its first and last ``start_ns``) say which row groups hold a
slice's rows; only those are read, and a slice always ends on a window boundary,
so no window is split between two slices. A run's parts are written in time order
(each row group is a couple of seconds of one worker), so a slice costs about its
own rows. Slices are sized to :data:`DEFAULT_SLICE_ROWS`.

:func:`overall` needs every row of a group at once. Up to ``exact_rows`` rows it
sorts them like a window; above that it streams the rows through the log-linear
histograms of :mod:`analysis.histogram` and says so: its ``quantile_rel_error``
column holds the bound (0.39 %) instead of 0.

Columns
-------
One row per (window, group) for :func:`windows`, per group for :func:`overall`:

* ``window_start`` (UTC timestamp; windows only), then the ``by`` columns;
* ``requests``, ``ok``, ``errors``, ``error_rate``, ``throughput_rps`` (requests/s),
  ``goodput_rps`` (ok/s);
* ``response_p<q>_ms`` and ``response_max_ms``: response time, from the intended start
  to the end (``latency_ns + start_ns - intended_ns``), free of coordinated omission;
* ``service_p<q>_ms`` and ``service_max_ms``: service time (``latency_ns``);
* ``lag_mean_ms``: mean scheduler lag (``start_ns - intended_ns``);
* ``bytes_in``, ``bytes_out``; ``errors_<kind>``, one per error kind in the data;
* ``<quantile column>_low_n``: True when the row has fewer than ``10 / (1 - q)``
  requests. The quantile is still given (NaN only when there are no requests); the
  flag says it rests on too few samples to be trusted;
* ``partial`` (windows): the first and last window of each run, which the run
  covers only in part, so their rates (per whole window) read low; also a window
  that no run covers whole, like one between two runs;
* ``covered_offset_s`` and ``covered_s`` (windows): the part of the window the
  run was going, from its first request's key time to its last request's end:
  where it begins (seconds after ``window_start``) and how long it is. A whole
  window has 0 and the window's length; ``requests / covered_s`` is the rate of a
  partial window over the time the run really had;
* ``duration_s`` (overall): how long the group's run was going, first request
  start to last request end, the denominator of the rates. Over several runs
  (records with a ``run`` column), each run's span is its own: a group's
  duration is the time during which at least one of the runs it has requests in
  was going, so the gaps between runs do not count, and grouped ``by`` ``run``
  each run gets its own span;
* ``quantile_rel_error``: 0 for exact quantiles, else the bound on their error.

Quantiles cover every request, failed ones included. ``<q>`` is the percentage with
``_`` for the decimal point: ``p50``, ``p99``, ``p99_9``. Durations outside
``[0, 2**vb)`` ns, where ``vb`` is at least 40 bits (18 minutes) and usually 47 or
more, are clamped for the quantiles; a warning says how many.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import histogram
from .dataset import PartIndex, Run, RunSet

log = logging.getLogger("analysis.windows")

DEFAULT_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
DEFAULT_SLICE_ROWS = 4_000_000
"""Rows read and sorted at once by one thread: about 150 bytes a row at the peak, so
~600 MB a slice; with two threads, 1.4 GB peak RSS measured over 10^8 rows."""
DEFAULT_EXACT_ROWS = 10_000_000
"""Up to this many rows, :func:`overall` sorts them all (exact quantiles); above, it
uses histograms (quantiles within :data:`analysis.histogram.RELATIVE_ERROR`)."""
MIN_SAMPLES_FACTOR = 10
"""A quantile q needs at least ``MIN_SAMPLES_FACTOR / (1 - q)`` samples."""

DEFAULT_THREADS = 2
"""Slices read and aggregated at once. The sorts and most numpy and pyarrow work
release the GIL, so two threads use both cores of a small machine."""

_MAX_CELL_BITS = 23  # (window, group) numbers per slice: leaves 40 bits for values
_SLICE_WINDOWS = 1 << 16  # at most this many windows in one slice
_BATCH_ROWS = 1 << 20  # rows per table when streaming a run through histograms

Source: TypeAlias = Run | RunSet | pa.Table | pd.DataFrame
At: TypeAlias = Literal["start", "intended"]

_BASE_COLUMNS = (
    "start_ns",
    "intended_ns",
    "latency_ns",
    "error",
    "bytes_in",
    "bytes_out",
)


class WindowSpecError(ValueError):
    """A window length, quantile or grouping that cannot be used."""


_UNITS_S = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


def parse_every(every: str | float) -> int:
    """A window length (``"1s"``, ``"250ms"``, ``"1min"``, ``"1h"`` or seconds as a
    number) in whole nanoseconds."""
    if isinstance(every, bool):
        raise WindowSpecError(f"window length {every!r} is not a duration")
    if isinstance(every, int | float):
        seconds = float(every)
    else:
        match = _EVERY.match(every.lower())
        if not match or match.group(2) not in _UNITS_S:
            raise WindowSpecError(
                f"window length {every!r} is not understood; write a number and a "
                "unit among ms, s, min, h (like '1s', '10s', '1min') or seconds as "
                "a number"
            )
        seconds = float(match.group(1)) * _UNITS_S[match.group(2)]
    if not math.isfinite(seconds) or round(seconds * 1e9) < 1_000:
        raise WindowSpecError(f"window length {every!r} must be at least 1 microsecond")
    return round(seconds * 1e9)


def quantile_label(q: float) -> str:
    """``0.5`` -> ``p50``, ``0.999`` -> ``p99_9``."""
    return "p" + f"{q * 100:.6g}".replace(".", "_")


def min_samples(q: float) -> int:
    """Samples needed before quantile ``q`` of a window is trusted."""
    return math.ceil(MIN_SAMPLES_FACTOR / (1 - q) - 1e-9)


def _check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    qs = tuple(float(q) for q in quantiles)
    bad = [q for q in qs if not 0 < q < 1]
    if bad:
        raise WindowSpecError(
            f"quantiles must be between 0 and 1 (exclusive), got {bad}; "
            "write 0.99 for p99"
        )
    if len(set(qs)) != len(qs):
        raise WindowSpecError(f"quantiles {list(qs)} repeat a value")
    return qs


# --------------------------------------------------------------- group numbering


@dataclass(slots=True)
class _Codes:
    """Numbers the distinct values of one column across all slices and threads."""

    values: list[Any] = field(default_factory=list)
    index: dict[Any, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def code(self, value: Any) -> int:
        with self.lock:
            found = self.index.get(value)
            if found is None:
                found = self.index[value] = len(self.values)
                self.values.append(value)
            return found

    def _lookup(self, dictionary: pa.Array) -> npt.NDArray[np.int64]:
        return np.array([self.code(v) for v in dictionary.to_pylist()], np.int64)

    def encode(self, column: pa.ChunkedArray) -> npt.NDArray[np.int64]:
        """The code of each row (None, for a null, has a code too)."""
        pieces = []
        for chunk in column.chunks:
            if not pa.types.is_dictionary(chunk.type):
                chunk = chunk.dictionary_encode()
            lookup = self._lookup(chunk.dictionary)
            indices = chunk.indices
            if indices.null_count:
                # Nulls point one past the dictionary, at the code of None.
                lookup = np.append(lookup, self.code(None))
                indices = pc.fill_null(indices, len(lookup) - 1)
            pieces.append(lookup[indices.to_numpy()])
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)

    def encode_valid(
        self, column: pa.ChunkedArray
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Which rows are not null, and the codes of those rows only (cheaper than
        :meth:`encode` for a column that is mostly null, like ``error``)."""
        valid = np.concatenate(
            [c.is_valid().to_numpy(zero_copy_only=False) for c in column.chunks]
            or [np.zeros(0, bool)]
        )
        pieces = []
        for chunk in column.chunks:
            if chunk.null_count == len(chunk):
                continue
            if not pa.types.is_dictionary(chunk.type):
                chunk = chunk.dictionary_encode()
            lookup = self._lookup(chunk.dictionary)
            pieces.append(lookup[chunk.indices.drop_null().to_numpy()])
        codes = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        return valid, codes


def _mix(codes: list[npt.NDArray[np.int64]], radix: list[int], rows: int) -> Any:
    """One group number per row from per-column codes (mixed radix)."""
    if not codes:
        return np.zeros(rows, dtype=np.int64)
    group = codes[0]
    for c, r in zip(codes[1:], radix[1:], strict=True):
        group = group * r + c
    return group


def _unmix(group: npt.NDArray[np.int64], radix: list[int]) -> list[Any]:
    out = []
    for r in reversed(radix):
        out.append(group % r)
        group = group // r
    return out[::-1]


# ----------------------------------------------------------------- exact kernel


class _Rows:
    """One slice's columns as numpy arrays, each computed once and shared by the
    window kernel and the whole-run histograms."""

    def __init__(self, table: pa.Table, registry: dict[str, _Codes]) -> None:
        self.table = table
        self.registry = registry
        self.size = table.num_rows
        self.start = self.column("start_ns")
        self.latency = self.column("latency_ns")
        self.lag = self.start - self.column("intended_ns")
        self.response = self.lag + self.latency
        self.failed, self.kind = registry["error"].encode_valid(table.column("error"))
        self._codes: dict[str, npt.NDArray[np.int64]] = {}

    def column(self, name: str) -> Any:
        return self.table.column(name).to_numpy()

    def codes(self, name: str) -> npt.NDArray[np.int64]:
        found = self._codes.get(name)
        if found is None:
            found = self._codes[name] = self.registry[name].encode(
                self.table.column(name)
            )
        return found


@dataclass(slots=True)
class _Cells:
    """Aggregates of the non-empty (window, group) cells of one slice."""

    window: npt.NDArray[np.int64]
    groups: list[npt.NDArray[np.int64]]
    requests: npt.NDArray[np.int64]
    ok: npt.NDArray[np.int64]
    errors: npt.NDArray[np.int64]  # shape (cells, error kinds known at the time)
    response: npt.NDArray[np.float64]  # shape (cells, quantiles + 1): qs then max
    service: npt.NDArray[np.float64]
    lag_sum_ns: npt.NDArray[np.float64]
    bytes_in: npt.NDArray[np.float64]
    bytes_out: npt.NDArray[np.float64]


def _exact_quantiles(
    cell: npt.NDArray[np.int64],
    cells: int,
    values: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    present: npt.NDArray[np.int64],
    qs: tuple[float, ...],
) -> tuple[npt.NDArray[np.float64], int]:
    """Quantiles and max of ``values`` per cell, from one sort of packed int64s.

    Returns the figures (ns) for the ``present`` cells and how many values had to
    be clamped into the value bits.
    """
    value_bits = 63 - max(1, (cells - 1).bit_length())
    top = (1 << value_bits) - 1
    clamped = 0
    if values.size and (values.min() < 0 or values.max() > top):
        clamped = int(np.count_nonzero((values < 0) | (values > top)))
        values = np.clip(values, 0, top)
    packed = cell << value_bits
    packed |= values
    packed.sort()
    mask = np.int64(top)
    n = counts[present]
    offset = (np.cumsum(counts) - counts)[present]
    out = np.empty((present.size, len(qs) + 1), dtype=np.float64)
    for j, q in enumerate(qs):
        position = q * (n - 1)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, n - 1)
        fraction = position - below
        low = (packed[offset + below] & mask).astype(np.float64)
        high = (packed[offset + above] & mask).astype(np.float64)
        out[:, j] = low + (high - low) * fraction
    out[:, -1] = (packed[offset + n - 1] & mask).astype(np.float64)
    return out, clamped


def _aggregate_slice(
    rows: _Rows,
    window: npt.NDArray[np.int64],
    by: tuple[str, ...],
    qs: tuple[float, ...],
) -> tuple[_Cells, int]:
    """Exact aggregates per (window, group) of one slice's rows.

    ``window`` holds each row's window number counted from the slice's first.
    """
    registry = rows.registry
    codes = [rows.codes(c) for c in by]
    radix = [max(1, len(registry[c].values)) for c in by]
    per_window = math.prod(radix)
    cell = _mix(codes, radix, rows.size)
    if int(window.max()) > 0:
        cell = window * per_window + cell
    cells = (int(window.max()) + 1) * per_window
    distinct = None
    if cells > 1 << _MAX_CELL_BITS:
        # Too many (window, group) combinations to number densely: number only
        # those that occur.
        distinct, inverse = np.unique(cell, return_inverse=True)
        cell = inverse.astype(np.int64)
        cells = int(distinct.size)
    counts = np.bincount(cell, minlength=cells)
    present = np.flatnonzero(counts)

    kinds = len(registry["error"].values)
    failed_cell = cell[rows.failed]
    by_kind = np.bincount(failed_cell * kinds + rows.kind, minlength=cells * kinds)
    ok = counts - np.bincount(failed_cell, minlength=cells)
    sums = [
        np.bincount(cell, weights=rows.lag, minlength=cells),
        np.bincount(cell, weights=rows.column("bytes_in"), minlength=cells),
        np.bincount(cell, weights=rows.column("bytes_out"), minlength=cells),
    ]
    response, clamped_r = _exact_quantiles(
        cell, cells, rows.response, counts, present, qs
    )
    service, clamped_s = _exact_quantiles(
        cell, cells, rows.latency, counts, present, qs
    )

    kept = present if distinct is None else distinct[present]
    result = _Cells(
        window=kept // per_window,
        groups=_unmix(kept % per_window, radix),
        requests=counts[present],
        ok=ok[present],
        errors=by_kind.reshape(cells, kinds)[present],
        response=response,
        service=service,
        lag_sum_ns=sums[0][present].astype(np.float64),
        bytes_in=sums[1][present].astype(np.float64),
        bytes_out=sums[2][present].astype(np.float64),
    )
    return result, clamped_r + clamped_s


# -------------------------------------------------------------------- run spans

RUN_COLUMN = "run"
"""The column that tells several runs apart (:class:`analysis.dataset.RunSet` adds
it). Records without it are one run."""


@dataclass(slots=True)
class _RunSpans:
    """When each run was going: per run, its first key time, last key time and
    last request end (ns), gathered slice by slice from any thread."""

    codes: _Codes = field(default_factory=_Codes)
    first: dict[int, int] = field(default_factory=dict)
    last_key: dict[int, int] = field(default_factory=dict)
    last_end: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rows: _Rows, key: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Note the extremes of the rows' runs; returns each row's run number."""
        if rows.size == 0:
            return np.zeros(0, np.int64)
        if RUN_COLUMN in rows.table.column_names:
            run = self.codes.encode(rows.table.column(RUN_COLUMN))
            runs = np.flatnonzero(np.bincount(run))
        else:
            run = np.full(rows.size, self.codes.code(None), np.int64)
            runs = run[:1]
        end = rows.start + rows.latency
        if runs.size == 1:
            found = [(int(runs[0]), int(key.min()), int(key.max()), int(end.max()))]
        else:
            order = np.argsort(run, kind="stable")
            bounds = np.searchsorted(run[order], runs)
            firsts = np.minimum.reduceat(key[order], bounds)
            last_keys = np.maximum.reduceat(key[order], bounds)
            last_ends = np.maximum.reduceat(end[order], bounds)
            found = [
                (int(r), int(f), int(k), int(e))
                for r, f, k, e in zip(runs, firsts, last_keys, last_ends, strict=True)
            ]
        with self.lock:
            for r, first, last_key, last_end in found:
                self.first[r] = min(self.first.get(r, first), first)
                self.last_key[r] = max(self.last_key.get(r, last_key), last_key)
                self.last_end[r] = max(self.last_end.get(r, last_end), last_end)
        return run

    def code_of(self, value: Any) -> int | None:
        """The number of the run named ``value`` (None when it has no rows)."""
        return self.codes.index.get(value)

    def interval(self, run: int) -> tuple[int, int]:
        """From the run's first key time to its last request's end."""
        return self.first[run], max(self.last_end[run], self.last_key[run])

    def union_ns(self, runs: Sequence[int]) -> int:
        """How long at least one of ``runs`` was going, in ns."""
        return sum(b - a for a, b in _merged([self.interval(r) for r in runs]))

    def durations_ns(
        self, cell_group: npt.NDArray[np.int64], pairs: Sequence[tuple[int, int]]
    ) -> npt.NDArray[np.int64]:
        """Per cell, the time during which a run that the cell's group has rows in
        was going; ``pairs`` lists the (group, run) numbers that occur."""
        runs_of: dict[int, list[int]] = {}
        for group, run in pairs:
            runs_of.setdefault(int(group), []).append(int(run))
        spans = {g: self.union_ns(r) for g, r in runs_of.items()}
        return np.array([spans.get(int(g), 0) for g in cell_group], dtype=np.int64)


def _merged(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of ``intervals`` as sorted, disjoint intervals."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _pairs(
    group: npt.NDArray[np.int64], run: npt.NDArray[np.int64]
) -> list[tuple[int, int]]:
    """The distinct (group, run) numbers of the rows."""
    if group.size == 0:
        return []
    radix = int(run.max()) + 1
    both = group * radix + run
    top = int(both.max()) + 1
    found = np.flatnonzero(np.bincount(both)) if top <= 1 << 24 else np.unique(both)
    return [(int(v // radix), int(v % radix)) for v in found]


def _coverage(
    window: npt.NDArray[np.int64],
    every_ns: int,
    intervals: Sequence[tuple[int, int]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Where the part of each window that ``intervals`` cover begins (ns after the
    window's start) and how long it is."""
    start = window * every_ns
    end = start + every_ns
    covered = np.zeros(window.size, dtype=np.int64)
    begins = end.copy()
    for a, b in _merged(intervals):
        low = np.maximum(start, a)
        piece = np.maximum(np.minimum(end, b) - low, 0)
        covered += piece
        begins = np.where(piece > 0, np.minimum(begins, low), begins)
    return np.where(covered > 0, begins - start, 0), covered


# ------------------------------------------------------------ whole-run histograms


class _Streaming:
    """Whole-run aggregates per group, accumulated table by table in histograms
    (bounded memory, any row order, quantiles within the histogram's error)."""

    def __init__(self, by: tuple[str, ...], registry: dict[str, _Codes]) -> None:
        self.by = by
        self.registry = registry
        self.lock = threading.Lock()
        self.group_of: dict[tuple[int, ...], int] = {}
        self.labels: list[tuple[int, ...]] = []
        self.requests = np.zeros(0, dtype=np.int64)
        self.ok = np.zeros(0, dtype=np.int64)
        self.errors = np.zeros((0, 0), dtype=np.int64)
        self.lag_sum_ns = np.zeros(0)
        self.bytes_in = np.zeros(0)
        self.bytes_out = np.zeros(0)
        self.response = np.zeros((0, histogram.BUCKETS), dtype=np.int64)
        self.service = np.zeros((0, histogram.BUCKETS), dtype=np.int64)
        # Exact minimum and maximum of response and service time per group, kept
        # as int64 like the values: ufunc.at has a fast path only when the types
        # match and the target is contiguous.
        self.extremes = [np.zeros(0, dtype=np.int64) for _ in range(4)]
        self.spans = _RunSpans()
        self.pairs: set[tuple[int, int]] = set()

    def _groups(self, rows: _Rows) -> npt.NDArray[np.int64]:
        codes = [rows.codes(c) for c in self.by]
        radix = [max(1, len(self.registry[c].values)) for c in self.by]
        mixed = _mix(codes, radix, rows.size)
        occurring = np.flatnonzero(np.bincount(mixed))
        lookup = np.zeros(int(occurring.max()) + 1, dtype=np.int64)
        for value, label in zip(
            occurring, zip(*_unmix(occurring, radix), strict=True), strict=True
        ):
            key = tuple(int(c) for c in label)
            if key not in self.group_of:
                self.group_of[key] = len(self.labels)
                self.labels.append(key)
            lookup[value] = self.group_of[key]
        return lookup[mixed]

    def _grow(self, groups: int, kinds: int) -> None:
        extra = groups - self.requests.size
        if extra > 0:
            self.requests = np.concatenate([self.requests, np.zeros(extra, np.int64)])
            self.ok = np.concatenate([self.ok, np.zeros(extra, np.int64)])
            self.lag_sum_ns = np.concatenate([self.lag_sum_ns, np.zeros(extra)])
            self.bytes_in = np.concatenate([self.bytes_in, np.zeros(extra)])
            self.bytes_out = np.concatenate([self.bytes_out, np.zeros(extra)])
            self.response = histogram.grow(self.response, groups)
            self.service = histogram.grow(self.service, groups)
            big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
            self.extremes = [
                np.concatenate([e, np.full(extra, fill, np.int64)])
                for e, fill in zip(self.extremes, (big, small, big, small), strict=True)
            ]
        rows, columns = self.errors.shape
        if groups > rows or kinds > columns:
            bigger = np.zeros((max(groups, rows), max(kinds, columns)), np.int64)
            bigger[:rows, :columns] = self.errors
            self.errors = bigger

    def add(self, rows: _Rows) -> None:
        if rows.size == 0:
            return
        with self.lock:
            self._add(rows)

    def _add(self, rows: _Rows) -> None:
        group = self._groups(rows)
        size = len(self.labels)
        self._grow(size, len(self.registry["error"].values))
        kinds = self.errors.shape[1]
        self.pairs.update(_pairs(group, self.spans.add(rows, rows.start)))
        counts = np.bincount(group, minlength=size)
        failed_group = group[rows.failed]
        self.requests += counts
        self.ok += counts - np.bincount(failed_group, minlength=size)
        self.errors += np.bincount(
            failed_group * kinds + rows.kind, minlength=size * kinds
        ).reshape(size, kinds)
        self.lag_sum_ns += np.bincount(group, rows.lag, size)
        self.bytes_in += np.bincount(group, rows.column("bytes_in"), size)
        self.bytes_out += np.bincount(group, rows.column("bytes_out"), size)
        for j, values, counts_ in (
            (0, rows.response, self.response),
            (2, rows.latency, self.service),
        ):
            histogram.add_counts(counts_, group, values)
            np.minimum.at(self.extremes[j], group, values)
            np.maximum.at(self.extremes[j + 1], group, values)

    def durations_ns(self, total: bool) -> npt.NDArray[np.int64]:
        """Per group (or for all of them), how long its runs were going."""
        if total:
            return np.array([self.spans.union_ns(list(self.spans.first))], np.int64)
        return self.spans.durations_ns(np.arange(len(self.labels)), sorted(self.pairs))

    def cells(self, qs: tuple[float, ...], total: bool) -> _Cells:
        """The groups (or, with ``total``, all of them merged) as cells."""
        response, service = self.response, self.service
        extremes = np.column_stack(self.extremes).astype(np.float64)
        sums: list[npt.NDArray[Any]] = [
            self.requests,
            self.ok,
            self.errors,
            self.lag_sum_ns,
            self.bytes_in,
            self.bytes_out,
        ]
        labels = np.array(self.labels, dtype=np.int64).reshape(-1, len(self.by))
        groups = [labels[:, i] for i in range(len(self.by))]
        if total:
            sums = [s.sum(axis=0, keepdims=True) for s in sums]
            response = response.sum(axis=0, keepdims=True)
            service = service.sum(axis=0, keepdims=True)
            lowest = extremes.min(axis=0)
            highest = extremes.max(axis=0)
            extremes = np.where([True, False, True, False], lowest, highest)[None, :]
            groups = [np.full(1, -1, dtype=np.int64) for _ in self.by]
        figures = []
        for counts, j in ((response, 0), (service, 2)):
            low, high = extremes[:, j], extremes[:, j + 1]
            estimate = histogram.quantiles(counts, qs, low, high)
            figures.append(np.column_stack([estimate, high]))
        return _Cells(
            window=np.zeros(sums[0].size, dtype=np.int64),
            groups=groups,
            requests=sums[0],
            ok=sums[1],
            errors=sums[2],
            response=figures[0],
            service=figures[1],
            lag_sum_ns=sums[3],
            bytes_in=sums[4],
            bytes_out=sums[5],
        )


# ------------------------------------------------------------------ the frames


def _concat_cells(
    chunks: list[_Cells], by_count: int, kinds: int, figures: int
) -> _Cells:
    """One set of cells from many; error matrices padded to ``kinds`` columns."""

    def padded(errors: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        out = np.zeros((errors.shape[0], kinds), dtype=np.int64)
        out[:, : errors.shape[1]] = errors
        return out

    if not chunks:
        return _Cells(
            window=np.zeros(0, np.int64),
            groups=[np.zeros(0, np.int64) for _ in range(by_count)],
            requests=np.zeros(0, np.int64),
            ok=np.zeros(0, np.int64),
            errors=np.zeros((0, kinds), np.int64),
            response=np.zeros((0, figures)),
            service=np.zeros((0, figures)),
            lag_sum_ns=np.zeros(0),
            bytes_in=np.zeros(0),
            bytes_out=np.zeros(0),
        )
    return _Cells(
        window=np.concatenate([c.window for c in chunks]),
        groups=[np.concatenate([c.groups[i] for c in chunks]) for i in range(by_count)],
        requests=np.concatenate([c.requests for c in chunks]),
        ok=np.concatenate([c.ok for c in chunks]),
        errors=np.vstack([padded(c.errors) for c in chunks]),
        response=np.vstack([c.response for c in chunks]),
        service=np.vstack([c.service for c in chunks]),
        lag_sum_ns=np.concatenate([c.lag_sum_ns for c in chunks]),
        bytes_in=np.concatenate([c.bytes_in for c in chunks]),
        bytes_out=np.concatenate([c.bytes_out for c in chunks]),
    )


def _figures_columns(qs: tuple[float, ...]) -> list[str]:
    names = []
    for measure in ("response", "service"):
        names += [f"{measure}_{quantile_label(q)}_ms" for q in qs]
        names.append(f"{measure}_max_ms")
    return names


def _frame(
    chunks: list[_Cells],
    by: tuple[str, ...],
    registry: dict[str, _Codes],
    qs: tuple[float, ...],
) -> pd.DataFrame:
    """Counts, quantiles and sums (no rates or flags yet) from aggregated cells,
    with the window number in a helper column ``_window``."""
    kinds = registry["error"].values
    cells = _concat_cells(chunks, len(by), len(kinds), len(qs) + 1)
    data: dict[str, Any] = {"_window": cells.window}
    for name, codes in zip(by, cells.groups, strict=True):
        values = np.array([*registry[name].values, None], dtype=object)
        data[name] = values[codes]  # code -1 (a total row) reads as None
    data["requests"] = cells.requests.astype(np.int64)
    data["ok"] = cells.ok.astype(np.int64)
    data["errors"] = data["requests"] - data["ok"]
    has_rows = data["requests"] > 0
    figures = np.hstack([cells.response, cells.service]) / 1e6
    for j, name in enumerate(_figures_columns(qs)):
        data[name] = np.where(has_rows, figures[:, j], np.nan)
    n = np.maximum(data["requests"], 1)
    data["lag_mean_ms"] = np.where(has_rows, cells.lag_sum_ns / n / 1e6, np.nan)
    data["bytes_in"] = cells.bytes_in.astype(np.int64)
    data["bytes_out"] = cells.bytes_out.astype(np.int64)
    for code in sorted(range(len(kinds)), key=lambda c: str(kinds[c])):
        if kinds[code] is not None:
            data[f"errors_{kinds[code]}"] = cells.errors[:, code].astype(np.int64)
    return pd.DataFrame(data)


def _finish(
    frame: pd.DataFrame, qs: tuple[float, ...], seconds: Any, rel_error: float
) -> pd.DataFrame:
    """Add rates, low-sample flags and the error bound."""
    requests = frame["requests"]
    after = frame.columns.get_loc("errors")
    assert isinstance(after, int)
    rates = {
        "error_rate": (frame["errors"] / requests.where(requests > 0)).fillna(0.0),
        "throughput_rps": requests / seconds,
        "goodput_rps": frame["ok"] / seconds,
    }
    for offset, (name, values) in enumerate(rates.items(), start=1):
        frame.insert(after + offset, name, values)
    flags = {}
    for measure in ("response", "service"):
        for q in qs:
            column = f"{measure}_{quantile_label(q)}_ms"
            flags[f"{column}_low_n"] = requests < min_samples(q)
    frame = pd.concat([frame, pd.DataFrame(flags, index=frame.index)], axis=1)
    frame["quantile_rel_error"] = rel_error
    return frame


def _fill_gaps(frame: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """Rows of zero requests for the windows, between a group's first and last,
    in which the group had none."""
    if frame.empty:
        return frame
    keys = list(by)
    if keys:
        group_id = frame.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    else:
        group_id = np.zeros(len(frame), dtype=np.int64)
    window = pd.Series(frame["_window"].to_numpy())
    first = window.groupby(group_id).min()
    lengths = (window.groupby(group_id).max() - first + 1).to_numpy()
    if lengths.sum() == len(frame):
        return frame
    steps = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    full = pd.DataFrame(
        {
            "_gid": np.repeat(first.index.to_numpy(), lengths),
            "_window": np.repeat(first.to_numpy(), lengths) + steps,
        }
    )
    labelled = frame.assign(_gid=group_id)
    labels = labelled.drop_duplicates("_gid").set_index("_gid")[keys]
    merged = full.merge(labelled.drop(columns=keys), on=["_gid", "_window"], how="left")
    for key in keys:
        merged[key] = labels[key].reindex(merged["_gid"]).to_numpy()
    counts = ["requests", "ok", "errors"]
    counts += [c for c in merged.columns if c.startswith(("errors_", "bytes_"))]
    merged[counts] = merged[counts].fillna(0).astype(np.int64)
    return merged[frame.columns]


def _key_column(at: str) -> str:
    if at not in ("start", "intended"):
        raise WindowSpecError(
            f"at={at!r} is not a window key; use 'start' (when the request was "
            "sent) or 'intended' (when it was scheduled)"
        )
    return f"{at}_ns"


# ------------------------------------------------------------------ public API


@dataclass(frozen=True, slots=True)
class Aggregates:
    """What :func:`aggregate` computes in one pass over the rows."""

    windows: pd.DataFrame
    overall: pd.DataFrame
    total_windows: pd.DataFrame | None = None
    """With ``total_windows=True``: the windows over all requests (``by=()``)."""


def _columns(*groupings: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys([*_BASE_COLUMNS, *itertools.chain(*groupings)]))


def _in_memory(source: Source, columns: list[str]) -> pa.Table | None:
    """The records of ``source`` as a table when they are in memory (or several
    runs), None for a single run that is read from disk in slices."""
    table: pa.Table
    if isinstance(source, Run):
        return None
    if isinstance(source, RunSet):
        table = source.requests_table()
    elif isinstance(source, pd.DataFrame):
        table = pa.Table.from_pandas(source, preserve_index=False)
    elif isinstance(source, pa.Table):
        table = source
    else:
        raise TypeError(
            f"expected a Run, a RunSet, a pyarrow Table or a DataFrame of request "
            f"records, got {type(source).__name__}"
        )
    _check_columns(table.schema.names, columns)
    if RUN_COLUMN in table.schema.names and RUN_COLUMN not in columns:
        # Kept so that each run's span is its own (see :func:`overall`).
        columns = [*columns, RUN_COLUMN]
    return table.select(columns)


def _check_columns(names: Sequence[str], needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in names]
    if missing:
        raise WindowSpecError(
            f"column(s) {missing} are not in the records (columns: {sorted(names)}); "
            f"windows read {', '.join(_BASE_COLUMNS)} and the grouping columns, "
            "which must be record columns such as endpoint, scenario or phase"
        )


def _index(run: Run, key: str, columns: list[str]) -> PartIndex:
    index = run.part_index(key)
    if index.groups:
        _check_columns(index.names, columns)
    return index


def aggregate(
    source: Source,
    every: str | float = "1s",
    by: Sequence[str] = ("endpoint",),
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    overall_by: Sequence[str] | None = None,
    total: bool = True,
    at: At = "start",
    fill: bool = True,
    exact_rows: int = DEFAULT_EXACT_ROWS,
    slice_rows: int = DEFAULT_SLICE_ROWS,
    threads: int = DEFAULT_THREADS,
    total_windows: bool = False,
) -> Aggregates:
    """:func:`windows` and :func:`overall` (grouped by ``overall_by``, ``by`` when
    None) in one pass over the rows; with ``total_windows``, also the windows over
    all requests (``windows(source, every, by=())``) from the same pass.

    Above ``exact_rows`` rows the whole-run figures come from histograms fed by the
    same slices the windows are computed from, so the run is read once; up to
    ``exact_rows`` they are exact, from a second read of the (then small) run.
    """
    every_ns = parse_every(every)
    qs = _check_quantiles(quantiles)
    group_by = tuple(by)
    whole_by = group_by if overall_by is None else tuple(overall_by)
    key = _key_column(at)
    columns = _columns(group_by, whole_by)
    table = _in_memory(source, columns)
    index = None if table is not None else _index(_as_run(source), key, columns)
    rows = table.num_rows if table is not None else _rows(index)
    bys = (group_by, ()) if total_windows and group_by else (group_by,)
    if rows <= exact_rows:
        frames = [
            windows(source, every, b, qs, at=at, fill=fill, threads=threads)
            for b in bys
        ]
        whole = overall(source, whole_by, qs, total=total, exact_rows=exact_rows)
    else:
        stream = _Streaming(whole_by, _registry(group_by, whole_by))
        frames = _windows(
            table, index, every_ns, bys, qs, key, fill, slice_rows, threads, stream
        )
        whole = _overall_from_stream(stream, whole_by, qs, total)
    totals = frames[-1] if total_windows else None
    return Aggregates(frames[0], whole, totals)


def windows(
    source: Source,
    every: str | float = "1s",
    by: Sequence[str] = ("endpoint",),
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    at: At = "start",
    fill: bool = True,
    slice_rows: int = DEFAULT_SLICE_ROWS,
    threads: int = DEFAULT_THREADS,
) -> pd.DataFrame:
    """One row per (window, group): counts, rates, exact quantiles and more.

    ``source`` is a run (read from disk in time slices of about ``slice_rows`` rows,
    ``threads`` at a time, so memory stays bounded), several runs (group ``by``
    ``run`` to keep them apart), or an Arrow table or DataFrame of request records.
    Windows start on multiples of ``every`` since the epoch (1-minute windows start
    on whole minutes, UTC), keyed on ``start_ns`` or, with ``at="intended"``, on
    ``intended_ns``. With ``fill``, a window without requests between a group's
    first and last one is a row of zeros (and NaN quantiles), so a stall shows as
    zero throughput rather than as a missing row. The columns are described in the
    module docstring.

    Over several runs, ``partial`` and the covered part are per run: grouped by
    ``run``, a row's window is partial when it is its own run's first or last;
    otherwise when it is the first or last window of any of the runs.
    """
    every_ns = parse_every(every)
    qs = _check_quantiles(quantiles)
    group_by = tuple(by)
    key = _key_column(at)
    columns = _columns(group_by)
    table = _in_memory(source, columns)
    index = None if table is not None else _index(_as_run(source), key, columns)
    return _windows(
        table, index, every_ns, (group_by,), qs, key, fill, slice_rows, threads, None
    )[0]


_T = TypeVar("_T")


def _scan(
    index: PartIndex,
    columns: list[str],
    plan: list[tuple[int, int]],
    work: Callable[[pa.Table], _T],
    threads: int,
) -> list[_T]:
    """``work`` applied to the rows of every slice of ``plan``, ``threads`` slices
    at a time; the results in plan order."""
    if not plan:
        return []
    with ThreadPoolExecutor(max(1, min(threads, len(plan)))) as pool:
        futures = [pool.submit(lambda s: work(index.read(columns, s)), s) for s in plan]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()


def _as_run(source: Source) -> Run:
    assert isinstance(source, Run)
    return source


def _rows(index: PartIndex | None) -> int:
    assert index is not None
    return index.rows


def _windows(
    table: pa.Table | None,
    index: PartIndex | None,
    every_ns: int,
    bys: tuple[tuple[str, ...], ...],
    qs: tuple[float, ...],
    key: str,
    fill: bool,
    slice_rows: int,
    threads: int,
    stream: _Streaming | None,
) -> list[pd.DataFrame]:
    """The windows of every grouping in ``bys`` from one read of the rows: each
    slice is read and decoded once and aggregated once per grouping."""
    registry = stream.registry if stream is not None else _registry(*bys)
    columns = _columns(*bys, stream.by if stream else ())
    spans = _RunSpans()

    def work(piece: pa.Table) -> list[tuple[_Cells, int]] | None:
        if piece.num_rows == 0:
            return None
        rows = _Rows(piece, registry)
        if stream is not None:
            stream.add(rows)
        keys = rows.column(key)
        spans.add(rows, keys)
        window = keys // every_ns
        base = int(window.min())
        window -= base
        out = []
        for by in bys:
            cells, clamped = _aggregate_slice(rows, window, by, qs)
            cells.window += base
            out.append((cells, clamped))
        return out

    if table is not None:
        results = [work(table)]
    else:
        assert index is not None
        plan = index.plan(every_ns, slice_rows, _SLICE_WINDOWS)
        results = _scan(index, columns, plan, work, threads)
    done = [r for r in results if r is not None]
    # Every grouping sees the same durations: count the clamped ones once.
    clamped = sum(r[0][1] for r in done)
    if clamped:
        log.warning(
            "%d durations were negative or too long to sort exactly in a window and "
            "were clamped for its quantiles",
            clamped,
        )
    frames = []
    for i, by in enumerate(bys):
        frame = _frame([r[i][0] for r in done], by, registry, qs)
        if fill:
            frame = _fill_gaps(frame, by)
        frame = frame.sort_values(["_window", *by], kind="stable", ignore_index=True)
        window_index = frame.pop("_window").to_numpy()
        stamps = pd.to_datetime(window_index * every_ns, unit="ns", utc=True)
        frame.insert(0, "window_start", stamps)
        frame = _finish(frame, qs, every_ns / 1e9, 0.0)
        frames.append(_mark_partial(frame, window_index, every_ns, by, spans))
    return frames


def _mark_partial(
    frame: pd.DataFrame,
    window: npt.NDArray[np.int64],
    every_ns: int,
    by: tuple[str, ...],
    spans: _RunSpans,
) -> pd.DataFrame:
    """Add ``partial``, ``covered_offset_s`` and ``covered_s``.

    A row's runs are its own when ``run`` is among ``by``, else every run of the
    source. Its window is partial when it is the first or the last window of one
    of those runs, or when they cover only part of it (a window between two runs).
    """
    offset = np.zeros(window.size, dtype=np.int64)
    covered = np.zeros(window.size, dtype=np.int64)
    partial = np.zeros(window.size, dtype=bool)
    if RUN_COLUMN in by:
        codes = [spans.code_of(v) for v in frame[RUN_COLUMN]]
        rows_of: dict[int | None, list[int]] = {}
        for i, code in enumerate(codes):
            rows_of.setdefault(code, []).append(i)
        selections = [
            (np.array(rows, dtype=np.int64), [] if code is None else [code])
            for code, rows in rows_of.items()
        ]
    else:
        selections = [(np.arange(window.size), list(spans.first))]
    for rows, runs in selections:
        intervals = [spans.interval(r) for r in runs]
        offset[rows], covered[rows] = _coverage(window[rows], every_ns, intervals)
        edges = [spans.first[r] // every_ns for r in runs]
        edges += [spans.last_key[r] // every_ns for r in runs]
        partial[rows] = np.isin(window[rows], edges) | (covered[rows] < every_ns)
    frame["partial"] = partial
    frame["covered_offset_s"] = offset / 1e9
    frame["covered_s"] = covered / 1e9
    return frame


def overall(
    source: Source,
    by: Sequence[str] = ("endpoint",),
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    total: bool = False,
    exact_rows: int = DEFAULT_EXACT_ROWS,
) -> pd.DataFrame:
    """Whole-run figures per group, with the columns of :func:`windows` but
    ``duration_s`` in place of ``window_start`` and ``partial``.

    With ``total``, a last row covers every request, its ``by`` columns None.
    Quantiles are exact up to ``exact_rows`` rows and from histograms above (see
    ``quantile_rel_error``). Rates divide by ``duration_s``, the span from the first
    request's start to the last one's end, shared by every group of a run so that
    their rates add up.

    Over several runs (records with a ``run`` column, as
    :func:`analysis.dataset.open_runs` gives), each run's span is its own. A
    group's ``duration_s`` is the time during which at least one of the runs it
    has requests in was going: grouped by ``run``, its run's span; grouped by
    anything else, and for the total, the union of the runs' spans, so two 10 s
    runs 30 s apart give 20 s and not 50 s. Groups present in every run still add
    up to the total.
    """
    qs = _check_quantiles(quantiles)
    group_by = tuple(by)
    columns = _columns(group_by)
    table = _in_memory(source, columns)
    index = None if table is not None else _index(_as_run(source), "start_ns", columns)
    rows = table.num_rows if table is not None else _rows(index)
    registry = _registry(group_by)
    if rows > exact_rows:
        stream = _Streaming(group_by, registry)
        if table is not None:
            for batch in table.to_batches(_BATCH_ROWS):
                stream.add(_Rows(pa.Table.from_batches([batch]), registry))
        else:
            assert index is not None
            # Any row order will do for histograms; time slices are simply the
            # bounded-memory unit that :class:`PartIndex` reads, two at a time.
            plan = index.plan(10**9, DEFAULT_SLICE_ROWS // 2, _SLICE_WINDOWS)
            _scan(
                index,
                columns,
                plan,
                lambda piece: stream.add(_Rows(piece, registry)),
                DEFAULT_THREADS,
            )
        return _overall_from_stream(stream, group_by, qs, total)
    if table is None:
        assert index is not None
        table = index.read(columns)
    chunks = []
    durations: list[npt.NDArray[np.int64]] = []
    if table.num_rows:
        window = np.zeros(table.num_rows, dtype=np.int64)
        rows = _Rows(table, registry)
        cells, _ = _aggregate_slice(rows, window, group_by, qs)
        chunks.append(cells)
        spans = _RunSpans()
        run = spans.add(rows, rows.start)
        radix = [max(1, len(registry[c].values)) for c in group_by]
        group = _mix([rows.codes(c) for c in group_by], radix, rows.size)
        cell_group = _mix(cells.groups, radix, cells.requests.size)
        durations.append(spans.durations_ns(cell_group, _pairs(group, run)))
        if total:
            whole, _ = _aggregate_slice(rows, window, (), qs)
            whole.groups = [np.full(1, -1, np.int64) for _ in group_by]
            chunks.append(whole)
            durations.append(np.array([spans.union_ns(list(spans.first))], np.int64))
    return _overall_frame(chunks, group_by, registry, qs, durations, 0.0)


def _overall_from_stream(
    stream: _Streaming, by: tuple[str, ...], qs: tuple[float, ...], total: bool
) -> pd.DataFrame:
    chunks = []
    durations = []
    if stream.labels:
        chunks.append(stream.cells(qs, total=False))
        durations.append(stream.durations_ns(total=False))
        if total:
            chunks.append(stream.cells(qs, total=True))
            durations.append(stream.durations_ns(total=True))
    return _overall_frame(
        chunks, by, stream.registry, qs, durations, histogram.RELATIVE_ERROR
    )


def _overall_frame(
    chunks: list[_Cells],
    by: tuple[str, ...],
    registry: dict[str, _Codes],
    qs: tuple[float, ...],
    durations_ns: list[npt.NDArray[np.int64]],
    rel_error: float,
) -> pd.DataFrame:
    """The whole-run frame; ``durations_ns`` holds each cell's span, aligned with
    the cells of ``chunks`` (the groups, then the total when there is one)."""
    frame = _frame(chunks, by, registry, qs).drop(columns="_window")
    spans = np.concatenate(durations_ns) if durations_ns else np.zeros(0, np.int64)
    frame.insert(len(by), "duration_s", np.maximum(spans / 1e9, 1e-9))
    groups = frame.iloc[: len(frame) - int(len(chunks) > 1)]
    if by:
        groups = groups.sort_values(list(by), kind="stable")
    frame = pd.concat([groups, frame.iloc[len(groups) :]], ignore_index=True)
    return _finish(frame, qs, frame["duration_s"], rel_error)


def _registry(*groupings: tuple[str, ...]) -> dict[str, _Codes]:
    return {name: _Codes() for name in (*itertools.chain(*groupings), "error")}
