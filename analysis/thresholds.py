"""Thresholds: k6-style pass/fail expressions, judged exactly on the recorded rows.

How this works
--------------
A threshold is a metric key and an expression, as a profile writes them::

    thresholds:
      http_req_duration{endpoint:/api/auth/login}: ["p(95) < 500"]

:func:`parse` turns the pair into a :class:`Threshold` (metric, tags, aggregation,
operator, value) or raises :class:`ThresholdSyntaxError` saying what is wrong and
which forms are accepted. :func:`evaluate` reads the columns its thresholds need
from a run directory (or takes a table), selects the rows each threshold's tags
name, computes the aggregation over them and compares it with
:func:`check_value`, the same pure comparison a live evaluator can reuse.

The metrics and what they are computed from (durations in milliseconds, as k6):

* ``http_req_duration``, ``http_req_waiting``, ``http_req_connecting`` - trends over
  ``latency_ns``, ``ttfb_ns`` (from the request's start, so it includes connection
  set-up when the request opened a connection) and ``connect_ns`` (0 when a
  connection was reused). Aggregations ``avg``, ``min``, ``max``, ``med``,
  ``count`` and ``p(N)``; ``p(N)`` interpolates linearly between the two nearest
  order statistics at rank ``N/100 * (n - 1)``, the definition k6 used while it
  kept every sample and the one pandas' ``quantile`` uses by default.
* ``http_req_failed`` - rate: the fraction of requests whose ``error`` is set (any
  kind: a failed check counts, as does a refused connection).
* ``checks`` - rate: the fraction of requests that passed their checks. k6 counts
  each check on its own; here a request has passed when its ``error`` is null,
  so ``checks`` is ``1 - http_req_failed`` over the same rows.
* ``http_reqs``, ``iterations``, ``data_received``, ``data_sent`` - counters, with
  ``count`` and ``rate`` (per second of the run's span, below). ``iterations``
  counts distinct (vu, iteration) pairs (a VU number is unique in the run, whatever
  its worker), or takes the manifest's
  ``counts.iterations`` when there are no tags and the manifest has it.
* ``dropped_iterations`` - counter from the manifest's ``counts.dropped``; it has no
  tags, since a dropped arrival never became a request.

The run's span, the divisor of every counter ``rate``: from the run's start instant
(the manifest's ``started_at``) to the end of the load shape (``started_at`` plus the
profile's ``duration_s``), or to the last response when that came earlier (a run
stopped early). Without a manifest, from the first request's start to the last
response. Sub-metrics share the run's span, so their rates add up.

No data: a trend or rate threshold over no sample has nothing to judge; its verdict
has ``passed=None`` and says "no data" (k6 would pass it silently: its aggregates
of an empty metric are 0). A count over no row is an observed 0, and judged.

pandas, numpy and pyarrow are imported by the functions that evaluate, not by this
module: worker processes parse profiles, and should not pay a second to import
pandas at start-up.

Known shortcoming: percentiles are exact, so every duration of the selected rows is
held in memory (8 bytes per row and column read: about 3 GB for 10^8 rows with a
tag column). Bounded-memory runs of that size need the histogram path of the
windows module, which would give approximate percentiles; thresholds stay exact.
"""

from __future__ import annotations

import difflib
import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from .dataset import Run

MetricKind = Literal["trend", "rate", "counter"]


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """What a metric is and which record column it is computed from."""

    name: str
    kind: MetricKind
    column: str | None
    tagged: bool = True
    """False for a metric not tied to requests, which tags cannot select."""


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("http_req_duration", "trend", "latency_ns"),
        MetricInfo("http_req_waiting", "trend", "ttfb_ns"),
        MetricInfo("http_req_connecting", "trend", "connect_ns"),
        MetricInfo("http_req_failed", "rate", "error"),
        MetricInfo("checks", "rate", "error"),
        MetricInfo("http_reqs", "counter", None),
        MetricInfo("iterations", "counter", None),
        MetricInfo("dropped_iterations", "counter", None, tagged=False),
        MetricInfo("data_received", "counter", "bytes_in"),
        MetricInfo("data_sent", "counter", "bytes_out"),
    )
}
"""Every metric a threshold may name."""

