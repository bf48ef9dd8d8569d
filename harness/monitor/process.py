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

The listeners of a port are found from the kernel's socket table: the inodes of the
sockets listening on the port (``/proc/net/tcp`` and ``tcp6``), then every process
holding one of them among its descriptors (``/proc/PID/fd``). All the processes of a
pre-forking server share one listening socket, and asking psutil for the
connections names only one of them (often a worker); looking for the inode finds
the master and every worker, and their common root is the target.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import ipaddress
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import psutil

from ..errors import TargetError
from .base import MonitorError, Row, redact_credentials

log = logging.getLogger("harness.monitor")

READY_POLL_S = 0.1
READY_REQUEST_TIMEOUT_S = 2.0
ANSWER_CHECK_TIMEOUT_S = 1.0
"""How long the check that nothing answers a ready_url off loopback waits."""

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


_LISTEN_STATE = "0A"
"""The LISTEN state in ``/proc/net/tcp``."""


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (any address) in this
    network namespace."""
    suffix = f":{port:04X}"
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)  # the header
                for line in fh:
                    fields = line.split(None, 10)
                    if (
                        len(fields) > 9
                        and fields[3] == _LISTEN_STATE
                        and fields[1].endswith(suffix)
                    ):
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes


def _socket_inodes(pid: int) -> set[str] | None:
    """The socket inodes among ``pid``'s descriptors; None if they cannot be read
    (the process is gone or belongs to another user)."""
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


def listeners(port: int, exclude: Collection[int] = ()) -> tuple[list[int], bool]:
    """Pids of every process holding a TCP socket that listens on ``port`` (all
    the processes of a pre-forking server, not one of them), and whether a
    listening socket's holder could not be seen (another user's process)."""
    wanted = _listening_inodes(port)
    if not wanted:
        return [], False
    pids: set[int] = set()
    held: set[str] = set()
    with os.scandir("/proc") as entries:
        for pid in (int(e.name) for e in entries if e.name.isdigit()):
            inodes = _socket_inodes(pid)
            if not inodes or not (mine := inodes & wanted):
                continue
            held |= mine
            if pid not in exclude:
                pids.add(pid)
    return sorted(pids), bool(wanted - held)


def _same_program(a: psutil.Process, b: psutil.Process) -> bool:
    try:
        return a.exe() == b.exe() and a.name() == b.name()
    except psutil.Error:
        return False


def _common_parent(
    roots: list[psutil.Process], exclude: Collection[int]
) -> psutil.Process | None:
    """The parent of ``roots`` when they are workers of one pre-forking server
    whose master does not hold the listening socket itself: one parent, running
    the same program, and neither init nor the harness."""
    try:
        ppids = {r.ppid() for r in roots}
    except psutil.Error:
        return None
    if len(ppids) != 1:
        return None
    ppid = ppids.pop()
    if ppid <= 1 or ppid in exclude or ppid == os.getpid():
        return None
    try:
        parent = psutil.Process(ppid)
    except psutil.Error:
        return None
    if all(_same_program(parent, r) for r in roots):
        return parent
    return None


def find_by_port(port: int, exclude: Collection[int] = ()) -> psutil.Process | None:
    """The root of the process tree listening on ``port``; None when nothing
    listens. A pre-forking server's master and workers all hold the listening
    socket: their common root is the target (and when only the workers hold it,
    their parent, if it runs the same program). Raises :class:`MonitorError`
    when the listener belongs to another user or to unrelated processes."""
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
    parent = _common_parent(roots, exclude)
    if parent is not None:
        return parent
    raise MonitorError(
        f"port {port} is held by unrelated processes: "
        + ", ".join(describe_process(p) for p in roots)
        + "; choose one with --monitor-pid PID"
    )


def _holders_text(pids: list[int], hidden: bool) -> str:
    shown = []
    for pid in pids[:5]:
        try:
            shown.append(describe_process(psutil.Process(pid)))
        except psutil.Error:
            shown.append(f"pid {pid}")
    if len(pids) > 5:
        shown.append(f"{len(pids) - 5} more")
    if hidden:
        shown.append("a process of another user")
    return ", ".join(shown)


def check_nothing_answers(url: str) -> None:
    """Before a target command starts: raise :class:`MonitorError` when something
    already listens on the port of ``url`` (on loopback) or answers ``url`` (off
    loopback). Its readiness check would be answered by that process, and the run
    would load a server the harness neither started nor samples."""
    shown = redact_credentials(url)
    port = loopback_port(url)
    if port is not None:
        pids, hidden = listeners(port)
        if not pids and not hidden:
            return
        kill = f" (`kill {pids[0]}`)" if len(pids) == 1 else ""
        raise MonitorError(
            f"monitor.target.ready_url {shown}: port {port} is already held by "
            f"{_holders_text(pids, hidden)}, before the target command starts; its "
            "readiness check would be answered by that process. Stop it"
            f"{kill}, or give the command another port; to test the server that "
            f"is running, replace monitor.target.command by monitor.target.port: "
            f"{port}"
        )
    if probe(url, ANSWER_CHECK_TIMEOUT_S) is not None:
        raise MonitorError(
            f"monitor.target.ready_url {shown} already answers, before the target "
            "command starts; its readiness check would be answered by the server "
            "already there. Stop that server, or point ready_url at the new one"
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


def _see_log(path: Path) -> str:
    """Where the target's output is. Its content is not copied into the message:
    the message goes to events.jsonl and the manifest, and a command's output
    (a traceback quoting its arguments, say) may hold a password."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return ""
    return f" Its output is in {path}" + (" (empty)." if empty else ".")


_PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent dies (Linux)."""

PARENT_DEATH_SIGNAL = signal.SIGTERM
"""What a started target's root process gets when the harness dies without
stopping it (killed with SIGKILL, say): the signal a server expects to stop on,
so a pre-forking master can stop its workers too."""


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to send :data:`PARENT_DEATH_SIGNAL` to the
    new process when the harness dies; None where ``prctl`` is not available.

    The kernel sends it when the *thread* that started the process ends, so a
    target must be started from a thread that lives as long as the run (the
    coordinator's main thread does). The setting survives ``exec`` except into
    a set-user-ID program (``sudo``), and it is not inherited by the target's own
    children: they stop only if the root stops them."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    signum = int(PARENT_DEATH_SIGNAL)

    def preexec() -> None:
        # Runs in the child between fork and exec: nothing here may raise.
        prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:  # the harness died before the call above
            os.kill(os.getpid(), signum)

    return preexec


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
    with its output in ``target.log`` of the run folder. It is ready once its
    ``ready_url`` answers, it still runs and (on loopback) the port's listener is
    one of its processes; it gets SIGTERM if the harness dies without stopping it
    (see :func:`_die_with_parent`). Error messages say where its output is but do
    not copy it."""

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
                    preexec_fn=_die_with_parent(),
                )
            except OSError as exc:
                raise TargetError(
                    f"cannot start the target command {program!r}: "
                    f"{exc.strerror or exc}; check monitor.target.command"
                ) from None
        launched = cls(proc, log_path)
        try:
            launched._wait_ready(ready_url, ready_timeout_s)
            launched._check_answering(ready_url)
        except BaseException:
            launched.stop(grace_s=2.0)
            raise
        return launched

    def _wait_ready(self, url: str, timeout_s: float) -> None:
        shown = redact_credentials(url)
        deadline = time.monotonic() + timeout_s
        last: int | None = None
        while True:
            code = self.proc.poll()
            if code is not None:
                raise TargetError(
                    f"the target command (pid {self.pid}) exited with code {code} "
                    f"before {shown} answered." + _see_log(self.log_path)
                )
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                seen = f"last answer {last}" if last is not None else "no answer"
                raise TargetError(
                    f"the target command (pid {self.pid}) was not ready within "
                    f"{timeout_s:g}s: {shown} gave {seen}; raise "
                    "monitor.target.ready_timeout or check ready_url."
                    + _see_log(self.log_path)
                )
            last = probe(url, min(READY_REQUEST_TIMEOUT_S, remaining_s))
            if last is not None and 200 <= last < 400:
                return
            time.sleep(READY_POLL_S)

    def _check_answering(self, url: str) -> None:
        """Once ``url`` answered: the started process still runs and, on loopback,
        the port's listener is one of its processes, not a server that took the
        port in the meantime or one the command handed the work to."""
        shown = redact_credentials(url)
        code = self.proc.poll()
        if code is not None:
            raise TargetError(
                f"{shown} answered, but the target command (pid {self.pid}) exited "
                f"with code {code}: another process answers there. Stop it, or give "
                "the command another port; a command that forks into the "
                "background must run in the foreground (nginx: daemon off)."
                + _see_log(self.log_path)
            )
        port = loopback_port(url)
        if port is None:
            return
        pids, hidden = listeners(port)
        tree = {self.pid}
        with contextlib.suppress(psutil.Error):
            tree |= {c.pid for c in psutil.Process(self.pid).children(recursive=True)}
        others = [pid for pid in pids if pid not in tree]
        if not others and (set(pids) & tree or not hidden):
            return
        raise TargetError(
            f"{shown} answered, but port {port} is held by "
            f"{_holders_text(others, hidden)}, not by the target "
            f"command (pid {self.pid}) or its children. Stop that process, or "
            "give the command another port; a command that forks into the "
            "background or hands the work to a daemon (a container runtime) "
            "cannot be monitored as a command: start the server yourself and "
            "use monitor.target.port." + _see_log(self.log_path)
        )

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

