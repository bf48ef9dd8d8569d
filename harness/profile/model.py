"""The profile model: frozen, typed dataclasses that the loader builds and validates.

Nothing here reads files or the environment; :mod:`harness.profile.load` does that and
hands back a :class:`Profile` whose every field has already been checked. Durations are
seconds (floats) everywhere; the ``_s`` suffix says so. Every template string is kept as
written (``"Bearer {{ accessToken }}"``); :mod:`harness.template` compiles it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from analysis.slo import Slos
from analysis.thresholds import ThresholdRule

from ..errors import Location

DEFAULT_TIMEOUT_S = 30.0
"""Whole-request timeout: connect, send, and read the full response."""

DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""Connection set-up timeout (TCP and, for https, TLS), within the request timeout."""

DEFAULT_MAX_VUS = 1000
"""Open model: iterations allowed in flight at once, across all workers."""

DEFAULT_GRACEFUL_RAMP_DOWN_S = 30.0
"""Closed model: how long a VU told to stop may take to finish its iteration."""

DEFAULT_GRACEFUL_STOP_S = 10.0
"""How long in-flight iterations may take to finish when the run ends or is stopped."""

Engine = Literal["fast", "httpx"]
Arrivals = Literal["uniform", "poisson"]


@dataclass(frozen=True, slots=True)
class HttpSettings:
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    verify_tls: bool = True
    engine: Engine = "fast"
    headers: tuple[tuple[str, str], ...] = ()
    """Default headers sent with every request; values may hold templates."""
    http2: bool = False
    """httpx engine only: offer HTTP/2 (needs the ``h2`` package)."""
    proxy: str | None = None
    """httpx engine only: proxy URL."""


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    value: str
    secret: bool = False
    """True when the value came from the environment or the name says it is a secret;
    such values are never written to the manifest, logs or records."""
    source: str = ""
    """How the value was written in the profile (``${LOADTEST_PASSWORD}``), for the
    manifest; empty for plain literals."""
    choices: tuple[str, ...] = ()
    """When not empty, each iteration draws one of these at random (seeded) instead
    of using ``value`` (which is then the first choice). Artillery's list-valued
    variables are translated to this."""


DataFormat = Literal["csv", "parquet"]
DataOrder = Literal["sequence", "random"]

DEFAULT_DATA_CHUNK_ROWS = 4096
"""Rows of a data file a worker holds decoded at once (per file), whatever its size."""


@dataclass(frozen=True, slots=True)
class DataSource:
    """A data file (CSV or Parquet) that feeds one row to each iteration.

    Only the file's location and shape are kept here, never its values: each worker
    reads its rows lazily (:mod:`harness.feeder`). Row ``i`` of the file (0-based,
    header excluded) belongs to worker ``i mod n``, so no row is used by two workers.
    """

    path: str
    """Absolute path of the file."""
    format: DataFormat
    columns: tuple[str, ...]
    """Template names given to the columns, in file order (CSV) or chosen (Parquet)."""
    file_columns: tuple[str, ...] = ()
    """Parquet: the file's column read into each name of ``columns``."""
    order: DataOrder = "sequence"
    """``random`` shuffles each chunk of the worker's rows (seeded), not the file."""
    reuse: bool = False
    """When the worker's rows run out: start over (True) or stop new iterations."""
    header: bool = True
    """CSV: the first line is a header, not data."""
    delimiter: str = ","
    secret_columns: tuple[str, ...] = ()
    """Columns whose names say they hold secrets; their values are never logged."""
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    """Take a value from a JSON response into the VU's variables."""

    name: str
    json_path: str
    """A restricted JSONPath: ``$``, then ``.key`` or ``[index]`` parts."""
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Checks:
    """Checks on one response; a failed one records ``error="check"``."""

    status: tuple[int, ...] = ()
    """Accepted status codes; empty means "any status below 400"."""
    json: tuple[tuple[str, object], ...] = ()
    """(json_path, expected value) pairs; the value must equal the expected one."""
    max_latency_ms: float | None = None


