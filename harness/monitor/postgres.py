"""Sample a PostgreSQL server: connections by state, the longest query, commits.

How this works. The sampler keeps one connection (autocommit, a server-side
``statement_timeout`` as long as the sampler's timeout, ``application_name``
``harness-monitor``, no prepared statements) and runs one query per sample, which reads
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
  the truth by up to a second or so. Every query of the sampler is a transaction
  of that database too: from PostgreSQL 15 on, its query asks the server to publish
  the sampler's own counts at once (``pg_stat_force_next_flush()``), so the commits
  the sampler made before each sample are known exactly and left out of
  ``db_xact_commit`` (two per connection, its start and its settings, and one per
  query). Before 15 (or where that function may not be called) they are not left
  out: about one commit per sample is the sampler's. A sampler query that fails
  (the 2 s ``statement_timeout``) counts as a rollback.
* ``db_cache_hit_ratio``: ``blks_hit / (blks_hit + blks_read)`` of that database,
  cumulative like the above; null before any block was read.

Seeing other roles' sessions needs the ``pg_monitor`` role (or
``pg_read_all_stats``, or a superuser). Without it, ``pg_stat_activity`` shows
another role's session with its database, role and pid but a null
``backend_type`` and ``state``: such rows with a database and a role count in
``db_connections`` (so do, indistinguishably, another role's parallel workers and
logical replication senders), not in the figures by state nor in
``db_query_max_ms``, which then cover the sampler's own role only. The sampler
says so once, with a warning, when it opens.

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

FLUSH_FROM_VERSION = 150000
"""``pg_stat_force_next_flush()`` exists from PostgreSQL 15 on."""

COMMITS_PER_CONNECTION = 2
"""Transactions a new connection of the sampler commits before its first sample:
the backend's start (measured on PostgreSQL 15) and :data:`_SETUP`."""

_FLUSH = ", pg_catalog.pg_stat_force_next_flush()"
_UNSEEN = object()

# Reading pg_database gives the backend relation statistics to publish, without
# which a forced publication is skipped (nothing pending) and the transaction count
# would wait for the next one.
_SETUP = """
SELECT pg_catalog.set_config('statement_timeout', %s, false),
       pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'){flush}
FROM pg_catalog.pg_database WHERE datname = current_database()
"""

_QUERY = """
SELECT a.total, a.active, a.idle, a.idle_in_transaction, a.query_max_ms,
       d.xact_commit, d.xact_rollback, d.blks_hit, d.blks_read, d.stats_reset{flush}
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
    WHERE pid <> pg_backend_pid() AND (
        backend_type = 'client backend'
        -- another role's session, to a role without pg_read_all_stats: its type
        -- and state are hidden, its database and role are not
        OR (backend_type IS NULL AND datid IS NOT NULL AND usesysid IS NOT NULL)
    )
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
        self.outage = Outage(log, source, self.shown, "sampling")
        self.sees_all_sessions: bool | None = None
        """Whether the role sees other roles' sessions by state (pg_monitor);
        None until connected."""
        self._flush = False
        """Whether this connection's queries publish the sampler's counts."""
        self._own_commits: int | None = None
        """Commits the sampler made in the database since the statistics it
        reads were reset; None when they cannot be told apart."""
        self._stats_reset: object = _UNSEEN
        """``stats_reset`` of the database at the previous sample."""

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
        if not self.sees_all_sessions:
            log.warning(
                "%s: the role of %s is not a member of pg_monitor: other roles' "
                "sessions count in db_connections, but db_connections_active, "
                "_idle, _idle_in_transaction and db_query_max_ms cover only its "
                "own; to see them all: GRANT pg_monitor TO <that role>",
                self.source,
                self.shown,
            )

    def sample(self, now_ns: int) -> list[dict[str, object]]:
        """One row of the columns above; nulls when the server cannot be read."""
        try:
            if self._conn is None or self._conn.closed:
                self._connect()
            row = self._query()
        except psycopg.Error as exc:
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self.close()
            self.outage.failed(self._scrub(exc))
            return [{"source": self.source, **dict.fromkeys(COLUMNS)}]
        self.outage.answered()
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
            # Never prepared: preparing a statement is a transaction of its own
            # (which the commit count would see), and a pooler in transaction
            # mode loses prepared statements.
            prepare_threshold=None,
        )
        try:
            timeout_ms = str(max(1, round(self.timeout_s * 1000)))
            flush = conn.info.server_version >= FLUSH_FROM_VERSION
            found = None
            if flush:
                try:
                    found = conn.execute(
                        _SETUP.format(flush=_FLUSH), (timeout_ms,)
                    ).fetchone()
                except psycopg.errors.InsufficientPrivilege:
                    flush = False  # EXECUTE revoked: the counts stay as read
            if not flush:
                found = conn.execute(_SETUP.format(flush=""), (timeout_ms,)).fetchone()
        except BaseException:
            conn.close()
            raise
        self.sees_all_sessions = bool(found and found[1])
        self._flush = flush
        if flush:
            self._own_commits = (self._own_commits or 0) + COMMITS_PER_CONNECTION
        else:
            self._own_commits = None
        self._conn = conn

    def _query(self) -> dict[str, object]:
        assert self._conn is not None
        query = _QUERY.format(flush=_FLUSH if self._flush else "")
        found = self._conn.execute(query).fetchone()
        assert found is not None  # an aggregate over a left join: always one row
        total, active, idle, in_xact, query_max_ms = found[:5]
        commit, rollback, hit, read, stats_reset = found[5:10]
        if stats_reset != self._stats_reset:
            if self._own_commits is not None and self._stats_reset is not _UNSEEN:
                # The statistics were reset: the sampler's earlier commits are
                # no longer in the counts.
                self._own_commits = 0
            self._stats_reset = stats_reset
        own = self._own_commits
        if isinstance(commit, int) and own is not None:
            commit = max(0, commit - own)
        if own is not None:
            self._own_commits = own + 1  # this query, published once it ends
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
