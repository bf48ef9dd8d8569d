"""The terminal view, written to a StringIO standing in for a terminal or a CI log."""

from __future__ import annotations

import io
import re

import pytest

from harness.live import LiveView
from harness.livestats import WindowStats

ERASE_LINE = "\r\x1b[2K"


def second_of(
    requests: int,
    *,
    latency_ns: int = 2_000_000,
    errors: dict[str, int] | None = None,
    iterations: int = 0,
    dropped: int = 0,
) -> WindowStats:
    stats = WindowStats()
    failed = [kind for kind, n in (errors or {}).items() for _ in range(n)]
    for i in range(requests):
        stats.add(latency_ns, failed[i] if i < len(failed) else None, 100)
    stats.iterations = iterations
    stats.dropped = dropped
    return stats


def show(
    view: LiveView,
    second: int,
    stats: WindowStats,
    *,
    phase: str = "steady",
    offered: float = 50.0,
    active_vus: int = 7,
) -> None:
    view.window(second, stats, phase=phase, offered=offered, active_vus=active_vus)


def achieved(line: str) -> float:
    match = re.search(r"achieved\s+([\d.]+) req/s", line)
    assert match is not None, line
    return float(match.group(1))


def test_a_plain_stream_gets_one_line_per_interval_averaged_over_it() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, interval_s=5)
    assert not view.tty
    for second, n in enumerate([10, 20, 30, 40]):
        show(view, second, second_of(n, iterations=n // 2))
    assert stream.getvalue() == ""

    show(view, 4, second_of(50, iterations=25))

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert stream.getvalue().endswith("\n")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    # 150 requests over 5 seconds, not the last second's 50.
    assert achieved(lines[0]) == pytest.approx(30.0)
    assert re.search(r"it\s+15\.0/s", lines[0])
    assert lines[0].startswith("5s/1m ")


def test_the_next_interval_starts_afresh() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=10, interval_s=2)
    for second, n in enumerate([100, 100, 4, 6]):
        show(view, second, second_of(n))
    lines = stream.getvalue().splitlines()
    assert [achieved(line) for line in lines] == [100.0, 5.0]
    assert lines[1].startswith("4s/10s ")
    assert view.total_requests == 210


def test_a_plain_stream_never_prints_more_often_than_each_second() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=3, interval_s=0.1)
    for second in range(3):
        show(view, second, second_of(4))
    assert len(stream.getvalue().splitlines()) == 3


def test_a_terminal_line_is_rewritten_in_place_every_second() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, tty=True, interval_s=5)
    show(view, 0, second_of(10))
    show(view, 1, second_of(30))
    text = stream.getvalue()
    assert "\n" not in text
    assert text.count(ERASE_LINE) == 2
    first, second = text.split(ERASE_LINE)[1:]
    assert achieved(first) == 10.0
    assert achieved(second) == 30.0
    assert second.startswith("2s/1m ")

    view.close()
    assert stream.getvalue().endswith("\n")
    assert stream.getvalue().count("\n") == 1


def test_a_message_ends_the_open_line_first() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, tty=True)
    show(view, 0, second_of(10))
    view.message("worker 1 (pid 4242) exited with code -9 at 0.5s")
    text = stream.getvalue()
    live, message, rest = text.split("\n")
    assert live.startswith(ERASE_LINE)
    assert message == "worker 1 (pid 4242) exited with code -9 at 0.5s"
    assert rest == ""

    # Nothing is open now, so a second message and close add no blank lines.
    view.message("stopping now")
    view.close()
    assert stream.getvalue().endswith("at 0.5s\nstopping now\n")


def test_a_message_on_a_plain_stream_adds_no_blank_line() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, interval_s=1)
    show(view, 0, second_of(10))
    view.message("stopping")
    view.close()
    lines = stream.getvalue().split("\n")
    assert len(lines) == 3
    assert lines[1:] == ["stopping", ""]


def test_dropped_arrivals_are_shown_when_there_are_any() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, interval_s=2)
    show(view, 0, second_of(10, dropped=3))
    show(view, 1, second_of(10, dropped=4))
    show(view, 2, second_of(10))
    show(view, 3, second_of(10))
    with_drops, without = stream.getvalue().splitlines()
    assert with_drops.endswith(" dropped 7")
    assert "dropped" not in without


def test_errors_show_their_count_and_the_most_frequent_kind() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, interval_s=2)
    show(view, 0, second_of(20, errors={"check": 2, "read_timeout": 3}))
    show(view, 1, second_of(20, errors={"check": 4}))
    show(view, 2, second_of(20))
    show(view, 3, second_of(20))
    with_errors, clean = stream.getvalue().splitlines()
    assert "err 9 (check)" in with_errors
    assert re.search(r"err 0 p95", clean)
    assert view.total_errors == 9
    assert view.total_requests == 80


def test_the_line_shows_phase_offered_load_vus_and_p95() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=90, interval_s=1, offered_unit=" VUs")
    view.window(
        0,
        second_of(10, latency_ns=40_000_000),
        phase="ramp up",
        offered=12.0,
        active_vus=12,
        target="cpu 35%",
    )
    line = stream.getvalue().rstrip("\n")
    assert line.startswith("1s/1m30s ramp up ")
    assert "offered    12.0 VUs" in line
    assert re.search(r"vus\s+12 ", line)
    # The p95 is the bucket edge above 40 ms, never below the real value.
    p95 = re.search(r"p95 ([\d.]+)ms", line)
    assert p95 is not None
    assert 40.0 <= float(p95.group(1)) <= 50.0
    assert line.endswith(" cpu 35%")


def test_an_interval_without_requests_shows_no_p95() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, interval_s=1)
    show(view, 0, WindowStats())
    assert "p95 -" in stream.getvalue()
    assert achieved(stream.getvalue()) == 0.0


def test_close_without_an_open_line_writes_nothing() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=60, tty=True)
    view.close()
    view.close()
    assert stream.getvalue() == ""


def test_close_shows_the_seconds_of_an_unfinished_interval() -> None:
    stream = io.StringIO()
    view = LiveView(stream, total_s=3, interval_s=5)
    for second in range(3):
        show(view, second, second_of(9))
    view.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert achieved(lines[0]) == 9.0