CONNECTIONS_EVERY = 5
"""Count the target's TCP connections at every this many samples. The kernel walks
its whole connection hash table to produce ``/proc/net/tcp``: measured at 5 ms of
system time per read on the development machine (most of the monitor's cost when
done at every sample), so other samples leave ``connections`` null."""


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

    ``min_cpu_span_s``: a reading less than this after the process's previous one
    gives no ``cpu_percent`` (null) and keeps the previous one as the baseline.
    The kernel counts CPU time in ticks of 10 ms, so over a few milliseconds (the
    last sample the monitor takes when it stops) a percentage is noise: one tick
    in 6 ms reads 160 %. The monitor passes half its interval.

    Used from one thread (the monitor's loop)."""

    def __init__(self, *, uss: bool, min_cpu_span_s: float = 0.0) -> None:
        self.uss = uss
        self.min_cpu_span_s = min_cpu_span_s
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
        if seen is not None and mono_s - seen.mono_s < self.min_cpu_span_s:
            seen.touched = self._tick  # too soon for a figure: keep the baseline
            return row
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


Relocate = Callable[[Collection[int]], psutil.Process | None]
"""Finds the target again after its root exited (by port or by name), leaving out
the given pids (processes of the old tree that still run)."""


class TargetSampler:
    """Rows of the target's whole process tree, ``source="target"``.

    When the root exits, reports ``target_exit`` once (with the exit code when the
    harness started it, and the pids of its processes that still run). Those
    survivors are still the target (an orphaned worker may go on serving
    requests): they and their descendants are sampled until they exit. With
    ``relocate`` (found by port or name) it then looks for a new root at every
    sample and reports ``target_restart`` when one appears. A worker of the tree
    that exits and is replaced is neither: only the root's exit counts. It never
    restarts a target itself.
    """

    name = "target"

    def __init__(
        self,
        root: psutil.Process,
        on_event: EventSink,
        *,
        relocate: Relocate | None = None,
        launched: LaunchedTarget | None = None,
        source: str = "target",
        min_cpu_span_s: float = 0.0,
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
        self._probe = ProcessProbe(uss=True, min_cpu_span_s=min_cpu_span_s)
        self._tree: list[psutil.Process] = []
        """The root's tree at the latest sample."""
        self._survivors: list[psutil.Process] = []
        """Processes of an exited root's tree that still ran at the latest sample."""

    def open(self) -> None:
        if self.root is not None and not is_alive(self.root):
            raise MonitorError(
                f"the target {describe_process(self.root)} exited before the run"
            )

    def sample(self, now_ns: int) -> list[Row]:
        procs = self._processes()
        if not procs:
            self.latest = None
            return []
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

    def _processes(self) -> list[psutil.Process]:
        """The root's tree and the survivors of an earlier root, each once."""
        root = self._current_root()
        if root is None:
            self._tree = []
        else:
            try:
                self._tree = [root, *root.children(recursive=True)]
            except psutil.Error:  # going away: keep the members known so far
                if root not in self._tree:
                    self._tree = [root]
        if self._survivors:
            alive = [p for p in self._survivors if is_alive(p)]
            self._survivors = _tree_of(alive)
        procs: dict[int, psutil.Process] = {}
        for proc in [*self._tree, *self._survivors]:
            procs.setdefault(proc.pid, proc)
        return list(procs.values())

    def _current_root(self) -> psutil.Process | None:
        root = self.root
        if root is not None and not is_alive(root):
            code = None
            if self.launched is not None and self.launched.pid == root.pid:
                code = self.launched.poll()
            known = {p.pid for p in self._survivors}
            self._survivors += [
                p
                for p in self._tree
                if p.pid != root.pid and p.pid not in known and is_alive(p)
            ]
            survivors = sorted(p.pid for p in self._survivors)
            self.on_event(
                "target_exit",
                {"pid": root.pid, "exit_code": code, "survivors": survivors},
            )
            log.warning(
                "target pid %d exited (code %s)%s",
                root.pid,
                code,
                f"; {len(survivors)} of its processes still run and are sampled"
                if survivors
                else "",
            )
            self.exits += 1
            self._gone_pid = root.pid
            self.root = root = None
        if root is None and self.relocate is not None:
            try:
                found = self.relocate({p.pid for p in self._survivors})
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


def _tree_of(roots: list[psutil.Process]) -> list[psutil.Process]:
    """``roots`` and their descendants, listed now, each once."""
    procs: dict[int, psutil.Process] = {}
    for root in roots:
        procs.setdefault(root.pid, root)
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True):
                procs.setdefault(child.pid, child)
    return list(procs.values())


class HarnessSampler:
    """Rows of the harness's own processes: ``source="coordinator"`` and
    ``source="harness-worker-K"``. The coordinator names the workers once they
    are spawned (:meth:`watch`)."""

    name = "harness"

    def __init__(
        self, processes: Mapping[str, int], *, min_cpu_span_s: float = 0.0
    ) -> None:
        self._procs: dict[str, psutil.Process] = {}
        self._probe = ProcessProbe(uss=False, min_cpu_span_s=min_cpu_span_s)
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
    "check_nothing_answers",
    "describe_process",
    "find_by_name",
    "find_by_pid",
    "find_by_port",
    "is_alive",
    "loopback_port",
]
