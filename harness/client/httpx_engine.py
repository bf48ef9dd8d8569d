"""The httpx engine: for what the fast engine does not do (HTTP/2, proxies).

One ``httpx.AsyncClient`` per VU, limited to one connection, with its own cookie jar.
It costs an order of magnitude more CPU per request than :mod:`.fast`, so it is chosen
per profile (``http.engine: httpx``) only when needed.

Both engines send the same request: httpx's default headers (``Accept``,
``Accept-Encoding``, ``Connection``, ``User-Agent``) are removed, so only ``Host``, the
request's own headers, ``Cookie`` and ``Content-Length`` go out, and a server does not
start compressing because one engine asked for it. Environment proxies and
certificate variables are not read (``trust_env=False``); TLS uses the same system
trust store as the fast engine, and a proxy is only used when the profile names one.

Timings come from httpcore's ``trace`` extension: ``connect_ns`` spans
``connect_tcp.started`` to the last of ``connect_tcp.complete`` /
``start_tls.complete``; ``ttfb_ns`` ends at ``receive_response_headers.complete`` (httpx
reports no earlier point, so it includes parsing the head). The whole-request timeout
is a trio cancel scope around the exchange; httpx's own per-operation timeouts are set
to the same values and map to the same error names.

Byte counts are rebuilt from what httpx reports, since it does not expose the wire:
``bytes_out`` is the request line, the headers httpx actually sent (``Host``,
``Content-Length`` and ``Cookie`` included), the blank line and the body; ``bytes_in``
is the status line, the response headers, the blank line and the body bytes as
received before any content decoding. Chunked framing is not counted, and for HTTP/2
the sizes are those of the equivalent HTTP/1.1 message (HPACK makes the real ones
smaller).
"""

from __future__ import annotations

import errno
import logging
import ssl
import time
from functools import cache
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import trio

from ..errors import UsageError
from .base import Origin, Request, Result, make_ssl_context

_now_ns = time.perf_counter_ns

_MARKS = frozenset(
    {
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "connection.start_tls.started",
        "connection.start_tls.complete",
        "proxy.start_tls.complete",
        "http11.receive_response_headers.complete",
        "http2.receive_response_headers.complete",
    }
)
_CONNECTED = (
    "connection.connect_tcp.complete",
    "connection.start_tls.complete",
    "proxy.start_tls.complete",
)
_HEADERS_DONE = (
    "http11.receive_response_headers.complete",
    "http2.receive_response_headers.complete",
)
# What httpcore, h11 and h2 say when the peer ends the stream early; every other
# RemoteProtocolError means the response itself was malformed.
_PEER_CLOSED_TEXT = ("disconnected", "peer closed", "connectionterminated")
# Characters a request target may carry as they are; anything else is %-escaped.
_TARGET_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


@cache
def _tls_context(verify: bool, http2: bool) -> ssl.SSLContext:
    # One per process and settings: loading the trust store for every VU would cost
    # milliseconds each. httpcore sets the ALPN list on the context for every
    # connection, always the same list for a given http2 setting, hence the key.
    return make_ssl_context(verify)


