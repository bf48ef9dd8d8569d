"""Sample a PostgreSQL server: connections by state, the longest query, commits.

How this works. The sampler keeps one connection (autocommit, a server-side
``statement_timeout`` as long as the sampler's timeout, ``application_name``
``harness-monitor``) and runs one query per sample, which reads
``pg_stat_activity`` and ``pg_stat_database`` in the same snapshot. Columns:

* ``db_connections``: client backends on the whole server (every database), not
  counting the sampler's own connection; ``db_connections_active``,
  ``db_connections_idle`` and ``db_connections_idle_in_transaction`` split them by
  state (the last includes ``idle in transaction (aborted)``). Backends in other
  states (fastpath, disabled) count in the total only.
* ``db_query_max_ms``: how long the longest query still running has been running,
  0 when none is; the sampler's own query is left out.
* ``db_xact_commit``, ``db_xact_rollback``: cumulative counts of the DSN's database
  since its statistics were last reset. PostgreSQL publishes a backend's counts when
  it goes idle, at most about once a second, and when it disconnects, so they trail
  the truth by up to a second or so.
* ``db_cache_hit_ratio``: ``blks_hit / (blks_hit + blks_read)`` of that database,
  cumulative like the above; null before any block was read.

Seeing other roles' sessions needs the ``pg_monitor`` role (or a superuser);
without it their state is hidden and they count in ``db_connections`` only.

A sample that fails mid-run (the server restarted or went away) yields a row of
nulls and one warning per run of failures; the next sample reconnects. Only
:meth:`~PostgresSampler.open` raises.

Known shortcoming: psycopg has no client-side deadline for a query, so a server that
accepts bytes but never answers (a stopped process, not a dead one) blocks a sample
until the kernel gives up on the connection. A dead or restarted server fails fast.
"""

from __future__ import annotations

import logging
import math

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .base import MonitorError, Outage, scrub_secret

log = logging.getLogger("harness.monitor.postgres")

DEFAULT_TIMEOUT_S = 2.0
APPLICATION_NAME = "harness-monitor"

COLUMNS = (
    "db_connections",
    "db_connections_active",
    "db_connections_idle",
    "db_connections_idle_in_transaction",
    "db_query_max_ms",
    "db_xact_commit",
    "db_xact_rollback",
    "db_cache_hit_ratio",
)

_QUERY = """
SELECT a.total, a.active, a.idle, a.idle_in_transaction, a.query_max_ms,
       d.xact_commit, d.xact_rollback, d.blks_hit, d.blks_read
FROM (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE state = 'active') AS active,
           count(*) FILTER (WHERE state = 'idle') AS idle,
           count(*) FILTER (WHERE state IN (
               'idle in transaction', 'idle in transaction (aborted)'
           )) AS idle_in_transaction,
           coalesce(max(
               extract(epoch FROM clock_timestamp() - query_start) * 1000
           ) FILTER (WHERE state = 'active'), 0)::float8 AS query_max_ms
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
) AS a
LEFT JOIN pg_stat_database AS d ON d.datname = current_database()
"""


def describe_dsn(dsn: str) -> str:
    """``postgresql://user@host:port/dbname`` from a DSN, never its password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        # The parser's message may quote pieces of the string, password included.
        raise MonitorError(
            "postgres sampler: the DSN is neither a postgresql:// URI nor libpq "
            "key=value pairs; write it as postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        ) from None
    user = parts.get("user")
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port")
    where = f"{user}@{host}" if user else str(host)
    if port:
        where += f":{port}"
    return f"postgresql://{where}/{parts.get('dbname') or ''}"


class PostgresSampler:
    """Sample the server behind ``dsn`` (a URI or libpq key=value string) with
    psycopg 3. ``timeout_s`` bounds the connect (libpq rounds it up to whole
    seconds, at least 2) and each query, on the server side."""

    def __init__(
        self,
        dsn: str,
        source: str = "postgres",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.shown = describe_dsn(dsn)
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise MonitorError(
                f"postgres sampler for {self.shown}: timeout_s must be a positive "
                f"number of seconds, not {timeout_s!r}"
            )
        self.name = source
        self.source = source
        self.timeout_s = timeout_s
        self._dsn = dsn
        self._password = str(conninfo_to_dict(dsn).get("password") or "")
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._outage = Outage(log, source, self.shown, "sampling")

    def open(self) -> None:
        """Connect and run the query once; :class:`MonitorError` if either fails."""
        try:
            self._connect()
            self._query()
        except psycopg.Error as exc:
            self.close()
            raise MonitorError(
                f"postgres sampler: cannot sample {self.shown}: {self._scrub(exc)}\n"
                "  fix: check that the server runs there and that the user may log "
                "in to that database with that password (and holds pg_monitor to "
                "see other roles' sessions), or remove this sampler from the profile"
            ) from None

    def sample(self, now_ns: int) -> list[dict[str, object]]:
        """One row of the columns above; nulls when the server cannot be read."""
        try:
            if self._conn is None or self._conn.closed:
                self._connect()
            row = self._query()
        except psycopg.Error as exc:
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self.close()
            self._outage.failed(self._scrub(exc))
            return [{"source": self.source, **dict.fromkeys(COLUMNS)}]
        self._outage.answered()
        return [row]

    def close(self) -> None:
        """Close the connection; harmless when already closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connect(self) -> None:
        self.close()
        conn = psycopg.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(2, math.ceil(self.timeout_s)),
            application_name=APPLICATION_NAME,
        )
        try:
            timeout_ms = str(max(1, round(self.timeout_s * 1000)))
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", (timeout_ms,)
            )
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _query(self) -> dict[str, object]:
        assert self._conn is not None
        found = self._conn.execute(_QUERY).fetchone()
        assert found is not None  # an aggregate over a left join: always one row
        total, active, idle, in_xact, query_max_ms, commit, rollback, hit, read = found
        ratio = None
        if isinstance(hit, int) and isinstance(read, int) and hit + read > 0:
            ratio = hit / (hit + read)
        return {
            "source": self.source,
            "db_connections": total,
            "db_connections_active": active,
            "db_connections_idle": idle,
            "db_connections_idle_in_transaction": in_xact,
            "db_query_max_ms": query_max_ms,
            "db_xact_commit": commit,
            "db_xact_rollback": rollback,
            "db_cache_hit_ratio": ratio,
        }

    def _scrub(self, exc: BaseException) -> str:
        return scrub_secret(exc, self._password)
