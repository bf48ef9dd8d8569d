"""The live view: one line per window on the terminal while a run goes on.

On a terminal the line is rewritten in place every second; when stdout is a file or a
pipe (CI logs), a plain line is printed every ``interval_s`` seconds instead, covering
the whole interval. The figures come from the workers' one-second snapshots, not from
the records: they are a view, and the Parquet rows stay the truth.
"""

from __future__ import annotations

import contextlib
import os
from typing import TextIO

from .durations import format_duration
from .livestats import WindowStats


def _fmt_ms(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.1f}ms"


def format_target(cpu_percent: float | None, rss_bytes: int) -> str:
    """The monitored target's figures beside the request figures: CPU percent of
    one core (a process tree may pass 100) and resident memory in MiB, summed over
    the tree at the monitor's latest sample."""
    cpu = "-" if cpu_percent is None else f"{cpu_percent:.0f}%"
    return f"target cpu {cpu} rss {rss_bytes / 2**20:.1f}MiB"


class LiveView:
    def __init__(
        self,
        stream: TextIO,
        total_s: float,
        *,
        tty: bool | None = None,
        interval_s: float = 5.0,
        offered_unit: str = "/s",
    ) -> None:
        self.stream = stream
        self.total_s = total_s
        self.tty = stream.isatty() if tty is None else tty
        self.interval_s = 1.0 if self.tty else max(1.0, interval_s)
        self.offered_unit = offered_unit
        self._pending = WindowStats()
        self._pending_seconds = 0
        self._line_open = False
        self._last: tuple[int, str, float, int, str] = (0, "", 0.0, 0, "")
        self.total_requests = 0
        self.total_errors = 0

    def window(
        self,
        second: int,
        stats: WindowStats,
        *,
        phase: str,
        offered: float,
        active_vus: int,
        target: str = "",
    ) -> None:
        """Show one finished second (``stats`` covers [second, second + 1))."""
        self.total_requests += stats.requests
        self.total_errors += stats.error_count
        self._pending.merge(stats)
        self._pending_seconds += 1
        self._last = (second, phase, offered, active_vus, target)
        if self._pending_seconds >= self.interval_s:
            self._show()

    def _show(self) -> None:
        second, phase, offered, active_vus, target = self._last
        window, seconds = self._pending, self._pending_seconds
        self._pending, self._pending_seconds = WindowStats(), 0
        elapsed = format_duration(second + 1)
        total = format_duration(self.total_s)
        errors = window.error_count
        error_text = f"{errors}"
        if errors:
            top = max(window.errors.items(), key=lambda kv: kv[1])[0]
            error_text += f" ({top})"
        line = (
            f"{elapsed}/{total} {phase:<14.14} offered {offered:7.1f}"
            f"{self.offered_unit} achieved {window.requests / seconds:8.1f} req/s "
            f"it {window.iterations / seconds:6.1f}/s vus {active_vus:5d} "
            f"err {error_text} p95 {_fmt_ms(window.quantile_ns(0.95))}"
        )
        if window.dropped:
            line += f" dropped {window.dropped}"
        if target:
            line += f" {target}"
        if self.tty:
            self._write("\r\x1b[2K" + line)
            self._line_open = True
        else:
            self._write(line + "\n")

    def message(self, text: str) -> None:
        """A line that must stay on screen (a worker exit, a stop request)."""
        if self._line_open:
            self._line_open = False
            self._write("\n" + text + "\n")
        else:
            self._write(text + "\n")

    def close(self) -> None:
        """Show the seconds not shown yet (the tail of the run), end the line."""
        if self._pending_seconds:
            self._show()
        if self._line_open:
            self._line_open = False
            self._write("\n")

    def _write(self, text: str) -> None:
        """Write and flush; a stream that fails (a terminal that hung up, a pipe
        whose reader left) is replaced by /dev/null, so that the run, which
        still has records to write, goes on without its live view."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            silence(self.stream)


def silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null (what is still buffered
    goes there too); harmless for a stream without one."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