class HttpxClient:
    """A :class:`harness.client.base.Client` on ``httpx.AsyncClient``."""

    def __init__(
        self,
        origin: Origin,
        *,
        connect_timeout_s: float,
        timeout_s: float,
        verify_tls: bool,
        http2: bool = False,
        proxy: str | None = None,
    ) -> None:
        # httpx logs one INFO line per request; a load test would drown in them.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.origin = origin
        self._timeout_s = timeout_s
        self._prefix = (
            f"{origin.scheme}://{origin.host_header.decode('ascii')}{origin.base_path}"
        )
        try:
            self._client = httpx.AsyncClient(
                http2=http2,
                proxy=proxy,
                verify=_tls_context(verify_tls, http2),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
                follow_redirects=False,
                trust_env=False,
            )
        except ImportError as exc:
            raise UsageError(
                f"http.http2 is on but HTTP/2 support is missing ({exc}); install it "
                "with: pip install 'httpx[http2]', or set http.http2: false"
            ) from None
        except (ValueError, httpx.InvalidURL) as exc:
            raise UsageError(
                f"http.proxy {proxy!r} is not a usable proxy URL ({exc}); write it "
                "like http://127.0.0.1:3128"
            ) from None
        for name in list(self._client.headers):
            del self._client.headers[name]
        self._closed = False

    async def send(self, request: Request) -> Result:
        start = _now_ns()
        result = Result(start_ns=start)
        marks: dict[str, int] = {}

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event in _MARKS:
                marks[event] = _now_ns()

        try:
            with trio.move_on_after(self._timeout_s) as scope:
                await self._exchange(request, result, trace)
            if scope.cancelled_caught:
                result.error = (
                    "connect_timeout" if _was_connecting(marks) else "read_timeout"
                )
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            result.error = _error_kind(exc)
        end = _now_ns()
        if result.error is not None:
            result.status = 0
            result.latency_ns = end - start
        began = marks.get("connection.connect_tcp.started")
        if began is not None:
            connected = max((marks[m] for m in _CONNECTED if m in marks), default=end)
            result.connect_ns = connected - began
        for mark in _HEADERS_DONE:
            if mark in marks:
                result.ttfb_ns = marks[mark] - start
        return result

    async def _exchange(self, request: Request, result: Result, trace: Any) -> None:
        async with self._client.stream(
            request.method.decode("ascii"),
            self._prefix + _target_text(request.target),
            headers=request.headers,
            content=request.body or None,
            extensions={"trace": trace},
        ) as response:
            if request.keep_body:
                result.body = await response.aread()
                result.headers = [(k.lower(), v) for k, v in response.headers.raw]
            else:
                async for _ in response.aiter_raw():
                    pass
            result.latency_ns = _now_ns() - result.start_ns
            result.status = response.status_code
            result.bytes_out = _request_size(response.request)
            result.bytes_in = _response_size(response)

    def clear_cookies(self) -> None:
        self._client.cookies.clear()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()
        else:
            await trio.lowlevel.checkpoint()


def _was_connecting(marks: dict[str, int]) -> bool:
    if "connection.connect_tcp.started" not in marks:
        return False
    if "connection.connect_tcp.complete" not in marks:
        return True
    return (
        "connection.start_tls.started" in marks
        and "connection.start_tls.complete" not in marks
    )


def _target_text(target: bytes) -> str:
    try:
        return target.decode("ascii")
    except UnicodeDecodeError:
        return quote_from_bytes(target, safe=_TARGET_SAFE)


def _fields_size(headers: httpx.Headers) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.raw)


def _request_size(request: httpx.Request) -> int:
    line = len(request.method) + len(request.url.raw_path) + len(" HTTP/1.1\r\n") + 1
    body = int(request.headers.get("content-length", "0") or 0)
    return line + _fields_size(request.headers) + 2 + body


def _response_size(response: httpx.Response) -> int:
    line = len(response.http_version) + len(response.reason_phrase) + 7
    return line + _fields_size(response.headers) + 2 + response.num_bytes_downloaded


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "read_timeout"
    if isinstance(exc, httpx.ProxyError):
        return "connect_error"
    if isinstance(exc, httpx.ConnectError):
        causes = _causes(exc)
        if any(isinstance(c, ssl.SSLError) for c in causes):
            return "tls"
        # trio's "all attempts failed" wrapper has no errno; the attempts below do.
        oserrors = [c for c in causes if isinstance(c, OSError) and c.errno]
        if oserrors and all(c.errno == errno.ECONNREFUSED for c in oserrors):
            return "connect_refused"
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc).lower()
        return "reset" if any(t in text for t in _PEER_CLOSED_TEXT) else "protocol"
    if isinstance(exc, httpx.NetworkError):
        return "reset"
    return "protocol"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it was raised from, exception groups opened up."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 64:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return seen
