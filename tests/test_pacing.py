from __future__ import annotations

import bisect
import itertools
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.pacing import (
    ArrivalSchedule,
    cumulative_arrivals,
    inverse_cumulative,
    offered_at,
    phase_at,
    phase_name_at,
    rate_at,
    shard_vu_ids,
    split_count,
    stage_at,
    total_arrivals,
    total_cumulative,
    vu_schedule,
    vus_at,
)
from harness.profile.model import ClosedModel, OpenModel, Phase, Stage

# Strategies ---------------------------------------------------------------------------

durations = st.one_of(
    st.just(0.0),
    st.integers(1, 30).map(float),
    st.floats(0.001, 30.0, allow_nan=False, allow_infinity=False),
)
stage_lists = st.lists(
    st.builds(Stage, duration_s=durations, target=st.integers(0, 40)), max_size=5
)
rates = st.one_of(st.just(0.0), st.floats(0.01, 50.0, allow_nan=False))
phase_lists = st.lists(
    st.builds(
        Phase,
        duration_s=durations,
        rate=rates,
        ramp_to=st.one_of(st.none(), rates),
    ),
    max_size=4,
)


def count_at(schedule: list[tuple[float, int]], t: float) -> int:
    """The count of a schedule at ``t``: the last entry at or before it."""
    times = [at for at, _ in schedule]
    return schedule[bisect.bisect_right(times, t) - 1][1]


def probe_instants(stages: list[Stage], extra: list[float]) -> list[float]:
    """Instants where a disagreement would show: boundaries, crossings, and the
    floats just before each of them."""
    points = [0.0, *extra]
    start = 0.0
    for s in stages:
        start += s.duration_s
        points.append(start)
    points += [math.nextafter(p, -math.inf) for p in points if p > 0]
    points += [p + 0.5 for p in points] + [start + 100.0]
    return sorted(set(points))


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# Closed model: VUs at t ---------------------------------------------------------------

RAMP_UP = [Stage(10.0, 10)]
RAMP_DOWN = [Stage(0.0, 10), Stage(10.0, 0)]
HOLD = [Stage(5.0, 4), Stage(10.0, 4), Stage(5.0, 0)]
JUMP_MIDWAY = [Stage(10.0, 10), Stage(0.0, 3), Stage(10.0, 3)]


@pytest.mark.parametrize(
    ("stages", "t", "expected"),
    [
        (RAMP_UP, -1.0, 0),
        (RAMP_UP, 0.0, 0),
        (RAMP_UP, 0.999, 0),
        (RAMP_UP, 1.0, 1),
        (RAMP_UP, 5.5, 5),
        (RAMP_UP, 9.999, 9),
        (RAMP_UP, 10.0, 10),
        (RAMP_UP, 1000.0, 10),
        (RAMP_DOWN, 0.0, 10),
        (RAMP_DOWN, 0.5, 10),
        (RAMP_DOWN, 1.0, 9),
        (RAMP_DOWN, 1.5, 9),
        (RAMP_DOWN, 9.5, 1),
        (RAMP_DOWN, 10.0, 0),
        (HOLD, 2.5, 2),
        (HOLD, 5.0, 4),
        (HOLD, 12.0, 4),
        (HOLD, 15.0, 4),
        (HOLD, 17.5, 2),
        (HOLD, 20.0, 0),
        (JUMP_MIDWAY, 9.99, 9),
        (JUMP_MIDWAY, 10.0, 3),
        (JUMP_MIDWAY, 15.0, 3),
        ([], 5.0, 0),
        ([Stage(5.0, 0)], 2.0, 0),
        ([Stage(0.0, 7)], 0.0, 7),
    ],
)
def test_vus_at_rounds_down_rising_and_up_falling(
    stages: list[Stage], t: float, expected: int
) -> None:
    assert vus_at(stages, t) == expected