AGGREGATIONS: dict[MetricKind, tuple[str, ...]] = {
    "trend": ("avg", "min", "max", "med", "count", "p(N)"),
    "rate": ("rate",),
    "counter": ("count", "rate"),
}
"""Aggregations by kind of metric; ``p(N)`` takes N from 0 to 100 (``p(99.9)``)."""

TAGS: dict[str, str] = {
    "endpoint": "endpoint",
    "scenario": "scenario",
    "step": "step",
    "method": "method",
    "status": "status",
    "phase": "phase",
    "error": "error",
    "expected_response": "error",
}
"""Tags a sub-metric may select on, and the record column each reads. ``endpoint``
is the path template; ``:id`` and ``{id}`` segments match any placeholder segment
(``/api/automations/:id/execute`` selects ``/api/automations/{automationId}/execute``).
``expected_response:true`` selects requests with no error, ``false`` the others."""

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

EXPRESSION_FORM = "<aggregation> <operator> <number>, such as p(95)<500 or rate<0.01"
OPERATOR_LIST = "<, <=, >, >=, == or !="

_EXPRESSION = re.compile(
    r"\s*(?P<aggregation>.*?)\s*(?P<op>===|==|!=|<=|>=|<|>)\s*(?P<value>.*?)\s*"
)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NUMBER_WITH_UNIT = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-z%]+)"
)
_PERCENTILE = re.compile(r"p\s*\(\s*(?P<n>[^)]*?)\s*\)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TAG_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*:)")
_PLACEHOLDER = re.compile(r":[A-Za-z_][A-Za-z0-9_]*|\{[^{}/]*\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|h|m|s)")
_DURATION_UNITS_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class ThresholdSyntaxError(ValueError):
    """A threshold's metric key or expression is malformed or names something that
    does not exist. ``part`` says which of the two is at fault."""

    def __init__(
        self,
        problem: str,
        fix: str,
        *,
        part: Literal["metric", "expression"] = "expression",
    ) -> None:
        self.problem = problem
        self.fix = fix
        self.part = part
        super().__init__(f"{problem}; {fix}")


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed expression on one (sub-)metric."""

    metric: str
    tags: tuple[tuple[str, str], ...]
    """(tag, value) pairs as written, in order; all must match (logical and)."""
    aggregation: str
    """``avg``, ``min``, ``max``, ``med``, ``count``, ``rate`` or ``p(N)``."""
    op: str
    """One of :data:`OPERATORS` (k6's ``===`` is kept as ``==``)."""
    value: float
    source: str
    """The expression as written."""

    @property
    def key(self) -> str:
        """The metric key: ``http_req_duration{endpoint:/api/auth/login}``."""
        if not self.tags:
            return self.metric
        inner = ",".join(f"{tag}:{value}" for tag, value in self.tags)
        return f"{self.metric}{{{inner}}}"

    @property
    def percentile(self) -> float | None:
        """N of ``p(N)``, or None for other aggregations."""
        if not self.aggregation.startswith("p("):
            return None
        return float(self.aggregation[2:-1])

    @property
    def expression(self) -> str:
        """The expression in canonical spelling: ``p(95)<500``."""
        return f"{self.aggregation}{self.op}{_number_text(self.value)}"

    def __str__(self) -> str:
        return f"{self.key}: {self.expression}"


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """A threshold with k6's abort settings, as a profile declares it. Only a live
    evaluator acts on the abort settings; the end-of-run verdict ignores them."""

    threshold: Threshold
    abort_on_fail: bool = False
    delay_abort_eval_s: float = 0.0
    """How long into the run before a failure may abort it."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one threshold."""

    threshold: Threshold
    observed: float | None
    """The aggregation's value (milliseconds for trends), None when no data."""
    passed: bool | None
    """None when there was nothing to judge ("no data")."""
    samples: int
    """Rows the value was computed from (iterations for ``iterations``)."""
    note: str = ""

    @property
    def status(self) -> Literal["passed", "failed", "no data"]:
        if self.passed is None:
            return "no data"
        return "passed" if self.passed else "failed"


# -- parsing ---------------------------------------------------------------------


def parse(metric_key: str, expression: str) -> Threshold:
    """Parse one threshold: ``parse("http_req_duration", "p(95)<500")``.

    Raises :class:`ThresholdSyntaxError` for a malformed key or expression, an
    unknown metric, tag or aggregation, or an aggregation the metric lacks.
    """
    metric, tags = parse_metric_key(metric_key)
    info = METRICS[metric]
    aggregation, op, value = _parse_expression(expression, info)
    return Threshold(metric, tags, aggregation, op, value, expression)


def parse_metric_key(metric_key: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split ``metric{tag:value,...}`` into the metric and its (tag, value) pairs."""
    text = metric_key.strip()
    name, brace, rest = text.partition("{")
    name = name.strip()
    if name not in METRICS:
        _unknown_metric(name, metric_key)
    if not brace:
        return name, ()
    if not rest.endswith("}"):
        raise ThresholdSyntaxError(
            f"the tags of {metric_key!r} are not closed by '}}'",
            "write metric{tag:value}, such as http_req_duration{endpoint:/api/items}",
            part="metric",
        )
    if not METRICS[name].tagged:
        raise ThresholdSyntaxError(
            f"{name} takes no tags: a dropped arrival never became a request",
            f"write {name} alone",
            part="metric",
        )
    inner = rest[:-1]
    if not inner.strip():
        raise ThresholdSyntaxError(
            f"{metric_key!r} has empty braces",
            f"name a tag ({', '.join(TAGS)}) or remove the braces",
            part="metric",
        )
    tags: list[tuple[str, str]] = []
    for item in _TAG_SPLIT.split(inner):
        tag, colon, value = item.partition(":")
        tag, value = tag.strip(), value.strip()
        if not colon or not tag:
            raise ThresholdSyntaxError(
                f"{item.strip()!r} in {metric_key!r} is not a tag:value pair",
                "write {tag:value}, several separated by commas: "
                "{method:GET,status:200}",
                part="metric",
            )
        if tag not in TAGS:
            close = difflib.get_close_matches(tag, TAGS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ThresholdSyntaxError(
                f"unknown tag {tag!r} in {metric_key!r}",
                f"{hint}tags are: {', '.join(TAGS)}",
                part="metric",
            )
        if any(tag == seen for seen, _ in tags):
            raise ThresholdSyntaxError(
                f"tag {tag!r} appears twice in {metric_key!r}",
                "keep one; a sub-metric selects rows that match every tag",
                part="metric",
            )
        tags.append((tag, _tag_value(tag, value, metric_key)))
    return name, tuple(tags)


def _tag_value(tag: str, value: str, metric_key: str) -> str:
    if not value:
        raise ThresholdSyntaxError(
            f"tag {tag!r} in {metric_key!r} has no value",
            f"write {{{tag}:value}}",
            part="metric",
        )
    is_status = value.isdigit() and (value == "0" or 100 <= int(value) <= 599)
    if tag == "status" and not is_status:
        raise ThresholdSyntaxError(
            f"status {value!r} in {metric_key!r} is not a status code",
            "write {status:200}; 0 selects requests that got no response",
            part="metric",
        )
    if tag == "expected_response" and value not in ("true", "false"):
        raise ThresholdSyntaxError(
            f"expected_response {value!r} in {metric_key!r} is not true or false",
            "write {expected_response:true}",
            part="metric",
        )
    if tag == "method":
        return value.upper()
    if tag == "endpoint" and not value.startswith("/"):
        raise ThresholdSyntaxError(
            f"endpoint {value!r} in {metric_key!r} does not start with '/'",
            "write the path template as recorded: {endpoint:/api/users/{id}}",
            part="metric",
        )
    return value


def _unknown_metric(name: str, metric_key: str) -> NoReturn:
    close = difflib.get_close_matches(name, METRICS, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ThresholdSyntaxError(
        f"unknown metric {name or metric_key!r}"
        if name
        else f"{metric_key!r} names no metric",
        f"{hint}metrics are: {', '.join(METRICS)}",
        part="metric",
    )


def _accepted(info: MetricInfo) -> str:
    names = AGGREGATIONS[info.kind]
    listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    return f"{info.name} (a {info.kind}) accepts {listed}"


def _parse_expression(expression: str, info: MetricInfo) -> tuple[str, str, float]:
    match = _EXPRESSION.fullmatch(expression)
    if match is None:
        raise ThresholdSyntaxError(
            f"{expression!r} has no comparison operator ({OPERATOR_LIST})",
            f"write {EXPRESSION_FORM}; {_accepted(info)}",
        )
    written, op, value_text = match.group("aggregation", "op", "value")
    if not written:
        raise ThresholdSyntaxError(
            f"{expression!r} has nothing before {op!r}",
            f"write {EXPRESSION_FORM}; {_accepted(info)}",
        )
    aggregation = _aggregation(written, expression, info)
    return aggregation, "==" if op == "===" else op, _value(value_text, expression)


def _aggregation(written: str, expression: str, info: MetricInfo) -> str:
    allowed = AGGREGATIONS[info.kind]
    percentile = _PERCENTILE.fullmatch(written)
    if percentile is not None and "p(N)" in allowed:
        n_text = percentile.group("n")
        n = float(n_text) if _NUMBER.fullmatch(n_text) else math.nan
        if not 0.0 <= n <= 100.0:
            raise ThresholdSyntaxError(
                f"{written!r} in {expression!r} needs a percentile from 0 to 100",
                "write p(95), p(99) or p(99.9)",
            )
        return f"p({_number_text(n)})"
    if written in allowed:
        return written
    fix = f"write {EXPRESSION_FORM}; {_accepted(info)}"
    names = [a for a in allowed if a != "p(N)"]
    close = difflib.get_close_matches(written, names, n=1, cutoff=0.6)
    if percentile is not None:
        fix = f"percentiles apply to trends; {_accepted(info)}"
    elif re.fullmatch(r"p\s*\d+(\.\d+)?", written) and "p(N)" in allowed:
        fix = f"write p({written[1:].strip()}); a percentile takes parentheses"
    elif close:
        fix = f"did you mean '{close[0]}'? {_accepted(info)}"
    raise ThresholdSyntaxError(
        f"{written!r} in {expression!r} is not an aggregation of {info.name}", fix
    )


def _value(text: str, expression: str) -> float:
    if _NUMBER.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    with_unit = _NUMBER_WITH_UNIT.fullmatch(text)
    if with_unit is not None:
        number = with_unit.group("number")
        raise ThresholdSyntaxError(
            f"{text!r} in {expression!r} has a unit; threshold values are plain "
            "numbers (durations in milliseconds, rates as fractions)",
            f"write the number alone, such as p(95)<{number}"
            if with_unit.group("unit") == "ms"
            else "write the number alone: 500 for 500 ms, 0.01 for 1%",
        )
    if not text:
        raise ThresholdSyntaxError(
            f"{expression!r} has no number after its operator",
            f"write {EXPRESSION_FORM}",
        )
    raise ThresholdSyntaxError(
        f"{text!r} in {expression!r} is not a number",
        f"write {EXPRESSION_FORM}",
    )


def _number_text(value: float) -> str:
    """A float written back without loss: 500.0 as ``500``, 0.1 as ``0.1``."""
    return str(int(value)) if value.is_integer() else repr(value)


def parse_duration_s(value: object) -> float:
    """A duration as profiles write it: a number of seconds, or text such as
    ``500ms``, ``10s``, ``1m30s``. Raises ``ValueError`` saying which forms work."""
    form = "a number of seconds or text like 500ms, 10s, 2m or 1m30s"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a duration; write {form}")
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            parts = list(_DURATION_PART.finditer(text))
            joined = "".join(p.group(0) for p in parts)
            units = [p.group(2) for p in parts]
            ordered = units == sorted(units, key=list(_DURATION_UNITS_S).index)
            if not parts or joined != text or len(set(units)) != len(units):
                raise ValueError(f"{value!r} is not a duration; write {form}")
            if not ordered:
                raise ValueError(
                    f"{value!r} lists its units out of order; write the largest "
                    "first, like 1m30s"
                )
            seconds = sum(
                float(p.group(1)) * _DURATION_UNITS_S[p.group(2)] for p in parts
            )
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration of zero or more; write {form}")
    return seconds


def parse_thresholds(thresholds: Mapping[str, Any]) -> tuple[ThresholdRule, ...]:
    """Parse a ``thresholds`` mapping as a manifest or a k6 script holds it:
    ``{metric_key: [expression | {threshold, abort_on_fail, delay_abort_eval}]}``
    (k6's ``abortOnFail`` and ``delayAbortEval`` are accepted too)."""
    rules: list[ThresholdRule] = []
    for metric_key, items in thresholds.items():
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise ThresholdSyntaxError(
                f"the thresholds of {metric_key!r} are not a list",
                f'write {metric_key}: ["p(95)<500"]',
                part="metric",
            )
        for item in items:
            rules.append(_rule(metric_key, item))
    return tuple(rules)


def _rule(metric_key: str, item: object) -> ThresholdRule:
    if isinstance(item, str):
        return ThresholdRule(parse(metric_key, item))
    if not isinstance(item, Mapping) or not isinstance(item.get("threshold"), str):
        raise ThresholdSyntaxError(
            f"{item!r} under {metric_key!r} is neither an expression nor a mapping "
            "with a 'threshold' expression",
            'write "p(95)<500" or {threshold: "p(95)<500", abort_on_fail: true}',
        )
    abort = item.get("abort_on_fail", item.get("abortOnFail", False))
    delay = item.get("delay_abort_eval", item.get("delayAbortEval", 0))
    if not isinstance(abort, bool):
        raise ThresholdSyntaxError(
            f"abort_on_fail {abort!r} under {metric_key!r} is not true or false",
            "write abort_on_fail: true",
        )
    return ThresholdRule(
        parse(metric_key, item["threshold"]), abort, parse_duration_s(delay)
    )


# -- judging -----------------------------------------------------------------------


def check_value(threshold: Threshold, observed: float) -> bool:
    """True when ``observed`` satisfies the threshold (``==`` compares exactly)."""
    return bool(OPERATORS[threshold.op](observed, threshold.value))


def endpoint_matches(pattern: str, endpoint: str) -> bool:
    """True when a recorded path template matches an endpoint as a threshold or an
    SLO writes it. Segments ``:id`` and ``{id}`` match any placeholder segment,
    whatever its name; every other segment must be equal."""
    if pattern == endpoint:
        return True
    wanted = pattern.split("/")
    seen = endpoint.split("/")
    if len(wanted) != len(seen):
        return False
    return all(
        a == b or (_PLACEHOLDER.fullmatch(a) and _PLACEHOLDER.fullmatch(b))
        for a, b in zip(wanted, seen, strict=True)
    )


Source: TypeAlias = "str | os.PathLike[str] | Run | pa.Table | pd.DataFrame"
"""What :func:`evaluate` reads: a run directory (path or opened :class:`Run`) or the
request rows themselves (without a manifest: no ``dropped_iterations``)."""


@dataclass(frozen=True, slots=True)
class Rows:
    """The request columns some thresholds need, the run's manifest (empty when
    the rows came without one) and the run's span."""

    frame: pd.DataFrame
    manifest: dict[str, Any]
    span_s: float | None


def evaluate(
    source: Source, thresholds: Iterable[Threshold | ThresholdRule] | None = None
) -> list[Verdict]:
    """Judge ``thresholds`` (default: those in the run's manifest) on the records.

    Every value is computed from the rows themselves; see the module's docstring
    for the definitions. One verdict per threshold, in the order given.
    """
    rows_source = source
    if thresholds is None:
        run = _as_run(source)
        if run is None:
            raise ValueError(
                "no thresholds given and no manifest to read them from; pass "
                "thresholds=[parse(...)] or a run directory"
            )
        declared = run.manifest.get("profile", {}).get("thresholds", {}) or {}
        thresholds = parse_thresholds(declared)
        rows_source = run
    wanted = [t.threshold if isinstance(t, ThresholdRule) else t for t in thresholds]
    rows = load_rows(rows_source, _columns_for(wanted))
    return [judge(t, rows) for t in wanted]


def _as_run(source: Source) -> Run | None:
    from .dataset import Run, open_run

    if isinstance(source, Run):
        return source
    if isinstance(source, str | os.PathLike):
        return open_run(Path(source))
    return None


def _columns_for(thresholds: Iterable[Threshold]) -> list[str]:
    columns = {"start_ns", "latency_ns"}
    for t in thresholds:
        info = METRICS[t.metric]
        if info.column is not None:
            columns.add(info.column)
        if t.metric == "iterations":
            columns.update(("vu", "iteration"))
        columns.update(TAGS[tag] for tag, _ in t.tags)
    return sorted(columns)


def load_rows(source: Source, columns: Sequence[str]) -> Rows:
    """Read ``columns`` of the request rows of ``source``, with its manifest."""
    import pandas as pd
    import pyarrow as pa

    run = _as_run(source)
    manifest: dict[str, Any] = {}
    if run is not None:
        manifest = run.manifest
        table = run.requests_table(list(columns))
        if table.num_columns:
            frame = table.to_pandas()
        else:
            frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    elif isinstance(source, pa.Table):
        frame = source.select(list(columns)).to_pandas()
    elif isinstance(source, pd.DataFrame):
        missing = [c for c in columns if c not in source.columns]
        if missing:
            raise ValueError(
                f"the table has no column {', '.join(missing)}; pass the request "
                "rows of a run (pandas.read_parquet('runs/<id>/requests'))"
            )
        frame = source[list(columns)]
    else:
        raise TypeError(f"cannot read request rows from {type(source).__name__}")
    return Rows(frame, manifest, run_span_s(frame, manifest))


def run_span_s(frame: pd.DataFrame, manifest: Mapping[str, Any]) -> float | None:
    """The divisor of counter rates (see the module's docstring); None when no
    request was recorded."""
    if frame.empty:
        return None
    first_ns = int(frame["start_ns"].min())
    last_end_ns = int((frame["start_ns"] + frame["latency_ns"]).max())
    started_at = manifest.get("started_at")
    duration_s = manifest.get("profile", {}).get("duration_s")
    if isinstance(started_at, int | float) and isinstance(duration_s, int | float):
        start_ns = started_at * 1e9
        end_ns = min(start_ns + duration_s * 1e9, float(last_end_ns))
        span_s = (end_ns - start_ns) / 1e9
    else:
        span_s = (last_end_ns - first_ns) / 1e9
    return span_s if span_s > 0 else None


def judge(threshold: Threshold, rows: Rows) -> Verdict:
    """One verdict from rows already read (see :func:`load_rows`)."""
    import pandas as pd

    if threshold.metric == "dropped_iterations":
        return _from_counts(threshold, rows, "dropped")
    counted = rows.manifest.get("counts", {}).get("iterations")
    if threshold.metric == "iterations" and not threshold.tags and counted is not None:
        return _from_counts(threshold, rows, "iterations")
    frame = rows.frame
    mask, unmatched = _select(frame, threshold.tags)
    info = METRICS[threshold.metric]
    observed: float | None
    if info.kind == "trend":
        assert info.column is not None
        values = frame.loc[mask, info.column].to_numpy(dtype="float64") / 1e6
        samples = len(values)
        observed = _trend(threshold, values) if samples else None
    elif info.kind == "rate":
        failed = frame.loc[mask, "error"].notna()
        samples = len(failed)
        if threshold.metric == "checks":
            observed = float((~failed).mean()) if samples else None
        else:
            observed = float(failed.mean()) if samples else None
    else:
        if threshold.metric == "iterations":
            samples = len(pd.unique(iteration_keys(frame)[mask]))
            total = float(samples)
        else:
            samples = int(mask.sum())
            total = float(samples)
            if info.column is not None:
                total = float(frame.loc[mask, info.column].astype("int64").sum())
        observed = _counter(threshold, total, rows.span_s)
    if observed is None:
        why = unmatched or (
            "the run recorded no request" if frame.empty else "no request matched"
        )
        return Verdict(threshold, None, None, samples, f"no data: {why}")
    return Verdict(
        threshold, observed, check_value(threshold, observed), samples, unmatched
    )


def iteration_keys(frame: pd.DataFrame) -> np.ndarray:
    """One integer per row naming its iteration: ``vu`` in the high 32 bits and
    ``iteration`` in the low ones. A VU number is unique in the run (workers number
    theirs apart), so the worker adds nothing, and one integer key hashes several
    times faster than three columns."""
    import numpy as np

    vu = frame["vu"].to_numpy(dtype="uint64")
    iteration = frame["iteration"].to_numpy(dtype="uint64")
    return (vu << np.uint64(32)) | iteration


def _from_counts(threshold: Threshold, rows: Rows, name: str) -> Verdict:
    count = rows.manifest.get("counts", {}).get(name)
    if not isinstance(count, int):
        return Verdict(
            threshold, None, None, 0, f"no data: the manifest has no counts.{name}"
        )
    observed = _counter(threshold, float(count), rows.span_s)
    if observed is None:
        return Verdict(threshold, None, None, count, "no data: the run has no span")
    note = f"from the manifest's counts.{name}"
    return Verdict(threshold, observed, check_value(threshold, observed), count, note)


def _trend(threshold: Threshold, values_ms: np.ndarray) -> float:
    import numpy as np

    aggregation = threshold.aggregation
    if aggregation == "avg":
        return float(values_ms.mean())
    if aggregation == "min":
        return float(values_ms.min())
    if aggregation == "max":
        return float(values_ms.max())
    if aggregation == "med":
        return float(np.median(values_ms))
    if aggregation == "count":
        return float(len(values_ms))
    n = threshold.percentile
    assert n is not None
    return float(np.quantile(values_ms, n / 100.0, method="linear"))


def _counter(threshold: Threshold, total: float, span_s: float | None) -> float | None:
    if threshold.aggregation == "count":
        return total
    return None if span_s is None else total / span_s


def _select(
    frame: pd.DataFrame, tags: tuple[tuple[str, str], ...]
) -> tuple[np.ndarray, str]:
    """Rows matching every tag, and a note when a tag's value matches no row."""
    import numpy as np

    mask = np.ones(len(frame), dtype=bool)
    for tag, value in tags:
        column = frame[TAGS[tag]]
        if tag == "status":
            hit = (column.astype("int64") == int(value)).to_numpy()
        elif tag == "expected_response":
            hit = column.isna().to_numpy()
            if value == "false":
                hit = ~hit
        else:
            categories = column.astype("category").cat.categories
            if tag == "endpoint":
                chosen = [c for c in categories if endpoint_matches(value, str(c))]
            else:
                chosen = [c for c in categories if str(c) == value]
            if not chosen and len(frame):
                return mask & False, _unmatched_note(tag, value, categories)
            hit = column.isin(chosen).to_numpy()
        mask &= hit
    return mask, ""


def _unmatched_note(tag: str, value: str, categories: Iterable[object]) -> str:
    known = sorted(str(c) for c in categories)
    shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    return f"no request has {tag} {value!r} (recorded: {shown or 'none'})"


def any_failed(verdicts: Iterable[Verdict]) -> bool:
    """True when at least one verdict failed; "no data" is not a failure."""
    return any(v.passed is False for v in verdicts)


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    """One line per verdict, for the terminal."""
    if not verdicts:
        return "no thresholds"
    lines = []
    for v in verdicts:
        mark = {"passed": "ok  ", "failed": "FAIL", "no data": "n/a "}[v.status]
        shown = "-" if v.observed is None else f"{v.observed:.6g}"
        line = f"{mark} {v.threshold}  observed {shown} over {v.samples} samples"
        lines.append(f"{line}  ({v.note})" if v.note else line)
    return "\n".join(lines)


__all__ = [
    "AGGREGATIONS",
    "METRICS",
    "OPERATORS",
    "TAGS",
    "MetricInfo",
    "Threshold",
    "ThresholdRule",
    "ThresholdSyntaxError",
    "Verdict",
    "any_failed",
    "check_value",
    "endpoint_matches",
    "evaluate",
    "format_verdicts",
    "iteration_keys",
    "judge",
    "load_rows",
    "parse",
    "parse_duration_s",
    "parse_metric_key",
    "parse_thresholds",
    "run_span_s",
]
