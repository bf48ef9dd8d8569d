"""Durations as people write them in profiles and on the command line.

A duration is either a plain number of seconds (``10``, ``0.5``) or a string made of
one or more ``<number><unit>`` parts, largest unit first, each unit at most once:
``500ms``, ``10s``, ``2m``, ``1h``, ``1h30m``, ``1.5s``, ``2m30s500ms``. Units are
``h``, ``m``, ``s`` and ``ms``. A bare number in a string (``"10"``) is seconds too.
Negative, infinite and malformed values are refused; whether zero is acceptable is
the caller's decision, since a think time may be zero but a phase may not.
"""

from __future__ import annotations

import math
import re

UNIT_S: dict[str, float] = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
"""Seconds per unit, in the order the parts of one duration must appear."""

_UNIT_ORDER = tuple(UNIT_S)
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|h|m|s)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")
ACCEPTED_FORM = "a number of seconds or text like 500ms, 10s, 2m, 1h, 1h30m or 1.5s"


class DurationError(ValueError):
    """A value is not a duration. ``problem`` names the value, ``fix`` the form."""

    def __init__(self, problem: str, fix: str = f"write {ACCEPTED_FORM}") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}")


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds, or raise :class:`DurationError`."""
    if isinstance(value, bool):
        raise DurationError(f"expected a duration, got the boolean {value!r}")
    if isinstance(value, int | float):
        return _checked(float(value), value)
    if not isinstance(value, str):
        raise DurationError(f"expected a duration, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("-"):
        raise DurationError(f"duration {value!r} is negative")
    if _NUMBER.fullmatch(text):
        return _checked(float(text), value)
    return _checked(_parse_parts(text, value), value)


def _parse_parts(text: str, original: str) -> float:
    total = 0.0
    position = 0
    previous_rank = -1
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        number, unit = match.groups()
        rank = _UNIT_ORDER.index(unit)
        if rank <= previous_rank:
            raise DurationError(
                f"duration {original!r} repeats a unit or lists it out of order",
                "write the largest unit first, each once, as in 1h30m",
            )
        previous_rank = rank
        total += float(number) * UNIT_S[unit]
        position = match.end()
    if position != len(text) or not text:
        raise DurationError(f"{original!r} is not a duration")
    return total


def _checked(seconds: float, original: object) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise DurationError(f"duration {original!r} is not a finite number")
    if seconds < 0:
        raise DurationError(f"duration {original!r} is negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Show ``seconds`` as a profile would write them: ``1h30m``, ``1.5s``, ``250ms``.

    :func:`parse_duration` reads the result back to within a microsecond.
    """
    if math.isnan(seconds) or math.isinf(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    # Rounded to the microsecond first so 59.9999999 s shows as 1m, not 59.999999999s.
    micros = round(seconds * 1_000_000)
    if micros == 0:
        return "0s"
    if micros < 1_000_000:
        return f"{_trim(micros / 1000)}ms"
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    text = ""
    if hours:
        text += f"{hours}h"
    if minutes:
        text += f"{minutes}m"
    if micros:
        text += f"{_trim(micros / 1_000_000)}s"
    return text or "0s"


def _trim(number: float) -> str:
    """Up to six decimals, without trailing zeros."""
    return f"{number:.6f}".rstrip("0").rstrip(".")