def test_vus_at_changes_exactly_when_the_line_crosses_an_integer() -> None:
    stages = [Stage(3.0, 7), Stage(3.0, 0)]
    changes = vu_schedule(stages, 0, 1)
    expected = [3.0 * k / 7 for k in range(8)] + [
        3.0 + 3.0 * k / 7 for k in range(1, 8)
    ]
    assert [at for at, _ in changes] == pytest.approx(expected)
    for (_, before), (at, after) in itertools.pairwise(changes):
        assert vus_at(stages, at) == after
        assert vus_at(stages, math.nextafter(at, 0.0)) == before


def test_stage_at_skips_zero_length_stages_and_ends_with_the_run() -> None:
    assert stage_at(JUMP_MIDWAY, 10.0) == (2, JUMP_MIDWAY[2])
    assert stage_at(JUMP_MIDWAY, 0.0) == (0, JUMP_MIDWAY[0])
    assert stage_at(JUMP_MIDWAY, 20.0) is None
    assert stage_at(JUMP_MIDWAY, -0.1) is None


# Closed model: the shard split --------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "n_shards", "expected"),
    [
        (0, 3, [0, 0, 0]),
        (1, 3, [1, 0, 0]),
        (2, 3, [1, 1, 0]),
        (3, 3, [1, 1, 1]),
        (10, 3, [4, 3, 3]),
        (10, 1, [10]),
        (7, 8, [1, 1, 1, 1, 1, 1, 1, 0]),
    ],
)
def test_split_count_gives_the_first_shards_the_remainder(
    total: int, n_shards: int, expected: list[int]
) -> None:
    assert [split_count(total, i, n_shards) for i in range(n_shards)] == expected


def test_shard_vu_ids_are_the_shards_residue_class() -> None:
    assert shard_vu_ids(1, 3, 4) == [1, 4, 7, 10]
    assert shard_vu_ids(0, 1, 3) == [0, 1, 2]
    assert shard_vu_ids(2, 4, 0) == []
    ids = [j for i in range(3) for j in shard_vu_ids(i, 3, split_count(10, i, 3))]
    assert sorted(ids) == list(range(10))


@pytest.mark.parametrize(("shard", "n_shards"), [(3, 3), (-1, 2), (0, 0)])
def test_shard_arguments_out_of_range_are_refused(shard: int, n_shards: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        split_count(10, shard, n_shards)
    with pytest.raises(ValueError, match="shard"):
        vu_schedule(RAMP_UP, shard, n_shards)
    with pytest.raises(ValueError, match="shard"):
        ArrivalSchedule([Phase(1.0, 1.0)], shard, n_shards)


def test_vu_schedule_lists_each_shards_changes_in_order() -> None:
    stages = [Stage(10.0, 10), Stage(5.0, 10), Stage(10.0, 0)]
    assert vu_schedule(stages, 0, 3) == [
        (0.0, 0),
        (1.0, 1),
        (4.0, 2),
        (7.0, 3),
        (10.0, 4),
        (16.0, 3),
        (19.0, 2),
        (22.0, 1),
        (25.0, 0),
    ]
    assert vu_schedule(stages, 2, 3) == [
        (0.0, 0),
        (3.0, 1),
        (6.0, 2),
        (9.0, 3),
        (17.0, 2),
        (20.0, 1),
        (23.0, 0),
    ]


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([Stage(0.0, 5), Stage(0.0, 2), Stage(5.0, 2)], [(0.0, 2)]),
        ([Stage(5.0, 0), Stage(0.0, 4), Stage(0.0, 0)], [(0.0, 0)]),
        ([Stage(1.0, 2), Stage(0.0, 0), Stage(0.0, 3)], [(0.0, 0), (0.5, 1), (1.0, 3)]),
        ([], [(0.0, 0)]),
    ],
)
def test_vu_schedule_collapses_changes_at_one_instant(
    stages: list[Stage], expected: list[tuple[float, int]]
) -> None:
    assert vu_schedule(stages, 0, 1) == expected