BodyKind = Literal["none", "json", "form", "raw"]


@dataclass(frozen=True, slots=True)
class Step:
    """One request of a flow."""

    name: str
    method: str
    path: str
    """Path and query as written, may hold templates: ``/api/users/{{ id }}``."""
    endpoint: str
    """The path template recorded in every row: ``/api/users/{id}``, no query."""
    headers: tuple[tuple[str, str], ...] = ()
    body_kind: BodyKind = "none"
    body: object = None
    """``json``: any JSON-able value whose strings may hold templates; ``form``: a
    tuple of (name, template) pairs; ``raw``: one template string."""
    captures: tuple[Capture, ...] = ()
    checks: Checks = field(default_factory=Checks)
    think_s: float = 0.0
    """Pause after this step (scaled by the time scale)."""
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    weight: float
    steps: tuple[Step, ...]
    think_s: float = 0.0
    """Pause at the end of each iteration (closed model; scaled by the time scale)."""
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Stage:
    """Closed model: ramp linearly from the previous target to ``target`` VUs."""

    duration_s: float
    target: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Phase:
    """Open model: arrivals per second, constant or ramped linearly to ``ramp_to``."""

    duration_s: float
    rate: float
    ramp_to: float | None = None
    name: str = ""

    @property
    def end_rate(self) -> float:
        return self.rate if self.ramp_to is None else self.ramp_to


@dataclass(frozen=True, slots=True)
class ClosedModel:
    stages: tuple[Stage, ...]
    graceful_ramp_down_s: float = DEFAULT_GRACEFUL_RAMP_DOWN_S
    kind: Literal["closed"] = "closed"

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)


@dataclass(frozen=True, slots=True)
class OpenModel:
    phases: tuple[Phase, ...]
    arrivals: Arrivals = "uniform"
    max_vus: int = DEFAULT_MAX_VUS
    kind: Literal["open"] = "open"

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)


LoadModel = ClosedModel | OpenModel


DEFAULT_MONITOR_INTERVAL_S = 1.0
"""How often the resource monitor samples."""

DEFAULT_READY_TIMEOUT_S = 30.0
"""How long a target started with ``monitor.target.command`` has to answer its
``ready_url``."""

DEFAULT_STOP_GRACE_S = 10.0
"""After SIGTERM, how long a started target has before it is killed."""

DEFAULT_PROMETHEUS_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class MonitorTarget:
    """The service under test, as a process tree; exactly one of ``pid``, ``port``,
    ``name`` and ``command`` is set."""

    pid: int | None = None
    port: int | None = None
    """The process listening on this TCP port."""
    name: str | None = None
    """The one process (tree) with this process name."""
    command: tuple[str, ...] = ()
    """Started by the harness before the workers, stopped after them."""
    ready_url: str | None = None
    """With ``command``: answers 2xx or 3xx once the target is ready."""
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    stop_grace_s: float = DEFAULT_STOP_GRACE_S

    @property
    def how(self) -> str:
        """How the target is found: "pid", "port", "name" or "command"."""
        if self.pid is not None:
            return "pid"
        if self.port is not None:
            return "port"
        if self.name is not None:
            return "name"
        return "command"


@dataclass(frozen=True, slots=True)
class PrometheusSource:
    url: str
    metrics: tuple[str, ...] = ()
    """Extra metrics written as ``prom_<name>`` columns."""
    timeout_s: float = DEFAULT_PROMETHEUS_TIMEOUT_S
    source: str = "prometheus"


@dataclass(frozen=True, slots=True)
class PostgresSource:
    dsn: str
    """May hold a password: never written anywhere as it is."""
    source: str = "postgres"


