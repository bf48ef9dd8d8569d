"""Compare two runs of one profile, endpoint by endpoint: better, worse or unchanged.

How this works
--------------
For every (method, endpoint) found in either run, and for an ``ALL`` row over every
request, the figures of :func:`analysis.summary.endpoint_summary` are taken for each
run: requests, errors, error rate, throughput (requests over the run's span) and the
service time (``latency_ns``) quantiles p50, p95 and p99, every request included,
failed ones too, as in the summary. Changes are relative (``candidate / baseline -
1``) except the error rate's, which is the difference in rate.

A difference between two quantiles is not yet a change: two runs of the same build
never give the same p50. Two questions decide the latency part of a verdict.

1. *Is there a shift at all?* The Mann-Whitney U test (two-sided) on the service
   times of the two runs, at level ``alpha``. It is run on a seeded random sample of
   at most ``max_samples`` requests per side (50 000 by default), so a run of 10^7
   requests costs one streaming read and a test on 10^5 values.
2. *Is the shift big enough to matter?* Latencies within a run are autocorrelated
   (a slow second slows every request in it) and large samples make any shift
   "significant", so the test alone would flag noise. A bootstrap confidence
   interval, at level ``1 - alpha``, of the ratio of the candidate's quantile to the
   baseline's is computed for the median and, when both sides have at least
   ``10 / (1 - 0.95) = 200`` requests, for p95. The bootstrap draws ``bootstrap``
   resamples per side without building them: the k-th smallest of n values drawn
   with replacement from a sorted sample ``x`` is ``x[ceil(n U) - 1]`` with
   ``U ~ Beta(k, n + 1 - k)`` (the k-th smallest of n uniforms), so each resample
   costs one Beta draw instead of n.

Verdicts, per endpoint:

* ``only in baseline`` / ``only in candidate``: the endpoint has no request in the
  other run.
* ``too few samples``: a side has fewer than ``min_samples`` requests.
* ``worse``: latency is worse or errors are worse. Latency is worse when the test
  rejects at ``alpha`` and the lower end of the median's ratio interval is above
  ``1 + min_effect``, or when the lower end of p95's is above
  ``1 + min_tail_effect``. The p95 is not gated by the U test: a test of the whole
  distribution barely notices the slowest 10 % getting three times slower, while
  an interval at ``1 - alpha`` that excludes 1 is itself a test at level ``alpha``
  of "p95 did not change". Errors are
  worse when the error-rate test rejects at ``alpha`` and the candidate's rate is
  the higher; that test is a two-proportion z test, or Fisher's exact test when an
  expected count of the 2x2 table is under 5.
* ``better``: not worse, and latency is better (the test rejects and the upper end of
  the median's interval is below ``1 - min_effect``, or the upper end of p95's is
  below ``1 - min_tail_effect``) or errors are better.
* ``no significant change`` otherwise.

The tail has its own, larger minimum because a p95 moves between two runs of the
same build far more than a median does: 28 pairs of 4-second runs of one
configuration (service time 20 ms, on a busy 2-core machine) put the
near end of the p95 interval up to 12 % away from 1, the median's at most 2.2 %.

Throughput is shown, not judged: under an open model it is what the profile asked
for, and a shortfall shows up as dropped arrivals and latency anyway.

A **regression** (what makes ``harness compare`` exit 1) is an endpoint, not the
``ALL`` row (whose figures move when the mix of endpoints does), whose verdict is
``worse`` because of

* latency, with a quantile whose interval cleared its minimum (the median, or p95)
  more than ``tolerance`` above the baseline's (the p50, or the p95; relative), or
* errors, with the error rate more than ``error_tolerance`` above the baseline's
  (absolute: 0.005 is half a percentage point; at most 1, which turns the error
  check off).

A request part that cannot be read stops the comparison with :class:`DamagedRun`,
which names the run and the file (see :func:`damaged_part`).

Known limits: the test and the intervals treat requests as independent, which they
are not; the minimum effects are the guard against the over-confidence that
follows, so do not set them near zero. A shift confined to the slowest few percent
shows only through the p95 interval, and only once it clears ``min_tail_effect``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from scipy import stats  # type: ignore[import-untyped]

from . import windows
from .dataset import Run
from .summary import endpoint_summary

DEFAULT_TOLERANCE = 0.10
"""A latency regression is a p50 or p95 more than this much (relative) above."""
DEFAULT_ALPHA = 0.01
"""Level of the tests; the confidence intervals are at ``1 - alpha``."""
DEFAULT_MIN_EFFECT = 0.05
"""Smallest latency shift (relative, at the interval's near end) called a change."""
DEFAULT_MIN_TAIL_EFFECT = 0.25
"""The same for p95 (see the module docstring for why it is larger)."""
DEFAULT_ERROR_TOLERANCE = 0.005
"""An error regression is an error rate more than this (absolute) above."""
DEFAULT_MAX_SAMPLES = 50_000
"""Service times per side and endpoint given to the test and the bootstrap."""
DEFAULT_BOOTSTRAP = 10_000
"""Bootstrap resamples per side (cheap: one Beta draw each, see the docstring)."""
DEFAULT_MIN_SAMPLES = 30
"""Fewer requests than this on a side gives ``too few samples``."""
DEFAULT_SEED = 0

TAIL_QUANTILE = 0.95
TAIL_MIN_SAMPLES = math.ceil(windows.MIN_SAMPLES_FACTOR / (1 - TAIL_QUANTILE))
"""Requests a side needs before its p95 takes part in a verdict (200)."""
ALL = ("ALL", "")
"""Key of the row over every request, as :func:`endpoint_summary` names it."""

_OVERDRAW = 1.1
"""Rows are first kept with probability ``1.1 * max_samples / rows``, then cut to
``max_samples``: enough that the first draw falls short in practice never."""
_BATCH_ROWS = 1_000_000
_CURVE_POINTS = 61
"""Quantile levels of the distribution curves, evenly spaced in -log10(1 - q)."""
_CURVE_DECADES = 4.0
"""The curves reach p99.99 when a side has the requests to support it."""
_MAX_PLOTS = 40
_LOG_SPREAD = 4.0
"""A plot's service-time axis is logarithmic when its values span more than this
factor."""

Key = tuple[str, str]
Verdict = Literal[
    "better",
    "worse",
    "no significant change",
    "only in baseline",
    "only in candidate",
    "too few samples",
]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CompareOptions:
    """How :func:`compare_runs` judges; the module docstring gives the rules."""

    tolerance: float = DEFAULT_TOLERANCE
    alpha: float = DEFAULT_ALPHA
    min_effect: float = DEFAULT_MIN_EFFECT
    min_tail_effect: float = DEFAULT_MIN_TAIL_EFFECT
    error_tolerance: float = DEFAULT_ERROR_TOLERANCE
    max_samples: int = DEFAULT_MAX_SAMPLES
    bootstrap: int = DEFAULT_BOOTSTRAP
    min_samples: int = DEFAULT_MIN_SAMPLES
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, value: object, rule: str) -> None:
            if not ok:
                raise ValueError(f"{name} {value!r}: {rule}")

        for name in ("tolerance", "min_effect", "min_tail_effect", "error_tolerance"):
            value = getattr(self, name)
            need(
                math.isfinite(value) and value >= 0,
                name,
                value,
                "must be a fraction of 0 or more, e.g. 0.1 for 10 %",
            )
        for name in ("min_effect", "min_tail_effect"):
            need(getattr(self, name) < 1, name, getattr(self, name), "must be under 1")
        need(
            self.error_tolerance <= 1,
            "error_tolerance",
            self.error_tolerance,
            "an error rate rises by at most 1 (100 percentage points); use e.g. "
            "0.005 for half a point",
        )
        need(
            0 < self.alpha < 1,
            "alpha",
            self.alpha,
            "is a significance level: use a value between 0 and 1, e.g. 0.01",
        )
        need(self.max_samples >= 100, "max_samples", self.max_samples, "use >= 100")
        need(self.bootstrap >= 100, "bootstrap", self.bootstrap, "use >= 100")
        need(self.min_samples >= 2, "min_samples", self.min_samples, "use >= 2")
        need(self.seed >= 0, "seed", self.seed, "use a whole number of 0 or more")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the report's header says about one run, from its manifest."""

    path: str
    run_id: str
    profile: str
    profile_sha256: str
    target: str
    started_at: str
    """ISO 8601, UTC; empty when the manifest has no start time."""
    status: str

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        manifest = run.manifest
        profile = manifest.get("profile")
        profile = profile if isinstance(profile, dict) else {}
        started = manifest.get("started_at")
        started_at = ""
        if isinstance(started, int | float) and math.isfinite(started):
            stamp = dt.datetime.fromtimestamp(started, dt.UTC)
            started_at = stamp.isoformat(timespec="seconds")
        return cls(
            path=str(run.path),
            run_id=run.run_id,
            profile=str(profile.get("name") or ""),
            profile_sha256=str(profile.get("source_sha256") or ""),
            target=str(profile.get("target") or ""),
            started_at=started_at,
            status=str(manifest.get("status") or ""),
        )


