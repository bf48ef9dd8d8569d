"""The httpx engine: the same behaviour as the fast engine, on the same real servers
(nginx and the small trio servers of ``test_client_fast``)."""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import pytest
import trio

from harness.client import make_client
from harness.client.base import Origin, Request
from harness.client.httpx_engine import HttpxClient, _error_kind
from harness.errors import UsageError
from harness.profile.model import HttpSettings

from .test_client_fast import (
    answering,
    assert_ordered,
    closed_port,
    eventually,
    first_silent_then_answering,
    full_backlog,
    get,
    hanging_up,
    make_certificate,
    never_answering,
    ok,
    run,
    server_tls_context,
    serving,
)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def client_for(
    url: str,
    *,
    timeout_s: float = 5.0,
    connect_timeout_s: float = 2.0,
    verify_tls: bool = True,
) -> HttpxClient:
    return HttpxClient(
        Origin.parse(url),
        connect_timeout_s=connect_timeout_s,
        timeout_s=timeout_s,
        verify_tls=verify_tls,
    )


def test_httpx_client_reuses_one_connection_for_many_requests(nginx: str) -> None:
    async def body() -> None:
        client = client_for(nginx)
        results = [await client.send(get(b"/hello")) for _ in range(10)]
        await client.aclose()
        assert all(r.status == 200 and r.error is None for r in results)
        assert all(r.body == b"hello world\n" for r in results)
        assert results[0].connect_ns > 0
        assert all(r.connect_ns == 0 for r in results[1:])
        for r in results:
            assert_ordered(r)

    run(body)


def test_httpx_client_opens_one_connection_per_client() -> None:
    async def body() -> None:
        async with serving(answering(ok())) as server:
            client = client_for(server.url)
            results = [await client.send(get()) for _ in range(10)]
            await client.aclose()
        assert [r.status for r in results] == [200] * 10
        assert server.accepted == 1

    run(body)


def test_httpx_client_reopens_after_connection_close(nginx: str) -> None:
    async def body() -> None:
        client = client_for(nginx)
        closing = await client.send(get(b"/close"))
        after = await client.send(get(b"/hello"))
        await client.aclose()
        assert (closing.status, closing.body) == (200, b"bye\n")
        assert after.status == 200 and after.connect_ns > 0

    run(body)


def test_httpx_client_reports_4xx_and_5xx_as_status_not_error(nginx: str) -> None:
    async def body() -> None:
        client = client_for(nginx)
        missing = await client.send(get(b"/status/404"))
        broken = await client.send(get(b"/status/500"))
        await client.aclose()
        assert (missing.status, missing.error) == (404, None)
        assert (broken.status, broken.error) == (500, None)

    run(body)


def test_httpx_client_head_has_no_body_and_keeps_the_connection(nginx: str) -> None:
    async def body() -> None:
        client = client_for(nginx)
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


def test_httpx_client_sends_only_the_request_headers_and_counts_them() -> None:
    async def body() -> None:
        async with serving(answering(ok())) as server:
            client = client_for(server.url + "/api")
            plain = await client.send(Request(b"GET", b"/x?q=1", [(b"Accept", b"*/*")]))
            posted = await client.send(Request(b"POST", b"/y", [], body=b"abc"))
            await client.aclose()
        host = b"127.0.0.1:%d" % server.port
        assert server.requests[0] == (
            b"GET /api/x?q=1 HTTP/1.1\r\nHost: " + host + b"\r\nAccept: */*\r\n\r\n"
        )
        assert server.requests[1].startswith(b"POST /api/y HTTP/1.1\r\n")
        assert b"\r\nContent-Length: 3\r\n" in server.requests[1]
        assert server.requests[1].endswith(b"\r\n\r\nabc")
        assert plain.bytes_out == len(server.requests[0])
        assert posted.bytes_out == len(server.requests[1])

    run(body)


