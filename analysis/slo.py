"""SLO blocks: per-endpoint targets and system limits, judged on a run's records.

How this works
--------------
A profile's ``slos:`` block is written like a benchmark table::

    slos:
      endpoints:
        /api/auth/login: {target_response_time: 200ms, max_concurrent_users: 100,
                          expected_throughput: 500}
      system:
        database: {max_connections: 100, max_query_time: 1000ms}
        redis: {max_connections: 200, max_memory_usage: 80}          # percent
        application: {max_cpu_usage: 80, max_memory_usage: 2048,      # %, MB
                      max_response_time: 5000ms}

:func:`parse_slos` checks it and builds :class:`Slos`; :func:`evaluate_slos` turns
every entry into one :class:`SloVerdict`:

* ``target_response_time: X`` - the threshold ``p(95)<X`` on
  ``http_req_duration{endpoint:E}``. The 95th percentile is the usual reading of
  a "target response time" in such tables: strict enough to catch a slow tail,
  loose enough that a handful of outliers in a short run do not decide it.
* ``expected_throughput: X`` (requests per second) - the threshold ``rate>=X`` on
  ``http_reqs{endpoint:E}``, judged only when the run offered at least X requests
  per second to E on average over its load shape; otherwise the verdict is "not
  exercised" with the offered figure, since a run that never asked for X cannot
  show whether the service delivers it. The offered figure comes from the profile
  in the manifest: open model, the mean arrival rate times the expected requests
  to E per iteration (scenario weights times steps on E); closed model, the most
  the VUs could ask for from a target answering instantly (mean VUs over the
  per-iteration think time), unbounded without think time.
* ``max_concurrent_users: N`` - not a pass or fail: a note of whether the run
  reached N concurrent users (run-wide, since VUs are not tied to one endpoint).
  Closed model: the peak of the VU counts the workers reported (``vus`` events),
  or the planned peak when there are none. Open model: the peak number of
  iterations in flight, measured from the rows.
* ``application.max_response_time: X`` - the threshold ``max<X`` on
  ``http_req_duration`` over every request.
* The other system limits are read from the monitor's samples in
  ``runs/<id>/resources/`` (see :data:`SYSTEM_LIMITS` for the column and sources
  of each): the highest sample must be at or below the limit. Without samples the
  verdict is "not measured": a figure is never invented.

Endpoint keys may use ``:id`` placeholders; ``/api/automations/:id/execute`` selects
the recorded template ``/api/automations/{automationId}/execute``.

Parsing needs no pandas (the harness validates the block when it loads a profile);
the evaluation imports it when it runs.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .thresholds import (
    Rows,
    Threshold,
    endpoint_matches,
    iteration_keys,
    judge,
    load_rows,
    parse,
    parse_duration_s,
)

if TYPE_CHECKING:
    import pandas as pd

    from .dataset import Run

TARGET_PERCENTILE = 95
"""The percentile ``target_response_time`` bounds."""

ENDPOINT_KEYS = ("target_response_time", "max_concurrent_users", "expected_throughput")

Unit = Literal["connections", "ms", "percent", "MB"]


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Where one system limit is measured."""

    unit: Unit
    column: str | None
    """Column of the resource samples; None: computed from the request rows."""
    sources: tuple[str, ...] = ()
    """Values of the samples' ``source`` column that belong to the component."""
    tree_total: bool = False
    """Sum the samples of one instant (a process tree's processes) before taking
    the highest; otherwise take the highest sample as it is."""
    scale: float = 1.0
    """Multiplies a sample into ``unit``."""


_DATABASE = ("postgres", "mysql", "database")
_UNIT_TEXT = {"percent": "%", "ms": " ms", "MB": " MB", "connections": " connections"}

