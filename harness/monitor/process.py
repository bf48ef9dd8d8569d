"""Processes: finding the target, starting it, and sampling process trees.

The target is a process tree: a root found by pid, by the TCP port it listens on, by
its process name, or started here from a command. At every sample the root's
descendants are listed again (``children(recursive=True)``), so workers that a
pre-forking server starts and stops along the way are followed; each process gives
one row with its own pid.

CPU percent is computed here from successive ``cpu_times()`` readings (user plus
system) over the monotonic time between them, per process. The first reading of a
process only primes it, so a process's first row has a null ``cpu_percent``: a
percentage over an unknown span would be invented.

Processes are identified by pid and creation time, so a pid reused by an unrelated
process is never mistaken for the one that exited. A process that died but has not
been reaped by its parent (a zombie) counts as gone.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import psutil

from ..errors import TargetError
from .base import MonitorError, Row

log = logging.getLogger("harness.monitor")

READY_POLL_S = 0.1
READY_REQUEST_TIMEOUT_S = 2.0
LOG_TAIL_BYTES = 2000

EventSink = Callable[[str, dict[str, object]], None]
"""Where a sampler reports an event: kind and data (the monitor adds the time)."""


# -- finding a process -----------------------------------------------------------------


def loopback_port(url: str) -> int | None:
    """The port of ``url`` when its host is this machine's loopback, else None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            return None
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return port


def describe_process(proc: psutil.Process) -> str:
    """``pid 1234 (nginx)``: enough to tell candidates apart. The command line is
    left out on purpose: it may carry a password."""
    try:
        return f"pid {proc.pid} ({proc.name()})"
    except psutil.Error:
        return f"pid {proc.pid}"


def is_alive(proc: psutil.Process) -> bool:
    """True while ``proc`` runs (a zombie, dead but not reaped, does not count)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_by_pid(pid: int) -> psutil.Process:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise MonitorError(
            f"--monitor-pid / monitor.target.pid {pid}: no process has this pid; "
            "check it with `ps -p PID` (the service may have restarted with a new "
            "pid), or find the target by port or name instead"
        ) from None
    except psutil.AccessDenied:
        raise MonitorError(
            f"monitor target pid {pid}: not allowed to read this process; run the "
            "harness as the same user as the target"
        ) from None
    if not is_alive(proc):
        raise MonitorError(f"monitor target pid {pid} has exited (it is a zombie)")
    return proc


def _roots(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``procs`` that do not descend from another one of them."""
    pids = {p.pid for p in procs}
    roots = []
    for proc in procs:
        try:
            ancestors = {a.pid for a in proc.parents()}
        except psutil.Error:
            continue
        if not ancestors & pids:
            roots.append(proc)
    return roots


def listeners(port: int, exclude: Collection[int] = ()) -> tuple[list[int], bool]:
    """Pids of the processes with a TCP socket listening on ``port``, and whether
    a listener's owner could not be seen (another user's process)."""
    pids: set[int] = set()
    hidden = False
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        if conn.laddr.port != port:
            continue
        if conn.pid is None:
            hidden = True
        elif conn.pid not in exclude:
            pids.add(conn.pid)
    return sorted(pids), hidden


def find_by_port(port: int, exclude: Collection[int] = ()) -> psutil.Process | None:
    """The root of the process tree listening on ``port``; None when nothing
    listens. A pre-forking server's master and workers all hold the listening
    socket: their common root is the target. Raises :class:`MonitorError` when the
    listener belongs to another user or to unrelated processes."""
    pids, hidden = listeners(port, exclude)
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    if not procs:
        if hidden:
            raise MonitorError(
                f"port {port} is held by a process of another user, which this "
                "harness cannot read; run it as that user, or give --monitor-pid"
            )
        return None
    roots = _roots(procs)
    if len(roots) == 1:
        return roots[0]
    raise MonitorError(
        f"port {port} is held by unrelated processes: "
        + ", ".join(describe_process(p) for p in roots)
        + "; choose one with --monitor-pid PID"
    )