@dataclass(frozen=True, slots=True)
class Side:
    """One run's figures for one endpoint (see :mod:`analysis.summary`)."""

    requests: int
    errors: int
    error_rate: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    quantile_rel_error: float
    """0 when the quantiles are exact (up to 10^7 rows), else their error bound."""
    samples: int
    """Service times in the sample given to the test and the bootstrap."""


@dataclass(frozen=True, slots=True)
class Ratio:
    """Candidate quantile over baseline quantile, with its bootstrap interval."""

    quantile: float
    estimate: float
    """From the exact quantiles of :class:`Side`."""
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class LatencyTest:
    """The Mann-Whitney U test of the service times and the quantile ratios."""

    u_statistic: float
    """U of the candidate's sample."""
    p_value: float
    prob_slower: float
    """Chance that a random candidate request is slower than a random baseline
    one (``U / (n1 n2)``; 0.5 when neither tends to be slower)."""
    median: Ratio
    p95: Ratio | None
    """None when a side has fewer than :data:`TAIL_MIN_SAMPLES` requests."""


@dataclass(frozen=True, slots=True)
class ErrorTest:
    """The test of the two error rates."""

    method: Literal["two-proportion z", "fisher exact"]
    p_value: float


@dataclass(frozen=True, slots=True)
class Curves:
    """Service-time quantile curves of both sides, from their samples."""

    levels: tuple[float, ...]
    baseline_ms: tuple[float, ...]
    """NaN above the quantiles the side's sample can support (or without one)."""
    candidate_ms: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class EndpointComparison:
    """One endpoint (or the ``ALL`` row): both sides, the tests and the verdict."""

    method: str
    endpoint: str
    baseline: Side | None
    candidate: Side | None
    verdict: Verdict
    reasons: tuple[str, ...]
    """Why the verdict is what it is, one sentence each."""
    regression: bool
    latency: LatencyTest | None
    errors: ErrorTest | None
    curves: Curves = field(repr=False)

    @property
    def key(self) -> Key:
        return (self.method, self.endpoint)

    @property
    def name(self) -> str:
        return f"{self.method} {self.endpoint}".strip()

    @property
    def is_total(self) -> bool:
        return self.key == ALL

    def change(self, figure: str) -> float:
        """Relative change of ``figure`` (``p50_ms``, ``rps``, ...), candidate over
        baseline minus 1; for ``error_rate``, the difference. NaN without both."""
        if self.baseline is None or self.candidate is None:
            return math.nan
        before = float(getattr(self.baseline, figure))
        after = float(getattr(self.candidate, figure))
        if figure == "error_rate":
            return after - before
        return _relative(after, before)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of :func:`compare_runs`: endpoints sorted, the ``ALL`` row last."""

    baseline: RunInfo
    candidate: RunInfo
    options: CompareOptions
    endpoints: tuple[EndpointComparison, ...]
    notes: tuple[str, ...]
    """Warnings about the comparison itself (different profiles, a run that did
    not complete)."""

    @property
    def regressions(self) -> tuple[EndpointComparison, ...]:
        return tuple(e for e in self.endpoints if e.regression)


class DamagedRun(ValueError):
    """One of the compared runs has a finished request part that cannot be read as
    Parquet: cut short (its footer, written last, is missing) or corrupt.

    ``run_id`` and ``run_path`` name the run, ``part`` the file, ``cause`` what
    pyarrow said."""

    def __init__(self, run: Run, part: Path, cause: str) -> None:
        self.run_id = run.run_id
        self.run_path = run.path
        self.part = part
        self.cause = cause
        super().__init__(
            f"run {run.run_id} ({run.path}): request part {part} cannot be read "
            f"({cause})"
        )


def damaged_part(run: Run, *, whole: bool = False) -> DamagedRun | None:
    """The first finished request part of ``run`` that cannot be read, or None.

    Only the parts' footers are read (cheap: a truncated part has none) unless
    ``whole`` is true; then every row group is read too, one at a time, which
    finds a part whose footer is intact but whose pages are not.
    """
    for path in run.request_parts():
        try:
            if whole:
                reader = pq.ParquetFile(path)
                for i in range(reader.num_row_groups):
                    reader.read_row_group(i)
            else:
                pq.read_metadata(path)
        except (pa.ArrowException, OSError) as exc:
            cause = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
            return DamagedRun(run, path, cause)
    return None


def _relative(after: float, before: float) -> float:
    if not (math.isfinite(after) and math.isfinite(before)) or before <= 0:
        return math.nan
    return after / before - 1.0


def compare_runs(
    baseline: Run,
    candidate: Run,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
    min_effect: float = DEFAULT_MIN_EFFECT,
    min_tail_effect: float = DEFAULT_MIN_TAIL_EFFECT,
    error_tolerance: float = DEFAULT_ERROR_TOLERANCE,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Compare ``candidate`` with ``baseline``, per endpoint and overall.

    The method, the verdicts and the regression rule are in the module docstring.
    The latency test and the bootstrap see a seeded random sample of at most
    ``max_samples`` requests per side and endpoint, so a run of 10^7 rows stays
    cheap and the same inputs give the same result. Raises ValueError for an
    option out of range, and :class:`DamagedRun` (a ValueError) naming the run and
    the file when a request part cannot be read.
    """
    options = CompareOptions(
        tolerance=tolerance,
        alpha=alpha,
        min_effect=min_effect,
        min_tail_effect=min_tail_effect,
        error_tolerance=error_tolerance,
        max_samples=max_samples,
        bootstrap=bootstrap,
        min_samples=min_samples,
        seed=seed,
    )
    for run in (baseline, candidate):
        damaged = damaged_part(run)
        if damaged is not None:
            raise damaged
    # One stream of random numbers per side, so that the baseline's sample does not
    # depend on what the candidate holds.
    rng_base, rng_cand, rng_boot = np.random.default_rng(seed).spawn(3)
    try:
        figures_base = _figures(baseline)
        figures_cand = _figures(candidate)
        samples_base = _samples(baseline, figures_base, max_samples, rng_base)
        samples_cand = _samples(candidate, figures_cand, max_samples, rng_cand)
    except (pa.ArrowException, OSError, ValueError) as exc:
        # The footers were fine, so a page is not: find the part to name it. (A
        # failed read may come wrapped in a ValueError; when every part reads in
        # whole, the error was something else and goes on as it was.)
        for run in (baseline, candidate):
            damaged = damaged_part(run, whole=True)
            if damaged is not None:
                raise damaged from exc
        raise
    keys = sorted((set(figures_base) | set(figures_cand)) - {ALL})
    if figures_base or figures_cand:
        keys.append(ALL)
    endpoints = []
    for key in keys:
        endpoints.append(
            _compare_endpoint(
                key,
                _side(figures_base.get(key), samples_base.get(key)),
                _side(figures_cand.get(key), samples_cand.get(key)),
                samples_base.get(key),
                samples_cand.get(key),
                options,
                rng_boot,
            )
        )
    info_base, info_cand = RunInfo.of(baseline), RunInfo.of(candidate)
    return Comparison(
        info_base, info_cand, options, tuple(endpoints), _notes(info_base, info_cand)
    )


