"""The fast engine: HTTP/1.1 over one kept-alive trio connection, parsed by llhttp.

How this works
--------------
A :class:`FastClient` belongs to one VU and owns at most one connection. It is opened
on the first request (``trio.open_tcp_stream``, then a ``trio.SSLStream`` handshake for
https, both inside the connect timing and the connect timeout) and kept until the
server ends it (``Connection: close``, HTTP/1.0, end of stream) or a request fails.

A request is serialised into one ``bytes`` and written at once. Plain http then skips
trio's stream layers and works on the socket's file descriptor: wait until readable,
``os.read``, feed ``httptools.HttpResponseParser`` (llhttp), until its
``on_message_complete`` fires. Each stream layer (a socket-error translating context
manager, the send conflict detector, the non-blocking helper) costs more than the
parse itself on this path. Waiting before the first read also makes every request a
trio checkpoint, so a VU that always finds its answer ready cannot starve the others.
https goes through ``SSLStream.send_all`` / ``receive_some``.

The response head is not taken apart header by header: that would cost a Python call
per header on every request. A plain GET is read with a parser told only of message
completion; HEAD and ``keep_body`` requests use a second parser (same connection, used
in turn at message boundaries) that also reports the end of the head and the body
bytes. The client keeps the raw head bytes and looks for ``set-cookie:`` in them,
lower-cased; it splits them into fields only when a cookie is there, when the caller
asked for the body (``Result.headers`` then holds the fields, names lower-cased), or
when the server ended the stream to close a body that had no length.

Timeouts. A trio cancel scope per request costs more than the rest of the client: it
measured 15-18 µs here, on a machine where a whole bare request costs 45-55 µs of CPU.
So the whole-request timeout is enforced by a watchdog instead: one system task per
trio run wakes every ``timeout_s / 20`` (between 5 ms and 250 ms) and closes the socket
of any client whose request has passed its deadline. The blocked read then wakes with
``ClosedResourceError`` and the request ends as ``read_timeout``. A timeout therefore
fires up to one watchdog period late. Connecting still uses a cancel scope (bounded by
``connect_timeout_s`` and by what is left of ``timeout_s``): it happens once per
connection, not per request.

Stale keep-alive: when a reused connection fails before the first response byte (the
server closed it while it was idle, and so never saw the request), the request is sent
once more on a new connection. Nothing else is ever retried.

A client is not safe for concurrent ``send`` calls; a VU sends one request at a time.
"""

from __future__ import annotations

import errno
import os
import ssl
import time
import weakref
from typing import Any
from urllib.parse import quote

import httptools
import trio
from trio.lowlevel import wait_readable, wait_writable

from ..errors import UsageError
from .base import Origin, Request, Result, make_ssl_context
from .cookies import CookieJar

READ_SIZE = 65536
"""Bytes asked of each read; a response that fits arrives in one system call."""

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_PARSER_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)
_PEER_GONE = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    trio.BrokenResourceError,
)
_now_ns = time.perf_counter_ns
# Characters a base path may hold as they are; anything else is %-escaped.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_SCAN_WHOLE = 512
"""A first read up to this size is scanned for Set-Cookie whole; a longer one only
up to the end of its head (finding that end costs about as much as scanning 500 B)."""

WATCHDOG_MIN_PERIOD_S = 0.005
"""Shortest watchdog period (for timeouts under 0.1 s); its wake-ups cost CPU."""
WATCHDOG_MAX_PERIOD_S = 0.25
"""Longest watchdog period: how late, at most, a long timeout fires."""