def find_by_name(
    name: str, exclude: Collection[int] = (), *, required: bool = True
) -> psutil.Process | None:
    """The one process tree whose processes are named ``name`` (the process name,
    or the last part of its first command-line word).

    With ``required``, raises :class:`MonitorError` when there is none or several
    unrelated ones, listing the candidates; otherwise returns None then.
    """
    matches = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.pid in exclude or proc.pid == os.getpid():
            continue
        info = proc.info
        argv0 = os.path.basename((info.get("cmdline") or [""])[0])
        if name in (info.get("name"), argv0) and is_alive(proc):
            matches.append(proc)
    roots = _roots(matches)
    if len(roots) == 1:
        return roots[0]
    if not required:
        return None
    if not roots:
        raise MonitorError(
            f"--monitor-name / monitor.target.name {name!r}: no running process has "
            "this name; check it with `ps -e -o pid,comm`, or give --monitor-pid"
        )
    shown = ", ".join(describe_process(p) for p in roots[:10])
    more = f" and {len(roots) - 10} more" if len(roots) > 10 else ""
    raise MonitorError(
        f"monitor target name {name!r} matches {len(roots)} unrelated processes: "
        f"{shown}{more}; choose one with --monitor-pid PID or --monitor-port PORT"
    )


# -- a target the harness starts ---------------------------------------------------


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f"\n  {path} ends with:\n{tail}" if tail else f" ({path} is empty)"


