from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (10, 10.0),
        (0, 0.0),
        (0.25, 0.25),
        ("10", 10.0),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2m30s500ms", 150.5),
        (" 3s ", 3.0),
    ],
)
def test_parse_duration_reads_numbers_and_unit_text(
    value: object, seconds: float
) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("-1s", "negative"),
        (-5, "negative"),
        ("10 seconds", "not a duration"),
        ("1h 30m", "not a duration"),
        ("1h30", "not a duration"),
        ("ms", "not a duration"),
        ("", "not a duration"),
        ("1.5.5s", "not a duration"),
        ("30m1h", "out of order"),
        ("1s1s", "repeats a unit"),
        (True, "boolean"),
        (None, "NoneType"),
        ([1], "list"),
        (math.inf, "finite"),
        (math.nan, "finite"),
    ],
)
def test_parse_duration_refuses_malformed_and_negative_values(
    value: object, fragment: str
) -> None:
    with pytest.raises(DurationError, match=fragment) as caught:
        parse_duration(value)
    assert caught.value.fix.startswith("write ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.0005, "0.5ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (59.9999999, "1m"),
        (172800, "48h"),
    ],
)
def test_format_duration_writes_the_profile_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_format_duration_reads_back_within_a_microsecond(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-6)
