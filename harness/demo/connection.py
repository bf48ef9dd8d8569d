"""HTTP/1.1 on one connection: read, parse with httptools, answer, repeat.

How this works. The connection uses its non-blocking socket directly and parks on
``trio.lowlevel.wait_readable`` / ``wait_writable`` only when the kernel has nothing to
give or no room to take. That is both the fastest way to run HTTP on trio (no stream
wrapper, no extra checkpoints) and what makes the served count exact: a response is
counted in the same step as the ``send`` call that hands its last byte to the kernel,
so no other task (the stats endpoint included) can run between the two.

Requests are answered one at a time, in order. Pipelined requests are parsed as they
arrive and queued; the connection closes after a request that asked for it, after an
HTTP/1.0 request without keep-alive, after a protocol upgrade request (answered as a
plain request), and after a request it refuses: malformed (400), body over
:data:`MAX_BODY_BYTES` (413) or head over :data:`MAX_HEAD_BYTES` (431). A refusal is
followed by a bounded lingering close, so the peer gets to read it.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import httptools
import trio

RECV_BYTES = 65536
MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; a larger head is answered 431."""
MAX_BODY_BYTES = 1024 * 1024
"""A larger request body is answered 413."""
LINGER_S = 2.0
LINGER_BYTES = 8 * 1024 * 1024
"""After a refusal, how long and how much the peer may still send before the close."""
JSON_CONTENT_TYPE = b"Content-Type: application/json\r\n"
"""The header line of every answer but the metrics page."""


@dataclass(slots=True)
class HttpRequest:
    method: bytes
    target: bytes
    authorization: bytes | None
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes
    endpoint: str | None
    """Key under which the response is counted; None for responses not counted."""
    headers: bytes = JSON_CONTENT_TYPE
    """Complete header lines (each ending in CRLF) besides Server, Date,
    Content-Length and Connection. The default names the JSON content type; a
    response of another type, or one that adds a header, replaces or extends it."""


