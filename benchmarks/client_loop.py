"""Requests per second of the fast client alone, against the bare loop it is built on.

Starts nginx pinned to one core (unless ``--url`` names a running server), pins this
process to another, and runs three loops, each with ``--connections`` keep-alive
connections in one trio run:

* ``bare-stream``: ``trio.open_tcp_stream``, ``send_all`` of fixed request bytes,
  ``receive_some`` fed to ``httptools.HttpResponseParser`` until the message is
  complete. The smallest honest trio + llhttp client.
* ``bare-fd``: the same on the socket's file descriptor (``wait_readable`` +
  ``os.read``), which is what :class:`harness.client.fast.FastClient` does.
* ``fast``: ``FastClient.send`` with a rendered :class:`Request`, timings, cookies,
  watchdog and all.

Each loop runs ``--repeat`` times, interleaved; the report gives every run and the
median, as requests per second and microseconds of this process's CPU per request.

    .venv/bin/python benchmarks/client_loop.py --duration 10 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import httptools
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.client.base import Origin, Request
from harness.client.fast import FastClient
from tests.servers import run_nginx

HEADERS = [(b"User-Agent", b"harness-bench"), (b"Accept", b"*/*")]


class _Done:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


def _raw_request(origin: Origin, path: bytes) -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: " + origin.host_header]
    lines += [name + b": " + value for name, value in HEADERS]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def bare_stream(origin: Origin, path: bytes, stop_at: float) -> int:
    stream = await trio.open_tcp_stream(origin.host, origin.port)
    request = _raw_request(origin, path)
    state = _Done()
    parser = httptools.HttpResponseParser(state)
    count = 0
    while time.monotonic() < stop_at:
        await stream.send_all(request)
        state.done = False
        while not state.done:
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("server closed the connection")
            parser.feed_data(data)
        count += 1
    await stream.aclose()
    return count


async def bare_fd(origin: Origin, path: bytes, stop_at: float) -> int:
    stream = await trio.open_tcp_stream(origin.host, origin.port)
    fd = stream.socket.fileno()
    request = _raw_request(origin, path)
    state = _Done()
    parser = httptools.HttpResponseParser(state)
    count = 0
    while time.monotonic() < stop_at:
        os.write(fd, request)
        state.done = False
        while not state.done:
            await trio.lowlevel.wait_readable(fd)
            data = os.read(fd, 65536)
            if not data:
                raise RuntimeError("server closed the connection")
            parser.feed_data(data)
        count += 1
    await stream.aclose()
    return count


async def fast(origin: Origin, path: bytes, stop_at: float) -> int:
    client = FastClient(origin, connect_timeout_s=10, timeout_s=30, ssl_context=None)
    count = 0
    while time.monotonic() < stop_at:
        result = await client.send(Request(b"GET", path, list(HEADERS)))
        if result.error is not None:
            raise RuntimeError(f"request failed: {result.error}")
        count += 1
    await client.aclose()
    return count


Loop = Callable[[Origin, bytes, float], Awaitable[int]]
LOOPS: dict[str, Loop] = {"bare-stream": bare_stream, "bare-fd": bare_fd, "fast": fast}


async def _measure(
    loop: Loop, origin: Origin, path: bytes, connections: int, duration_s: float
) -> tuple[float, float]:
    counts: list[int] = []

    async def one() -> None:
        counts.append(await loop(origin, path, stop_at))

    stop_at = time.monotonic() + duration_s
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    total = sum(counts)
    return total / wall, cpu / total * 1e6


def _run(url: str, args: argparse.Namespace) -> None:
    origin = Origin.parse(url)
    path = args.path.encode("ascii")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in args.loops}
    for round_ in range(args.repeat):
        for name in args.loops:
            rate, cpu_us = trio.run(
                _measure, LOOPS[name], origin, path, args.connections, args.duration
            )
            results[name].append((rate, cpu_us))
            print(f"round {round_ + 1} {name:12s} {rate:9,.0f} req/s {cpu_us:6.1f} µs")
    setup = f"{args.connections} connections, {args.duration:g} s per run"
    print(f"\n{setup}, GET {args.path}")
    for name, runs in results.items():
        rates = ", ".join(f"{r:,.0f}" for r, _ in runs)
        median_rate = statistics.median(r for r, _ in runs)
        median_cpu = statistics.median(c for _, c in runs)
        print(
            f"{name:12s} median {median_rate:9,.0f} req/s, {median_cpu:5.1f} µs CPU "
            f"per request (runs: {rates})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--path", default="/hello")
    parser.add_argument("--url", help="use this server instead of starting nginx")
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument(
        "--loops", nargs="+", choices=sorted(LOOPS), default=list(LOOPS)
    )
    args = parser.parse_args()
    if args.url:
        os.sched_setaffinity(0, {args.client_cpu})
        _run(args.url, args)
        return
    # nginx inherits the affinity this process has when it starts it.
    os.sched_setaffinity(0, {args.server_cpu})
    with (
        TemporaryDirectory(prefix="bench-nginx-") as root,
        run_nginx(Path(root)) as url,
    ):
        os.sched_setaffinity(0, {args.client_cpu})
        _run(url, args)


if __name__ == "__main__":
    main()
