"""The demo target, tested as a real child process over loopback HTTP."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from harness.demo.api import DEFAULT_LIST_CAP
from harness.demo.process import DemoTarget
from harness.errors import TargetError

USER = ("loadtest@example.com", "LoadTest123!")
ADMIN = ("admin@example.com", "AdminPassword123!")
ADMIN_PATHS = ("/api/admin/dashboard", "/api/admin/users", "/api/admin/analytics")
BEARER_PATHS = (
    ("POST", "/api/auth/logout"),
    ("GET", "/api/user/profile"),
    ("GET", "/api/user/exchange-accounts"),
    ("POST", "/api/user/exchange-accounts"),
    ("GET", "/api/automations"),
    ("POST", "/api/automations"),
    ("GET", "/api/simulations"),
    ("POST", "/api/simulations"),
    *(("GET", p) for p in ADMIN_PATHS),
)


class Api:
    """A keep-alive JSON client on one connection (stdlib http.client)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        payload = json.loads(response.read())
        return response.status, payload

    def login(self, who: tuple[str, str] = USER) -> str:
        status, payload = self.call(
            "POST", "/api/auth/login", {"email": who[0], "password": who[1]}
        )
        assert status == 200, payload
        token: str = payload["data"]["access_token"]
        return token

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def shared_target() -> Iterator[DemoTarget]:
    """One target for the tests that only check answers, not counts or faults."""
    with DemoTarget.start() as target:
        yield target


@pytest.fixture
def api(shared_target: DemoTarget) -> Iterator[Api]:
    client = Api(shared_target.url)
    yield client
    client.close()