class _Failed(Exception):
    """Ends the request with the error ``kind``; internal to this module."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _PeerGone(Exception):
    """The peer closed or reset the connection before any byte of the response."""


class FastClient:
    """HTTP/1.1 client for one VU: one connection, one cookie jar.

    ``ssl_context`` is the worker's shared context for https origins; ``None`` there
    means a default context that verifies certificates. ``send_host=False`` is for
    requests that carry their own ``Host`` header (a virtual host behind an address):
    the client then adds none, rather than a second one.
    """

    def __init__(
        self,
        origin: Origin,
        *,
        connect_timeout_s: float,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None,
        send_host: bool = True,
    ) -> None:
        if not timeout_s > 0 or not connect_timeout_s > 0:
            raise UsageError(
                f"client timeouts must be positive, got timeout_s={timeout_s} and "
                f"connect_timeout_s={connect_timeout_s}; set http.timeout_s and "
                "http.connect_timeout_s to a number of seconds above zero"
            )
        self.origin = origin
        self.cookies = CookieJar()
        self._tls_context: ssl.SSLContext | None = None
        if origin.scheme == "https":
            self._tls_context = ssl_context or make_ssl_context(verify=True)
        self._request_tail = b" HTTP/1.1\r\n"
        if send_host:
            self._request_tail += b"Host: " + origin.host_header + b"\r\n"
        self._base_path = quote(origin.base_path, safe=_PATH_SAFE).encode("ascii")
        self._connect_timeout_s = connect_timeout_s
        self._timeout_ns = int(timeout_s * 1e9)
        self._watch_period_s = min(
            max(timeout_s / 20, WATCHDOG_MIN_PERIOD_S), WATCHDOG_MAX_PERIOD_S
        )
        # The connection: a trio socket, its descriptor, and for https its TLS layer.
        self._sock: trio.socket.SocketType | None = None
        self._fd = -1
        self._tls: trio.SSLStream[trio.SocketStream] | None = None
        self._served = 0
        # Two parsers per connection, used in turn at message boundaries: a lean one
        # told only of message completion, and one that also reports the end of the
        # head (to stop at it for HEAD) and body bytes (for keep_body).
        self._lean: Any = None
        self._full: Any = None
        self._parser: Any = None
        # The response being read; the parser callbacks below fill it in.
        self._done = False
        self._status = 0
        self._keep_alive = False
        self._interim = 0
        self._is_head = False
        self._parts: list[bytes] | None = None
        # Watchdog state: the request's deadline (0 while idle), and whether the
        # watchdog closed the connection because that deadline passed.
        self._deadline_ns = 0
        self._expired = False
        self._watcher: _Watchdog | None = None
        self._closed = False

    async def send(self, request: Request) -> Result:
        start = _now_ns()
        payload = self._encode(request, start)
        # Positional: status, error, start_ns. Keywords cost measurably more here.
        result = Result(0, None, start)
        self._parts = [] if request.keep_body else None
        self._is_head = request.method == b"HEAD"
        self._deadline_ns = start + self._timeout_ns
        try:
            if self._fd < 0:
                await self._connect(result)
            if self._served:
                try:
                    await self._exchange(payload, result)
                except _PeerGone:
                    # The server closed this idle connection before our request
                    # reached it, so sending it again cannot run it twice.
                    self._close_now()
                    await self._connect(result)
                    await self._exchange(payload, result)
            else:
                await self._exchange(payload, result)
        except _PeerGone:
            self._close_now()
            result.error = "reset"
            result.latency_ns = _now_ns() - start
        except _Failed as failure:
            self._close_now()
            result.error = failure.kind
            result.latency_ns = _now_ns() - start
        except BaseException:
            # Cancelled, or a bug: never leave a half-read connection for reuse.
            self._close_now()
            raise
        finally:
            self._deadline_ns = 0
        return result

    def clear_cookies(self) -> None:
        self.cookies.clear()

    async def aclose(self) -> None:
        self._closed = True
        self._close_now()
        if self._watcher is not None:
            self._watcher.forget(self)
            self._watcher = None
        await trio.lowlevel.checkpoint()

    # -- request bytes -----------------------------------------------------------

    def _encode(self, request: Request, now_ns: int) -> bytes:
        method = request.method
        parts = [method, b" ", self._base_path, request.target, self._request_tail]
        for name, value in request.headers:
            parts += (name, b": ", value, b"\r\n")
        jar = self.cookies
        if jar.value:
            if now_ns >= jar.next_expiry_ns:
                jar.expire(now_ns)
            if jar.value:
                parts += (b"Cookie: ", jar.value, b"\r\n")
        body = request.body
        if body:
            parts += (b"Content-Length: ", b"%d" % len(body), b"\r\n\r\n", body)
        elif method in _BODY_METHODS:
            parts.append(b"Content-Length: 0\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    # -- connection --------------------------------------------------------------

    async def _connect(self, result: Result) -> None:
        if self._closed:
            raise trio.ClosedResourceError("send() on a FastClient after aclose()")
        began = _now_ns()
        left_s = (result.start_ns + self._timeout_ns - began) / 1e9
        stream: trio.SocketStream | None = None
        tls: trio.SSLStream[trio.SocketStream] | None = None
        try:
            with trio.move_on_after(max(0.0, min(self._connect_timeout_s, left_s))):
                try:
                    stream = await trio.open_tcp_stream(
                        self.origin.host, self.origin.port
                    )
                except OSError as exc:
                    raise _Failed(_connect_kind(exc)) from None
                if self._tls_context is not None:
                    tls = trio.SSLStream(
                        stream,
                        self._tls_context,
                        server_hostname=self.origin.host,
                        https_compatible=True,
                    )
                    try:
                        await tls.do_handshake()
                    except (trio.BrokenResourceError, OSError):
                        raise _Failed("tls") from None
                self._adopt(stream, tls)
                return
            raise _Failed("connect_timeout")
        except BaseException:
            if stream is not None and self._sock is None:
                stream.socket.close()
            raise
        finally:
            # Set-up time, also when set-up failed: it says how long the attempt took.
            result.connect_ns += _now_ns() - began

    def _adopt(
        self, stream: trio.SocketStream, tls: trio.SSLStream[trio.SocketStream] | None
    ) -> None:
        sock = stream.socket
        self._sock = sock
        self._fd = sock.fileno()
        self._tls = tls
        self._lean = self._full = None
        self._served = 0
        if self._watcher is None:
            self._watcher = _watchdog()
            self._watcher.watch(self, self._watch_period_s)

    def _close_now(self) -> None:
        """Close the connection at once: no TLS goodbye, no checkpoint."""
        sock = self._sock
        if sock is not None:
            self._sock = None
            self._fd = -1
            self._tls = None
            self._lean = self._full = None
            self._served = 0
            sock.close()

    def _expire(self) -> None:
        """Called by the watchdog: the request in flight outlived its deadline."""
        if self._sock is not None:
            self._expired = True
            self._close_now()

    def _lost(self, exc: BaseException, received: int) -> Exception:
        """What a failed read or write means, given how much of the answer came."""
        if self._expired:
            self._expired = False
            return _Failed("read_timeout")
        if received == 0 and isinstance(exc, _PEER_GONE):
            return _PeerGone()
        return _Failed("reset")

    def _pick_parser(self) -> Any:
        if self._parts is None and not self._is_head:
            parser = self._lean
            if parser is None:
                parser = self._lean = httptools.HttpResponseParser(
                    _Callbacks(on_message_complete=self.on_message_complete)
                )
        else:
            parser = self._full
            if parser is None:
                parser = self._full = httptools.HttpResponseParser(
                    _Callbacks(
                        on_headers_complete=self.on_headers_complete,
                        on_body=self.on_body,
                        on_message_complete=self.on_message_complete,
                    )
                )
        self._parser = parser
        self._done = False
        self._interim = 0
        return parser

    # -- one exchange ----------------------------------------------------------

    async def _exchange(self, payload: bytes, result: Result) -> None:
        if self._tls is not None:
            await self._exchange_tls(self._tls, payload, result)
            return
        fd = self._fd
        try:
            try:
                sent = os.write(fd, payload)
            except BlockingIOError:
                sent = 0
            if sent < len(payload):
                await _write_rest(fd, payload, sent)
        except (OSError, trio.ClosedResourceError) as exc:
            raise self._lost(exc, 0) from None
        result.bytes_out += len(payload)

        parser = self._pick_parser()
        head: list[bytes] = []
        head_open = True
        received = 0
        while True:
            try:
                await wait_readable(fd)
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            except (OSError, trio.ClosedResourceError) as exc:
                raise self._lost(exc, received) from None
            if not data:
                self._at_eof(head, head_open, received)
                break
            if not received:
                result.ttfb_ns = _now_ns() - result.start_ns
            received += len(data)
            try:
                parser.feed_data(data)
            except _PARSER_ERRORS:
                raise _Failed("protocol") from None
            if head_open:
                head.append(data)
                if not self._done:
                    head_open = _head_bounds(head, self._interim) is None
            if self._done:
                break
        self._finish(result, head, received)

    async def _exchange_tls(
        self, tls: trio.SSLStream[trio.SocketStream], payload: bytes, result: Result
    ) -> None:
        # The same steps as the plain loop above, through the TLS stream. Sharing
        # one loop would put an extra await layer on every plain read.
        try:
            await tls.send_all(payload)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._lost(exc, 0) from None
        result.bytes_out += len(payload)

        parser = self._pick_parser()
        head: list[bytes] = []
        head_open = True
        received = 0
        while True:
            try:
                # Typed bytes | bytearray; bytes() of a bytes object is that object.
                data = bytes(await tls.receive_some(READ_SIZE))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._lost(exc, received) from None
            if not data:
                self._at_eof(head, head_open, received)
                break
            if not received:
                result.ttfb_ns = _now_ns() - result.start_ns
            # Bytes of the decrypted stream: TLS records add a few percent on top.
            received += len(data)
            try:
                parser.feed_data(data)
            except _PARSER_ERRORS:
                raise _Failed("protocol") from None
            if head_open:
                head.append(data)
                if not self._done:
                    head_open = _head_bounds(head, self._interim) is None
            if self._done:
                break
        self._finish(result, head, received)

    def _at_eof(self, head: list[bytes], head_open: bool, received: int) -> None:
        """The server ended the stream: fine only for a body that runs to the end."""
        if not received:
            raise _PeerGone()
        if head_open:
            raise _Failed("reset")
        raw = b"".join(head)
        bounds = _head_bounds(head, self._interim)
        assert bounds is not None
        fields = _fields(raw[bounds[0] : bounds[1]])
        if any(name in (b"content-length", b"transfer-encoding") for name, _ in fields):
            raise _Failed("reset")
        self._status = self._parser.get_status_code()
        self._keep_alive = False
        self._done = True

    def _finish(self, result: Result, head: list[bytes], received: int) -> None:
        end = _now_ns()
        result.status = self._status
        result.latency_ns = end - result.start_ns
        result.bytes_in = received
        if not self._keep_alive:
            self._close_now()
        else:
            self._served += 1
            if self._is_head:
                # This parser still waits for the body the head announced.
                self._full = None
        raw = head[0] if len(head) == 1 else b"".join(head)
        # Looking for "set-cookie:" in the lower-cased bytes is cheaper than having
        # the parser call back for every header; a small response is scanned whole
        # (a hit in its body only costs a closer look at the head). find(), not
        # "in": bytes.__contains__ first tries the needle as an int and builds a
        # TypeError message, which costs more than the search.
        if len(raw) <= _SCAN_WHOLE or self._interim:
            scan = raw
        else:
            scan = raw[: raw.find(b"\r\n\r\n")]
        parts = self._parts
        if scan.lower().find(b"set-cookie:") >= 0 or parts is not None:
            bounds = _head_bounds([raw], self._interim)
            begin, stop = bounds if bounds is not None else (0, len(raw))
            fields = _fields(raw[begin:stop])
            for name, value in fields:
                if name == b"set-cookie":
                    self.cookies.set_from_header(value, end)
            if parts is not None:
                result.headers = fields
                if parts:
                    result.body = parts[0] if len(parts) == 1 else b"".join(parts)

    # -- parser callbacks ------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self._is_head:
            status = self._parser.get_status_code()
            if status >= 200:
                self._status = status
                self._keep_alive = self._parser.should_keep_alive()
                self._done = True

    def on_body(self, body: bytes) -> None:
        parts = self._parts
        if parts is not None:
            parts.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status >= 200:
            self._status = status
            # llhttp forgets the message's framing once this callback returns, so
            # whether the connection may be reused must be asked now.
            self._keep_alive = parser.should_keep_alive()
            self._done = True
        else:
            # An interim 1xx answer; the real one follows on the same stream.
            self._interim += 1


class _Callbacks:
    """The protocol object handed to a parser: only the callbacks it should make.

    httptools looks each callback up once, when the parser is built, and skips the
    ones that are missing, so a parser that needs fewer callbacks costs less.
    """

    def __init__(self, **callbacks: Any) -> None:
        self.__dict__.update(callbacks)


async def _write_rest(fd: int, payload: bytes, sent: int) -> None:
    with memoryview(payload) as view:
        while sent < len(view):
            await wait_writable(fd)
            try:
                sent += os.write(fd, view[sent:])
            except BlockingIOError:
                continue


def _head_bounds(head: list[bytes], interim: int) -> tuple[int, int] | None:
    """Where the final response's head lies in the joined ``head`` chunks: from the
    status line to before the blank line. None while the head is incomplete."""
    raw = head[0] if len(head) == 1 else b"".join(head)
    begin = 0
    for _ in range(interim):
        begin = raw.find(b"\r\n\r\n", begin) + 4
    stop = raw.find(b"\r\n\r\n", begin)
    return None if stop < 0 else (begin, stop)


def _fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """Header fields of a head that llhttp already accepted: CRLF lines, no folding."""
    fields = []
    for line in block.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name.lower(), value.strip()))
    return fields


def _connect_kind(exc: OSError) -> str:
    # With several addresses to try, trio raises one OSError whose cause groups the
    # error of every attempt; "refused" means every attempt was refused.
    errors: list[BaseException] = [exc]
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        errors = list(cause.exceptions)
    refused = all(
        isinstance(e, ConnectionRefusedError)
        or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED)
        for e in errors
    )
    return "connect_refused" if refused else "connect_error"


class _Watchdog:
    """Closes the connection of every client whose request outlived its deadline.

    One per trio run (a system task), shared by every :class:`FastClient` of it.
    Deadlines are on ``time.perf_counter_ns``, like every timing of a request, not on
    trio's clock: under a mock clock, request timeouts still take real time, and an
    autojumping clock makes the watchdog wake back to back while a request waits
    for the network (harmless, but it spins).
    """

    def __init__(self) -> None:
        self._clients: weakref.WeakSet[FastClient] = weakref.WeakSet()
        self._period_s = WATCHDOG_MAX_PERIOD_S
        self._nap: trio.CancelScope | None = None
        self._wake = trio.Event()

    def watch(self, client: FastClient, period_s: float) -> None:
        self._clients.add(client)
        if period_s < self._period_s:
            self._period_s = period_s
            if self._nap is not None:
                self._nap.deadline = min(
                    self._nap.deadline, trio.current_time() + period_s
                )
        self._wake.set()

    def forget(self, client: FastClient) -> None:
        self._clients.discard(client)

    async def run(self) -> None:
        while True:
            if not self._clients:
                # Nothing to watch: sleep without a deadline, so an idle process
                # (or a test on an autojumping mock clock) sees no timer at all.
                self._wake = trio.Event()
                await self._wake.wait()
            with trio.move_on_after(self._period_s) as self._nap:
                await trio.sleep_forever()
            self._nap = None
            now = _now_ns()
            for client in list(self._clients):
                deadline = client._deadline_ns
                if deadline and now >= deadline:
                    client._expire()


_WATCHDOG: trio.lowlevel.RunVar[_Watchdog] = trio.lowlevel.RunVar("harness_watchdog")


def _watchdog() -> _Watchdog:
    try:
        return _WATCHDOG.get()
    except LookupError:
        dog = _Watchdog()
        _WATCHDOG.set(dog)
        trio.lowlevel.spawn_system_task(dog.run, name="harness client watchdog")
        return dog