def _notes(base: RunInfo, cand: RunInfo) -> tuple[str, ...]:
    notes = []
    if base.profile != cand.profile:
        notes.append(
            f"the runs used different profiles ({base.profile!r} and "
            f"{cand.profile!r}): the load may not have been the same"
        )
    elif base.profile_sha256 and cand.profile_sha256 != base.profile_sha256:
        notes.append(
            f"the profile {base.profile!r} was edited between the runs (its file's "
            "hash differs): the load may not have been the same"
        )
    for role, info in (("baseline", base), ("candidate", cand)):
        if info.status and info.status != "completed":
            notes.append(
                f"the {role} run {info.run_id} ended {info.status}, not completed: "
                "its figures cover only part of the profile"
            )
    return tuple(notes)


def _figures(run: Run) -> dict[Key, dict[Hashable, Any]]:
    """The summary's row per (method, endpoint), and the ``ALL`` row."""
    table = endpoint_summary(run)
    rows: dict[Key, dict[Hashable, Any]] = {}
    for row in table.to_dict("records"):
        rows[(str(row["method"]), str(row["endpoint"]))] = row
    return rows


def _side(row: Mapping[Hashable, Any] | None, sample: Floats | None) -> Side | None:
    if row is None:
        return None
    return Side(
        requests=int(row["requests"]),
        errors=int(row["errors"]),
        error_rate=float(row["error_rate"]),
        rps=float(row["rps"]),
        p50_ms=float(row["p50_ms"]),
        p95_ms=float(row["p95_ms"]),
        p99_ms=float(row["p99_ms"]),
        quantile_rel_error=float(row["quantile_rel_error"]),
        samples=0 if sample is None else int(sample.size),
    )


