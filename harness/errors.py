"""The harness's own errors.

Every error the harness raises on purpose derives from :class:`HarnessError`, and
carries the exit code the command line returns for it:

* :class:`ProfileError` - a profile (or a command-line value standing in for one) is
  wrong. It names the file, the line, the field path and how to fix it. Exit code 2.
* :class:`TargetError` - the demo target or another service the harness starts could
  not be brought up. Exit code 3.
* :class:`RunError` - a run could not be carried out (no worker started, the output
  folder cannot be written). Exit code 3.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_THRESHOLDS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RUN_ERROR = 3
EXIT_INTERRUPTED = 130


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = EXIT_RUN_ERROR


@dataclass(frozen=True, slots=True)
class Location:
    """Where in a profile something is: file, 1-based line, and field path."""

    file: str
    line: int | None
    path: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}" if self.path else where


class ProfileError(HarnessError):
    """A profile is invalid. The message says what, where and how to fix it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, location: Location, problem: str, fix: str = "") -> None:
        self.location = location
        self.problem = problem
        self.fix = fix
        text = f"{location}: {problem}"
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class UsageError(HarnessError):
    """A command-line value is invalid (not tied to a profile file)."""

    exit_code = EXIT_BAD_INPUT


class TargetError(HarnessError):
    """A target the harness was asked to start or reach is not usable."""

    exit_code = EXIT_RUN_ERROR


class RunError(HarnessError):
    """A run could not be carried out."""

    exit_code = EXIT_RUN_ERROR