SYSTEM_LIMITS: dict[str, dict[str, LimitSpec]] = {
    "database": {
        "max_connections": LimitSpec("connections", "db_connections", _DATABASE),
        "max_query_time": LimitSpec("ms", "db_query_max_ms", _DATABASE),
    },
    "redis": {
        "max_connections": LimitSpec("connections", "redis_connections", ("redis",)),
        "max_memory_usage": LimitSpec("percent", "redis_used_memory_pct", ("redis",)),
    },
    "application": {
        "max_cpu_usage": LimitSpec("percent", "cpu_percent", ("target",), True),
        "max_memory_usage": LimitSpec(
            "MB", "rss_bytes", ("target",), True, 1 / (1024 * 1024)
        ),
        "max_response_time": LimitSpec("ms", None),
    },
}
"""Each component's limits and the resource column they read. MB are MiB
(1,048,576 bytes); CPU percent is of one core, so a process tree may exceed 100."""


class SloSpecError(ValueError):
    """An ``slos`` block is malformed. ``path`` names the offending key from the
    block's root, ``on_key`` says whether the key itself (not its value) is wrong."""

    def __init__(
        self, path: tuple[str, ...], problem: str, fix: str, *, on_key: bool = False
    ) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        self.on_key = on_key
        where = ".".join(path) or "slos"
        super().__init__(f"{where}: {problem}; {fix}")


@dataclass(frozen=True, slots=True)
class EndpointSlo:
    endpoint: str
    target_response_time_ms: float | None = None
    max_concurrent_users: int | None = None
    expected_throughput_rps: float | None = None


@dataclass(frozen=True, slots=True)
class SystemLimit:
    component: str
    name: str
    limit: float
    """In the unit of :data:`SYSTEM_LIMITS`: ms, percent, MB or connections."""


@dataclass(frozen=True, slots=True)
class Slos:
    endpoints: tuple[EndpointSlo, ...] = ()
    system: tuple[SystemLimit, ...] = ()

    def as_mapping(self) -> dict[str, Any]:
        """The block in the profile's form; :func:`parse_slos` reads it back."""
        out: dict[str, Any] = {}
        if self.endpoints:
            endpoints: dict[str, Any] = {}
            for e in self.endpoints:
                entry: dict[str, Any] = {}
                if e.target_response_time_ms is not None:
                    entry["target_response_time"] = (
                        f"{_text(e.target_response_time_ms)}ms"
                    )
                if e.max_concurrent_users is not None:
                    entry["max_concurrent_users"] = e.max_concurrent_users
                if e.expected_throughput_rps is not None:
                    entry["expected_throughput"] = e.expected_throughput_rps
                endpoints[e.endpoint] = entry
            out["endpoints"] = endpoints
        if self.system:
            system: dict[str, dict[str, Any]] = {}
            for s in self.system:
                unit = SYSTEM_LIMITS[s.component][s.name].unit
                value: object = s.limit
                if unit == "ms":
                    value = f"{_text(s.limit)}ms"
                elif unit == "connections":
                    value = int(s.limit)
                system.setdefault(s.component, {})[s.name] = value
            out["system"] = system
        return out


SloStatus = Literal[
    "passed",
    "failed",
    "no data",
    "not exercised",
    "not measured",
    "reached",
    "not reached",
]


@dataclass(frozen=True, slots=True)
class SloVerdict:
    """The outcome of one SLO entry."""

    slo: str
    """Where it was declared: ``endpoints./api/auth/login.target_response_time``."""
    target: str
    """What was required, in words and units."""
    status: SloStatus
    observed: float | None
    passed: bool | None
    """None unless the entry was judged ("passed" or "failed")."""
    samples: int
    note: str = ""
    threshold: Threshold | None = None
    """The threshold the entry became, when it became one."""


# -- parsing ---------------------------------------------------------------------


def parse_slos(block: object) -> Slos:
    """Check an ``slos`` block (plain mappings, as YAML gives them) and build
    :class:`Slos`. Raises :class:`SloSpecError` at the first problem."""
    if block is None:
        return Slos()
    top = _mapping(block, (), "the slos block", "write endpoints: and system: under it")
    _known_keys(top, (), ("endpoints", "system"), "slos")
    endpoints: list[EndpointSlo] = []
    system: list[SystemLimit] = []
    if top.get("endpoints") is not None:
        path = ("endpoints",)
        example = "endpoints: {/api/items: {target_response_time: 200ms}}"
        for endpoint, entry in _mapping(
            top["endpoints"], path, "endpoints", example
        ).items():
            endpoints.append(_endpoint(endpoint, entry))
    if top.get("system") is not None:
        path = ("system",)
        example = "system: {application: {max_cpu_usage: 80}}"
        for component, entry in _mapping(
            top["system"], path, "system", example
        ).items():
            system.extend(_component(component, entry))
    return Slos(tuple(endpoints), tuple(system))