def test_vu_schedule_handles_a_hundred_thousand_vus_exactly() -> None:
    stages = [Stage(60.0, 100_000), Stage(60.0, 100_000), Stage(60.0, 0)]
    schedules = [vu_schedule(stages, i, 4) for i in range(4)]
    for i, schedule in enumerate(schedules):
        # One start and one stop per VU of the shard, after the initial entry.
        assert len(schedule) == 1 + 2 * 25_000
        assert count_at(schedule, 90.0) == 25_000
        # VU i is the shard's last to stop: when the line comes down to i.
        assert schedule[-1] == (pytest.approx(180.0 - 60.0 * i / 100_000), 0)
    for t in (0.0, 0.0006, 0.6, 30.00003, 59.9994, 60.0, 130.0, 179.9994, 180.0):
        assert sum(count_at(s, t) for s in schedules) == vus_at(stages, t)


@settings(deadline=None, max_examples=200)
@given(stages=stage_lists, n_shards=st.integers(1, 8), extra=st.lists(durations))
def test_vu_schedule_of_all_shards_adds_up_to_vus_at_every_instant(
    stages: list[Stage], n_shards: int, extra: list[float]
) -> None:
    schedules = [vu_schedule(stages, i, n_shards) for i in range(n_shards)]
    crossings = [at for s in schedules for at, _ in s]
    for schedule in schedules:
        times = [at for at, _ in schedule]
        counts = [c for _, c in schedule]
        assert times[0] == 0.0
        assert all(a < b for a, b in itertools.pairwise(times))
        assert all(a != b for a, b in itertools.pairwise(counts))
    for t in probe_instants(stages, crossings + extra):
        total = vus_at(stages, t)
        shares = [count_at(s, t) for s in schedules]
        assert shares == [split_count(total, i, n_shards) for i in range(n_shards)]
        assert sum(shares) == total


# Open model: rate and its integral ----------------------------------------------------

STEADY = [Phase(30.0, 200.0)]
WARM_UP = [Phase(10.0, 0.0, ramp_to=100.0), Phase(10.0, 100.0, ramp_to=0.0)]
WITH_PAUSE = [Phase(1.0, 10.0), Phase(5.0, 0.0), Phase(0.0, 99.0), Phase(1.0, 10.0)]


@pytest.mark.parametrize(
    ("phases", "t", "rate", "index"),
    [
        (STEADY, -0.5, 0.0, None),
        (STEADY, 0.0, 200.0, 0),
        (STEADY, 29.999, 200.0, 0),
        (STEADY, 30.0, 0.0, None),
        (WARM_UP, 0.0, 0.0, 0),
        (WARM_UP, 2.5, 25.0, 0),
        (WARM_UP, 10.0, 100.0, 1),
        (WARM_UP, 17.5, 25.0, 1),
        (WARM_UP, 20.0, 0.0, None),
        (WITH_PAUSE, 0.5, 10.0, 0),
        (WITH_PAUSE, 1.0, 0.0, 1),
        (WITH_PAUSE, 6.0, 10.0, 3),
        ([], 0.0, 0.0, None),
    ],
)
def test_rate_at_and_phase_at_follow_the_phases(
    phases: list[Phase], t: float, rate: float, index: int | None
) -> None:
    assert rate_at(phases, t) == pytest.approx(rate)
    found = phase_at(phases, t)
    assert (None if found is None else found[0]) == index
    if found is not None:
        assert found[1] is phases[found[0]]


@pytest.mark.parametrize(
    ("phases", "t", "expected"),
    [
        (STEADY, 0.0, 0.0),
        (STEADY, 1.5, 300.0),
        (STEADY, 30.0, 6000.0),
        (STEADY, 99.0, 6000.0),
        (WARM_UP, 5.0, 125.0),
        (WARM_UP, 10.0, 500.0),
        (WARM_UP, 15.0, 875.0),
        (WARM_UP, 20.0, 1000.0),
        (WITH_PAUSE, 3.0, 10.0),
        (WITH_PAUSE, 6.5, 15.0),
        (WITH_PAUSE, 7.0, 20.0),
        ([], 3.0, 0.0),
    ],
)
def test_cumulative_arrivals_integrates_the_rate(
    phases: list[Phase], t: float, expected: float
) -> None:
    assert cumulative_arrivals(phases, t) == pytest.approx(expected)