@dataclass(frozen=True, slots=True)
class RedisSource:
    url: str
    """May hold a password: never written anywhere as it is."""
    source: str = "redis"


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """The ``monitor:`` block: what the resource monitor samples during a run."""

    enabled: bool = True
    interval_s: float = DEFAULT_MONITOR_INTERVAL_S
    target: MonitorTarget | None = None
    """None: the process listening on the target URL's port, when that URL is on
    loopback; otherwise only the host and the harness are sampled."""
    prometheus: tuple[PrometheusSource, ...] = ()
    postgres: tuple[PostgresSource, ...] = ()
    redis: tuple[RedisSource, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    target: str
    """Base URL, ``http://host:port`` or ``https://...``, no trailing slash."""
    load: LoadModel
    scenarios: tuple[Scenario, ...]
    http: HttpSettings = field(default_factory=HttpSettings)
    variables: tuple[Variable, ...] = ()
    thresholds: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """k6-style expressions by metric key, as written (what the manifest records)."""
    threshold_rules: tuple[ThresholdRule, ...] = ()
    """The same expressions parsed, in the same order, with their abort settings."""
    slos: Slos | None = None
    """The ``slos`` block, checked; None when the profile has none."""
    data: tuple[DataSource, ...] = ()
    """Data files; each iteration takes the next row of this worker's share of each."""
    setup: tuple[Step, ...] = ()
    """Steps each worker runs once before the load starts (logging in, say); what
    they capture is a variable of every iteration of that worker."""
    warnings: tuple[str, ...] = ()
    """What the loader accepted but wants the user to know (an Artillery plugin that
    is not run here, say); printed when the profile is loaded."""
    graceful_stop_s: float = DEFAULT_GRACEFUL_STOP_S
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    """The ``monitor:`` block (defaults when the profile has none)."""
    source_file: str = ""
    source_sha256: str = ""

    @property
    def duration_s(self) -> float:
        return self.load.duration_s

    def with_target(self, target: str) -> Profile:
        return replace(self, target=target.rstrip("/"))


def time_scaled(profile: Profile, factor: float) -> Profile:
    """Multiply every duration of the load shape and every think time by ``factor``.

    Timeouts are not scaled: they bound the target's behaviour, not the test's length.
    """
    if factor == 1.0:
        return profile
    load: LoadModel
    if isinstance(profile.load, ClosedModel):
        load = replace(
            profile.load,
            stages=tuple(
                replace(s, duration_s=s.duration_s * factor)
                for s in profile.load.stages
            ),
        )
    else:
        load = replace(
            profile.load,
            phases=tuple(
                replace(p, duration_s=p.duration_s * factor)
                for p in profile.load.phases
            ),
        )
    scenarios = tuple(
        replace(
            sc,
            think_s=sc.think_s * factor,
            steps=tuple(replace(st, think_s=st.think_s * factor) for st in sc.steps),
        )
        for sc in profile.scenarios
    )
    return replace(profile, load=load, scenarios=scenarios)


def duration_capped(profile: Profile, max_duration_s: float) -> Profile:
    """Cut the load shape at ``max_duration_s``; a stage or phase cut in the middle
    keeps the rate or VU count it had reached at the cut."""
    if max_duration_s >= profile.duration_s:
        return profile
    load: LoadModel
    if isinstance(profile.load, ClosedModel):
        stages: list[Stage] = []
        elapsed, previous = 0.0, 0
        for s in profile.load.stages:
            if elapsed + s.duration_s <= max_duration_s:
                stages.append(s)
            else:
                part = max_duration_s - elapsed
                if part > 0:
                    reached = previous + (s.target - previous) * part / s.duration_s
                    stages.append(replace(s, duration_s=part, target=round(reached)))
                break
            elapsed += s.duration_s
            previous = s.target
        load = replace(profile.load, stages=tuple(stages))
    else:
        phases: list[Phase] = []
        elapsed = 0.0
        for p in profile.load.phases:
            if elapsed + p.duration_s <= max_duration_s:
                phases.append(p)
            else:
                part = max_duration_s - elapsed
                if part > 0:
                    ramp_to = None
                    if p.ramp_to is not None:
                        ramp_to = p.rate + (p.ramp_to - p.rate) * part / p.duration_s
                    phases.append(replace(p, duration_s=part, ramp_to=ramp_to))
                break
            elapsed += p.duration_s
        load = replace(profile.load, phases=tuple(phases))
    return replace(profile, load=load)
