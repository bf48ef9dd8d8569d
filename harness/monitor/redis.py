"""Sample a Redis server through ``INFO``: clients, memory, keyspace hits.

How this works. The sampler keeps one connection (redis-py, no retries: a failed
sample is recorded as failed, not hidden by a retry) and sends one ``INFO`` per
sample. Columns:

* ``redis_connections``: ``connected_clients`` less the sampler's own connection.
* ``redis_used_memory_bytes``, ``redis_maxmemory_bytes``: ``used_memory`` and
  ``maxmemory`` (0 means no limit).
* ``redis_used_memory_pct``: ``used_memory`` as a percentage of ``maxmemory`` when
  a limit is set, which is the figure that predicts evictions and refused writes;
  without a limit, of the machine's memory (``total_system_memory``), null if the
  server does not report it.
* ``redis_keyspace_hits``, ``redis_keyspace_misses``: cumulative since the server
  started or ``CONFIG RESETSTAT``.
* ``redis_hit_rate``: hits / (hits + misses) counted between this sample and the
  previous one, so it shows the hit rate of that interval rather than of the
  server's whole life. Null on the first sample, after a failed one, when the
  interval had no lookups, and when the counters went backwards (restart, reset).

A sample that fails mid-run (the server went away) yields a row with the source and
nulls and one warning per run of failures; the client reconnects by itself on a
later sample. Only :meth:`~RedisSampler.open` raises.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .base import MonitorError, Outage, scrub_secret

log = logging.getLogger("harness.monitor.redis")

DEFAULT_TIMEOUT_S = 2.0
CLIENT_NAME = "harness-monitor"

COLUMNS = (
    "redis_connections",
    "redis_used_memory_bytes",
    "redis_maxmemory_bytes",
    "redis_used_memory_pct",
    "redis_keyspace_hits",
    "redis_keyspace_misses",
    "redis_hit_rate",
)


def describe_url(url: str) -> str:
    """The URL with any password and query string left out, safe to print."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "<a malformed redis URL>"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    user = f"{parts.username}@" if parts.username else ""
    where = f"{user}{host}" + (f":{port}" if port is not None else "")
    return f"{parts.scheme}://{where}{parts.path}"


class RedisSampler:
    """Sample the Redis server at ``url`` (``redis://``, ``rediss://`` or
    ``unix://``, as redis-py reads them). ``timeout_s`` bounds the connect and each
    reply."""

    def __init__(
        self, url: str, source: str = "redis", *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.shown = describe_url(url)
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise MonitorError(
                f"redis sampler for {self.shown}: timeout_s must be a positive "
                f"number of seconds, not {timeout_s!r}"
            )
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                client_name=CLIENT_NAME,
            )
        except ValueError as exc:
            raise MonitorError(
                f"redis sampler: {self.shown} is not a Redis URL ({exc}); write it "
                "as redis://[:PASSWORD@]HOST:PORT[/DB]"
            ) from None
        self.name = source
        self.source = source
        self.timeout_s = timeout_s
        self._password = urllib.parse.urlsplit(url).password or ""
        self._last: tuple[int, int] | None = None
        """Keyspace hits and misses at the previous good sample."""
        self.outage = Outage(log, source, self.shown, "sampling")

    def open(self) -> None:
        """Read ``INFO`` once; :class:`MonitorError` if the server cannot be read."""
        try:
            self._client.info()
        except (redis.RedisError, OSError) as exc:
            self._client.close()
            raise MonitorError(
                f"redis sampler: cannot read INFO from {self.shown}: "
                f"{self._scrub(exc)}\n  fix: check that redis-server runs there and "
                "that the password and database in the URL are right, or remove "
                "this sampler from the profile"
            ) from None

    def sample(self, now_ns: int) -> list[dict[str, object]]:
        """One row of the columns above; nulls when the server cannot be read."""
        try:
            info = self._client.info()
        except (redis.RedisError, OSError) as exc:
            self._last = None
            self.outage.failed(self._scrub(exc))
            return [{"source": self.source, **dict.fromkeys(COLUMNS)}]
        self.outage.answered()
        return [self._row(info)]

    def close(self) -> None:
        """Close the connection; harmless when already closed."""
        self._last = None
        self._client.close()

    def _row(self, info: dict[str, Any]) -> dict[str, object]:
        used = _int(info.get("used_memory"))
        limit = _int(info.get("maxmemory"))
        system = _int(info.get("total_system_memory"))
        whole = limit if limit else system
        clients = _int(info.get("connected_clients"))
        hits = _int(info.get("keyspace_hits"))
        misses = _int(info.get("keyspace_misses"))
        return {
            "source": self.source,
            "redis_connections": None if clients is None else max(0, clients - 1),
            "redis_used_memory_bytes": used,
            "redis_maxmemory_bytes": limit,
            "redis_used_memory_pct": used / whole * 100.0
            if used is not None and whole
            else None,
            "redis_keyspace_hits": hits,
            "redis_keyspace_misses": misses,
            "redis_hit_rate": self._hit_rate(hits, misses),
        }

    def _hit_rate(self, hits: int | None, misses: int | None) -> float | None:
        previous = self._last
        self._last = None if hits is None or misses is None else (hits, misses)
        if self._last is None or previous is None:
            return None
        new_hits = self._last[0] - previous[0]
        new_misses = self._last[1] - previous[1]
        if new_hits < 0 or new_misses < 0 or new_hits + new_misses == 0:
            return None
        return new_hits / (new_hits + new_misses)

    def _scrub(self, exc: BaseException) -> str:
        return scrub_secret(exc, self._password)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