@settings(deadline=None)
@given(phases=phase_lists, fraction=st.floats(0.0, 1.0))
def test_cumulative_arrivals_matches_numeric_integration(
    phases: list[Phase], fraction: float
) -> None:
    end = sum(p.duration_s for p in phases)
    t = end * fraction
    steps = 20_000
    h = t / steps
    # The midpoint rule is exact on each linear piece; only the steps that straddle
    # a phase boundary (a jump of at most 50/s) are off, by at most h * 50 each.
    numeric = sum(rate_at(phases, (i + 0.5) * h) for i in range(steps)) * h
    tolerance = 1e-9 * max(1.0, numeric) + (len(phases) + 1) * h * 50.0
    assert abs(cumulative_arrivals(phases, t) - numeric) <= tolerance


@settings(deadline=None)
@given(phases=phase_lists, fraction=st.floats(0.0, 1.0))
def test_inverse_cumulative_undoes_cumulative(
    phases: list[Phase], fraction: float
) -> None:
    end = sum(p.duration_s for p in phases)
    t = end * fraction
    a = cumulative_arrivals(phases, t)
    back = inverse_cumulative(phases, a)
    assert back is not None
    assert cumulative_arrivals(phases, back) == pytest.approx(a, rel=1e-9, abs=1e-9)
    rate = rate_at(phases, t)
    if rate > 0:
        # The inverse is as exact as the cumulative divided by the rate: close to
        # where a ramp reaches 0, a rounding error in ``a`` moves the instant a lot.
        assert abs(back - t) <= 1e-9 + 1e-13 * max(1.0, a) / rate
    found = phase_at(phases, t)
    if found is not None and found[1].rate == 0 and found[1].end_rate == 0:
        # On a stretch at rate 0 the inverse is where that stretch ends.
        index = found[0]
        assert back >= sum(p.duration_s for p in phases[: index + 1])


@pytest.mark.parametrize(
    ("phases", "a", "expected"),
    [
        (STEADY, 0.0, 0.0),
        (STEADY, 1.0, 0.005),
        (STEADY, 6000.0, 30.0),
        (STEADY, 6000.5, None),
        (WARM_UP, 0.0, 0.0),
        (WARM_UP, 5.0, 1.0),
        (WARM_UP, 500.0, 10.0),
        (WARM_UP, 995.0, 19.0),
        (WARM_UP, 1000.0, 20.0),
        (WITH_PAUSE, 10.0, 6.0),
        (WITH_PAUSE, 20.0, 7.0),
        ([Phase(5.0, 0.0), Phase(1.0, 10.0)], 0.0, 5.0),
        ([Phase(1.0, 0.0, ramp_to=1e-12)], 0.5e-12, 1.0),
        ([Phase(1.0, 1.0, ramp_to=1.0 + 1e-12)], 0.5, 0.5),
        ([], 0.0, 0.0),
        ([], 1.0, None),
    ],
)
def test_inverse_cumulative_is_exact_on_ramps_and_pauses(
    phases: list[Phase], a: float, expected: float | None
) -> None:
    got = inverse_cumulative(phases, a)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_inverse_cumulative_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="negative"):
        inverse_cumulative(STEADY, -1.0)


# Open model: arrivals -----------------------------------------------------------------