def raw_exchange(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes; bounded by ``timeout_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def statuses(raw: bytes) -> list[int]:
    """Status codes of the responses in ``raw``; one may follow a body directly."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


# Authentication


@pytest.mark.parametrize(("who", "role"), [(USER, "user"), (ADMIN, "admin")])
def test_login_returns_a_bearer_token_for_each_seeded_user(
    api: Api, who: tuple[str, str], role: str
) -> None:
    status, payload = api.call(
        "POST", "/api/auth/login", {"email": who[0], "password": who[1]}
    )
    assert status == 200
    assert payload["success"] is True
    data = payload["data"]
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 3600
    assert len(data["access_token"]) >= 32
    assert data["user"]["email"] == who[0]
    assert data["user"]["role"] == role
    assert isinstance(data["user"]["id"], int)


def test_each_login_gets_a_different_token(api: Api) -> None:
    assert api.login() != api.login()


@pytest.mark.parametrize(
    "body",
    [
        {"email": USER[0], "password": "wrong"},
        {"email": "nobody@example.com", "password": USER[1]},
    ],
)
def test_login_with_wrong_credentials_is_401(api: Api, body: dict[str, str]) -> None:
    status, payload = api.call("POST", "/api/auth/login", body)
    assert status == 401
    assert payload == {"success": False, "error": "wrong email or password"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"email": "a@b.c"}',
        b'{"email": 1, "password": 2}',
    ],
)
def test_login_with_a_malformed_body_is_400(api: Api, raw: bytes) -> None:
    status, payload = api.call("POST", "/api/auth/login", raw=raw)
    assert status == 400
    assert payload["success"] is False
    assert payload["error"]


def test_profile_returns_the_logged_in_user(api: Api) -> None:
    status, payload = api.call("GET", "/api/user/profile", token=api.login())
    assert status == 200
    assert payload["data"] == {"id": 1, "email": USER[0], "role": "user"}


def test_logout_invalidates_the_token_and_only_that_token(api: Api) -> None:
    token, other = api.login(), api.login()
    status, payload = api.call("POST", "/api/auth/logout", token=token)
    assert (status, payload["success"]) == (200, True)
    assert api.call("GET", "/api/user/profile", token=token)[0] == 401
    assert api.call("POST", "/api/auth/logout", token=token)[0] == 401
    assert api.call("GET", "/api/user/profile", token=other)[0] == 200


@pytest.mark.parametrize(("method", "path"), BEARER_PATHS)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer "]
)
def test_bearer_endpoints_without_a_valid_token_are_401(
    shared_target: DemoTarget, method: str, path: str, authorization: str | None
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shared_target.port, timeout=10)
    try:
        headers = {} if authorization is None else {"Authorization": authorization}
        conn.request(method, path, body=b"{}", headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 401
    assert payload["success"] is False
    assert "token" in payload["error"]


# Admin


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_admin_endpoints_refuse_a_plain_user_with_403(api: Api, path: str) -> None:
    status, payload = api.call("GET", path, token=api.login(USER))
    assert status == 403
    assert payload["success"] is False


def test_admin_endpoints_answer_an_admin(api: Api) -> None:
    token = api.login(ADMIN)
    status, dashboard = api.call("GET", "/api/admin/dashboard", token=token)
    assert status == 200
    assert dashboard["data"]["users"] == 2
    assert dashboard["data"]["active_sessions"] >= 1
    status, users = api.call("GET", "/api/admin/users", token=token)
    assert status == 200
    assert {u["email"] for u in users["data"]} == {USER[0], ADMIN[0]}
    assert all("password" not in json.dumps(u) for u in users["data"])
    status, analytics = api.call("GET", "/api/admin/analytics", token=token)
    assert status == 200
    assert set(analytics["data"]) == {"exchange_accounts", "automations", "simulations"}


# Stored resources


def test_exchange_account_is_stored_with_its_keys_masked(api: Api) -> None:
    token = api.login()
    account = {
        "exchange": "binance",
        "api_key": "AKIAKEY1234567890WXYZ",
        "api_secret": "s3cr3t-value-that-must-not-come-back",
        "is_active": False,
    }
    status, created = api.call("POST", "/api/user/exchange-accounts", account, token)
    assert status == 201
    data = created["data"]
    assert data["exchange"] == "binance"
    assert data["is_active"] is False
    assert data["api_key"] == "****WXYZ"
    assert "s3cr3t" not in json.dumps(data)
    status, listed = api.call("GET", "/api/user/exchange-accounts", token=token)
    assert status == 200
    assert data in listed["data"]
    assert "s3cr3t" not in json.dumps(listed)


def test_exchange_account_with_a_missing_field_is_400(api: Api) -> None:
    token = api.login()
    body = {"exchange": "kraken", "api_key": "k" * 16}
    status, payload = api.call("POST", "/api/user/exchange-accounts", body, token)
    assert status == 400
    assert "api_secret" in payload["error"]


@pytest.mark.parametrize(
    ("path", "state"), [("/api/automations", "active"), ("/api/simulations", "queued")]
)
def test_named_items_are_created_and_listed_per_user(
    api: Api, path: str, state: str
) -> None:
    token, admin = api.login(USER), api.login(ADMIN)
    body = {"name": "grid bot", "type": "grid", "config": {"levels": 10}}
    status, created = api.call("POST", path, body, token)
    assert status == 201
    item = created["data"]
    assert {k: item[k] for k in body} == body
    assert item["status"] == state
    assert item in api.call("GET", path, token=token)[1]["data"]
    assert item not in api.call("GET", path, token=admin)[1]["data"]
    bad = api.call("POST", path, {"name": "x", "type": "y", "config": [1]}, token)
    assert bad[0] == 400


def test_stored_lists_keep_only_the_newest_items(demo_target: DemoTarget) -> None:
    api = Api(demo_target.url)
    try:
        token = api.login()
        for i in range(DEFAULT_LIST_CAP + 5):
            body = {"name": f"sim-{i}", "type": "backtest"}
            assert api.call("POST", "/api/simulations", body, token)[0] == 201
        listed = api.call("GET", "/api/simulations", token=token)[1]["data"]
    finally:
        api.close()
    names = [item["name"] for item in listed]
    assert len(names) == DEFAULT_LIST_CAP
    assert names[0] == "sim-5"
    assert names[-1] == f"sim-{DEFAULT_LIST_CAP + 4}"


# Routing and HTTP


def test_unknown_path_is_404(api: Api) -> None:
    status, payload = api.call("GET", "/api/nothing-here")
    assert status == 404
    assert payload == {"success": False, "error": "no endpoint /api/nothing-here"}


def test_wrong_method_is_405_with_the_allowed_ones(shared_target: DemoTarget) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shared_target.port, timeout=10)
    try:
        conn.request("DELETE", "/api/automations")
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 405
    assert response.getheader("Allow") == "GET, POST"
    assert payload["success"] is False


def test_query_string_does_not_change_the_route(api: Api) -> None:
    assert api.call("GET", "/healthz?probe=1")[0] == 200


def test_pipelined_requests_are_answered_in_order(demo_target: DemoTarget) -> None:
    before = demo_target.stats()["requests_served"]
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(demo_target.port, request * 3 + last)
    assert statuses(answer) == [200, 200, 200, 404]
    assert answer.count(b"Connection: close") == 1
    assert demo_target.stats()["requests_served"] == before + 4


def test_chunked_request_body_is_read(shared_target: DemoTarget) -> None:
    body = json.dumps({"email": USER[0], "password": USER[1]}).encode()
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    answer = raw_exchange(
        shared_target.port,
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks,
    )
    assert statuses(answer) == [200]
    assert b'"access_token"' in answer


def test_expect_continue_gets_an_interim_answer_before_the_body(
    shared_target: DemoTarget,
) -> None:
    body = json.dumps({"email": USER[0], "password": USER[1]}).encode()
    head = (
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", shared_target.port), 5) as sock:
        sock.sendall(head)
        interim = sock.recv(1024)
        sock.sendall(body)
        final = sock.recv(65536)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert statuses(final) == [200]


def test_malformed_request_is_400_and_the_connection_closes(
    demo_target: DemoTarget,
) -> None:
    before = demo_target.stats()
    answer = raw_exchange(demo_target.port, b"GET /healthz HTTP/1.1\r\nHost\r\n\r\n")
    assert statuses(answer) == [400]
    assert b"Connection: close" in answer
    after = demo_target.stats()
    assert after["requests_served"] == before["requests_served"] + 1
    assert after["by_endpoint"]["malformed"] == 1


def test_oversized_body_is_refused_with_413(shared_target: DemoTarget) -> None:
    size = 2 * 1024 * 1024
    head = b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    with socket.create_connection(("127.0.0.1", shared_target.port), 5) as sock:
        sock.sendall(head % size)
        # Send until the server answers and closes; it must not wait for it all.
        try:
            for _ in range(size // 65536):
                sock.sendall(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(65536)
    assert statuses(answer) == [413]


def test_oversized_head_is_refused_with_431(shared_target: DemoTarget) -> None:
    filler = b"X-Filler: " + b"f" * 8000 + b"\r\n"
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler * 10 + b"\r\n"
    assert statuses(raw_exchange(shared_target.port, head)) == [431]


def test_upgrade_request_is_answered_as_plain_http_then_closed(
    shared_target: DemoTarget,
) -> None:
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answer = raw_exchange(shared_target.port, request)
    assert statuses(answer) == [200]
    assert b"Connection: close" in answer


def test_http10_request_is_answered_then_closed(shared_target: DemoTarget) -> None:
    answer = raw_exchange(shared_target.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert statuses(answer) == [200]
    assert b"Connection: close" in answer


def test_healthz_answers_200(api: Api) -> None:
    assert api.call("GET", "/healthz") == (
        200,
        {"success": True, "data": {"status": "ok"}},
    )


# Bookkeeping


def test_requests_served_counts_every_response_exactly(
    demo_target: DemoTarget,
) -> None:
    setup = Api(demo_target.url)
    token = setup.login()
    setup.close()
    before = demo_target.stats()
    assert demo_target.stats()["requests_served"] == before["requests_served"]
    clients = [Api(demo_target.url) for _ in range(5)]
    try:
        for i in range(100):
            for client in clients:
                path = "/api/user/profile" if i % 4 else "/healthz"
                client.call("GET", path, token=token)
    finally:
        for client in clients:
            client.close()
    after = demo_target.stats()
    assert after["requests_served"] - before["requests_served"] == 500
    by_endpoint = after["by_endpoint"]
    assert by_endpoint["GET /api/user/profile"] == 375
    assert by_endpoint["GET /healthz"] == 125
    # Five keep-alive connections carried the 500; each stats read opens its own.
    assert after["connections_total"] - before["connections_total"] == 5 + 2
    assert sum(after["by_status"].values()) == after["requests_served"]


def test_stats_describe_the_process(demo_target: DemoTarget) -> None:
    stats = demo_target.stats()
    assert stats["pid"] == demo_target.pid
    assert abs(stats["started_at"] - time.time()) < 600
    assert stats["knobs"]["workers"] == 8
    assert stats["requests_served"] == 0


def test_demo_paths_are_not_counted(demo_target: DemoTarget) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", demo_target.port, timeout=10)
    try:
        answers = []
        for method, path in [("POST", "/_demo/stats"), ("GET", "/_demo/other")]:
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            answers.append(response.status)
    finally:
        conn.close()
    assert answers == [405, 404]
    assert demo_target.stats()["requests_served"] == 0


def test_secrets_never_reach_the_log(demo_target: DemoTarget) -> None:
    api = Api(demo_target.url)
    try:
        token = api.login()
        secret = "never-log-this-secret-9f8e7d"
        body = {"exchange": "x", "api_key": secret, "api_secret": secret}
        api.call("POST", "/api/user/exchange-accounts", body, token)
    finally:
        api.close()
    assert demo_target.stop() == 0
    log = demo_target.stderr_tail()
    assert "listening on" in log
    for value in (token, secret, USER[1]):
        assert value not in log


# Fault knobs


def test_service_time_lets_only_the_workers_serve_at_once() -> None:
    with DemoTarget.start(workers=2, service_ms=50) as target:
        clients = [Api(target.url) for _ in range(20)]
        token = clients[0].login()
        start = threading.Barrier(len(clients) + 1)
        results: list[int] = []

        def one(client: Api) -> None:
            client.call("GET", "/healthz")  # connect outside the timed part
            start.wait(timeout=10)
            results.append(client.call("GET", "/api/user/profile", token=token)[0])

        threads = [threading.Thread(target=one, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        start.wait(timeout=10)
        began = time.perf_counter()
        for t in threads:
            t.join(timeout=30)
        elapsed_s = time.perf_counter() - began
        for client in clients:
            client.close()
        faults = target.stats()["faults"]
    # 20 requests through 2 slots of 50 ms cannot take less than 10 x 50 ms.
    assert results == [200] * 20
    assert elapsed_s >= 0.5 - 0.01
    assert faults["peak_in_service"] <= 2
    assert faults["service_time_ms"] == pytest.approx(50.0)


def test_latency_drift_adds_service_time_as_minutes_pass() -> None:
    with DemoTarget.start(latency_drift_ms_per_min=600) as target:
        first = target.stats()["faults"]["service_time_ms"]
        time.sleep(0.5)
        api = Api(target.url)
        assert api.call("GET", "/healthz")[0] == 200
        began = time.perf_counter()
        assert api.call("GET", "/api/user/profile")[0] == 401
        took_s = time.perf_counter() - began
        api.close()
        second = target.stats()["faults"]["service_time_ms"]
    # 600 ms per minute is 10 ms per second: at least 5 ms more after 0.5 s, and
    # the request in between was held at least that long.
    assert second - first >= 5.0 - 0.01
    assert took_s >= (first + 5.0 - 0.01) / 1000.0


def test_error_rate_fails_about_that_fraction_of_api_requests() -> None:
    with DemoTarget.start(error_rate=0.5, seed=7) as target:
        api = Api(target.url)
        try:
            answers = [api.call("GET", "/api/user/profile") for _ in range(400)]
            health = [api.call("GET", "/healthz")[0] for _ in range(50)]
        finally:
            api.close()
        stats = target.stats()
    codes = [status for status, _ in answers]
    injected = codes.count(500)
    # Seeded, so the same every run; the bounds only say "about half".
    assert 140 <= injected <= 260
    assert codes.count(401) == 400 - injected
    failed = next(payload for status, payload in answers if status == 500)
    assert failed == {"success": False, "error": "injected failure (--error-rate)"}
    assert health == [200] * 50
    assert stats["by_status"]["500"] == stats["faults"]["errors_injected"]


def rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def rss_growth_after(target: DemoTarget, requests: int) -> int:
    api = Api(target.url)
    try:
        for _ in range(50):
            api.call("GET", "/healthz")
        before = rss_bytes(target.pid)
        for _ in range(requests):
            api.call("GET", "/api/user/profile")
        return rss_bytes(target.pid) - before
    finally:
        api.close()


def test_leak_knob_grows_resident_memory_by_the_bytes_leaked() -> None:
    leak, requests = 100_000, 2000
    with DemoTarget.start(leak_bytes_per_request=leak) as target:
        grown = rss_growth_after(target, requests)
        assert target.stats()["faults"]["leaked_bytes"] == leak * requests
    assert grown >= 0.7 * leak * requests


def test_without_the_leak_knob_memory_stays_flat(demo_target: DemoTarget) -> None:
    grown = rss_growth_after(demo_target, 2000)
    assert grown < 0.1 * 100_000 * 2000


def test_stall_freezes_requests_for_the_stall_time() -> None:
    stall_ms = 300
    with DemoTarget.start(stall_every_s=0.4, stall_ms=stall_ms) as target:
        api = Api(target.url)
        slowest_s = 0.0
        deadline = time.monotonic() + 3.0
        try:
            while time.monotonic() < deadline and slowest_s < stall_ms / 1000:
                began = time.perf_counter()
                api.call("GET", "/healthz")
                slowest_s = max(slowest_s, time.perf_counter() - began)
        finally:
            api.close()
        stalls = target.stats()["faults"]["stalls"]
    assert stalls >= 1
    assert slowest_s >= 0.8 * stall_ms / 1000


# The process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_target_with_exit_code_0(signum: int) -> None:
    target = DemoTarget.start()
    try:
        assert target.stats()["requests_served"] == 0
        os.kill(target.pid, signum)
        deadline = time.monotonic() + 10
        while target.running and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        code = target.stop()
    assert code == 0
    assert target.stop() == 0
    assert "demo target stopped" in target.stderr_tail()


def test_stop_lets_a_request_in_service_finish() -> None:
    with DemoTarget.start(service_ms=400) as target:
        api = Api(target.url)
        answer: list[int] = []
        worker = threading.Thread(
            target=lambda: answer.append(api.call("GET", "/healthz")[0])
        )
        slow = threading.Thread(
            target=lambda: answer.append(api.call("GET", "/api/user/profile")[0])
        )
        worker.start()
        worker.join(timeout=10)
        slow.start()
        deadline = time.monotonic() + 5
        while target.stats()["faults"]["in_service"] == 0:
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.01)
        assert target.stop() == 0
        slow.join(timeout=10)
        api.close()
    assert answer == [200, 401]


def test_start_fails_with_the_reason_when_the_port_is_taken(
    demo_target: DemoTarget,
) -> None:
    with pytest.raises(TargetError, match="already in use"):
        DemoTarget.start(port=demo_target.port)


def test_start_fails_with_the_reason_for_a_bad_knob() -> None:
    with pytest.raises(TargetError, match="--error-rate"):
        DemoTarget.start(error_rate=1.5)
    with pytest.raises(TargetError, match="go together"):
        DemoTarget.start(stall_every_s=1)


def test_target_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from harness.demo.process import DemoTarget\n"
            "t = DemoTarget.start()\n"
            "print(t.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    try:
        child_pid = int(parent.stdout.readline())
        child = psutil.Process(child_pid)
        parent.kill()
        parent.wait(timeout=10)
        try:
            child.wait(timeout=10)
        except psutil.TimeoutExpired:
            child.kill()
            pytest.fail("the demo target outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