def _samples(
    run: Run,
    figures: Mapping[Key, Mapping[Hashable, Any]],
    max_samples: int,
    rng: np.random.Generator,
) -> dict[Key, Floats]:
    """A seeded random sample of at most ``max_samples`` service times (ms) per
    endpoint and for ``ALL``, sorted, read in one streaming pass over the run."""
    counts = {key: int(row["requests"]) for key, row in figures.items()}
    if not counts:
        return {}
    keep = {
        key: min(1.0, _OVERDRAW * max_samples / max(n, 1)) for key, n in counts.items()
    }
    most = max(keep.values())
    pieces: dict[Key, list[Floats]] = {key: [] for key in counts}
    columns = ["method", "endpoint", "latency_ns"]
    for table in run.part_index().batches(columns, _BATCH_ROWS):
        draws = rng.random(table.num_rows)
        chosen = draws < most
        if not chosen.any():
            continue
        frame = table.filter(pa.array(chosen)).to_pandas()
        draws = draws[chosen]
        latency_ms = frame["latency_ns"].to_numpy(np.float64) / 1e6
        pieces[ALL].append(latency_ms[draws < keep[ALL]])
        groups = frame.groupby(["method", "endpoint"], observed=True, sort=False)
        for (method, endpoint), rows in groups.indices.items():
            key = (str(method), str(endpoint))
            if key in keep:
                pieces[key].append(latency_ms[rows[draws[rows] < keep[key]]])
    samples = {}
    for key, parts in pieces.items():
        sample = np.concatenate(parts) if parts else np.empty(0, np.float64)
        if sample.size > max_samples:
            sample = rng.choice(sample, max_samples, replace=False)
        samples[key] = np.sort(sample)
    return samples


def _compare_endpoint(
    key: Key,
    base: Side | None,
    cand: Side | None,
    sample_base: Floats | None,
    sample_cand: Floats | None,
    options: CompareOptions,
    rng: np.random.Generator,
) -> EndpointComparison:
    curves = _curves(sample_base, sample_cand)

    def done(
        verdict: Verdict,
        reasons: Iterable[str],
        regression: bool = False,
        latency: LatencyTest | None = None,
        errors: ErrorTest | None = None,
    ) -> EndpointComparison:
        return EndpointComparison(
            key[0],
            key[1],
            base,
            cand,
            verdict,
            tuple(reasons),
            regression,
            latency,
            errors,
            curves,
        )

    if base is None:
        return done("only in candidate", ["no request in the baseline run"])
    if cand is None:
        return done("only in baseline", ["no request in the candidate run"])
    least = min(base.requests, cand.requests, base.samples, cand.samples)
    if least < options.min_samples:
        return done(
            "too few samples",
            [f"{least} requests on one side, {options.min_samples} needed"],
        )
    assert sample_base is not None and sample_cand is not None
    latency = _latency_test(base, cand, sample_base, sample_cand, options, rng)
    errors = _error_test(base, cand)
    alpha = options.alpha
    # The median needs the U test too; p95's interval is its own test (see the
    # module docstring).
    judged = [(latency.median, options.min_effect, latency.p_value < alpha)]
    if latency.p95 is not None:
        judged.append((latency.p95, options.min_tail_effect, True))
    slower = [r for r, effect, ok in judged if ok and r.low > 1 + effect]
    faster = [r for r, effect, ok in judged if ok and r.high < 1 - effect]
    rise = cand.error_rate - base.error_rate
    more_errors = errors.p_value < alpha and rise > 0
    fewer_errors = errors.p_value < alpha and rise < 0
    reasons = [_latency_reason(latency, slower or faster, options)]
    if more_errors or fewer_errors:
        reasons.append(_error_reason(base, cand, errors))
    if slower or more_errors:
        verdict: Verdict = "worse"
    elif faster or fewer_errors:
        verdict = "better"
    else:
        verdict = "no significant change"
    regression = False
    if verdict == "worse" and key != ALL:
        limit = options.tolerance
        over = []
        for ratio in slower:
            name = "p50" if ratio.quantile == 0.5 else "p95"
            change = ratio.estimate - 1.0
            if change > limit:
                over.append(f"{name} {change:+.1%} is over the {limit:.1%} tolerance")
        if more_errors and rise > options.error_tolerance:
            over.append(
                f"the error rate rose by {_points(rise)}, over the tolerance of "
                f"{_points(options.error_tolerance)}"
            )
        regression = bool(over)
        reasons += [f"regression: {text}" for text in over]
    return done(verdict, reasons, regression, latency, errors)


