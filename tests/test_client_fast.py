"""The fast engine against real servers on loopback: nginx, and small trio servers
written here for what nginx will not do (never answer, hang up, send garbage).

The helpers at the top (``serving``, the handlers, ``tls_files``) are shared with
``test_client_httpx.py``, which checks the same behaviour on the httpx engine.
"""

from __future__ import annotations

import errno
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.client import make_client
from harness.client.base import Origin, Request, Result, make_ssl_context
from harness.client.cookies import CookieJar
from harness.client.fast import FastClient, _connect_kind
from harness.client.httpx_engine import HttpxClient
from harness.errors import UsageError
from harness.profile.model import HttpSettings

# -- real servers written for the tests ------------------------------------------


@dataclass
class Server:
    """What a test server saw: its port, connections accepted, requests read."""

    port: int = 0
    accepted: int = 0
    requests: list[bytes] = field(default_factory=list)
    hung_up_by_client: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Handler = Callable[[Server, trio.abc.Stream], Awaitable[None]]
_NET_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@asynccontextmanager
async def serving(
    handler: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """Run ``handler`` for every connection to a fresh port on 127.0.0.1."""
    server = Server()

    async def on_connection(raw: trio.SocketStream) -> None:
        server.accepted += 1
        stream: trio.abc.Stream = raw
        try:
            if tls is not None:
                stream = trio.SSLStream(
                    raw, tls, server_side=True, https_compatible=True
                )
                await stream.do_handshake()
            await handler(server, stream)
        except _NET_ERRORS:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server.port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, on_connection, listeners)
        yield server
        nursery.cancel_scope.cancel()


