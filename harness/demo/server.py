"""The demo target: a small trading-platform API to point the harness at.

How this works. One process, one trio event loop. The listening socket is bound before
the loop starts; once SIGTERM and SIGINT are routed to the loop, the server prints its
single ``listening on http://HOST:PORT`` line, so a parent that reads it knows both the
port and that stopping the server by signal is now clean. Each accepted connection is
a :class:`~harness.demo.connection.Connection` task; requests go through
:meth:`DemoServer.respond` (routing, faults, the API) and every response written is
counted, except those to ``/_demo/...`` and ``/metrics`` (the Prometheus page of
:mod:`harness.demo.metrics`). On a signal the server stops accepting, closes idle
connections, gives busy ones up to :data:`DRAIN_S` to finish, then exits with status
0.

Run it with ``python -m harness.demo``; :data:`command` is the click command.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import click
import trio

from ..errors import TargetError, UsageError
from .api import ROUTES, ApiRequest, DemoApi
from .config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS, DemoConfig
from .connection import Connection, HttpRequest, HttpResponse
from .faults import Faults
from .metrics import CONTENT_TYPE_HEADER, METRICS_PATH, DemoMetrics

log = logging.getLogger("harness.demo")

IDLE_TIMEOUT_S = 75.0
"""A keep-alive connection with no request for this long is closed."""
DRAIN_S = 2.0
"""On stop, how long requests already being served may take to finish."""
ACCEPT_BATCH = 64
"""Connections accepted per wake-up, so a flood of connects cannot starve the rest."""
STATS_PATH = "/_demo/stats"

_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json(payload: Any) -> bytes:
    return _encode_json(payload).encode()


def _fail(status: int, message: str, endpoint: str | None) -> HttpResponse:
    return HttpResponse(status, _json({"success": False, "error": message}), endpoint)


class _CannotServe(click.ClickException):
    exit_code = TargetError.exit_code


_INJECTED = _fail(500, "injected failure (--error-rate)", None)


class DemoServer:
    """State of one running demo target: the API, the faults and the counts."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.api = DemoApi(list_cap=config.keep_items)
        self.faults = Faults(config)
        self.started_at = time.time()
        self.requests_served = 0
        self.by_endpoint: dict[str, int] = {}
        self.by_status: dict[int, int] = {}
        self.connections: set[Connection] = set()
        self.connections_total = 0
        self.metrics = DemoMetrics(self)

    async def respond(self, request: HttpRequest) -> HttpResponse:
        target = request.target
        query = target.find(b"?")
        path = (target if query < 0 else target[:query]).decode("latin-1")
        method = request.method.decode("latin-1")
        methods = ROUTES.get(path)
        if methods is None:
            # Unrouted paths only: the API's own requests never test for these.
            if path == METRICS_PATH:
                return self._metrics(method)
            if path.startswith("/_demo/"):
                if path != STATS_PATH:
                    return _fail(
                        404, f"no demo endpoint {path}; try {STATS_PATH}", None
                    )
                if method != "GET":
                    return _fail(405, f"{STATS_PATH} takes GET", None)
                return HttpResponse(200, _json(self.stats()), None)
            return _fail(404, f"no endpoint {path}", "unmatched")
        route = methods.get(method)
        if route is None:
            allowed = ", ".join(sorted(methods))
            response = _fail(405, f"{path} takes {allowed}", "unmatched")
            response.headers += b"Allow: %s\r\n" % allowed.encode()
            return response
        if (
            self.faults.any_per_request
            and path.startswith("/api/")
            and await self.faults.before_request()
        ):
            return HttpResponse(500, _INJECTED.body, route.endpoint)
        status, payload = self.api.call(
            route, ApiRequest(method, path, request.authorization, request.body)
        )
        return HttpResponse(status, _json(payload), route.endpoint)

    def _metrics(self, method: str) -> HttpResponse:
        """The Prometheus page: not counted, and never delayed or failed by a
        fault knob (only a stall, which freezes everything, reaches it)."""
        if method != "GET":
            response = _fail(405, f"{METRICS_PATH} takes GET", None)
            response.headers += b"Allow: GET\r\n"
            return response
        return HttpResponse(200, self.metrics.render(), None, CONTENT_TYPE_HEADER)

    def count(self, response: HttpResponse) -> None:
        """Called by a connection once a response was handed to the kernel."""
        self.requests_served += 1
        endpoint = response.endpoint
        assert endpoint is not None
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
        status = response.status
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def stats(self) -> dict[str, Any]:
        """Counts since start. ``by_endpoint`` is keyed ``METHOD /path`` for routed
        requests, ``unmatched`` for unknown paths and wrong methods, and
        ``malformed`` for requests refused before routing (400, 413, 431)."""
        return {
            "requests_served": self.requests_served,
            "by_endpoint": dict(sorted(self.by_endpoint.items())),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
            "pid": os.getpid(),
            "connections_open": len(self.connections),
            "connections_total": self.connections_total,
            "knobs": self.config.knobs(),
            "faults": self.faults.stats(),
        }

    async def run(
        self, listener: socket.socket, *, url: str, parent_pid: int | None = None
    ) -> None:
        """Serve on ``listener`` until SIGTERM or SIGINT, or until the process
        ``parent_pid`` is no longer this one's parent."""
        stop = trio.Event()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            print(f"listening on {url}", flush=True)
            log.info("demo target listening on %s, knobs %s", url, self.config.knobs())
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as services:
                    services.start_soon(self._accept, listener, connections)
                    services.start_soon(self._close_idle)
                    services.start_soon(self.faults.run_stalls)
                    services.start_soon(self._wait_signal, signals, stop)
                    if parent_pid is not None:
                        services.start_soon(self._watch_parent, parent_pid, stop)
                    await stop.wait()
                    services.cancel_scope.cancel()
                trio.lowlevel.notify_closing(listener)
                listener.close()
                await self._drain()
                connections.cancel_scope.cancel()
        log.info(
            "demo target stopped: %d requests served on %d connections",
            self.requests_served,
            self.connections_total,
        )

    async def _wait_signal(self, signals: AsyncIterator[int], stop: trio.Event) -> None:
        async for signum in signals:
            log.info("demo target got %s, stopping", signal.Signals(signum).name)
            stop.set()
            return

    async def _watch_parent(self, parent_pid: int, stop: trio.Event) -> None:
        # Once reparented, the process that started this one is gone: do not
        # outlive it. Checked first too, in case it died before the loop started.
        while os.getppid() == parent_pid:
            await trio.sleep(0.5)
        log.warning("demo target's parent process %d exited, stopping", parent_pid)
        stop.set()

    async def _accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        starved = False
        while True:
            await trio.lowlevel.wait_readable(listener)
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS):
                        # Out of descriptors: back off instead of spinning, and let
                        # pending connects wait in the backlog. Logged once per
                        # episode, not once per attempt.
                        if not starved:
                            log.warning("demo target cannot accept: %s", exc)
                            starved = True
                        await trio.sleep(0.1)
                        break
                    continue
                if starved:
                    log.warning("demo target accepts connections again")
                    starved = False
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(self._serve, Connection(sock))

    async def _serve(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.connections_total += 1
        try:
            await conn.serve(self.respond, self.count)
        finally:
            self.connections.discard(conn)

    async def _close_idle(self) -> None:
        while True:
            await trio.sleep(1.0)
            limit_s = time.monotonic() - IDLE_TIMEOUT_S
            for conn in list(self.connections):
                if not conn.busy and conn.idle_since_s < limit_s:
                    conn.cancel_scope.cancel()

    async def _drain(self) -> None:
        with trio.move_on_after(DRAIN_S):
            while self.connections:
                for conn in list(self.connections):
                    if not conn.busy:
                        conn.cancel_scope.cancel()
                await trio.sleep(0.01)
        if self.connections:
            log.warning(
                "demo target cut %d busy connections after %.1f s",
                len(self.connections),
                DRAIN_S,
            )


def open_listener(host: str, port: int) -> socket.socket:
    """Bind and listen; errors name the address and how to fix it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise TargetError(
            f"demo target: --host {host!r} is not an address ({exc.strerror}); "
            "use 127.0.0.1 or ::1"
        ) from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(4096)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise TargetError(
                f"demo target: port {port} on {host} is already in use; stop what "
                "holds it, choose another --port, or use --port 0 for a free one"
            ) from None
        raise TargetError(
            f"demo target: cannot listen on {host}:{port}: {exc}"
        ) from None
    listener.setblocking(False)
    return listener


def url_of(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(config: DemoConfig, *, parent_pid: int | None = None) -> None:
    """Run the demo target in this process until a signal stops it."""
    listener = open_listener(config.host, config.port)
    server = DemoServer(config)
    try:
        trio.run(
            lambda: server.run(listener, url=url_of(listener), parent_pid=parent_pid)
        )
    finally:
        listener.close()


@click.command(name="demo")
@click.option(
    "--host", default=DEFAULT_HOST, show_default=True, help="Address to bind."
)
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--workers",
    type=int,
    default=DEFAULT_WORKERS,
    show_default=True,
    help="Requests served at once when requests take time (see --service-ms).",
)
@click.option(
    "--service-ms",
    type=float,
    default=0.0,
    help="Time each API request holds a worker; capacity is workers/service time.",
)
@click.option(
    "--leak-bytes-per-request",
    type=int,
    default=0,
    help="Memory each API request allocates and never frees.",
)
@click.option(
    "--latency-drift-ms-per-min",
    type=float,
    default=0.0,
    help="Service time added for every minute since start.",
)
@click.option(
    "--error-rate",
    type=float,
    default=0.0,
    help="Fraction (0..1) of API requests answered 500, drawn at random.",
)
@click.option(
    "--stall-every-s",
    type=float,
    default=0.0,
    help="Freeze the whole process this often (with --stall-ms).",
)
@click.option("--stall-ms", type=float, default=0.0, help="Length of each freeze.")
@click.option("--seed", type=int, default=None, help="Seed of the random draws.")
@click.option(
    "--keep-items",
    type=int,
    default=100,
    show_default=True,
    help="Items kept per user in each list (accounts, automations, simulations); "
    "0 keeps every one, so stored data grows with the load.",
)
@click.option(
    "--parent-pid",
    type=int,
    default=None,
    hidden=True,
    help="Stop when this process is no longer the parent (it exited).",
)
def command(
    host: str,
    port: int,
    workers: int,
    service_ms: float,
    leak_bytes_per_request: int,
    latency_drift_ms_per_min: float,
    error_rate: float,
    stall_every_s: float,
    stall_ms: float,
    seed: int | None,
    keep_items: int,
    parent_pid: int | None,
) -> None:
    """Run the bundled demo target: a trading-platform style JSON API with fault
    knobs, for trying the harness out. Prints `listening on URL` once ready;
    SIGTERM or Ctrl-C stops it. Request counts are at GET /_demo/stats, and
    process and request figures for Prometheus at GET /metrics."""
    try:
        config = DemoConfig(
            host=host,
            port=port,
            workers=workers,
            service_ms=service_ms,
            leak_bytes_per_request=leak_bytes_per_request,
            latency_drift_ms_per_min=latency_drift_ms_per_min,
            error_rate=error_rate,
            stall_every_s=stall_every_s,
            stall_ms=stall_ms,
            seed=seed,
            keep_items=keep_items,
        )
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if not logging.getLogger().hasHandlers():
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )
    try:
        serve(config, parent_pid=parent_pid)
    except TargetError as exc:
        raise _CannotServe(str(exc)) from None