def test_httpx_client_estimates_bytes_in_without_chunk_framing() -> None:
    sized = ok(b"hello world", b"Content-Type: text/plain")
    chunked_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = chunked_head + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

    async def body() -> None:
        replies = iter([sized, chunked])
        async with serving(answering(lambda _: next(replies))) as server:
            client = client_for(server.url)
            first = await client.send(get())
            second = await client.send(get())
            await client.aclose()
        assert (first.body, first.bytes_in) == (b"hello world", len(sized))
        assert second.body == b"hello world"
        assert second.bytes_in == len(chunked_head) + len(b"hello world")

    run(body)


def test_httpx_client_reads_a_big_body_whole() -> None:
    big = ok(b"x" * 200_000)

    async def body() -> None:
        async with serving(answering(big)) as server:
            client = client_for(server.url)
            kept = await client.send(get())
            dropped = await client.send(get(keep_body=False))
            await client.aclose()
        assert kept.body == b"x" * 200_000
        assert (dropped.body, dropped.headers) == (b"", None)
        assert dropped.bytes_in == kept.bytes_in == len(big)

    run(body)


def test_httpx_client_reads_204_and_304_without_a_body_and_reuses() -> None:
    replies = iter(
        [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
            ok(b"after"),
        ]
    )

    async def body() -> None:
        async with serving(answering(lambda _: next(replies))) as server:
            client = client_for(server.url)
            results = [await client.send(get()) for _ in range(3)]
            await client.aclose()
        assert [(r.status, r.body) for r in results] == [
            (204, b""),
            (304, b""),
            (200, b"after"),
        ]
        assert server.accepted == 1

    run(body)


def test_httpx_client_round_trips_cookies_and_honours_deletion() -> None:
    def reply(request: bytes) -> bytes:
        sent = re.search(rb"\r\nCookie: ([^\r]*)", request, re.I)
        echo = sent.group(1) if sent else b"-"
        if b"/login" in request:
            return ok(echo, b"Set-Cookie: sid=abc; Path=/", b"Set-Cookie: t=1; Path=/")
        if b"/logout" in request:
            return ok(echo, b"Set-Cookie: sid=; Max-Age=0; Path=/")
        return ok(echo)

    async def body() -> None:
        async with serving(answering(reply)) as server:
            client = client_for(server.url)
            await client.send(get(b"/login"))
            logged_in = await client.send(get(b"/"))
            await client.send(get(b"/logout"))
            logged_out = await client.send(get(b"/"))
            client.clear_cookies()
            cleared = await client.send(get(b"/"))
            await client.aclose()
        assert logged_in.body == b"sid=abc; t=1"
        assert logged_out.body == b"t=1"
        assert cleared.body == b"-"

    run(body)


def test_httpx_client_recovers_when_an_idle_connection_was_closed() -> None:
    async def body() -> None:
        async with serving(answering(ok(), close_after=1)) as server:
            client = client_for(server.url)
            first = await client.send(get())
            await trio.sleep(0.05)
            second = await client.send(get())
            await client.aclose()
        assert (first.status, second.status, second.error) == (200, 200, None)
        assert second.connect_ns > 0
        assert server.accepted == 2

    run(body)


def test_httpx_client_error_reset_when_server_hangs_up_at_once() -> None:
    async def body() -> None:
        async with serving(hanging_up) as server:
            client = client_for(server.url)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "reset")

    run(body)


def test_httpx_client_error_reset_when_the_body_is_cut_short() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"

    async def body() -> None:
        async with serving(answering(reply, close_after=1)) as server:
            client = client_for(server.url)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "reset")

    run(body)


def test_httpx_client_error_protocol_on_garbage() -> None:
    async def body() -> None:
        async with serving(answering(b"this is not http\r\n\r\n")) as server:
            client = client_for(server.url)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "protocol")

    run(body)


def test_httpx_client_error_read_timeout_when_server_never_answers() -> None:
    async def body() -> None:
        async with serving(never_answering) as server:
            client = client_for(server.url, timeout_s=0.3)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "read_timeout")
        assert result.latency_ns >= 300_000_000

    run(body)


