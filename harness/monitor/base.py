"""What every sampler of the resource monitor shares: the protocol, the columns, the
error.

A sampler measures one thing (the target's process tree, the host, a Prometheus
endpoint, a database) and returns rows: plain dicts with a ``source`` and any of the
columns of :data:`COLUMNS`. The monitor's loop adds ``time_ns`` (one instant per
sampler per tick, so the rows of one process tree share it and can be summed) and
hands the rows to :class:`~harness.monitor.writer.ResourceWriter`.

A column a sampler does not measure is simply left out of its rows and reads back as
null. Columns named ``prom_<metric>`` (extra Prometheus metrics named in a profile)
are float64 and need no declaration here; any other name is a programming error and
is dropped by the writer with a warning.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

import pyarrow as pa

from ..errors import EXIT_BAD_INPUT, HarnessError

Row = dict[str, object]

PROM_PREFIX = "prom_"
"""Prefix of the per-profile Prometheus columns, float64 each."""

_INT = pa.int64()
_FLOAT = pa.float64()

COLUMNS: dict[str, pa.DataType] = {
    "time_ns": _INT,
    "source": pa.string(),
    "pid": _INT,
    # One process (source "target", "coordinator", "harness-worker-K").
    "cpu_percent": _FLOAT,
    "rss_bytes": _INT,
    "uss_bytes": _INT,
    "vms_bytes": _INT,
    "num_fds": _INT,
    "num_threads": _INT,
    "connections": _INT,
    "io_read_bytes": _INT,
    "io_write_bytes": _INT,
    # The host (source "host").
    "host_cpu_percent": _FLOAT,
    "host_mem_available_bytes": _INT,
    "host_mem_total_bytes": _INT,
    "load1": _FLOAT,
    "net_bytes_sent": _INT,
    "net_bytes_recv": _INT,
    # Remote samplers.
    "cpu_seconds_total": _FLOAT,
    "open_fds": _INT,
    "db_connections": _INT,
    "db_connections_active": _INT,
    "db_connections_idle": _INT,
    "db_connections_idle_in_transaction": _INT,
    "db_xact_commit": _INT,
    "db_xact_rollback": _INT,
    "db_cache_hit_ratio": _FLOAT,
    "db_query_max_ms": _FLOAT,
    "redis_connections": _INT,
    "redis_used_memory_bytes": _INT,
    "redis_maxmemory_bytes": _INT,
    "redis_used_memory_pct": _FLOAT,
    "redis_keyspace_hits": _INT,
    "redis_keyspace_misses": _INT,
    "redis_hit_rate": _FLOAT,
}
"""Every known column of ``resources/`` and its Arrow type; all but ``time_ns`` and
``source`` may be null. Cumulative counters (``io_*``, ``net_*``, ``db_xact_*``,
``redis_keyspace_*``, ``cpu_seconds_total``) are written as read; a reader takes
differences. ``cpu_percent`` is of one core (a busy tree may exceed 100);
``host_cpu_percent`` is of the whole machine (0-100)."""


class MonitorError(HarnessError):
    """The monitor cannot start as asked: no process with that pid, nothing
    listening on that port, a database that does not answer. Raised before the run
    starts; the message says what was asked, what was found and how to fix it."""

    exit_code = EXIT_BAD_INPUT


class Sampler(Protocol):
    """One source of resource rows, driven by the monitor's loop (one thread)."""

    name: str
    """What it measures: "target", "host", "harness", "prometheus", ..."""

    def open(self) -> None:
        """Connect or check; raise :class:`MonitorError` with a clear message."""
        ...

    def sample(self, now_ns: int) -> list[Row]:
        """Rows measured now; each has ``source`` and any known columns."""
        ...

    def close(self) -> None:
        """Release connections; called once, also after a failed sample."""
        ...


def failure_of(sampler: Sampler) -> str | None:
    """What went wrong in ``sampler``'s latest sample when it records its own
    failures (a remote sampler's ``outage``, see :class:`Outage`), else None."""
    outage = getattr(sampler, "outage", None)
    return outage.error if isinstance(outage, Outage) else None


_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<rest>\S*)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.I)
SECRET = "<secret>"
"""What stands in for a redacted value."""


def _redact_url(match: re.Match[str]) -> str:
    scheme, rest = match["scheme"], match["rest"]
    # The host cannot hold an "@", so the user information runs up to the last
    # "@" before the path: a password with an unencoded "@" is hidden whole.
    slash = rest.find("/")
    at = (rest if slash < 0 else rest[:slash]).rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        if colon:
            shown = f"{user}:{SECRET}"
        elif scheme.lower() in ("http://", "https://"):
            shown = SECRET  # a bare token passed as the user name
        else:
            shown = user  # postgresql://app@host, redis://user@host: a name
        scheme += f"{shown}@"
    path, question, query = rest.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        pairs = []
        for pair in query.split("&"):
            name, equals, value = pair.partition("=")
            pairs.append(f"{name}={SECRET}" if equals and value else pair)
        rest = f"{path}?{'&'.join(pairs)}{hash_}{fragment}"
    return scheme + rest


def redact_credentials(text: str) -> str:
    """``text`` (a URL, a libpq DSN, or a message quoting them) with every secret
    replaced by ``<secret>``:

    * the password of a URL's user information (``redis://:pw@h``,
      ``postgresql://u:pw@h/db``), up to the last ``@`` before the path, so a
      password holding an unencoded ``@`` is hidden whole; a user information
      without a password is a user name and stays, except in an ``http(s)`` URL,
      where it is hidden too (a token is often passed that way);
    * every value of a URL's query string, names kept (``?token=<secret>``);
    * ``password=...`` of a libpq ``key=value`` DSN.

    A password holding an unencoded ``/`` cannot be told from a path; such a URL
    does not work either (every client reads the host from before the ``/``)."""
    text = _URL.sub(_redact_url, text)
    return _KV_PASSWORD.sub(rf"\g<head>{SECRET}", text)


def scrub_secret(exc: BaseException, secret: str | None) -> str:
    """The error's message on one line, with ``secret`` (a password the sampler
    was given) replaced by ``***``; the exception's type when it has no message."""
    text = " ".join(str(exc).split())
    if secret:
        text = text.replace(secret, "***")
    return text or type(exc).__name__


class Outage:
    """Whether a remote sampler's source answers, said once per change: a warning
    when it stops answering, an info line when it answers again, so a server that
    is down for an hour writes two lines, not 3600.

    A remote sampler records its own failures as rows of nulls rather than
    raising; it keeps its ``Outage`` as its ``outage`` attribute, and the
    monitor's loop reads :attr:`error` after each sample to write the
    ``monitor_sampler_error`` and ``monitor_sampler_recovered`` events."""

    def __init__(self, log: logging.Logger, source: str, shown: str, verb: str):
        self._log = log
        self._source = source
        self._shown = shown
        self._verb = verb
        self.failing = False
        self.error: str | None = None
        """Why the current run of failures began (no secrets); None while the
        source answers."""

    def failed(self, why: str) -> None:
        if not self.failing:
            self._log.warning(
                "%s: %s %s failed (%s); recording nulls until it answers",
                self._source,
                self._verb,
                self._shown,
                why,
            )
            self.failing = True
            self.error = f"{self._verb} {self._shown} failed: {why}"

    def answered(self) -> None:
        if self.failing:
            self._log.info(
                "%s: %s %s works again", self._source, self._verb, self._shown
            )
            self.failing = False
            self.error = None