def _mapping(
    value: object, path: tuple[str, ...], what: str, fix: str
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SloSpecError(path, f"{what} must be a mapping, not {value!r}", fix)
    for key in value:
        if not isinstance(key, str):
            raise SloSpecError(
                (*path, str(key)), f"key {key!r} is not text", "quote it", on_key=True
            )
    return dict(value)


def _known_keys(
    entries: Mapping[str, Any], path: tuple[str, ...], known: Sequence[str], what: str
) -> None:
    for key in entries:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            raise SloSpecError(
                (*path, key),
                f"unknown key {key!r} in {what}",
                f"did you mean '{close[0]}'?"
                if close
                else f"the keys allowed here are: {', '.join(known)}",
                on_key=True,
            )


def _endpoint(endpoint: str, entry: object) -> EndpointSlo:
    path = ("endpoints", endpoint)
    if not endpoint.startswith("/") or "?" in endpoint or " " in endpoint:
        raise SloSpecError(
            path,
            f"{endpoint!r} is not an endpoint path",
            "write the path as the profile's steps do, without the query: "
            "/api/automations/:id/execute",
            on_key=True,
        )
    example = f"{endpoint}: {{target_response_time: 200ms}}"
    fields = _mapping(entry, path, f"the SLO of {endpoint}", f"write {example}")
    _known_keys(fields, path, ENDPOINT_KEYS, f"the SLO of {endpoint}")
    if not fields:
        raise SloSpecError(path, f"the SLO of {endpoint} is empty", f"write {example}")
    response_ms = users = throughput = None
    if "target_response_time" in fields:
        response_ms = _time_ms(
            fields["target_response_time"], (*path, "target_response_time")
        )
    if "max_concurrent_users" in fields:
        users = _count(fields["max_concurrent_users"], (*path, "max_concurrent_users"))
    if "expected_throughput" in fields:
        throughput = _number(
            fields["expected_throughput"],
            (*path, "expected_throughput"),
            "expected_throughput: 500 (requests per second)",
        )
    return EndpointSlo(endpoint, response_ms, users, throughput)


def _component(component: str, entry: object) -> list[SystemLimit]:
    path = ("system", component)
    if component not in SYSTEM_LIMITS:
        close = difflib.get_close_matches(component, SYSTEM_LIMITS, n=1, cutoff=0.6)
        raise SloSpecError(
            path,
            f"unknown component {component!r}",
            f"did you mean '{close[0]}'?"
            if close
            else f"components are: {', '.join(SYSTEM_LIMITS)}",
            on_key=True,
        )
    specs = SYSTEM_LIMITS[component]
    first = next(iter(specs))
    fields = _mapping(entry, path, component, f"write {component}: {{{first}: ...}}")
    _known_keys(fields, path, tuple(specs), component)
    limits = []
    for name, value in fields.items():
        unit = specs[name].unit
        where = (*path, name)
        if unit == "ms":
            limit = _time_ms(value, where)
        elif unit == "connections":
            limit = float(_count(value, where))
        elif unit == "percent":
            limit = _percent(value, where)
        else:
            limit = _number(value, where, f"{name}: 2048 (MB)")
        limits.append(SystemLimit(component, name, limit))
    return limits


def _time_ms(value: object, path: tuple[str, ...]) -> float:
    name = path[-1]
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise SloSpecError(
            path,
            f"{name} {value!r} has no unit",
            f"write {value}ms or {value}s: a bare number could mean either",
        )
    try:
        seconds = parse_duration_s(value)
    except ValueError as exc:
        raise SloSpecError(path, str(exc), f"write {name}: 200ms") from None
    if seconds <= 0:
        raise SloSpecError(path, f"{name} must be above zero", f"write {name}: 200ms")
    return seconds * 1000.0


def _count(value: object, path: tuple[str, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SloSpecError(
            path,
            f"{path[-1]} must be a whole number of 1 or more, not {value!r}",
            f"write {path[-1]}: 100",
        )
    return value


def _number(value: object, path: tuple[str, ...], example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SloSpecError(
            path, f"{path[-1]} must be a number, not {value!r}", f"write {example}"
        )
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise SloSpecError(path, f"{path[-1]} must be above zero", f"write {example}")
    return number


def _percent(value: object, path: tuple[str, ...]) -> float:
    example = f"{path[-1]}: 80 (percent)"
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*%\s*", value):
        value = float(value.strip().rstrip("%"))
    return _number(value, path, example)


# -- judging -----------------------------------------------------------------------


def evaluate_slos(
    source: str | Path | Run, slos: Slos | None = None
) -> list[SloVerdict]:
    """Judge ``slos`` (default: the manifest's ``profile.slos``) on a run directory.

    One verdict per declared entry, endpoints first, in the order written.
    """
    from .dataset import Run, open_run

    run = source if isinstance(source, Run) else open_run(source)
    if slos is None:
        slos = parse_slos(run.manifest.get("profile", {}).get("slos"))
    columns = ["start_ns", "latency_ns", "endpoint", "vu", "iteration"]
    rows = load_rows(run, columns)
    verdicts: list[SloVerdict] = []
    for e in slos.endpoints:
        where = f"endpoints.{e.endpoint}"
        if e.target_response_time_ms is not None:
            verdicts.append(_response_time(e, where, rows))
        if e.max_concurrent_users is not None:
            verdicts.append(_concurrency(e, where, run, rows))
        if e.expected_throughput_rps is not None:
            verdicts.append(_throughput(e, where, run, rows))
    resources = _resources(run)
    for s in slos.system:
        verdicts.append(_system(s, rows, resources))
    return verdicts


def _endpoint_key(endpoint: str) -> str:
    return f"http_req_duration{{endpoint:{endpoint}}}"


def _from_threshold(
    slo: str, target: str, threshold: Threshold, rows: Rows
) -> SloVerdict:
    verdict = judge(threshold, rows)
    return SloVerdict(
        slo,
        target,
        verdict.status,
        verdict.observed,
        verdict.passed,
        verdict.samples,
        verdict.note,
        threshold,
    )


def _response_time(e: EndpointSlo, where: str, rows: Rows) -> SloVerdict:
    assert e.target_response_time_ms is not None
    limit = _text(e.target_response_time_ms)
    threshold = parse(_endpoint_key(e.endpoint), f"p({TARGET_PERCENTILE})<{limit}")
    target = f"p{TARGET_PERCENTILE} of {e.endpoint} below {limit} ms"
    return _from_threshold(f"{where}.target_response_time", target, threshold, rows)


def _throughput(e: EndpointSlo, where: str, run: Run, rows: Rows) -> SloVerdict:
    assert e.expected_throughput_rps is not None
    wanted = e.expected_throughput_rps
    limit = _text(wanted)
    threshold = parse(f"http_reqs{{endpoint:{e.endpoint}}}", f"rate>={limit}")
    slo = f"{where}.expected_throughput"
    target = f"at least {limit} requests/s to {e.endpoint}"
    offered = offered_rps(run.manifest.get("profile", {}), e.endpoint)
    if offered is None:
        note = "the manifest does not describe the load, so the offered rate is unknown"
        return SloVerdict(slo, target, "not exercised", None, None, 0, note, threshold)
    if offered < wanted:
        note = (
            f"the run offered {offered:.4g} requests/s to {e.endpoint} on average, "
            f"below the {limit} to check; run a phase at that rate or more"
        )
        return SloVerdict(slo, target, "not exercised", None, None, 0, note, threshold)
    verdict = _from_threshold(slo, target, threshold, rows)
    shown = "an unbounded rate" if math.isinf(offered) else f"{offered:.4g} requests/s"
    note = f"offered {shown} on average" + (f"; {verdict.note}" if verdict.note else "")
    return SloVerdict(
        slo,
        target,
        verdict.status,
        verdict.observed,
        verdict.passed,
        verdict.samples,
        note,
        threshold,
    )


def _concurrency(e: EndpointSlo, where: str, run: Run, rows: Rows) -> SloVerdict:
    assert e.max_concurrent_users is not None
    wanted = e.max_concurrent_users
    slo = f"{where}.max_concurrent_users"
    target = f"{wanted} concurrent users"
    peak, how = peak_concurrency(run, rows.frame)
    if peak is None:
        note = "the run holds no VU counts and no request, so concurrency is unknown"
        return SloVerdict(slo, target, "no data", None, None, 0, note)
    status: SloStatus = "reached" if peak >= wanted else "not reached"
    note = f"{how} peaked at {peak}; " + (
        "latency at that load is judged by target_response_time"
        if peak >= wanted
        else f"below {wanted}, so the run says nothing about {wanted} users"
    )
    cap = run.manifest.get("profile", {}).get("load", {}).get("max_vus")
    if isinstance(cap, int) and cap < wanted:
        note += f" (the profile caps iterations in flight at max_vus {cap})"
    return SloVerdict(slo, target, status, float(peak), None, 0, note)


def _system(s: SystemLimit, rows: Rows, resources: pd.DataFrame | None) -> SloVerdict:
    spec = SYSTEM_LIMITS[s.component][s.name]
    slo = f"system.{s.component}.{s.name}"
    limit = _text(s.limit)
    if spec.column is None:
        threshold = parse("http_req_duration", f"max<{limit}")
        return _from_threshold(slo, f"every response below {limit} ms", threshold, rows)
    what = s.name.removeprefix("max_").replace("_", " ")
    target = f"{s.component} {what} at most {limit}{_UNIT_TEXT[spec.unit]}"
    sources = " or ".join(spec.sources)
    if resources is None:
        note = "no resource samples in this run (resources/ is empty or missing)"
        return SloVerdict(slo, target, "not measured", None, None, 0, note)
    if not {spec.column, "source", "time_ns"} <= set(resources.columns):
        note = f"the resource samples have no {spec.column} column"
        return SloVerdict(slo, target, "not measured", None, None, 0, note)
    picked = resources[resources["source"].astype(str).isin(spec.sources)]
    picked = picked[picked[spec.column].notna()]
    if picked.empty:
        note = f"no resource sample from {sources} has {spec.column}"
        return SloVerdict(slo, target, "not measured", None, None, 0, note)
    by_instant = picked.groupby(["source", "time_ns"], observed=True)[spec.column]
    combined = by_instant.sum() if spec.tree_total else by_instant.max()
    observed = float(combined.max()) * spec.scale
    passed = observed <= s.limit
    note = f"highest of {len(combined)} samples of {spec.column} from {sources}"
    return SloVerdict(
        slo,
        target,
        "passed" if passed else "failed",
        observed,
        passed,
        len(combined),
        note,
    )


def _resources(run: Run) -> pd.DataFrame | None:
    frame = run.resources()
    return None if frame.empty else frame


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# -- offered load and concurrency ----------------------------------------------------


def offered_rps(profile: Mapping[str, Any], endpoint: str) -> float | None:
    """The mean request rate the run's load shape asked of ``endpoint`` (infinite
    for a closed model without think time); None when the profile is not there."""
    load = profile.get("load")
    scenarios = profile.get("scenarios")
    if (
        not isinstance(load, Mapping)
        or not isinstance(scenarios, list)
        or not scenarios
    ):
        return None
    total_weight = sum(float(s.get("weight", 1.0)) for s in scenarios)
    if total_weight <= 0:
        return None
    per_iteration = 0.0
    think_s = 0.0
    for s in scenarios:
        share = float(s.get("weight", 1.0)) / total_weight
        steps = s.get("steps", [])
        hits = sum(
            1 for st in steps if endpoint_matches(endpoint, str(st.get("endpoint", "")))
        )
        per_iteration += share * hits
        think_s += share * (
            float(s.get("think_s", 0.0))
            + sum(float(st.get("think_s", 0.0)) for st in steps)
        )
    if per_iteration == 0:
        return 0.0
    if load.get("model") == "open":
        phases = load.get("phases", [])
        duration_s = sum(float(p["duration_s"]) for p in phases)
        if duration_s <= 0:
            return None
        arrivals = sum(
            (
                float(p["rate"])
                + float(p["rate"] if p.get("ramp_to") is None else p["ramp_to"])
            )
            / 2
            * float(p["duration_s"])
            for p in phases
        )
        return arrivals / duration_s * per_iteration
    if load.get("model") == "closed":
        stages = load.get("stages", [])
        duration_s = sum(float(s["duration_s"]) for s in stages)
        if duration_s <= 0:
            return None
        vu_seconds = 0.0
        previous = 0.0
        for stage in stages:
            vu_seconds += (
                (previous + float(stage["target"])) / 2 * float(stage["duration_s"])
            )
            previous = float(stage["target"])
        mean_vus = vu_seconds / duration_s
        if think_s <= 0:
            return math.inf if mean_vus > 0 else 0.0
        return mean_vus / think_s * per_iteration
    return None


def peak_concurrency(run: Run, frame: pd.DataFrame) -> tuple[int | None, str]:
    """The run's peak of concurrent users, and what it was measured from."""
    load = run.manifest.get("profile", {}).get("load", {})
    events = run.events()
    if load.get("model") != "open" and not events.empty and "event" in events:
        vus = events[events["event"] == "vus"]
        if not vus.empty:
            return _peak_from_vu_events(vus), "the VU count the workers reported"
    if load.get("model") == "closed":
        targets = [int(s["target"]) for s in load.get("stages", [])]
        if targets:
            return max(targets), "the planned VU count (no vus events were found)"
    if frame.empty:
        return None, ""
    return _peak_in_flight(frame), "iterations in flight"


def _peak_from_vu_events(vus: pd.DataFrame) -> int:
    """Sum of each worker's latest count, at each scheduled instant of change."""
    current: dict[int, int] = {}
    peak = 0
    ordered = vus.sort_values(["t_s", "worker"], kind="stable")
    for _, group in ordered.groupby("t_s", sort=True):
        for worker, count in zip(group["worker"], group["vus"], strict=True):
            current[int(worker)] = int(count)
        peak = max(peak, sum(current.values()))
    return peak


def _peak_in_flight(frame: pd.DataFrame) -> int:
    """The most iterations with a request under way or between two of their
    requests at one instant, from each iteration's first start to its last end."""
    import numpy as np
    import pandas as pd

    spans = (
        pd.DataFrame(
            {
                "key": iteration_keys(frame),
                "start_ns": frame["start_ns"].to_numpy(),
                "end_ns": (frame["start_ns"] + frame["latency_ns"]).to_numpy(),
            }
        )
        .groupby("key")
        .agg(first=("start_ns", "min"), last=("end_ns", "max"))
    )
    times = np.concatenate([spans["first"].to_numpy(), spans["last"].to_numpy()])
    steps = np.concatenate(
        [np.ones(len(spans), "int64"), -np.ones(len(spans), "int64")]
    )
    # At equal instants an end sorts before a start: touching is not overlapping.
    order = np.lexsort((steps, times))
    return int(np.cumsum(steps[order]).max()) if len(order) else 0


def format_slo_verdicts(verdicts: Sequence[SloVerdict]) -> str:
    """One line per verdict, for the terminal."""
    if not verdicts:
        return "no SLOs"
    lines = []
    for v in verdicts:
        shown = "-" if v.observed is None else f"{v.observed:.6g}"
        line = f"{v.status:<13} {v.slo}: {v.target}  observed {shown}"
        lines.append(f"{line}  ({v.note})" if v.note else line)
    return "\n".join(lines)


__all__ = [
    "ENDPOINT_KEYS",
    "SYSTEM_LIMITS",
    "TARGET_PERCENTILE",
    "EndpointSlo",
    "LimitSpec",
    "SloSpecError",
    "SloVerdict",
    "Slos",
    "SystemLimit",
    "evaluate_slos",
    "format_slo_verdicts",
    "offered_rps",
    "parse_slos",
    "peak_concurrency",
]