Responder = Callable[[HttpRequest], Awaitable[HttpResponse]]
Counter = Callable[[HttpResponse], None]

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _DateHeader:
    """The ``Date`` header line, formatted at most once a second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        return self._line


_date = _DateHeader()


def encode_response(response: HttpResponse, keep_alive: bool) -> bytes:
    status = response.status
    head = b"HTTP/1.1 %d %s\r\nServer: harness-demo\r\n%s" % (
        status,
        _REASONS.get(status, b"Unknown"),
        _date.line(),
    )
    # The content type travels in ``headers`` rather than in this literal: the
    # same three substitutions as a fixed type, so JSON answers cost no more.
    head += b"Content-Length: %d\r\n%s%s\r\n" % (
        len(response.body),
        response.headers,
        b"" if keep_alive else b"Connection: close\r\n",
    )
    return head + response.body


class _Parsed:
    """httptools callbacks: collects complete requests into ``ready``."""

    __slots__ = (
        "authorization",
        "body_bytes",
        "body_parts",
        "expects_continue",
        "head_bytes",
        "head_reads_bytes",
        "headers_done",
        "in_message",
        "parser",
        "ready",
        "too_large",
        "upgraded",
        "url",
    )

    def __init__(self) -> None:
        self.ready: deque[HttpRequest] = deque()
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.authorization: bytes | None = None
        self.body_parts: list[bytes] = []
        self.body_bytes = 0
        self.head_bytes = 0
        self.head_reads_bytes = 0
        self.headers_done = False
        self.in_message = False
        self.expects_continue = False
        self.too_large = 0
        """0, or the status (413 or 431) to answer because a limit was passed."""
        self.upgraded = False

    def on_message_begin(self) -> None:
        self.url = b""
        self.authorization = None
        self.body_parts = []
        self.body_bytes = 0
        self.head_bytes = 0
        self.head_reads_bytes = 0
        self.headers_done = False
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.too_large = 431

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD_BYTES:
            self.too_large = 431
        if len(name) == 13 and name.lower() == b"authorization":
            self.authorization = value
        elif len(name) == 6 and name.lower() == b"expect":
            self.expects_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY_BYTES:
            self.too_large = 413
        else:
            self.body_parts.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.too_large:
            # Its body was cut short: never answer it as if it were whole.
            return
        parser = self.parser
        self.ready.append(
            HttpRequest(
                method=parser.get_method(),
                target=self.url,
                authorization=self.authorization,
                body=b"".join(self.body_parts),
                keep_alive=parser.should_keep_alive(),
            )
        )
        self.body_parts = []
        self.expects_continue = False


def _refusal(status: int, message: str) -> HttpResponse:
    """An answer to a request that could not be parsed or was over a limit."""
    body = b'{"success":false,"error":"%s"}' % message.encode()
    return HttpResponse(status, body, "malformed")


class Connection:
    """One accepted connection, served until either side closes it."""

    __slots__ = ("busy", "cancel_scope", "idle_since_s", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.cancel_scope = trio.CancelScope()
        self.busy = False
        """True from a read that brought data until the answers to it are sent."""
        self.idle_since_s = time.monotonic()

    async def serve(self, respond: Responder, count: Counter) -> None:
        """Answer requests until the peer closes, a request asks to close, or the
        connection's cancel scope is cancelled (idle timeout, shutdown)."""
        parsed = _Parsed()
        try:
            with self.cancel_scope:
                while True:
                    data = await self._receive()
                    if not data:
                        return
                    refusal = self._parse(parsed, data)
                    if refusal is None and not parsed.ready and parsed.upgraded:
                        return
                    if not await self._answer(parsed.ready, respond, count):
                        return
                    if refusal is not None:
                        if await self._send(encode_response(refusal, False)):
                            count(refusal)
                            await self._linger()
                        return
                    if parsed.expects_continue and parsed.in_message:
                        parsed.expects_continue = False
                        if not await self._send(_CONTINUE):
                            return
        finally:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    async def _receive(self) -> bytes:
        """The next bytes from the peer; empty when it closed or failed."""
        self.busy = False
        self.idle_since_s = time.monotonic()
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(RECV_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                return b""
            self.busy = True
            return data

    def _parse(self, parsed: _Parsed, data: bytes) -> HttpResponse | None:
        """Feed ``data`` to the parser; the refusal to send if it cannot go on.

        Requests completed before a parse error still get their answers first;
        after an upgrade request the connection closes once it is answered.
        """
        if parsed.in_message and not parsed.headers_done:
            # A head arriving in pieces is buffered inside the parser, where the
            # callbacks cannot see it; count the pieces here.
            parsed.head_reads_bytes += len(data)
        try:
            parsed.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            parsed.upgraded = True
            if parsed.ready:
                parsed.ready[-1].keep_alive = False
        except httptools.HttpParserError:
            return _refusal(400, "malformed HTTP request")
        if parsed.too_large:
            return _refusal(parsed.too_large, "request too large")
        if parsed.head_reads_bytes > MAX_HEAD_BYTES:
            return _refusal(431, "request head too large")
        return None

    async def _answer(
        self, ready: deque[HttpRequest], respond: Responder, count: Counter
    ) -> bool:
        """Answer the complete requests in order; False once the connection ends."""
        while ready:
            request = ready.popleft()
            response = await respond(request)
            keep = request.keep_alive
            if not await self._send(encode_response(response, keep)):
                return False
            if response.endpoint is not None:
                count(response)
            if not keep:
                return False
        return True

    async def _send(self, data: bytes) -> bool:
        """Hand all of ``data`` to the kernel; False when the peer is gone.

        The caller counts a response right after this returns True, with no
        checkpoint in between: the count can never lag the bytes on the wire.
        """
        sock = self.sock
        view = memoryview(data)
        # Try before waiting: a response almost always fits in the socket buffer,
        # and a wait would cost a trip through the scheduler.
        while True:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                sent = 0
            except OSError:
                return False
            view = view[sent:]
            if not view:
                return True
            await trio.lowlevel.wait_writable(sock)

    async def _linger(self) -> None:
        """Half-close, then drop what the peer still sends, for a bounded time.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy the refusal just sent before the peer reads it (a client still
        uploading a body that is too large, for one).
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with trio.move_on_after(LINGER_S):
            dropped = 0
            while dropped < LINGER_BYTES:
                data = await self._receive()
                if not data:
                    return
                dropped += len(data)
