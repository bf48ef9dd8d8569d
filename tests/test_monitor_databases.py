"""PostgresSampler and RedisSampler against real servers started for this module
(tests/dbservers.py), with real clients making the figures they report."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import psycopg
import pytest
import redis

from harness.monitor.base import MonitorError
from harness.monitor.postgres import PostgresSampler
from harness.monitor.redis import RedisSampler

from .dbservers import (
    PostgresServer,
    RedisServer,
    postgres_bindir,
    redis_binary,
    run_postgres,
    run_redis,
)
from .servers import free_port

Row = dict[str, object]


def _require(found: object, what: str, package: str) -> None:
    """Skip when a server is not installed here; in CI, where .ci/run installs
    it, its absence is a failure instead."""
    if found is not None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed; .ci/run must apt-get install {package}")
    pytest.skip(f"{what} is not installed (apt-get install {package})")


def _poll(
    sample: Callable[[], Row], done: Callable[[Row], bool], timeout_s: float = 5.0
) -> Row:
    """Sample until ``done`` holds or the time is up; the last row either way."""
    deadline = time.monotonic() + timeout_s
    row = sample()
    while not done(row) and time.monotonic() < deadline:
        time.sleep(0.05)
        row = sample()
    return row


def _int(row: Row, column: str) -> int:
    value = row[column]
    assert isinstance(value, int), (column, row)
    return value


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    _require(postgres_bindir(), "PostgreSQL", "postgresql")
    with run_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    _require(redis_binary(), "redis-server", "redis-server")
    with run_redis(maxmemory="64mb") as server:
        yield server


@pytest.fixture
def pg_sampler(postgres: PostgresServer) -> Iterator[PostgresSampler]:
    sampler = PostgresSampler(postgres.dsn)
    sampler.open()
    yield sampler
    sampler.close()


@pytest.fixture
def redis_sampler(redis_server: RedisServer) -> Iterator[RedisSampler]:
    sampler = RedisSampler(redis_server.url)
    sampler.open()
    yield sampler
    sampler.close()


# -- PostgreSQL ---------------------------------------------------------------------


def test_postgres_counts_connections_by_state_and_the_longest_query(
    postgres: PostgresServer, pg_sampler: PostgresSampler
) -> None:
    def sample() -> Row:
        return pg_sampler.sample(time.time_ns())[0]

    with (
        psycopg.connect(postgres.dsn, autocommit=True) as idle,
        psycopg.connect(postgres.dsn) as in_transaction,
        psycopg.connect(postgres.dsn, autocommit=True) as sleeper,
    ):
        idle.execute("SELECT 1")
        in_transaction.execute("SELECT 1")  # opens a transaction left open
        thread = threading.Thread(
            target=lambda: sleeper.execute("SELECT pg_sleep(1)"), daemon=True
        )
        thread.start()
        row = _poll(sample, lambda r: r["db_connections_active"] == 1, 0.8)
        time.sleep(0.1)
        later = sample()
        thread.join(timeout=5)

    assert row["source"] == "postgres"
    assert _int(row, "db_connections") >= 3
    assert _int(row, "db_connections_active") == 1  # the sleeper; not the sampler
    assert _int(row, "db_connections_idle") >= 1
    assert _int(row, "db_connections_idle_in_transaction") >= 1
    query_ms = row["db_query_max_ms"]
    later_ms = later["db_query_max_ms"]
    assert isinstance(query_ms, float) and isinstance(later_ms, float)
    assert 0.0 < query_ms < 1000.0
    assert later_ms >= query_ms + 90.0  # the same query, 0.1 s older


def test_postgres_commits_and_rollbacks_grow_by_the_transactions_done(
    postgres: PostgresServer, pg_sampler: PostgresSampler
) -> None:
    def sample() -> Row:
        return pg_sampler.sample(time.time_ns())[0]

    before = sample()
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ticks (n int)")
        for n in range(40):
            conn.execute("INSERT INTO ticks VALUES (%s)", (n,))
    with psycopg.connect(postgres.dsn) as conn:
        for _ in range(5):
            conn.execute("SELECT count(*) FROM ticks")
            conn.rollback()
    # A backend publishes its counts when it ends, a moment after the close.
    commits_before = _int(before, "db_xact_commit")
    rollbacks_before = _int(before, "db_xact_rollback")
    after = _poll(
        sample,
        lambda r: (
            _int(r, "db_xact_commit") >= commits_before + 41
            and _int(r, "db_xact_rollback") >= rollbacks_before + 5
        ),
    )

    assert _int(after, "db_xact_commit") >= commits_before + 41
    assert _int(after, "db_xact_rollback") >= rollbacks_before + 5
    ratio = after["db_cache_hit_ratio"]
    assert isinstance(ratio, float) and 0.0 < ratio <= 1.0


def test_postgres_commits_leave_out_the_samplers_own_transactions(
    postgres: PostgresServer,
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE quiet")
        dsn = postgres.dsn.rsplit("/", 1)[0] + "/quiet"

        def published() -> int:
            """Commits of the quiet database, read from another database."""
            found = admin.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = 'quiet'"
            ).fetchone()
            assert found is not None
            return int(found[0])

        sampler = PostgresSampler(dsn)
        sampler.open()  # a connection (2 commits) and one query
        try:
            rows = [sampler.sample(time.time_ns())[0] for _ in range(5)]
            assert [r["db_xact_commit"] for r in rows] == [0] * 5
            assert published() == 2 + 1 + 5  # all the sampler's, published

            sampler.close()
            [again] = sampler.sample(time.time_ns())  # a new connection
            assert again["db_xact_commit"] == 0

            with psycopg.connect(dsn, autocommit=True) as client:  # 1 commit
                client.execute("CREATE TABLE t (n int)")
                for n in range(3):
                    client.execute("INSERT INTO t VALUES (%s)", (n,))
            after = _poll(
                lambda: sampler.sample(time.time_ns())[0],
                lambda r: _int(r, "db_xact_commit") >= 5,
            )
            assert after["db_xact_commit"] == 5  # the client's, exactly
        finally:
            sampler.close()


def test_postgres_role_without_pg_monitor_counts_other_roles_sessions(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("CREATE ROLE watcher LOGIN PASSWORD 'watcher-pass-91'")
        admin.execute("SELECT 1")  # an idle session of another role
        dsn = postgres.dsn.replace(
            f"{postgres.user}:{postgres.password}@", "watcher:watcher-pass-91@"
        )
        sampler = PostgresSampler(dsn)
        with caplog.at_level(logging.WARNING, logger="harness.monitor.postgres"):
            sampler.open()
        try:
            [row] = sampler.sample(time.time_ns())
        finally:
            sampler.close()

    assert _int(row, "db_connections") >= 1  # the admin's session, state unseen
    assert row["db_connections_idle"] == 0
    assert sampler.sees_all_sessions is False
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("postgres")]
    assert len(warnings) == 1
    assert "pg_monitor" in warnings[0] and "GRANT pg_monitor TO" in warnings[0]
    assert "watcher-pass-91" not in caplog.text


def test_postgres_wrong_port_fails_open_without_the_password(
    postgres: PostgresServer,
) -> None:
    port = free_port()
    sampler = PostgresSampler(postgres.dsn.replace(f":{postgres.port}/", f":{port}/"))

    with pytest.raises(MonitorError) as caught:
        sampler.open()

    message = str(caught.value)
    assert f"postgresql://{postgres.user}@127.0.0.1:{port}/postgres" in message
    assert "fix:" in message
    assert postgres.password not in message


def test_postgres_wrong_password_fails_open_without_either_password(
    postgres: PostgresServer,
) -> None:
    dsn = (
        f"host=127.0.0.1 port={postgres.port} dbname=postgres user={postgres.user} "
        "password=not-the-password-42"
    )

    with pytest.raises(MonitorError, match="password authentication failed") as caught:
        PostgresSampler(dsn).open()

    assert "not-the-password-42" not in str(caught.value)
    assert postgres.password not in str(caught.value)


def test_postgres_server_gone_mid_run_gives_null_rows_then_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _require(postgres_bindir(), "PostgreSQL", "postgresql")
    with run_postgres() as server:
        sampler = PostgresSampler(server.dsn, source="orders-db")
        sampler.open()
        [alive] = sampler.sample(time.time_ns())
    with caplog.at_level(logging.WARNING, logger="harness.monitor.postgres"):
        gone = [sampler.sample(time.time_ns())[0] for _ in range(3)]
    with run_postgres(port=server.port):
        [back] = sampler.sample(time.time_ns())
    sampler.close()

    assert isinstance(back["db_connections"], int)

    assert isinstance(alive["db_xact_commit"], int)
    for row in gone:
        assert row.pop("source") == "orders-db"
        assert set(row.values()) == {None}
        assert len(row) == 8
    warnings = [r for r in caplog.records if r.name == "harness.monitor.postgres"]
    assert len(warnings) == 1
    assert server.password not in caplog.text


# -- Redis --------------------------------------------------------------------------


def test_redis_connections_count_extra_clients(
    redis_server: RedisServer, redis_sampler: RedisSampler
) -> None:
    [before] = redis_sampler.sample(time.time_ns())
    clients = [redis.Redis(port=redis_server.port) for _ in range(3)]
    try:
        for client in clients:
            assert client.ping()
        [during] = redis_sampler.sample(time.time_ns())
    finally:
        for client in clients:
            client.close()

    assert _int(during, "redis_connections") == _int(before, "redis_connections") + 3


def test_redis_used_memory_grows_after_writing_5_mb(
    redis_server: RedisServer, redis_sampler: RedisSampler
) -> None:
    client = redis.Redis(port=redis_server.port)
    try:
        [before] = redis_sampler.sample(time.time_ns())
        for n in range(50):
            client.set(f"blob:{n}", os.urandom(100_000))
        [after] = redis_sampler.sample(time.time_ns())
        client.delete(*(f"blob:{n}" for n in range(50)))
    finally:
        client.close()

    grown = _int(after, "redis_used_memory_bytes") - _int(
        before, "redis_used_memory_bytes"
    )
    assert 4_500_000 <= grown <= 8_000_000
    assert after["redis_maxmemory_bytes"] == 64 * 1024 * 1024
    assert after["redis_used_memory_pct"] == pytest.approx(
        _int(after, "redis_used_memory_bytes") / (64 * 1024 * 1024) * 100
    )


def test_redis_hit_rate_comes_from_the_gets_between_two_samples(
    redis_server: RedisServer, redis_sampler: RedisSampler
) -> None:
    client = redis.Redis(port=redis_server.port)
    try:
        client.set("present", b"1")
        [before] = redis_sampler.sample(time.time_ns())
        for _ in range(30):
            assert client.get("present") == b"1"
        for n in range(10):
            assert client.get(f"absent:{n}") is None
        [after] = redis_sampler.sample(time.time_ns())
        [quiet] = redis_sampler.sample(time.time_ns())
    finally:
        client.close()

    assert (
        _int(after, "redis_keyspace_hits") - _int(before, "redis_keyspace_hits") == 30
    )
    assert (
        _int(after, "redis_keyspace_misses") - _int(before, "redis_keyspace_misses")
        == 10
    )
    assert after["redis_hit_rate"] == 0.75
    assert quiet["redis_hit_rate"] is None  # no lookups in that interval


def test_redis_memory_percent_without_a_limit_is_of_the_machine() -> None:
    _require(redis_binary(), "redis-server", "redis-server")
    with run_redis(maxmemory="0") as server:
        sampler = RedisSampler(server.url)
        sampler.open()
        [row] = sampler.sample(time.time_ns())
        sampler.close()

    assert row["redis_maxmemory_bytes"] == 0
    used = _int(row, "redis_used_memory_bytes")
    expected = used / psutil.virtual_memory().total * 100
    assert row["redis_used_memory_pct"] == pytest.approx(expected, rel=0.05)


def test_redis_missing_server_fails_open_without_the_password() -> None:
    port = free_port()
    sampler = RedisSampler(f"redis://:sesame-77@127.0.0.1:{port}/0")

    with pytest.raises(MonitorError) as caught:
        sampler.open()

    message = str(caught.value)
    assert f"redis://127.0.0.1:{port}/0" in message
    assert "sesame-77" not in message


def test_redis_gone_mid_run_gives_null_rows_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _require(redis_binary(), "redis-server", "redis-server")
    with run_redis() as server:
        sampler = RedisSampler(server.url, source="cache")
        sampler.open()
        sampler.sample(time.time_ns())
    with caplog.at_level(logging.WARNING, logger="harness.monitor.redis"):
        gone = [sampler.sample(time.time_ns())[0] for _ in range(3)]
    with run_redis(port=server.port):
        [back] = sampler.sample(time.time_ns())
    sampler.close()

    for row in gone:
        assert row.pop("source") == "cache"
        assert set(row.values()) == {None}
    warnings = [r for r in caplog.records if r.name == "harness.monitor.redis"]
    assert len(warnings) == 1
    assert isinstance(back["redis_used_memory_bytes"], int)
    assert back["redis_hit_rate"] is None  # a new baseline after the gap