def _latency_test(
    base: Side,
    cand: Side,
    sample_base: Floats,
    sample_cand: Floats,
    options: CompareOptions,
    rng: np.random.Generator,
) -> LatencyTest:
    test = stats.mannwhitneyu(sample_cand, sample_base, alternative="two-sided")
    u = float(test.statistic)
    median = _ratio(
        0.5, base.p50_ms, cand.p50_ms, sample_base, sample_cand, options, rng
    )
    p95 = None
    if min(base.requests, cand.requests, sample_base.size, sample_cand.size) >= (
        TAIL_MIN_SAMPLES
    ):
        p95 = _ratio(
            TAIL_QUANTILE,
            base.p95_ms,
            cand.p95_ms,
            sample_base,
            sample_cand,
            options,
            rng,
        )
    return LatencyTest(
        u_statistic=u,
        p_value=float(test.pvalue),
        prob_slower=u / (sample_base.size * sample_cand.size),
        median=median,
        p95=p95,
    )


def _ratio(
    q: float,
    before_ms: float,
    after_ms: float,
    sample_base: Floats,
    sample_cand: Floats,
    options: CompareOptions,
    rng: np.random.Generator,
) -> Ratio:
    """The ratio of the q-quantiles and its bootstrap interval at ``1 - alpha``."""
    draws_base = _bootstrap_quantile(sample_base, q, options.bootstrap, rng)
    draws_cand = _bootstrap_quantile(sample_cand, q, options.bootstrap, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = draws_cand / draws_base
    ratios = ratios[np.isfinite(ratios)]
    low, high = math.nan, math.nan
    if ratios.size:
        half = options.alpha / 2
        low, high = (float(v) for v in np.quantile(ratios, [half, 1 - half]))
    estimate = after_ms / before_ms if before_ms > 0 else math.nan
    return Ratio(q, estimate, low, high)


def _bootstrap_quantile(
    sorted_sample: Floats, q: float, draws: int, rng: np.random.Generator
) -> Floats:
    """``draws`` bootstrap replicates of the sample's q-quantile (as its k-th
    smallest value, k = ceil(q n)), each from one Beta draw: see the module
    docstring."""
    n = sorted_sample.size
    k = min(n, max(1, math.ceil(q * n)))
    u = rng.beta(k, n + 1 - k, size=draws)
    index = np.clip(np.ceil(u * n).astype(np.int64) - 1, 0, n - 1)
    return sorted_sample[index]


def _error_test(base: Side, cand: Side) -> ErrorTest:
    """Two-proportion z test (pooled), or Fisher's exact test when an expected
    count of the 2x2 table is under 5."""
    table = np.array(
        [
            [base.errors, base.requests - base.errors],
            [cand.errors, cand.requests - cand.errors],
        ],
        dtype=np.float64,
    )
    total = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    if expected.min() < 5:
        result = stats.fisher_exact(table.astype(np.int64))
        return ErrorTest("fisher exact", float(result.pvalue))
    pooled = (base.errors + cand.errors) / total
    spread = math.sqrt(pooled * (1 - pooled) * (1 / base.requests + 1 / cand.requests))
    z = (cand.error_rate - base.error_rate) / spread
    return ErrorTest("two-proportion z", float(2 * stats.norm.sf(abs(z))))


def _latency_reason(
    test: LatencyTest, decisive: list[Ratio], options: CompareOptions
) -> str:
    level = 1 - options.alpha
    every = [r for r in (test.median, test.p95) if r is not None]
    shown = [
        f"{'median' if r.quantile == 0.5 else 'p95'} x{r.estimate:.3f} "
        f"({level:.0%} interval x{r.low:.3f} to x{r.high:.3f})"
        for r in (decisive or every)
    ]
    text = ", ".join(shown) + f", Mann-Whitney p={test.p_value:.2g}"
    if decisive:
        return text
    limits = f"{options.min_effect:.0%} for the median"
    if test.p95 is not None:
        limits += f", {options.min_tail_effect:.0%} for p95"
    return text + f": no shift beyond the minimum effects ({limits})"


def _error_reason(base: Side, cand: Side, test: ErrorTest) -> str:
    return (
        f"error rate {base.error_rate:.2%} -> {cand.error_rate:.2%} "
        f"({test.method} p={test.p_value:.2g})"
    )


def _curves(sample_base: Floats | None, sample_cand: Floats | None) -> Curves:
    levels = 1.0 - 10.0 ** -np.linspace(0.0, _CURVE_DECADES, _CURVE_POINTS)

    def curve(sample: Floats | None) -> tuple[float, ...]:
        if sample is None or sample.size == 0:
            return tuple(math.nan for _ in levels)
        values = np.quantile(sample, levels)
        # A quantile with fewer than one request above it is the maximum repeated.
        values[(1.0 - levels) * sample.size < 1.0] = np.nan
        return tuple(float(v) for v in values)

    return Curves(
        tuple(float(v) for v in levels), curve(sample_base), curve(sample_cand)
    )


# Writers ------------------------------------------------------------------------


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    """Every figure of ``comparison`` as JSON-ready data, NaN as None."""
    opts = comparison.options
    endpoints = []
    for e in comparison.endpoints:
        endpoints.append(
            {
                "method": e.method,
                "endpoint": e.endpoint,
                "verdict": e.verdict,
                "regression": e.regression,
                "reasons": list(e.reasons),
                "baseline": _side_dict(e.baseline),
                "candidate": _side_dict(e.candidate),
                "change": {
                    "requests": e.change("requests"),
                    "rps": e.change("rps"),
                    "p50": e.change("p50_ms"),
                    "p95": e.change("p95_ms"),
                    "p99": e.change("p99_ms"),
                    "error_rate": e.change("error_rate"),
                },
                "latency_test": _latency_dict(e.latency),
                "error_test": (
                    None
                    if e.errors is None
                    else {"test": e.errors.method, "p_value": e.errors.p_value}
                ),
                "curves": {
                    "levels": list(e.curves.levels),
                    "baseline_ms": list(e.curves.baseline_ms),
                    "candidate_ms": list(e.curves.candidate_ms),
                },
            }
        )
    data = {
        "baseline": _info_dict(comparison.baseline),
        "candidate": _info_dict(comparison.candidate),
        "options": {
            "tolerance": opts.tolerance,
            "alpha": opts.alpha,
            "min_effect": opts.min_effect,
            "min_tail_effect": opts.min_tail_effect,
            "error_tolerance": opts.error_tolerance,
            "max_samples": opts.max_samples,
            "bootstrap": opts.bootstrap,
            "min_samples": opts.min_samples,
            "seed": opts.seed,
        },
        "notes": list(comparison.notes),
        "regressions": [e.name for e in comparison.regressions],
        "endpoints": endpoints,
    }
    cleaned: dict[str, Any] = _finite(data)
    return cleaned


def _info_dict(info: RunInfo) -> dict[str, str]:
    return {
        "path": info.path,
        "run_id": info.run_id,
        "profile": info.profile,
        "profile_sha256": info.profile_sha256,
        "target": info.target,
        "started_at": info.started_at,
        "status": info.status,
    }


def _side_dict(side: Side | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {
        "requests": side.requests,
        "errors": side.errors,
        "error_rate": side.error_rate,
        "rps": side.rps,
        "p50_ms": side.p50_ms,
        "p95_ms": side.p95_ms,
        "p99_ms": side.p99_ms,
        "quantile_rel_error": side.quantile_rel_error,
        "samples": side.samples,
    }


def _ratio_dict(ratio: Ratio | None) -> dict[str, float] | None:
    if ratio is None:
        return None
    return {"estimate": ratio.estimate, "low": ratio.low, "high": ratio.high}


def _latency_dict(test: LatencyTest | None) -> dict[str, Any] | None:
    if test is None:
        return None
    return {
        "test": "mann-whitney u, two-sided",
        "u_statistic": test.u_statistic,
        "p_value": test.p_value,
        "prob_slower": test.prob_slower,
        "median_ratio": _ratio_dict(test.median),
        "p95_ratio": _ratio_dict(test.p95),
    }


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write ``compare.json`` and ``compare.html`` into ``out_dir`` (created if
    needed); return their paths under the keys ``json`` and ``html``.

    The HTML page is one self-contained file: inline CSS, plots as base64 PNG, no
    script and no external address.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "compare.json"
    html_path = folder / "compare.html"
    text = json.dumps(comparison_dict(comparison), indent=2, allow_nan=False)
    json_path.write_text(text + "\n", encoding="utf-8")
    html_path.write_text(comparison_html(comparison), encoding="utf-8")
    return {"json": json_path, "html": html_path}


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
ul.why { font-size: 13px; color: #444; } .pair { white-space: nowrap; }
td.worse { background: #f8d0d0; } td.better { background: #d3f0d3; }
td.same { background: #f4f4f4; } td.other { background: #fbeec5; }
tr.total td { font-weight: 600; }
.notes { color: #8a4b00; } .small { color: #555; font-size: 12px; }
figure { margin: 12px 0; } img { max-width: 100%; }
"""

_VERDICT_CLASS = {
    "worse": "worse",
    "better": "better",
    "no significant change": "same",
}


def comparison_html(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page."""
    esc = html.escape
    base, cand, opts = comparison.baseline, comparison.candidate, comparison.options
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>compare {esc(base.run_id)} -&gt; {esc(cand.run_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Run comparison: {esc(base.run_id)} (baseline) and "
        f"{esc(cand.run_id)} (candidate)</h1>",
        "<table><tr><th class='name'></th><th class='name'>baseline</th>"
        "<th class='name'>candidate</th></tr>",
    ]
    for label, attr in (
        ("run id", "run_id"),
        ("profile", "profile"),
        ("target", "target"),
        ("started (UTC)", "started_at"),
        ("status", "status"),
        ("folder", "path"),
    ):
        out.append(
            f"<tr><th class='name'>{esc(label)}</th>"
            f"<td class='name'>{esc(getattr(base, attr))}</td>"
            f"<td class='name'>{esc(getattr(cand, attr))}</td></tr>"
        )
    out.append("</table>")
    for note in comparison.notes:
        out.append(f"<p class='notes'>Note: {esc(note)}</p>")
    regressions = comparison.regressions
    verdict_line = (
        f"{len(regressions)} regression(s) beyond tolerance: "
        + ", ".join(e.name for e in regressions)
        if regressions
        else "No regression beyond tolerance."
    )
    out.append(f"<p><strong>{esc(verdict_line)}</strong></p>")
    out.append(
        "<p class='small'>"
        + esc(
            f"Options: tolerance {opts.tolerance:.1%} (p50/p95), error tolerance "
            f"{_points(opts.error_tolerance)}, alpha {opts.alpha:g}, minimum "
            f"effect {opts.min_effect:.1%} (median) and {opts.min_tail_effect:.1%} "
            f"(p95), at most {opts.max_samples} sampled "
            f"requests per side, {opts.bootstrap} bootstrap draws, seed {opts.seed}. "
            "Changes are candidate against baseline; latency is service time, "
            "failed requests included."
        )
        + "</p>"
    )
    out.append(_table_html(comparison))
    out.append("<h2>Service-time distributions</h2>")
    plotted = sorted(
        (e for e in comparison.endpoints if not e.is_total),
        key=lambda e: -max(_requests(e.baseline), _requests(e.candidate)),
    )
    totals = [e for e in comparison.endpoints if e.is_total]
    shown = totals + plotted[:_MAX_PLOTS]
    for e in shown:
        png = _plot_png(e, base.run_id, cand.run_id)
        if png is None:
            continue
        data = base64.b64encode(png).decode("ascii")
        alt = f"service-time quantiles of {e.name}, baseline and candidate"
        out.append(
            f"<figure><img src='data:image/png;base64,{data}' alt='{esc(alt)}'>"
            "</figure>"
        )
    if len(plotted) > _MAX_PLOTS:
        rest = ", ".join(e.name for e in plotted[_MAX_PLOTS:])
        out.append(f"<p class='small'>Not drawn (fewer requests): {esc(rest)}</p>")
    out.append(
        "<p class='small'>Curves drawn from the sampled service times (every request "
        f"when an endpoint has at most {opts.max_samples}), up to the percentile "
        "that leaves at least one request above it.</p>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _requests(side: Side | None) -> int:
    return 0 if side is None else side.requests


def _table_html(comparison: Comparison) -> str:
    esc = html.escape
    level = 1 - comparison.options.alpha
    head = [
        "endpoint",
        "verdict",
        "requests",
        "error rate",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        f"median ratio ({level:.0%} interval)",
        "Mann-Whitney p",
    ]
    rows = [
        "<table><tr>"
        + "".join(
            f"<th class='name'>{esc(h)}</th>" if i == 0 else f"<th>{esc(h)}</th>"
            for i, h in enumerate(head)
        )
        + "</tr>"
    ]
    # The reasons are sentences: a list under the table, not a column that would
    # push the table past the page's width.
    reasons = []
    for e in comparison.endpoints:
        kind = _VERDICT_CLASS.get(e.verdict, "other")
        errors_differ = (
            e.errors is not None and e.errors.p_value < comparison.options.alpha
        )
        error_kind = kind if errors_differ else ""
        cells = [
            f"<td class='name'>{esc(e.name)}</td>",
            f"<td class='{kind}'>{esc(e.verdict)}</td>",
            f"<td>{_pair(e, 'requests', '{:d}')}</td>",
            # Coloured only when the error rates differ significantly: the shift
            # of the latencies is what the other coloured cells show.
            f"<td class='{error_kind}'>{_pair(e, 'error_rate', '{:.2%}')}</td>",
            f"<td>{_pair(e, 'rps', '{:.1f}')}</td>",
        ]
        for figure in ("p50_ms", "p95_ms", "p99_ms"):
            cells.append(f"<td class='{kind}'>{_pair(e, figure, '{:.2f}')}</td>")
        ratio, p_value = "", ""
        if e.latency is not None:
            m = e.latency.median
            ratio = f"x{m.estimate:.3f} ({m.low:.3f} to {m.high:.3f})"
            p_value = f"{e.latency.p_value:.2g}"
        cells += [f"<td>{esc(ratio)}</td>", f"<td>{esc(p_value)}</td>"]
        css = " class='total'" if e.is_total else ""
        rows.append(f"<tr{css}>" + "".join(cells) + "</tr>")
        if e.reasons:
            reasons.append(
                f"<li><strong>{esc(e.name)}</strong> ({esc(e.verdict)}): "
                f"{esc('; '.join(e.reasons))}</li>"
            )
    rows.append("</table>")
    if reasons:
        rows.append("<p>Why each verdict:</p><ul class='why'>")
        rows.extend(reasons)
        rows.append("</ul>")
    return "\n".join(rows)


def _pair(e: EndpointComparison, figure: str, spec: str) -> str:
    """``baseline -> candidate`` and, on a second line, the change, as HTML."""

    def show(side: Side | None) -> str:
        if side is None:
            return "-"
        value = getattr(side, figure)
        if isinstance(value, float) and not math.isfinite(value):
            return "n/a"
        return spec.format(value)

    text = html.escape(f"{show(e.baseline)} \u2192 {show(e.candidate)}")
    text = f"<span class='pair'>{text}</span>"
    change = e.change(figure)
    if math.isfinite(change):
        if figure == "error_rate":
            shown = _signed(change, 2) + " pt"
        else:
            shown = _signed(change, 1) + "%"
        text += f"<br><span class='small'>{html.escape(shown)}</span>"
    return text


def _plot_png(e: EndpointComparison, base_id: str, cand_id: str) -> bytes | None:
    """The two service-time quantile curves of ``e`` as a PNG, or None when
    neither side has a sample."""
    levels = np.array(e.curves.levels)
    base_ms = np.array(e.curves.baseline_ms)
    cand_ms = np.array(e.curves.candidate_ms)
    values = np.concatenate([base_ms, cand_ms])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return None
    figure = Figure(figsize=(8.0, 3.8), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    x = -np.log10(1.0 - levels)
    ax.plot(x, base_ms, color="#4c72b0", lw=2, label=f"baseline {base_id}")
    ax.plot(x, cand_ms, color="#dd8452", lw=2, label=f"candidate {cand_id}")
    ticks = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]
    ax.set_xticks([-math.log10(1.0 - t) for t in ticks])
    ax.set_xticklabels(["min", "p50", "p90", "p99", "p99.9", "p99.99"])
    ax.set_xlim(0.0, float(x[np.isfinite(base_ms) | np.isfinite(cand_ms)].max()))
    ax.set_xlabel("percentile of requests (spaced by -log10(1 - p))")
    ax.set_title(f"{e.name}: {e.verdict}")
    spread = values.max() / values.min()
    if spread > _LOG_SPREAD:
        # Tails far above the median need a log axis; within a few times of each
        # other, a linear one shows the gap between the curves better.
        ax.set_yscale("log")
        ax.set_ylabel("service time (ms, log scale)")
        ax.yaxis.set_major_formatter(FuncFormatter(_ms_label))
        ax.yaxis.set_minor_formatter(FuncFormatter(_ms_minor_label(spread > 20)))
    else:
        ax.set_ylabel("service time (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _ms_label(value: float, _pos: int | None = None) -> str:
    return f"{value:g}"


def _ms_minor_label(wide: bool) -> Any:
    """Minor tick labels of the log axis: 2 and 5 of each decade on a wide axis,
    every one on a narrow axis (where there may be no major tick in view)."""

    def label(value: float, _pos: int | None = None) -> str:
        if value <= 0:
            return ""
        lead = round(value / 10 ** math.floor(math.log10(value)))
        if wide and lead not in (2, 5):
            return ""
        return f"{value:g}"

    return label


def endpoint_frame(comparison: Comparison) -> pd.DataFrame:
    """One row per endpoint (``ALL`` last): verdict, both sides' main figures and
    the changes, for a notebook or the terminal table."""
    rows = []
    for e in comparison.endpoints:
        b, c = e.baseline, e.candidate
        rows.append(
            {
                "method": e.method,
                "endpoint": e.endpoint,
                "verdict": e.verdict,
                "regression": e.regression,
                "requests_baseline": _requests(b),
                "requests_candidate": _requests(c),
                "error_rate_baseline": math.nan if b is None else b.error_rate,
                "error_rate_candidate": math.nan if c is None else c.error_rate,
                "p50_ms_baseline": math.nan if b is None else b.p50_ms,
                "p50_ms_candidate": math.nan if c is None else c.p50_ms,
                "p95_ms_baseline": math.nan if b is None else b.p95_ms,
                "p95_ms_candidate": math.nan if c is None else c.p95_ms,
                "p50_change": e.change("p50_ms"),
                "p95_change": e.change("p95_ms"),
                "error_rate_change": e.change("error_rate"),
                "p_value": math.nan if e.latency is None else e.latency.p_value,
            }
        )
    return pd.DataFrame(rows)


def format_comparison(comparison: Comparison) -> str:
    """A fixed-width text table for the terminal, one line per endpoint."""
    if not comparison.endpoints:
        return "no requests in either run"
    header = (
        f"{'endpoint':<32} {'requests':>14} {'p50 ms':>21} {'p95 ms':>21} "
        f"{'errors':>16}  verdict"
    )
    lines = [header, "-" * len(header)]
    for e in comparison.endpoints:
        name = e.name if len(e.name) <= 32 else e.name[:29] + "..."
        requests = f"{_requests(e.baseline)} -> {_requests(e.candidate)}"
        verdict = e.verdict + (" REGRESSION" if e.regression else "")
        lines.append(
            f"{name:<32} {requests:>14} {_terse(e, 'p50_ms'):>21} "
            f"{_terse(e, 'p95_ms'):>21} {_terse(e, 'error_rate'):>16}  {verdict}"
        )
    return "\n".join(lines)


def _terse(e: EndpointComparison, figure: str) -> str:
    def show(side: Side | None) -> str:
        if side is None:
            return "-"
        value = float(getattr(side, figure))
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.2%}" if figure == "error_rate" else f"{value:.2f}"

    text = f"{show(e.baseline)} -> {show(e.candidate)}"
    change = e.change(figure)
    if math.isfinite(change) and figure != "error_rate":
        text += " " + _signed(change, 0) + "%"
    return text


def _signed(fraction: float, decimals: int) -> str:
    """``fraction`` in percent with ``decimals`` decimals and its sign, without the
    ``%``: ``+19``, ``-3.5``; a change that rounds to zero is ``0``, never ``-0``."""
    text = f"{fraction * 100:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text


def _points(difference: float) -> str:
    """A difference of two rates in percentage points: ``6.38 percentage points``."""
    return f"{difference * 100:.2f} percentage points"