def probe(url: str, timeout_s: float) -> int | None:
    """The status of ``GET url`` (redirects not followed), None if no answer."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        # A readiness probe of a service on this machine: a self-signed
        # certificate must not make it fail. Nothing secret is sent.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout_s, context=context
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout_s)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class LaunchedTarget:
    """A target started from ``monitor.target.command``, in its own session (so a
    Ctrl-C on the terminal reaches only the harness, which decides what it means),
    with its output in ``target.log`` of the run folder."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        command: tuple[str, ...],
        ready_url: str,
        ready_timeout_s: float,
        log_path: Path,
    ) -> LaunchedTarget:
        """Start ``command`` and wait until ``ready_url`` answers 2xx or 3xx.

        Raises :class:`~harness.errors.TargetError` if it cannot start, exits, or
        is not ready in time (and stops it then)."""
        program = command[0]
        with open(log_path, "ab") as out:
            try:
                proc = subprocess.Popen(
                    list(command),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise TargetError(
                    f"cannot start the target command {program!r}: "
                    f"{exc.strerror or exc}; check monitor.target.command"
                ) from None
        launched = cls(proc, log_path)
        try:
            launched._wait_ready(ready_url, ready_timeout_s)
        except BaseException:
            launched.stop(grace_s=2.0)
            raise
        return launched

    def _wait_ready(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: int | None = None
        while True:
            code = self.proc.poll()
            if code is not None:
                raise TargetError(
                    f"the target command (pid {self.pid}) exited with code {code} "
                    f"before {url} answered." + _log_tail(self.log_path)
                )
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                seen = f"last answer {last}" if last is not None else "no answer"
                raise TargetError(
                    f"the target command (pid {self.pid}) was not ready within "
                    f"{timeout_s:g}s: {url} gave {seen}; raise "
                    "monitor.target.ready_timeout or check ready_url."
                    + _log_tail(self.log_path)
                )
            last = probe(url, min(READY_REQUEST_TIMEOUT_S, remaining_s))
            if last is not None and 200 <= last < 400:
                return
            time.sleep(READY_POLL_S)

    def poll(self) -> int | None:
        """The exit code once it has exited (reaping it), else None."""
        with self._lock:
            return self.proc.poll()

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM to its process group, then SIGKILL after ``grace_s``. The group
        is the session started here, so its members are this target's processes
        only. Returns the root's exit code. Calling it again is harmless."""
        with self._lock:
            if self.proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "target pid %d still running %.0fs after SIGTERM; killing it",
                        self.pid,
                        grace_s,
                    )
            # Children left in the group (the root may be gone) are killed too.
            self._signal_group(signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.wait()
            return self.proc.returncode

    def _signal_group(self, signum: int) -> None:
        # The group id stays reserved while any member lives, so it cannot name
        # someone else's processes.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


# -- connections ---------------------------------------------------------------------

_LISTEN_STATE = "0A"
"""The LISTEN state in ``/proc/net/tcp``."""

CONNECTIONS_EVERY = 5
"""Count the target's TCP connections at every this many samples. The kernel walks
its whole connection hash table to produce ``/proc/net/tcp``: measured at 5 ms of
system time per read on the development machine (most of the monitor's cost when
done at every sample), so other samples leave ``connections`` null."""


def _socket_inodes(pid: int) -> set[str] | None:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    inodes = set()
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def tcp_connections(pids: list[int]) -> dict[int, int]:
    """TCP connections (any state but LISTEN) held by each of ``pids``.

    psutil's per-process call reads the whole TCP table once per process; a tree
    of N processes on a busy machine (thousands of sockets) then costs N full
    reads a tick. Here the table of the first pid's network namespace is read
    once and matched against each process's socket inodes. Linux only; a pid
    whose descriptors cannot be read is left out."""
    by_pid = {
        pid: inodes for pid in pids if (inodes := _socket_inodes(pid)) is not None
    }
    counts = dict.fromkeys(by_pid, 0)
    wanted = set().union(*by_pid.values())
    if not wanted:
        return counts
    connected: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            path = f"/proc/{next(iter(by_pid))}/net/{table}"
            with open(path, encoding="ascii") as fh:
                next(fh, None)  # the header
                for line in fh:
                    fields = line.split(None, 10)
                    if fields[9] in wanted and fields[3] != _LISTEN_STATE:
                        connected.add(fields[9])
        except (OSError, IndexError):
            continue
    counts.update({pid: len(inodes & connected) for pid, inodes in by_pid.items()})
    return counts


# -- sampling ------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    cpu_s: float
    mono_s: float
    touched: int


class ProcessProbe:
    """Reads one row per process, remembering CPU times for the next percentage.

    Used from one thread (the monitor's loop)."""

    def __init__(self, *, uss: bool) -> None:
        self.uss = uss
        self._seen: dict[tuple[int, float], _Seen] = {}
        self._tick = 0

    def begin(self) -> None:
        self._tick += 1

    def end(self) -> None:
        """Forget processes not read in this tick (they exited)."""
        self._seen = {k: v for k, v in self._seen.items() if v.touched == self._tick}

    def row(self, proc: psutil.Process, source: str) -> Row | None:
        """The row of ``proc``, or None if it is gone."""
        try:
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return None  # exited; its parent has not reaped it yet
                times = proc.cpu_times()
                mono_s = time.monotonic()
                memory = proc.memory_info()
                row: Row = {
                    "source": source,
                    "pid": proc.pid,
                    "rss_bytes": memory.rss,
                    "vms_bytes": memory.vms,
                    "num_threads": proc.num_threads(),
                }
                key = (proc.pid, proc.create_time())
                row["num_fds"] = _or_none(proc.num_fds)
                counters = _or_none(proc.io_counters)
                if counters is not None:
                    row["io_read_bytes"] = counters.read_bytes
                    row["io_write_bytes"] = counters.write_bytes
                if self.uss:
                    full = _or_none(proc.memory_full_info)
                    if full is not None:
                        row["uss_bytes"] = full.uss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        except psutil.AccessDenied:
            return {"source": source, "pid": proc.pid}
        cpu_s = times.user + times.system
        seen = self._seen.get(key)
        if seen is not None and mono_s > seen.mono_s:
            row["cpu_percent"] = 100.0 * (cpu_s - seen.cpu_s) / (mono_s - seen.mono_s)
        self._seen[key] = _Seen(cpu_s, mono_s, self._tick)
        return row


T = TypeVar("T")


def _or_none(read: Callable[[], T]) -> T | None:
    """A reading this user may not be allowed (another user's /proc/PID/io)."""
    try:
        return read()
    except psutil.AccessDenied:
        return None


@dataclass(frozen=True, slots=True)
class TreeFigures:
    """The target tree's totals at its latest sample, for the live view."""

    cpu_percent: float | None
    rss_bytes: int
    processes: int


class TargetSampler:
    """Rows of the target's whole process tree, ``source="target"``.

    When the root exits, reports ``target_exit`` once (with the exit code when the
    harness started it); with ``relocate`` (found by port or name) it then looks
    for a new root at every sample and reports ``target_restart`` when one appears.
    It never restarts a target itself.
    """

    name = "target"

    def __init__(
        self,
        root: psutil.Process,
        on_event: EventSink,
        *,
        relocate: Callable[[], psutil.Process | None] | None = None,
        launched: LaunchedTarget | None = None,
        source: str = "target",
    ) -> None:
        self.root: psutil.Process | None = root
        self.first_pid = root.pid
        self.on_event = on_event
        self.relocate = relocate
        self.launched = launched
        self.source = source
        self.latest: TreeFigures | None = None
        self.exits = 0
        self.restarts = 0
        self._gone_pid: int | None = None
        self._ticks = 0
        self._probe = ProcessProbe(uss=True)

    def open(self) -> None:
        if self.root is not None and not is_alive(self.root):
            raise MonitorError(
                f"the target {describe_process(self.root)} exited before the run"
            )

    def sample(self, now_ns: int) -> list[Row]:
        root = self._current_root()
        if root is None:
            self.latest = None
            return []
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = [root]
        self._probe.begin()
        rows = [r for p in procs if (r := self._probe.row(p, self.source))]
        self._probe.end()
        cpu = [float(c) for r in rows if isinstance(c := r.get("cpu_percent"), float)]
        rss = sum(int(v) for r in rows if isinstance(v := r.get("rss_bytes"), int))
        self.latest = TreeFigures(sum(cpu) if cpu else None, rss, len(rows))
        self._ticks += 1
        if self._ticks % CONNECTIONS_EVERY == 1:
            counts = tcp_connections([int(str(r["pid"])) for r in rows])
            for row in rows:
                count = counts.get(int(str(row["pid"])))
                if count is not None:
                    row["connections"] = count
        return rows

    def _current_root(self) -> psutil.Process | None:
        root = self.root
        if root is not None and not is_alive(root):
            code = None
            if self.launched is not None and self.launched.pid == root.pid:
                code = self.launched.poll()
            self.on_event("target_exit", {"pid": root.pid, "exit_code": code})
            log.warning("target pid %d exited (code %s)", root.pid, code)
            self.exits += 1
            self._gone_pid = root.pid
            self.root = root = None
        if root is None and self.relocate is not None:
            try:
                found = self.relocate()
            except MonitorError as exc:
                log.debug("looking for the target again: %s", exc)
                found = None
            if found is not None and is_alive(found):
                self.on_event(
                    "target_restart", {"old_pid": self._gone_pid, "new_pid": found.pid}
                )
                self.restarts += 1
                self.root = root = found
        return root

    def close(self) -> None:
        return None


class HarnessSampler:
    """Rows of the harness's own processes: ``source="coordinator"`` and
    ``source="harness-worker-K"``. The coordinator names the workers once they
    are spawned (:meth:`watch`)."""

    name = "harness"

    def __init__(self, processes: Mapping[str, int]) -> None:
        self._procs: dict[str, psutil.Process] = {}
        self._probe = ProcessProbe(uss=False)
        self.watch(processes)

    def watch(self, processes: Mapping[str, int]) -> None:
        """Add processes by source name (safe from another thread)."""
        found = dict(self._procs)
        for source, pid in processes.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                found[source] = psutil.Process(pid)
        self._procs = found  # one assignment: the loop sees the old or the new map

    def pids(self) -> set[int]:
        return {p.pid for p in self._procs.values()}

    def open(self) -> None:
        return None

    def sample(self, now_ns: int) -> list[Row]:
        self._probe.begin()
        rows = [
            r
            for source, proc in self._procs.items()
            if (r := self._probe.row(proc, source)) is not None
        ]
        self._probe.end()
        return rows

    def close(self) -> None:
        return None


__all__ = [
    "HarnessSampler",
    "LaunchedTarget",
    "ProcessProbe",
    "TargetSampler",
    "TreeFigures",
    "describe_process",
    "find_by_name",
    "find_by_pid",
    "find_by_port",
    "is_alive",
    "loopback_port",
]