async def read_request(stream: trio.abc.Stream, buffer: bytearray) -> bytes | None:
    """One request (head and Content-Length body) from ``stream``; None at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    found = re.search(rb"\r\ncontent-length: *(\d+)", bytes(buffer[:end]), re.I)
    total = end + (int(found.group(1)) if found else 0)
    while len(buffer) < total:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    request = bytes(buffer[:total])
    del buffer[:total]
    return request


def ok(body: bytes = b"ok", *headers: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def answering(
    reply: Callable[[bytes], bytes | list[bytes]] | bytes | list[bytes],
    *,
    close_after: int = 0,
) -> Handler:
    """Answer every request with ``reply`` (bytes, or a function of the request
    giving bytes or a list of pieces sent 20 ms apart); hang up after
    ``close_after`` requests when it is not 0."""

    async def handler(server: Server, stream: trio.abc.Stream) -> None:
        buffer = bytearray()
        served = 0
        while True:
            request = await read_request(stream, buffer)
            if request is None:
                server.hung_up_by_client += 1
                return
            server.requests.append(request)
            answer = reply(request) if callable(reply) else reply
            pieces = answer if isinstance(answer, list) else [answer]
            for i, piece in enumerate(pieces):
                if i:
                    await trio.sleep(0.02)
                await stream.send_all(piece)
            served += 1
            if close_after and served >= close_after:
                return

    return handler


async def never_answering(server: Server, stream: trio.abc.Stream) -> None:
    buffer = bytearray()
    while await read_request(stream, buffer) is not None:
        server.requests.append(b"")
    server.hung_up_by_client += 1


async def hanging_up(server: Server, stream: trio.abc.Stream) -> None:
    return


async def eventually(condition: Callable[[], bool]) -> bool:
    for _ in range(200):
        if condition():
            return True
        await trio.sleep(0.01)
    return condition()


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run an async test body under trio, bounded so a bug cannot hang the suite."""

    async def bounded() -> None:
        with trio.fail_after(30):
            await test()

    trio.run(bounded)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def full_backlog() -> AsyncIterator[int]:
    """A port whose accept queue is full: a new connection attempt just waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.socket()
    filler.setblocking(False)
    try:
        filler.connect_ex(("127.0.0.1", port))
        yield port
    finally:
        filler.close()
        listener.close()


def make_certificate(root: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed, so no certificate for an https server")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def server_tls_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*tls_files)
    return ctx


# -- helpers for the fast engine ---------------------------------------------------


def fast(
    url: str,
    *,
    timeout_s: float = 5.0,
    connect_timeout_s: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> FastClient:
    return FastClient(
        Origin.parse(url),
        connect_timeout_s=connect_timeout_s,
        timeout_s=timeout_s,
        ssl_context=ssl_context,
    )


def get(target: bytes = b"/", *, keep_body: bool = True, **kw: Any) -> Request:
    return Request(b"GET", target, kw.pop("headers", []), keep_body=keep_body, **kw)


def assert_ordered(result: Result) -> None:
    assert result.start_ns > 0
    assert 0 <= result.connect_ns <= result.ttfb_ns <= result.latency_ns


# -- against nginx -----------------------------------------------------------------


def test_fast_client_reuses_one_connection_for_many_requests(nginx: str) -> None:
    async def body() -> None:
        client = fast(nginx)
        results = [await client.send(get(b"/hello")) for _ in range(20)]
        await client.aclose()
        assert all(r.status == 200 and r.error is None for r in results)
        assert all(r.body == b"hello world\n" for r in results)
        assert results[0].connect_ns > 0
        assert all(r.connect_ns == 0 for r in results[1:])
        for r in results:
            assert_ordered(r)

    run(body)


def test_fast_client_reopens_after_connection_close(nginx: str) -> None:
    async def body() -> None:
        client = fast(nginx)
        closing = await client.send(get(b"/close"))
        after = await client.send(get(b"/hello"))
        await client.aclose()
        assert (closing.status, closing.body) == (200, b"bye\n")
        assert after.status == 200 and after.error is None
        assert after.connect_ns > 0

    run(body)


def test_fast_client_reports_4xx_and_5xx_as_status_not_error(nginx: str) -> None:
    async def body() -> None:
        client = fast(nginx)
        missing = await client.send(get(b"/status/404"))
        broken = await client.send(get(b"/status/500"))
        await client.aclose()
        assert (missing.status, missing.error) == (404, None)
        assert (broken.status, broken.error) == (500, None)
        assert broken.connect_ns == 0

    run(body)


def test_fast_client_head_has_no_body_and_keeps_the_connection(nginx: str) -> None:
    async def body() -> None:
        client = fast(nginx)
        head = await client.send(Request(b"HEAD", b"/hello", [], keep_body=True))
        after = await client.send(get(b"/hello"))
        await client.aclose()
        assert (head.status, head.body, head.error) == (200, b"", None)
        assert dict(head.headers or [])[b"content-length"] == b"12"
        assert (after.status, after.body, after.connect_ns) == (
            200,
            b"hello world\n",
            0,
        )

    run(body)


def test_fast_client_reads_a_big_body_whole() -> None:
    big = ok(b"x" * 200_000, b"Content-Type: application/octet-stream")

    async def body() -> None:
        async with serving(answering(big)) as server:
            client = fast(server.url)
            kept = await client.send(get(b"/big"))
            dropped = await client.send(get(b"/big", keep_body=False))
            await client.aclose()
        assert kept.status == 200 and kept.body == b"x" * 200_000
        assert dropped.body == b"" and dropped.headers is None
        assert dropped.bytes_in == kept.bytes_in == len(big)
        assert dropped.connect_ns == 0

    run(body)


def test_fast_client_counts_request_bytes_it_sends(nginx: str) -> None:
    async def body() -> None:
        client = fast(nginx)
        result = await client.send(
            Request(b"POST", b"/", [(b"X-A", b"1")], body=b"hello")
        )
        await client.aclose()
        host = Origin.parse(nginx).host_header
        sent = (
            b"POST / HTTP/1.1\r\nHost: " + host + b"\r\nX-A: 1\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
        assert (result.status, result.bytes_out) == (200, len(sent))

    run(body)


# -- against servers written here --------------------------------------------------


def test_fast_client_sends_exactly_the_request_it_was_given() -> None:
    async def body() -> None:
        async with serving(answering(ok())) as server:
            client = fast(server.url + "/api")
            await client.send(Request(b"GET", b"/x?q=1", [(b"Accept", b"*/*")]))
            await client.send(Request(b"POST", b"/y", []))
            await client.send(Request(b"PUT", b"/z", [], body=b'{"a": 1}'))
            await client.aclose()
        host = b"127.0.0.1:%d" % server.port
        assert server.requests == [
            b"GET /api/x?q=1 HTTP/1.1\r\nHost: " + host + b"\r\nAccept: */*\r\n\r\n",
            b"POST /api/y HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 0\r\n\r\n",
            b"PUT /api/z HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 8\r\n\r\n"
            b'{"a": 1}',
        ]
        assert server.accepted == 1

    run(body)


def test_fast_client_writes_a_body_larger_than_the_socket_buffer() -> None:
    payload = b"y" * 8_000_000

    async def body() -> None:
        async with serving(answering(ok())) as server:
            client = fast(server.url)
            result = await client.send(Request(b"POST", b"/up", [], body=payload))
            await client.aclose()
        assert (result.status, result.error) == (200, None)
        assert server.requests[0].endswith(payload)
        assert result.bytes_out == len(server.requests[0])

    run(body)


def test_fast_client_counts_exact_bytes_of_content_length_and_chunked() -> None:
    sized = ok(b"hello world", b"Content-Type: text/plain")
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def body() -> None:
        replies = iter([sized, chunked, chunked])
        async with serving(answering(lambda _: next(replies))) as server:
            client = fast(server.url)
            first = await client.send(get())
            second = await client.send(get())
            dropped = await client.send(get(keep_body=False))
            await client.aclose()
        assert (first.body, first.bytes_in) == (b"hello world", len(sized))
        assert (second.body, second.bytes_in) == (b"hello world", len(chunked))
        assert (dropped.body, dropped.bytes_in) == (b"", len(chunked))
        assert server.accepted == 1

    run(body)


def test_fast_client_assembles_a_head_split_across_reads() -> None:
    head = b"HTTP/1.1 200 OK\r\nX-First: 1\r\nSet-Cookie: sid=s1\r\n"
    pieces = [head[:20], head[20:], b"Content-Length: 4\r\n\r\n", b"bo", b"dy"]

    async def body() -> None:
        async with serving(answering(pieces)) as server:
            client = fast(server.url)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.body) == (200, b"body")
        assert result.bytes_in == sum(len(p) for p in pieces)
        assert client.cookies.get(b"sid") == b"s1"
        assert_ordered(result)
        assert result.ttfb_ns < result.latency_ns

    run(body)


def test_fast_client_skips_interim_1xx_answers() -> None:
    interim = b"HTTP/1.1 100 Continue\r\nSet-Cookie: early=1\r\n\r\n"
    final = ok(b"done", b"Set-Cookie: sid=final")

    async def body() -> None:
        async with serving(answering([interim, final])) as server:
            client = fast(server.url)
            result = await client.send(get())
            again = await client.send(get())
            await client.aclose()
        assert (result.status, result.body) == (200, b"done")
        assert result.bytes_in == len(interim) + len(final)
        assert dict(result.headers or [])[b"set-cookie"] == b"sid=final"
        assert client.cookies.get(b"sid") == b"final"
        assert again.connect_ns == 0

    run(body)


def test_fast_client_reads_204_and_304_without_a_body_and_reuses() -> None:
    replies = iter(
        [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
            ok(b"after"),
        ]
    )

    async def body() -> None:
        async with serving(answering(lambda _: next(replies))) as server:
            client = fast(server.url)
            results = [await client.send(get()) for _ in range(3)]
            await client.aclose()
        assert [(r.status, r.body) for r in results] == [
            (204, b""),
            (304, b""),
            (200, b"after"),
        ]
        assert server.accepted == 1

    run(body)


def test_fast_client_head_on_a_server_announcing_a_length() -> None:
    head_only = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"
    replies = iter([head_only, ok(b"next")])

    async def body() -> None:
        async with serving(answering(lambda _: next(replies))) as server:
            client = fast(server.url)
            head = await client.send(Request(b"HEAD", b"/", []))
            after = await client.send(get())
            await client.aclose()
        assert (head.status, head.error, head.bytes_in) == (200, None, len(head_only))
        assert (after.status, after.body, after.connect_ns) == (200, b"next", 0)
        assert server.accepted == 1

    run(body)


def test_fast_client_reads_a_body_that_ends_with_the_connection() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"

    async def body() -> None:
        async with serving(answering(reply, close_after=1)) as server:
            client = fast(server.url)
            result = await client.send(get())
            after = await client.send(get())
            await client.aclose()
        assert (result.status, result.error, result.body) == (
            200,
            None,
            b"until the end",
        )
        assert result.bytes_in == len(reply)
        assert after.status == 200 and after.connect_ns > 0

    run(body)


def test_fast_client_closes_after_an_http_1_0_answer() -> None:
    reply = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def body() -> None:
        async with serving(answering(reply)) as server:
            client = fast(server.url)
            results = [await client.send(get()) for _ in range(2)]
            await client.aclose()
            assert await eventually(lambda: server.hung_up_by_client == 2)
        assert [r.status for r in results] == [200, 200]
        assert server.accepted == 2

    run(body)


def test_fast_client_round_trips_cookies_and_honours_deletion() -> None:
    def reply(request: bytes) -> bytes:
        sent = re.search(rb"\r\nCookie: ([^\r]*)", request)
        echo = sent.group(1) if sent else b"-"
        if b"/login" in request:
            return ok(
                echo, b"Set-Cookie: sid=abc; Path=/; HttpOnly", b"Set-Cookie: t=1"
            )
        if b"/logout" in request:
            return ok(echo, b"set-cookie: sid=; Max-Age=0")
        return ok(echo)

    async def body() -> None:
        async with serving(answering(reply)) as server:
            client = fast(server.url)
            before = await client.send(get(b"/"))
            await client.send(get(b"/login", keep_body=False))
            logged_in = await client.send(get(b"/"))
            await client.send(get(b"/logout"))
            logged_out = await client.send(get(b"/"))
            client.clear_cookies()
            cleared = await client.send(get(b"/"))
            await client.aclose()
        assert before.body == b"-"
        assert logged_in.body == b"sid=abc; t=1"
        assert logged_out.body == b"t=1"
        assert cleared.body == b"-"

    run(body)


def test_fast_client_resends_once_when_an_idle_connection_was_closed() -> None:
    async def body() -> None:
        async with serving(answering(ok(), close_after=1)) as server:
            client = fast(server.url)
            first = await client.send(get())
            # The server hangs up after its answer; wait until it has.
            assert await eventually(lambda: server.accepted == 1)
            await trio.sleep(0.05)
            second = await client.send(get())
            await client.aclose()
        assert (first.status, second.status, second.error) == (200, 200, None)
        assert second.connect_ns > 0
        assert server.accepted == 2
        assert len(server.requests) == 2

    run(body)


def test_fast_client_never_resends_after_part_of_an_answer() -> None:
    replies = iter([ok(), b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"])

    async def body() -> None:
        handler = answering(lambda _: next(replies), close_after=2)
        async with serving(handler) as server:
            client = fast(server.url)
            await client.send(get())
            cut = await client.send(get())
            await client.aclose()
        assert (cut.status, cut.error) == (0, "reset")
        assert cut.ttfb_ns > 0
        assert server.accepted == 1

    run(body)


def test_fast_client_error_reset_when_server_hangs_up_at_once() -> None:
    async def body() -> None:
        async with serving(hanging_up) as server:
            client = fast(server.url)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "reset")
        assert server.accepted == 1
        assert result.latency_ns >= result.connect_ns > 0

    run(body)


def test_fast_client_error_protocol_on_garbage() -> None:
    async def body() -> None:
        async with serving(answering(b"this is not http\r\n\r\n")) as server:
            client = fast(server.url)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "protocol")

    run(body)


def test_fast_client_error_read_timeout_when_server_never_answers() -> None:
    async def body() -> None:
        async with serving(never_answering) as server:
            client = fast(server.url, timeout_s=0.3)
            result = await client.send(get())
            # The connection was dropped: the server sees the client hang up.
            assert await eventually(lambda: server.hung_up_by_client == 1)
            await client.aclose()
        assert (result.status, result.error) == (0, "read_timeout")
        assert result.latency_ns >= 300_000_000
        assert result.bytes_out > 0 and result.bytes_in == 0

    run(body)


def test_fast_client_error_connect_refused_on_a_closed_port() -> None:
    async def body() -> None:
        client = fast(f"http://127.0.0.1:{closed_port()}")
        result = await client.send(get())
        await client.aclose()
        assert (result.status, result.error, result.bytes_out) == (
            0,
            "connect_refused",
            0,
        )

    run(body)


def test_fast_client_error_connect_timeout_when_nobody_accepts() -> None:
    async def body() -> None:
        async with full_backlog() as port:
            client = fast(f"http://127.0.0.1:{port}", connect_timeout_s=0.3)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "connect_timeout")
        assert result.connect_ns >= 300_000_000

    run(body)


def test_connect_errors_other_than_refused_are_connect_error() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    unreachable = OSError(errno.EHOSTUNREACH, "no route to host")
    every_refused = OSError("all attempts to connect failed")
    every_refused.__cause__ = ExceptionGroup("attempts", [refused, refused])
    mixed = OSError("all attempts to connect failed")
    mixed.__cause__ = ExceptionGroup("attempts", [refused, unreachable])
    assert _connect_kind(refused) == "connect_refused"
    assert _connect_kind(every_refused) == "connect_refused"
    assert _connect_kind(unreachable) == "connect_error"
    assert _connect_kind(mixed) == "connect_error"
    assert (
        _connect_kind(socket.gaierror(socket.EAI_NONAME, "unknown")) == "connect_error"
    )


async def first_silent_then_answering(server: Server, stream: trio.abc.Stream) -> None:
    if server.accepted == 1:
        await never_answering(server, stream)
    else:
        await answering(ok())(server, stream)


def test_fast_client_cancellation_propagates_and_drops_the_connection() -> None:
    async def body() -> None:
        async with serving(first_silent_then_answering) as server:
            client = fast(server.url)
            with trio.move_on_after(0.2) as scope:
                await client.send(get())
            assert scope.cancelled_caught
            assert await eventually(lambda: server.hung_up_by_client == 1)
            after = await client.send(get())
            await client.aclose()
        assert (after.status, after.error) == (200, None)
        assert after.connect_ns > 0
        assert server.accepted == 2

    run(body)


def test_fast_client_https_round_trip_and_reuse(tls_files: tuple[Path, Path]) -> None:
    async def body() -> None:
        trusting = make_ssl_context(verify=True)
        trusting.load_verify_locations(tls_files[0])
        server_ctx = server_tls_context(tls_files)
        async with serving(answering(ok(b"secret")), tls=server_ctx) as server:
            url = f"https://127.0.0.1:{server.port}"
            client = fast(url, ssl_context=trusting)
            first = await client.send(get())
            second = await client.send(get())
            await client.aclose()
            strict = fast(url, ssl_context=make_ssl_context(verify=True))
            untrusted = await strict.send(get())
            await strict.aclose()
        assert (first.status, first.body) == (200, b"secret")
        assert first.connect_ns > 0 and second.connect_ns == 0
        assert first.bytes_in == len(ok(b"secret"))
        assert_ordered(first)
        assert (untrusted.status, untrusted.error) == (0, "tls")

    run(body)


def test_fast_client_https_read_timeout_and_cancellation(
    tls_files: tuple[Path, Path],
) -> None:
    async def body() -> None:
        trusting = make_ssl_context(verify=True)
        trusting.load_verify_locations(tls_files[0])
        server_ctx = server_tls_context(tls_files)
        async with serving(never_answering, tls=server_ctx) as server:
            url = f"https://127.0.0.1:{server.port}"
            impatient = fast(url, timeout_s=0.3, ssl_context=trusting)
            timed_out = await impatient.send(get())
            patient = fast(url, ssl_context=trusting)
            with trio.move_on_after(0.2) as scope:
                await patient.send(get())
            assert await eventually(lambda: server.hung_up_by_client == 2)
            await impatient.aclose()
            await patient.aclose()
        assert (timed_out.status, timed_out.error) == (0, "read_timeout")
        assert timed_out.latency_ns >= 300_000_000
        assert scope.cancelled_caught

    run(body)


def test_fast_client_error_tls_when_the_server_speaks_plain_http(nginx: str) -> None:
    async def body() -> None:
        client = fast(nginx.replace("http://", "https://"))
        result = await client.send(get())
        await client.aclose()
        assert (result.status, result.error) == (0, "tls")

    run(body)


def test_fast_client_is_unusable_after_aclose_and_aclose_is_idempotent() -> None:
    async def body() -> None:
        async with serving(answering(ok())) as server:
            client = fast(server.url)
            assert (await client.send(get())).status == 200
            await client.aclose()
            await client.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await client.send(get())
            assert await eventually(lambda: server.hung_up_by_client == 1)

    run(body)


def test_fast_client_rejects_timeouts_that_are_not_positive() -> None:
    with pytest.raises(UsageError, match="timeout"):
        fast("http://127.0.0.1:1", timeout_s=0)


# -- the cookie jar --------------------------------------------------------------

S = 1_000_000_000


def test_cookie_jar_joins_cookies_into_one_header() -> None:
    jar = CookieJar()
    jar.set_from_header(b"a=1; Path=/; HttpOnly", 0)
    jar.set_from_header(b"b = x=y ; Secure", 0)
    jar.set_from_header(b'c="quoted"', 0)
    assert jar.header(0) == b'a=1; b=x=y; c="quoted"'
    jar.set_from_header(b"a=2", 0)
    assert jar.header(0) == b'a=2; b=x=y; c="quoted"'


def test_cookie_jar_ignores_a_set_cookie_without_a_name() -> None:
    jar = CookieJar()
    for value in (b"novalue", b"=x", b"; Path=/", b""):
        jar.set_from_header(value, 0)
    assert (len(jar), jar.header(0)) == (0, b"")


def test_cookie_jar_deletes_on_max_age_zero_or_a_past_expires() -> None:
    jar = CookieJar()
    for name in (b"a", b"b", b"c", b"d"):
        jar.set_from_header(name + b"=1", 0)
    jar.set_from_header(b"a=; Max-Age=0", 0)
    jar.set_from_header(b"b=; max-age=-5", 0)
    jar.set_from_header(b"c=; Expires=Thu, 01 Jan 1970 00:00:00 GMT", 0)
    assert jar.header(0) == b"d=1"


def test_cookie_jar_expires_a_cookie_when_its_lifetime_ends() -> None:
    jar = CookieJar()
    jar.set_from_header(b"short=1; Max-Age=10", 100 * S)
    jar.set_from_header(b"session=1", 100 * S)
    assert jar.header(109 * S) == b"short=1; session=1"
    assert jar.header(110 * S) == b"session=1"
    assert jar.get(b"short") is None


def test_cookie_jar_prefers_max_age_over_expires_and_skips_bad_values() -> None:
    jar = CookieJar()
    jar.set_from_header(b"a=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60", 0)
    jar.set_from_header(b"b=1; Max-Age=soon", 0)
    jar.set_from_header(b"c=1; Expires=not a date", 0)
    jar.set_from_header(b"d=1; Expires=Wed, 01 Jan 2100 00:00:00 GMT", 0)
    assert jar.header(59 * S) == b"a=1; b=1; c=1; d=1"
    assert jar.header(61 * S) == b"b=1; c=1; d=1"
    jar.clear()
    assert (len(jar), jar.header(0)) == (0, b"")


# -- choosing an engine ------------------------------------------------------------


def test_make_client_builds_the_engine_the_profile_names() -> None:
    origin = Origin.parse("http://127.0.0.1:8080")
    assert isinstance(make_client("fast", origin, HttpSettings(), None), FastClient)
    built = make_client("httpx", origin, HttpSettings(engine="httpx"), None)
    assert isinstance(built, HttpxClient)
    trio.run(built.aclose)


def test_make_client_leaves_host_to_a_default_host_header() -> None:
    async def body() -> None:
        http = HttpSettings(headers=(("Host", "vhost.test"),))
        async with serving(answering(ok())) as server:
            client = make_client("fast", Origin.parse(server.url), http, None)
            await client.send(Request(b"GET", b"/", [(b"Host", b"vhost.test")]))
            await client.aclose()
        assert server.requests == [b"GET / HTTP/1.1\r\nHost: vhost.test\r\n\r\n"]

    run(body)


def test_make_client_refuses_what_the_fast_engine_cannot_do() -> None:
    origin = Origin.parse("http://127.0.0.1:8080")
    with pytest.raises(UsageError, match=r"http\.engine: httpx"):
        make_client("fast", origin, HttpSettings(http2=True), None)
    with pytest.raises(UsageError, match="proxy"):
        make_client("fast", origin, HttpSettings(proxy="http://127.0.0.1:3128"), None)
    with pytest.raises(UsageError, match="unknown http engine 'curl'"):
        make_client("curl", origin, HttpSettings(), None)
