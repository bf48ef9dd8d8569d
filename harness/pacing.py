"""Pure load shapes: VUs or arrival rate at an elapsed time, arrival instants, shards.

How this works
--------------
Every function here is a pure function of the elapsed time ``t`` (seconds since the
run's start): no clock, no I/O, no trio. The worker's scheduler asks this module *when*
something should happen and sleeps until then itself.

Closed model (stages of VUs). The profile's VU count follows a piecewise linear line
that starts at 0 and ramps, stage by stage, from the previous target to the next. The
count is an integer that changes exactly when the line crosses an integer: rounded down
while rising, up while falling. Every crossing instant comes from one formula
(:func:`_crossing_s`), and :func:`vus_at` counts crossings rather than rounding on its
own, so a schedule built from crossings and a direct query never disagree, not even at
the crossing instants themselves.

VUs are split among shards by their global index: VU ``j`` (0-based, in the order the
ramp starts them) belongs to shard ``j % n``. When the total is ``c``, shard ``i`` runs
``split_count(c, i, n)`` VUs, and the shards' counts add up to ``c`` at every instant.
:func:`vu_schedule` lists one shard's changes by walking only that shard's own VU
indices, so it costs one step per VU of the shard, whatever the length of the run.

Open model (phases of arrival rate). The rate is piecewise linear; its integral
``C(t)`` (:func:`cumulative_arrivals`) is piecewise quadratic, and its inverse
(:func:`inverse_cumulative`) has a closed form per phase. Where ``C`` is flat (a phase
at rate 0) the inverse takes the *end* of the flat stretch, so no arrival is ever placed
in a phase whose rate is 0.

* Uniform arrivals: global arrival ``k`` happens at ``inverse_cumulative(k)`` and
  belongs to shard ``k % n``. The shards interleave exactly and the run has
  ``ceil(C(end))`` arrivals in total (:func:`total_arrivals`).
* Poisson arrivals: each shard runs its own Poisson process of rate ``rate(t) / n`` by
  time rescaling: unit exponential gaps in the shard's cumulative space, scaled by
  ``n`` into the profile's cumulative space and mapped back through the inverse. The
  superposition of the shards is a Poisson process with the profile's rate.

:class:`ArrivalSchedule` walks the phases forward with a cursor, so each arrival costs
O(1) amortised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from .profile.model import ClosedModel, LoadModel, Phase, Stage

ArrivalKind = Literal["uniform", "poisson"]

_TOTAL_TOLERANCE = 1e-9
"""Relative slack when counting uniform arrivals. Durations scaled by a time scale
carry float residue (a 3 s phase at time scale 0.1 lasts ``0.30000000000000004`` s),
and without slack 200/s for that long would gain a 61st arrival from a rounding
error."""


def _check_shard(shard: int, n_shards: int) -> None:
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")


def split_count(total: int, shard: int, n_shards: int) -> int:
    """How many of ``total`` items (indices 0..total-1) fall to ``shard`` when item
    ``j`` goes to shard ``j % n_shards``. The shards' shares add up to ``total``."""
    _check_shard(shard, n_shards)
    return max(0, (total - shard + n_shards - 1) // n_shards)


def shard_vu_ids(shard: int, n_shards: int, count: int) -> list[int]:
    """Global ids of the shard's first ``count`` VUs: shard, shard + n, ..."""
    _check_shard(shard, n_shards)
    return list(range(shard, shard + n_shards * max(0, count), n_shards))


def default_name(kind: Literal["stage", "phase"], index: int, name: str) -> str:
    """The name recorded for a stage or phase: its own, or ``stage-3`` by position."""
    return name or f"{kind}-{index + 1}"


# Closed model ------------------------------------------------------------------------


def _stage_starts(stages: Sequence[Stage]) -> list[float]:
    """Start instant of each stage, plus the end of the last one.

    The lookups below add durations up in the same order (start + duration, stage by
    stage), so a stage's end and the next stage's start are the very same float
    everywhere.
    """
    starts = [0.0]
    for s in stages:
        starts.append(starts[-1] + s.duration_s)
    return starts


def _crossing_s(start_s: float, duration_s: float, a: int, b: int, level: int) -> float:
    """When a stage ramping from ``a`` to ``b`` VUs reaches ``level`` (between them).

    The fraction is computed first so that ``level == b`` gives exactly ``start_s +
    duration_s`` (x / x is exactly 1 in binary floating point) and the instants are
    monotonic in ``level``.
    """
    return start_s + duration_s * ((level - a) / (b - a))


def _count_in_ramp(start_s: float, duration_s: float, a: int, b: int, t: float) -> int:
    """VUs at ``t`` inside a ramp from ``a`` to ``b`` (``a != b``, start <= t < end).

    Rising, the count is the highest level already crossed; falling, the lowest. The
    interpolated guess is off by at most a rounding step and is corrected against the
    exact crossing instants, which are what :func:`vu_schedule` emits.
    """
    fraction = (t - start_s) / duration_s
    if b > a:
        count = min(b, max(a, a + math.floor((b - a) * fraction)))
        while count < b and _crossing_s(start_s, duration_s, a, b, count + 1) <= t:
            count += 1
        while count > a and _crossing_s(start_s, duration_s, a, b, count) > t:
            count -= 1
    else:
        count = max(b, min(a, a - math.floor((a - b) * fraction)))
        while count > b and _crossing_s(start_s, duration_s, a, b, count - 1) <= t:
            count -= 1
        while count < a and _crossing_s(start_s, duration_s, a, b, count) > t:
            count += 1
    return count


def stage_at(stages: Sequence[Stage], t: float) -> tuple[int, Stage] | None:
    """The stage running at ``t`` (a boundary belongs to the stage that starts
    there), or ``None`` before 0 and from the end on. Zero-length stages are never
    running."""
    if t < 0:
        return None
    start = 0.0
    for index, stage in enumerate(stages):
        end = start + stage.duration_s
        if t < end:
            return index, stage
        start = end
    return None


def vus_at(stages: Sequence[Stage], t: float) -> int:
    """The profile's VU count at ``t``: 0 before the start, the last target after
    the end, rounded down while rising and up while falling."""
    if t < 0:
        return 0
    previous = 0
    start = 0.0
    for stage in stages:
        end = start + stage.duration_s
        if t < end:
            if stage.target == previous:
                return previous
            return _count_in_ramp(start, stage.duration_s, previous, stage.target, t)
        previous = stage.target
        start = end
    return previous


def vu_schedule(
    stages: Sequence[Stage], shard: int, n_shards: int
) -> list[tuple[float, int]]:
    """The instants at which this shard's VU count changes, with the new count.

    Starts with ``(0.0, count at 0)``; instants are strictly increasing and
    consecutive counts differ. At every ``t >= 0`` the count of the last entry at or
    before ``t`` is ``split_count(vus_at(stages, t), shard, n_shards)``.
    """
    _check_shard(shard, n_shards)
    schedule: list[tuple[float, int]] = [(0.0, 0)]

    def change(at_s: float, count: int) -> None:
        # Several changes at one instant (a zero-length stage, or crossings that
        # round to the same float) collapse into the last; a net change of zero at
        # an instant is no change.
        if schedule[-1][0] == at_s:
            schedule[-1] = (at_s, count)
            if len(schedule) > 1 and schedule[-2][1] == count:
                schedule.pop()
        elif schedule[-1][1] != count:
            schedule.append((at_s, count))

    starts = _stage_starts(stages)
    previous = 0
    for index, stage in enumerate(stages):
        a, b = previous, stage.target
        start, duration = starts[index], stage.duration_s
        previous = b
        if a == b:
            continue
        if duration <= 0:
            change(start, split_count(b, shard, n_shards))
            continue
        if b > a:
            # VU j starts when the line reaches j + 1; the first of ours is the
            # smallest j >= a with j % n == shard.
            first = a + (shard - a) % n_shards
            for j in range(first, b, n_shards):
                at_s = _crossing_s(start, duration, a, b, j + 1)
                change(at_s, (j - shard) // n_shards + 1)
        else:
            # VU j stops when the line comes down to j; the highest go first.
            first = a - 1 - (a - 1 - shard) % n_shards
            for j in range(first, b - 1, -n_shards):
                at_s = _crossing_s(start, duration, a, b, j)
                change(at_s, (j - shard) // n_shards)
    return schedule


# Open model --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Segment:
    """One phase with the running totals the inverse needs."""

    index: int
    start_s: float
    duration_s: float
    rate: float
    slope: float
    """Arrivals per second, per second; 0 for a constant phase."""
    arrivals_before: float
    arrivals_after: float

    def arrivals_within(self, u_s: float) -> float:
        """Arrivals from the phase's start to ``u_s`` seconds into it."""
        return self.rate * u_s + 0.5 * self.slope * u_s * u_s

    def offset_of(self, x: float) -> float:
        """Seconds into the phase at which ``x`` of its arrivals have come.

        Solves ``rate * u + slope / 2 * u**2 = x`` in the form that divides by
        ``rate + sqrt(...)`` instead of subtracting two close numbers, so it stays
        exact for tiny slopes and for ramps starting at rate 0. Only called with
        ``0 <= x < arrivals in the phase``, which keeps the denominator positive:
        it is 0 only when ``rate`` is 0 and ``x`` is 0, handled first.
        """
        if x <= 0.0:
            return 0.0
        if self.slope == 0.0:
            u = x / self.rate
        else:
            discriminant = max(0.0, self.rate * self.rate + 2.0 * self.slope * x)
            u = 2.0 * x / (self.rate + math.sqrt(discriminant))
        return min(u, self.duration_s)


def _segments(phases: Sequence[Phase]) -> list[_Segment]:
    segments: list[_Segment] = []
    start = 0.0
    arrivals = 0.0
    for index, phase in enumerate(phases):
        d = phase.duration_s
        slope = (phase.end_rate - phase.rate) / d if d > 0 else 0.0
        area = d * (phase.rate + phase.end_rate) / 2.0 if d > 0 else 0.0
        segments.append(
            _Segment(index, start, d, phase.rate, slope, arrivals, arrivals + area)
        )
        start += d
        arrivals += area
    return segments


def phase_at(phases: Sequence[Phase], t: float) -> tuple[int, Phase] | None:
    """The phase running at ``t`` (a boundary belongs to the phase that starts
    there), or ``None`` before 0 and from the end on."""
    if t < 0:
        return None
    start = 0.0
    for index, phase in enumerate(phases):
        end = start + phase.duration_s
        if t < end:
            return index, phase
        start = end
    return None


def rate_at(phases: Sequence[Phase], t: float) -> float:
    """Arrivals per second at ``t``; 0 before the start and after the end."""
    if t < 0:
        return 0.0
    start = 0.0
    for phase in phases:
        end = start + phase.duration_s
        if t < end:
            if phase.ramp_to is None:
                return phase.rate
            fraction = (t - start) / phase.duration_s
            return phase.rate + (phase.ramp_to - phase.rate) * fraction
        start = end
    return 0.0


def total_cumulative(phases: Sequence[Phase]) -> float:
    """Arrivals over the whole run, as a real number (the rate's integral)."""
    segments = _segments(phases)
    return segments[-1].arrivals_after if segments else 0.0


def total_arrivals(phases: Sequence[Phase]) -> int:
    """Uniform arrivals over the whole run: ``ceil`` of the rate's integral, all
    shards together (a float residue of a billionth does not add an arrival)."""
    total = total_cumulative(phases)
    return max(0, math.ceil(total - _TOTAL_TOLERANCE * max(1.0, total)))


def cumulative_arrivals(phases: Sequence[Phase], t: float) -> float:
    """The integral of the rate from 0 to ``t`` (clamped to the run)."""
    if t <= 0:
        return 0.0
    for seg in _segments(phases):
        if t < seg.start_s + seg.duration_s:
            return seg.arrivals_before + seg.arrivals_within(t - seg.start_s)
    return total_cumulative(phases)


def inverse_cumulative(phases: Sequence[Phase], a: float) -> float | None:
    """The instant at which :func:`cumulative_arrivals` reaches ``a``.

    Where the cumulative is flat at ``a`` (a phase at rate 0), the end of the flat
    stretch. ``None`` if ``a`` is more than the run's total; the run's end if it is
    exactly the total.
    """
    if a < 0:
        raise ValueError(f"cumulative arrivals cannot be negative, got {a}")
    segments = _segments(phases)
    for seg in segments:
        if a < seg.arrivals_after:
            return seg.start_s + seg.offset_of(a - seg.arrivals_before)
    if segments and a <= segments[-1].arrivals_after:
        return segments[-1].start_s + segments[-1].duration_s
    if not segments and a == 0:
        return 0.0
    return None


class ArrivalSchedule(Iterator[float]):
    """The arrival instants of one shard, in seconds since the run's start.

    ``next()`` gives the next instant (never after the run's end, never inside a
    phase at rate 0) or raises ``StopIteration``. After each arrival,
    :attr:`phase_index` is the index of the phase it falls in and :attr:`emitted`
    counts this shard's arrivals so far.
    """

    def __init__(
        self,
        phases: Sequence[Phase],
        shard: int = 0,
        n_shards: int = 1,
        arrivals: ArrivalKind = "uniform",
        seed: int = 0,
    ) -> None:
        _check_shard(shard, n_shards)
        if arrivals not in ("uniform", "poisson"):
            raise ValueError(
                f"arrivals must be 'uniform' or 'poisson', not {arrivals!r}"
            )
        self.shard = shard
        self.n_shards = n_shards
        self.arrivals = arrivals
        self.phase_index = -1
        self.emitted = 0
        self._segments = [
            s for s in _segments(phases) if s.arrivals_after > s.arrivals_before
        ]
        self._cursor = 0
        self._total = total_cumulative(phases)
        self._uniform_count = total_arrivals(phases)
        self._next_k = shard
        self._position = 0.0
        self._last_s = 0.0
        # A string seed is hashed with SHA-512 by ``random``, so each (seed, shard)
        # pair gets its own stream, the same on every machine and every run.
        self._rng = random.Random(f"harness.pacing:{seed}:{shard}")

    def __iter__(self) -> ArrivalSchedule:
        return self

    def __next__(self) -> float:
        if self.arrivals == "uniform":
            if self._next_k >= self._uniform_count:
                raise StopIteration
            position = float(self._next_k)
            self._next_k += self.n_shards
        else:
            position = self._position + self.n_shards * self._rng.expovariate(1.0)
            if position >= self._total:
                self._position = math.inf
                raise StopIteration
            self._position = position
        at_s = self._time_of(position)
        if at_s is None:
            raise StopIteration
        # Guards against a rounding step backwards between two arrivals a hair apart.
        at_s = max(at_s, self._last_s)
        self._last_s = at_s
        self.emitted += 1
        return at_s

    def _time_of(self, position: float) -> float | None:
        """Instant of a cumulative position; positions only grow, so the cursor
        only moves forward."""
        segments = self._segments
        while self._cursor < len(segments) and (
            position >= segments[self._cursor].arrivals_after
        ):
            self._cursor += 1
        if self._cursor == len(segments):
            return None
        seg = segments[self._cursor]
        self.phase_index = seg.index
        return seg.start_s + seg.offset_of(position - seg.arrivals_before)


# Both models ------------------------------------------------------------------------


def offered_at(model: LoadModel, t: float) -> float:
    """The offered load at ``t``: arrivals/s (open) or the profile's VUs (closed)."""
    if isinstance(model, ClosedModel):
        return float(vus_at(model.stages, t))
    return rate_at(model.phases, t)


def phase_name_at(model: LoadModel, t: float) -> str:
    """The name of the stage or phase at ``t``, for the records.

    Before the start, the first; from the end on (requests finishing during the
    graceful stop), the last. ``""`` for a model without stages or phases.
    """
    kind: Literal["stage", "phase"]
    if isinstance(model, ClosedModel):
        kind = "stage"
        parts = [(s.duration_s, s.name) for s in model.stages]
    else:
        kind = "phase"
        parts = [(p.duration_s, p.name) for p in model.phases]
    if not parts:
        return ""
    end = 0.0
    chosen = 0
    for index, (duration_s, _) in enumerate(parts):
        if duration_s <= 0:
            continue
        chosen = index
        end += duration_s
        if t < end:
            break
    return default_name(kind, chosen, parts[chosen][1])