def test_uniform_arrivals_split_exactly_between_two_shards() -> None:
    shard0 = list(ArrivalSchedule(STEADY, 0, 2))
    shard1 = list(ArrivalSchedule(STEADY, 1, 2))
    assert total_arrivals(STEADY) == 6000
    assert len(shard0) == len(shard1) == 3000
    assert shard0[:3] == pytest.approx([0.0, 0.01, 0.02])
    assert shard1[:3] == pytest.approx([0.005, 0.015, 0.025])
    merged = [t for pair in zip(shard0, shard1, strict=True) for t in pair]
    assert merged == sorted(merged)
    assert merged == pytest.approx([k / 200 for k in range(6000)])
    assert max(merged) < 30.0


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (STEADY, 6000),
        ([Phase(1.0, 10.5)], 11),
        ([Phase(10.0, 0.0, ramp_to=100.0)], 500),
        ([Phase(10.0, 100.0, ramp_to=0.0)], 500),
        ([Phase(5.0, 0.0), Phase(0.0, 50.0)], 0),
        ([Phase(3 * 0.1, 200.0)], 60),
        ([], 0),
    ],
)
def test_total_arrivals_is_the_ceiling_of_the_integral(
    phases: list[Phase], expected: int
) -> None:
    assert total_arrivals(phases) == expected
    assert len(list(ArrivalSchedule(phases))) == expected


def test_uniform_arrivals_on_a_ramp_land_where_the_integral_reaches_each_count() -> (
    None
):
    times = list(ArrivalSchedule(WARM_UP))
    assert len(times) == 1000
    for k, t in enumerate(times):
        assert cumulative_arrivals(WARM_UP, t) == pytest.approx(k, abs=1e-6)
    # Rising from 0, arrival k comes at sqrt(2k / slope) with a slope of 10/s².
    assert times[10] == pytest.approx(math.sqrt(2.0))
    assert times[-1] < 20.0


@settings(deadline=None)
@given(phases=phase_lists, n_shards=st.integers(1, 8))
def test_uniform_shards_interleave_into_the_single_schedule(
    phases: list[Phase], n_shards: int
) -> None:
    single = list(ArrivalSchedule(phases))
    shards = [list(ArrivalSchedule(phases, i, n_shards)) for i in range(n_shards)]
    total = total_arrivals(phases)
    assert len(single) == total
    assert [len(s) for s in shards] == [
        split_count(total, i, n_shards) for i in range(n_shards)
    ]
    assert sorted(t for s in shards for t in s) == sorted(single)
    for i, s in enumerate(shards):
        assert s == single[i::n_shards]
    end = sum(p.duration_s for p in phases)
    assert all(0.0 <= t <= end for t in single)
    assert single == sorted(single)
    for t in single:
        found = phase_at(phases, t)
        assert found is not None
        assert found[1].rate > 0 or (found[1].ramp_to or 0.0) > 0


@pytest.mark.parametrize("arrivals", ["uniform", "poisson"])
def test_rate_zero_phases_get_no_arrivals(arrivals: str) -> None:
    phases = [Phase(2.0, 400.0), Phase(5.0, 0.0), Phase(2.0, 400.0), Phase(3.0, 0.0)]
    times = list(ArrivalSchedule(phases, 0, 1, arrivals, seed=7))  # type: ignore[arg-type]
    assert times
    assert not [t for t in times if 2.0 <= t < 7.0 or t >= 9.0]
    assert {t < 2.0 for t in times} == {True, False}


def test_arrival_schedule_reports_the_phase_of_each_arrival() -> None:
    phases = [Phase(1.0, 4.0, name="warm"), Phase(1.0, 0.0), Phase(1.0, 2.0)]
    schedule = ArrivalSchedule(phases)
    seen = [(next(schedule), schedule.phase_index) for _ in range(6)]
    assert seen == [
        (0.0, 0),
        (0.25, 0),
        (0.5, 0),
        (0.75, 0),
        (2.0, 2),
        (2.5, 2),
    ]
    assert schedule.emitted == 6
    with pytest.raises(StopIteration):
        next(schedule)


def test_arrival_schedule_refuses_an_unknown_arrival_kind() -> None:
    with pytest.raises(ValueError, match="uniform"):
        ArrivalSchedule(STEADY, arrivals="bursty")  # type: ignore[arg-type]