def test_httpx_client_error_connect_refused_on_a_closed_port() -> None:
    async def body() -> None:
        client = client_for(f"http://127.0.0.1:{closed_port()}")
        result = await client.send(get())
        await client.aclose()
        assert (result.status, result.error) == (0, "connect_refused")

    run(body)


def test_httpx_client_error_connect_timeout_when_nobody_accepts() -> None:
    async def body() -> None:
        async with full_backlog() as port:
            client = client_for(f"http://127.0.0.1:{port}", connect_timeout_s=0.3)
            result = await client.send(get())
            await client.aclose()
        assert (result.status, result.error) == (0, "connect_timeout")
        assert result.connect_ns >= 300_000_000

    run(body)


def test_httpx_client_cancellation_propagates_and_drops_the_connection() -> None:
    async def body() -> None:
        async with serving(first_silent_then_answering) as server:
            client = client_for(server.url)
            with trio.move_on_after(0.2) as scope:
                await client.send(get())
            assert scope.cancelled_caught
            assert await eventually(lambda: server.hung_up_by_client == 1)
            after = await client.send(get())
            await client.aclose()
        assert (after.status, after.connect_ns > 0) == (200, True)
        assert server.accepted == 2

    run(body)


def test_httpx_client_https_and_its_tls_error(tls_files: tuple[Path, Path]) -> None:
    async def body() -> None:
        server_ctx = server_tls_context(tls_files)
        async with serving(answering(ok(b"secret")), tls=server_ctx) as server:
            url = f"https://127.0.0.1:{server.port}"
            lenient = client_for(url, verify_tls=False)
            first = await lenient.send(get())
            second = await lenient.send(get())
            await lenient.aclose()
            strict = client_for(url)
            untrusted = await strict.send(get())
            await strict.aclose()
        assert (first.status, first.body) == (200, b"secret")
        assert first.connect_ns > 0 and second.connect_ns == 0
        assert_ordered(first)
        assert (untrusted.status, untrusted.error) == (0, "tls")

    run(body)


def test_httpx_client_silences_httpx_request_logging() -> None:
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    client = client_for("http://127.0.0.1:1")
    assert logging.getLogger("httpx").level == logging.WARNING
    trio.run(client.aclose)


def test_httpx_client_explains_a_missing_http2_package() -> None:
    if importlib.util.find_spec("h2") is not None:
        pytest.skip("h2 is installed, so http2 works")

    with pytest.raises(UsageError, match="httpx\\[http2\\]"):
        HttpxClient(
            Origin.parse("http://127.0.0.1:1"),
            connect_timeout_s=1,
            timeout_s=1,
            verify_tls=True,
            http2=True,
        )


def test_httpx_client_explains_a_bad_proxy_url() -> None:
    with pytest.raises(UsageError, match=r"http\.proxy 'nonsense'"):
        HttpxClient(
            Origin.parse("http://127.0.0.1:1"),
            connect_timeout_s=1,
            timeout_s=1,
            verify_tls=True,
            proxy="nonsense",
        )


def test_httpx_client_sends_one_host_when_the_request_has_its_own() -> None:
    async def body() -> None:
        http = HttpSettings(engine="httpx", headers=(("Host", "vhost.test"),))
        async with serving(answering(ok())) as server:
            client = make_client("httpx", Origin.parse(server.url), http, None)
            await client.send(Request(b"GET", b"/", [(b"Host", b"vhost.test")]))
            await client.aclose()
        assert server.requests == [b"GET / HTTP/1.1\r\nHost: vhost.test\r\n\r\n"]

    run(body)


def test_httpx_error_kinds_for_errors_no_server_here_provokes() -> None:
    import httpx

    assert _error_kind(httpx.PoolTimeout("pool")) == "read_timeout"
    assert _error_kind(httpx.WriteTimeout("write")) == "read_timeout"
    assert _error_kind(httpx.ProxyError("proxy")) == "connect_error"
    assert _error_kind(httpx.WriteError("broken pipe")) == "reset"
    assert _error_kind(httpx.DecodingError("bad gzip")) == "protocol"
    assert _error_kind(httpx.ConnectError("name or service not known")) == (
        "connect_error"
    )
