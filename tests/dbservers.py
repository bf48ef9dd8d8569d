"""Real PostgreSQL and Redis servers on loopback, started and stopped by the tests.

Each server is private to the test session that starts it: its own data folder under
the system temporary folder, a free port on 127.0.0.1, and nothing written to disk
that has to survive (no fsync, no snapshots), and no autovacuum (whose workers
would add commits to the counts the tests check). PostgreSQL refuses to run as root, so
as root its folder is given to the ``postgres`` user the Debian package creates and
``initdb`` and ``postgres`` run as that user (``subprocess`` switches user itself,
so the pid the tests hold is the server's own).

Binaries: PostgreSQL from ``/usr/lib/postgresql/<version>/bin`` (Debian's layout,
highest version first) or the ``PATH``; ``redis-server`` from the ``PATH``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .servers import free_port, wait_for_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PG_USER = "harness"
PG_PASSWORD = "pg-test-password-5f1c"
"""The test cluster's password: the tests check it never shows in a message."""


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are, or None if PostgreSQL is absent."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: (
            int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    if versions:
        return versions[0].parent
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    return None


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass(frozen=True, slots=True)
class PostgresServer:
    port: int
    pid: int
    user: str
    password: str
    dbname: str

    @property
    def dsn(self) -> str:
        return (
            f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/"
            f"{self.dbname}"
        )


@dataclass(frozen=True, slots=True)
class _Account:
    """Who runs the server: as root, the postgres user; otherwise ourselves."""

    uid: int | None
    gid: int | None

    @property
    def extra_groups(self) -> list[int] | None:
        """None keeps ours; as root, drop root's supplementary groups."""
        return None if self.uid is None else []


def _account() -> _Account:
    if os.geteuid() != 0:
        return _Account(None, None)
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "PostgreSQL refuses to run as root and there is no postgres user; "
            "apt-get install postgresql creates it"
        ) from None
    return _Account(entry.pw_uid, entry.pw_gid)


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


@contextmanager
def run_postgres(port: int = 0) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster with a password-protected user on ``port`` (0: a
    free one); stopped and deleted after."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    account = _account()
    # Not under pytest's tmp_path: its parent folders are private to root, and
    # the postgres user must be able to reach the data folder.
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    try:
        if account.uid is not None and account.gid is not None:
            os.chown(root, account.uid, account.gid)
        pwfile = root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if account.uid is not None and account.gid is not None:
            os.chown(pwfile, account.uid, account.gid)
        data = root / "data"
        initdb = subprocess.run(
            [
                str(bindir / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                PG_USER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=root,
            user=account.uid,
            group=account.gid,
            extra_groups=account.extra_groups,
        )
        if initdb.returncode != 0:
            raise RuntimeError(
                f"initdb failed with code {initdb.returncode}:\n"
                + initdb.stderr.decode(errors="replace")[-2000:]
            )
        port = port or free_port()
        log_path = root / "server.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={root}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=16MB",
                    "-c",
                    "max_connections=30",
                    # No background transactions in the tests' databases: the
                    # commit counts they check are their own.
                    "-c",
                    "autovacuum=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd=root,
                user=account.uid,
                group=account.gid,
                extra_groups=account.extra_groups,
            )
        try:
            _wait_postgres_ready(proc, port, log_path)
            yield PostgresServer(port, proc.pid, PG_USER, PG_PASSWORD, "postgres")
        finally:
            # SIGINT is PostgreSQL's fast shutdown: sessions are cut, no waiting.
            _stop(proc, signal.SIGINT)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_postgres_ready(
    proc: subprocess.Popen[bytes], port: int, log_path: Path
) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    dsn = f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"postgres exited with code {proc.returncode}:\n{_log_tail(log_path)}"
            )
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(
        f"postgres did not accept connections within {START_TIMEOUT_S:g} s:\n"
        + _log_tail(log_path)
    )


@dataclass(frozen=True, slots=True)
class RedisServer:
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextmanager
def run_redis(maxmemory: str = "64mb", port: int = 0) -> Iterator[RedisServer]:
    """A redis-server on ``port`` (0: a free one) that keeps nothing on disk;
    stopped after."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: apt-get install redis-server"
        )
    root = Path(tempfile.mkdtemp(prefix="harness-redis-"))
    port = port or free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            maxmemory,
            "--dir",
            str(root),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, START_TIMEOUT_S)
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}")
        yield RedisServer(port, proc.pid)
    finally:
        _stop(proc, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