def test_poisson_arrivals_have_the_profiles_count_and_exponential_gaps() -> None:
    phases = [Phase(120.0, 500.0)]
    times = list(ArrivalSchedule(phases, 0, 1, "poisson", seed=12345))
    expected = total_cumulative(phases)
    assert abs(len(times) - expected) <= 4 * math.sqrt(expected)
    assert 0.9 <= cv(gaps(times)) <= 1.1
    assert times == sorted(times)
    assert times[0] > 0.0
    assert times[-1] < 120.0


def test_poisson_shards_merge_into_a_poisson_process() -> None:
    phases = [Phase(30.0, 2000.0)]
    shards = [list(ArrivalSchedule(phases, i, 4, "poisson", seed=99)) for i in range(4)]
    merged = sorted(t for s in shards for t in s)
    expected = total_cumulative(phases)
    assert abs(len(merged) - expected) <= 4 * math.sqrt(expected)
    for s in shards:
        assert abs(len(s) - expected / 4) <= 4 * math.sqrt(expected / 4)
    assert 0.9 <= cv(gaps(merged)) <= 1.1
    # Counts in 100 ms windows: a Poisson process has variance equal to the mean.
    windows = [0] * 300
    for t in merged:
        windows[int(t * 10)] += 1
    dispersion = statistics.pvariance(windows) / statistics.fmean(windows)
    assert 0.7 <= dispersion <= 1.3
    assert len({s[0] for s in shards}) == 4


def test_poisson_arrivals_follow_a_ramp() -> None:
    phases = [Phase(20.0, 0.0, ramp_to=2000.0)]
    times = list(ArrivalSchedule(phases, 0, 1, "poisson", seed=5))
    for lo, hi in [(0.0, 10.0), (10.0, 15.0), (15.0, 20.0)]:
        n = sum(1 for t in times if lo <= t < hi)
        expected = cumulative_arrivals(phases, hi) - cumulative_arrivals(phases, lo)
        assert abs(n - expected) <= 4 * math.sqrt(expected)


def test_poisson_arrivals_are_reproducible_per_seed_and_shard() -> None:
    def first(shard: int, seed: int) -> list[float]:
        schedule = ArrivalSchedule(STEADY, shard, 2, "poisson", seed=seed)
        return [next(schedule) for _ in range(20)]

    assert first(0, 1) == first(0, 1)
    assert first(0, 1) != first(1, 1)
    assert first(0, 1) != first(0, 2)


# Both models --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "offered", "name"),
    [
        (-1.0, 0.0, "stage-1"),
        (5.0, 5.0, "stage-1"),
        (12.0, 10.0, "hold"),
        (30.0, 10.0, "hold"),
    ],
)
def test_closed_model_offers_the_profiles_vus(
    t: float, offered: float, name: str
) -> None:
    model = ClosedModel((Stage(10.0, 10), Stage(0.0, 10), Stage(10.0, 10, "hold")))
    assert offered_at(model, t) == offered
    assert phase_name_at(model, t) == name


@pytest.mark.parametrize(
    ("t", "offered", "name"),
    [
        (0.0, 10.0, "phase-1"),
        (15.0, 20.0, "peak"),
        (25.0, 0.0, "phase-3"),
        (40.0, 0.0, "phase-3"),
    ],
)
def test_open_model_offers_the_arrival_rate(
    t: float, offered: float, name: str
) -> None:
    model = OpenModel(
        (
            Phase(10.0, 10.0),
            Phase(10.0, 10.0, ramp_to=30.0, name="peak"),
            Phase(10.0, 0.0),
        )
    )
    assert offered_at(model, t) == pytest.approx(offered)
    assert phase_name_at(model, t) == name


def test_phase_name_of_an_empty_model_is_empty() -> None:
    assert phase_name_at(OpenModel(()), 1.0) == ""
    assert phase_name_at(ClosedModel(()), 1.0) == ""
