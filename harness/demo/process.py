"""Run the demo target as a child process, for tests, the demo command and benchmarks.

The child is ``python -m harness.demo`` with the same interpreter. The parent reads
its one ``listening on URL`` line (which the child prints only once signals are routed
to its event loop, so a SIGTERM right after it is still a clean stop) and from then on
talks HTTP to it. The child's stderr goes to an unnamed temporary file rather than a
pipe: nobody has to drain it, and its tail explains a failed start.

The child is never left behind: :meth:`DemoTarget.stop` ends it, a finalizer kills it
if the parent forgets (or exits), and the child itself stops when it sees its parent
gone (``--parent-pid``), which covers a parent killed without a chance to clean
up.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from types import TracebackType
from typing import IO, Any

from ..errors import TargetError

STOP_TIMEOUT_S = 10.0
"""How long :meth:`DemoTarget.stop` waits after SIGTERM before it kills."""
STDERR_TAIL_BYTES = 4000

_LISTENING = re.compile(rb"^listening on (http://(?:\[[^\]]+\]|[^:/\s]+):(\d+))\s*$")

# Loopback must never go through a proxy configured in the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _kill(proc: subprocess.Popen[bytes], files: tuple[IO[bytes], ...]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for f in files:
        f.close()


def _tail(stderr: IO[bytes]) -> str:
    stderr.flush()
    size = stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, size - STDERR_TAIL_BYTES))
    return stderr.read().decode("utf-8", "replace").strip()


class DemoTarget:
    """A running demo target child process. Use :meth:`start`, ideally as a
    context manager."""

    url: str
    pid: int
    port: int

    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, port: int, stderr: IO[bytes]
    ) -> None:
        self._proc = proc
        self._stderr = stderr
        self._stderr_at_stop = ""
        self.url = url
        self.pid = proc.pid
        self.port = port
        assert proc.stdout is not None
        self._finalizer = weakref.finalize(self, _kill, proc, (proc.stdout, stderr))

    @classmethod
    def start(
        cls,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        workers: int | None = None,
        service_ms: float | None = None,
        leak_bytes_per_request: int | None = None,
        latency_drift_ms_per_min: float | None = None,
        error_rate: float | None = None,
        stall_every_s: float | None = None,
        stall_ms: float | None = None,
        seed: int | None = None,
        keep_items: int | None = None,
        timeout_s: float = 15.0,
    ) -> DemoTarget:
        """Start the target and wait (up to ``timeout_s``) until it listens.

        Options left at None use the target's defaults. Raises
        :class:`~harness.errors.TargetError` if it exits or stays silent first.
        """
        args = [sys.executable, "-m", "harness.demo", "--parent-pid", str(os.getpid())]
        args += ["--host", host, "--port", str(port)]
        for option, value in (
            ("--workers", workers),
            ("--service-ms", service_ms),
            ("--leak-bytes-per-request", leak_bytes_per_request),
            ("--latency-drift-ms-per-min", latency_drift_ms_per_min),
            ("--error-rate", error_rate),
            ("--stall-every-s", stall_every_s),
            ("--stall-ms", stall_ms),
            ("--seed", seed),
            ("--keep-items", keep_items),
        ):
            if value is not None:
                args += [option, str(value)]
        # The file lives as long as the target; stop() or the finalizer closes it.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
        assert proc.stdout is not None
        try:
            url, bound_port = _wait_listening(proc, stderr, timeout_s)
        except BaseException:
            _kill(proc, (proc.stdout, stderr))
            raise
        return cls(proc, url, bound_port, stderr)

    def stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The target's ``GET /_demo/stats`` answer."""
        with _opener.open(f"{self.url}/_demo/stats", timeout=timeout_s) as response:
            stats: dict[str, Any] = json.load(response)
        return stats

    def stderr_tail(self) -> str:
        """The end of what the target wrote to stderr (its log), also after stop."""
        if self._stderr.closed:
            return self._stderr_at_stop
        return _tail(self._stderr)

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit code (0 on a clean stop).

        Kills the target if it has not exited after :data:`STOP_TIMEOUT_S`. Calling
        it again returns the same code.
        """
        proc = self._proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not self._stderr.closed:
            self._stderr_at_stop = _tail(self._stderr)
        self._finalizer()
        return proc.returncode

    def __enter__(self) -> DemoTarget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DemoTarget(url={self.url!r}, pid={self.pid})"


def _wait_listening(
    proc: subprocess.Popen[bytes], stderr: IO[bytes], timeout_s: float
) -> tuple[str, int]:
    """Read the child's first stdout line; return its URL and port."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in seen:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise TargetError(
                    f"the demo target (pid {proc.pid}) did not report its address "
                    f"within {timeout_s:g} s; raise timeout_s on a slow machine."
                    + _stderr_note(stderr)
                )
            if not selector.select(remaining_s):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    line = seen.split(b"\n", 1)[0]
    match = _LISTENING.match(line)
    if match is None:
        try:
            code = proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        how = f"exited with code {code}" if code is not None else "did not start"
        raise TargetError(
            f"the demo target {how} before listening." + _stderr_note(stderr)
        )
    return match.group(1).decode(), int(match.group(2))


def _stderr_note(stderr: IO[bytes]) -> str:
    tail = _tail(stderr)
    return (
        f"\n  its stderr ends with:\n{tail}" if tail else " It wrote nothing to stderr."
    )
