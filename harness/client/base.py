"""The client interface every HTTP engine implements.

A VU owns one client: one connection (kept alive between requests) and one cookie jar.
The flow renders a :class:`Request` and awaits :meth:`Client.send`, which never raises
for anything the network or the server does: every outcome is a :class:`Result` whose
``error`` is one of the stable kinds in :data:`harness.record.ERROR_KINDS`, or ``None``.
Timings are nanoseconds from the monotonic clock (``time.perf_counter_ns``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from ..errors import UsageError


@dataclass(slots=True)
class Request:
    """One rendered request.

    ``target`` is the request target (path and query, already rendered and
    %-encoded), relative to the origin: the client puts :attr:`Origin.base_path` in
    front of it. ``headers`` are the request's own headers, the default headers
    already merged in; the client adds ``Host``, ``Content-Length`` and ``Cookie``
    itself (HTTP/1.1 keeps the connection alive without a ``Connection`` header).
    """

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    keep_body: bool = False
    """True when the flow needs the body (captures, JSON checks); otherwise it is
    read fully and counted, then dropped."""


@dataclass(slots=True)
class Result:
    status: int = 0
    """0 when no response came."""
    error: str | None = None
    start_ns: int = 0
    """Monotonic instant the request began (before connecting, if it had to)."""
    connect_ns: int = 0
    """Connection set-up time (TCP, and TLS for https); 0 when the connection was
    reused. When set-up failed, the time the attempt took."""
    ttfb_ns: int = 0
    """From start to the first response byte."""
    latency_ns: int = 0
    """From start to the last response byte (or to the failure)."""
    bytes_out: int = 0
    """Request bytes written: request line, headers, body."""
    bytes_in: int = 0
    """Response bytes received: status line, headers, body as framed on the wire."""
    body: bytes = b""
    """The body, only when ``Request.keep_body`` asked for it."""
    headers: list[tuple[bytes, bytes]] | None = None
    """Response header fields, names lower-cased, only when ``Request.keep_body``
    asked for the body; None otherwise."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host, port, and the Host header to send."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    base_path: str = ""

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"target {url!r} is not an http:// or https:// URL with a host; "
                "write it like http://127.0.0.1:13010"
            )
        default = 443 if parts.scheme == "https" else 80
        try:
            port = parts.port or default
        except ValueError as exc:
            raise UsageError(f"target {url!r} has a bad port: {exc}") from None
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        return cls(
            parts.scheme, host, port, header.encode("ascii"), parts.path.rstrip("/")
        )


class Client(Protocol):
    async def send(self, request: Request) -> Result: ...

    def clear_cookies(self) -> None: ...

    async def aclose(self) -> None: ...


def make_ssl_context(verify: bool) -> ssl.SSLContext:
    """One context shared by every connection of a worker."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
