"""One VU running one iteration against the real demo target, as a worker runs it.

Each test loads a small profile, compiles its scenario, and runs ``run_iteration``
inside ``trio.run`` with the fast client, a record buffer and a live-stats window;
then it reads the rows the iteration appended. Most tests share one demo target and
read only differences of its counters; the tests that need a slow service start their
own.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from harness.client import make_client
from harness.client.base import Client, Origin, Request, Result
from harness.demo.process import DemoTarget
from harness.flow import (
    VU,
    Clock,
    PreparedScenario,
    Recorder,
    StopFlag,
    compile_scenario,
    run_iteration,
    scenario_picker,
)
from harness.livestats import WindowStats
from harness.profile.load import load_profile_text
from harness.profile.model import Profile
from harness.record import FIELDS, SCHEMA, RecordBuffer, rows_to_table

PASSWORD = "LoadTest123!"

LOGIN = """
      - name: login
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "{{ password }}"}
        capture: {token: $.data.access_token}
        check: {status: 200}
"""

PROFILE_WITH_TOKEN = """
      - name: profile
        path: /api/user/profile
        headers: {Authorization: "Bearer {{ token }}"}
"""


@pytest.fixture(scope="module")
def target() -> Iterator[DemoTarget]:
    """One demo target for the module's tests that need no fault knob."""
    with DemoTarget.start() as demo:
        yield demo


def make_profile(url: str, flow: str, *, variables: str = "") -> Profile:
    text = f"""
name: flow test
target: {url}
http: {{timeout: 10s}}
variables:
  password: ${{TEST_PASSWORD}}
{variables}
load: {{model: open, phases: [{{duration: 1m, rate: 1}}]}}
scenarios:
  - name: journey
    flow:
{flow}
"""
    return load_profile_text(text, "flow.yaml", env={"TEST_PASSWORD": PASSWORD})


@dataclass
class Ran:
    """What the iterations left behind."""

    raw: list[tuple[Any, ...]]
    recorder: Recorder
    vu: VU

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(FIELDS, row, strict=True)) for row in self.raw]

    @property
    def errors(self) -> list[str | None]:
        return [row["error"] for row in self.rows]


def run(
    profile: Profile,
    *,
    base_variables: dict[str, str] | None = None,
    stop_first: bool = False,
    lag_ns: int = 0,
    iterations: int = 1,
    shard: int = 0,
    vu_id: int = 1,
    phase: str = "steady",
    offered: float = 1.0,
    wrap: Callable[[Recorder, Client], Client] | None = None,
) -> Ran:
    """Run ``iterations`` iterations of the profile's first scenario on one VU.

    ``lag_ns`` pretends the scheduler meant the iteration to start that long ago;
    ``wrap`` may put a layer around the real client.
    """
    scenario = compile_scenario(profile, profile.scenarios[0])
    variables = (
        {v.name: v.value for v in profile.variables}
        if base_variables is None
        else base_variables
    )
    recorder = Recorder(shard, RecordBuffer(), WindowStats(), Clock())
    stop = StopFlag()
    if stop_first:
        stop.set()
    client: Client = make_client(
        "fast", Origin.parse(profile.target), profile.http, None
    )
    if wrap is not None:
        client = wrap(recorder, client)
    vu = VU(vu_id, client)

    async def main() -> None:
        try:
            for _ in range(iterations):
                intended_perf_ns = time.perf_counter_ns() - lag_ns
                await run_iteration(
                    vu,
                    scenario,
                    variables,
                    recorder,
                    stop,
                    intended_perf_ns,
                    phase,
                    offered,
                )
        finally:
            await client.aclose()

    trio.run(main)
    return Ran(recorder.buffer.rows, recorder, vu)


def served(demo: DemoTarget) -> int:
    count: int = demo.stats()["requests_served"]
    return count


# -- captures -----------------------------------------------------------------------


def test_a_captured_token_is_sent_by_the_next_step(target: DemoTarget) -> None:
    flow = (
        LOGIN
        + PROFILE_WITH_TOKEN
        + '        check: {status: 200, json: {"$.data.email": loadtest@example.com}}'
    )
    ran = run(make_profile(target.url, flow))
    assert [(r["step"], r["status"], r["error"]) for r in ran.rows] == [
        ("login", 200, None),
        ("profile", 200, None),
    ]


def test_the_next_step_without_the_token_is_refused(target: DemoTarget) -> None:
    # The control for the test above: the profile endpoint does need the token.
    flow = """
      - name: profile
        path: /api/user/profile
        headers: {Authorization: "Bearer not-a-token"}
"""
    ran = run(make_profile(target.url, flow))
    assert [(r["status"], r["error"]) for r in ran.rows] == [(401, "status")]


def test_a_missing_capture_path_records_capture_and_ends_the_iteration(
    target: DemoTarget,
) -> None:
    flow = LOGIN.replace("$.data.access_token", "$.data.refresh_token") + (
        PROFILE_WITH_TOKEN
    )
    before = served(target)
    ran = run(make_profile(target.url, flow))
    assert [(r["step"], r["status"], r["error"]) for r in ran.rows] == [
        ("login", 200, "capture")
    ]
    assert served(target) - before == 1


def test_a_capture_from_a_body_that_is_not_json_records_capture(
    target: DemoTarget,
) -> None:
    flow = """
      - name: not found
        path: /no/such/page
        capture: {token: $.data.access_token}
        check: {status: 404}
      - {name: health, path: /healthz}
"""
    ran = run(make_profile(target.url, flow))
    assert [(r["status"], r["error"]) for r in ran.rows] == [(404, "capture")]


# -- checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/user/profile", 401), ("/api/no/such/endpoint", 404)],
)
def test_a_status_of_400_or_more_without_a_status_check_is_a_status_error(
    target: DemoTarget, path: str, status: int
) -> None:
    ran = run(make_profile(target.url, f"      - {{name: get, path: {path}}}"))
    assert [(r["status"], r["error"]) for r in ran.rows] == [(status, "status")]


def test_an_iteration_goes_on_after_a_status_error(target: DemoTarget) -> None:
    flow = """
      - {name: refused, path: /api/user/profile}
      - {name: health, path: /healthz}
"""
    ran = run(make_profile(target.url, flow))
    assert ran.errors == ["status", None]


def test_a_status_check_listing_401_accepts_401(target: DemoTarget) -> None:
    flow = """
      - name: refused
        path: /api/user/profile
        check: {status: [401, 403]}
"""
    ran = run(make_profile(target.url, flow))
    assert [(r["status"], r["error"]) for r in ran.rows] == [(401, None)]


def test_a_status_check_rejects_a_status_it_does_not_list(target: DemoTarget) -> None:
    flow = "      - {name: health, path: /healthz, check: {status: 201}}"
    ran = run(make_profile(target.url, flow))
    assert [(r["status"], r["error"]) for r in ran.rows] == [(200, "check")]


@pytest.mark.parametrize(
    ("check", "error"),
    [
        ('{"$.success": true}', None),
        ('{"$.data.user.id": 1.0}', None),
        ('{"$.data.token_type": Bearer}', None),
        ('{"$.success": 1}', "check"),
        ('{"$.success": false}', "check"),
        ('{"$.data.token_type": bearer}', "check"),
        ('{"$.data.no_such_field": 1}', "check"),
        ('{"$.success": true, "$.data.user.role": admin}', "check"),
    ],
)
def test_json_checks_compare_values_as_json_does(
    target: DemoTarget, check: str, error: str | None
) -> None:
    flow = f"""
      - name: login
        method: POST
        path: /api/auth/login
        json: {{email: loadtest@example.com, password: "{{{{ password }}}}"}}
        check: {{json: {check}}}
"""
    ran = run(make_profile(target.url, flow))
    assert [(r["status"], r["error"]) for r in ran.rows] == [(200, error)]


def test_a_json_check_on_a_body_that_is_not_json_fails() -> None:
    # Every answer of the demo target is JSON, so this one needs a server of its own.
    with _TextServer() as url:
        flow = '      - {name: text, path: /, check: {json: {"$.ok": true}}}'
        ran = run(make_profile(url, flow))
    assert [(r["status"], r["error"]) for r in ran.rows] == [(200, "check")]


def test_exceeding_max_latency_is_a_check_error() -> None:
    flow = """
      - name: too slow
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "{{ password }}"}
        check: {status: 200, max_latency: 20ms}
      - name: in time
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "{{ password }}"}
        check: {status: 200, max_latency: 30s}
"""
    with DemoTarget.start(service_ms=80) as slow:
        ran = run(make_profile(slow.url, flow))
    rows = ran.rows
    assert [(r["status"], r["error"]) for r in rows] == [(200, "check"), (200, None)]
    assert all(r["latency_ns"] >= 80_000_000 for r in rows)


# -- the record -----------------------------------------------------------------------


def test_rows_follow_the_schema_and_record_the_endpoint_template(
    target: DemoTarget,
) -> None:
    flow = (
        LOGIN
        + """
      - name: section
        path: "/api/user/{{ section }}?fields=all"
        headers: {Authorization: "Bearer {{ token }}"}
        check: {status: 200}
"""
    )
    profile = make_profile(target.url, flow, variables="  section: profile")
    wall_before_ns = time.time_ns()
    ran = run(profile, shard=3, vu_id=42, phase="ramp up", offered=12.5)
    wall_after_ns = time.time_ns()

    table = rows_to_table(ran.raw)
    assert table.schema == SCHEMA
    assert table.column_names == list(FIELDS)
    rows = table.to_pylist()
    assert [(r["step"], r["method"], r["endpoint"]) for r in rows] == [
        ("login", "POST", "/api/auth/login"),
        ("section", "GET", "/api/user/{section}"),
    ]
    for r in rows:
        assert (r["worker"], r["vu"], r["iteration"]) == (3, 42, 1)
        assert (r["scenario"], r["phase"], r["offered"]) == ("journey", "ramp up", 12.5)
        assert (r["status"], r["error"]) == (200, None)
        assert wall_before_ns <= r["intended_ns"] <= r["start_ns"] <= wall_after_ns
        assert 0 < r["ttfb_ns"] <= r["latency_ns"]
        assert r["bytes_out"] > 0 and r["bytes_in"] > 0
    # The VU connected once and kept the connection for the second step.
    assert rows[0]["connect_ns"] > 0
    assert rows[1]["connect_ns"] == 0
    assert rows[0]["start_ns"] + rows[0]["latency_ns"] <= rows[1]["start_ns"]


def test_each_iteration_of_a_vu_is_numbered(target: DemoTarget) -> None:
    ran = run(make_profile(target.url, "      - {path: /healthz}"), iterations=3)
    assert [r["iteration"] for r in ran.rows] == [1, 2, 3]
    assert ran.vu.iteration == 3
    assert ran.rows[0]["step"] == "GET /healthz"


def test_later_steps_carry_the_lag_of_the_first(target: DemoTarget) -> None:
    lag_ns = 250_000_000
    flow = LOGIN + PROFILE_WITH_TOKEN + "      - {name: health, path: /healthz}"
    ran = run(make_profile(target.url, flow), lag_ns=lag_ns)
    rows = ran.rows
    assert len(rows) == 3
    first_lag_ns = rows[0]["start_ns"] - rows[0]["intended_ns"]
    # At least the lag the scheduler caused; the rest is the few steps before send.
    assert lag_ns <= first_lag_ns < lag_ns + 5_000_000_000
    for r in rows[1:]:
        assert r["start_ns"] - r["intended_ns"] == first_lag_ns
        assert r["start_ns"] > rows[0]["start_ns"]


def test_an_iteration_that_starts_on_time_has_intended_at_or_before_start(
    target: DemoTarget,
) -> None:
    ran = run(make_profile(target.url, LOGIN + PROFILE_WITH_TOKEN))
    for r in ran.rows:
        assert 0 <= r["start_ns"] - r["intended_ns"] < 5_000_000_000


def test_every_request_is_counted_in_the_live_window(target: DemoTarget) -> None:
    flow = (
        LOGIN
        + PROFILE_WITH_TOKEN
        + "      - {name: refused, path: /api/user/profile}"
        + "\n      - {name: health, path: /healthz, check: {status: 204}}"
    )
    ran = run(make_profile(target.url, flow))
    stats = ran.recorder.stats
    assert ran.errors == [None, None, "status", "check"]
    assert stats.requests == 4
    assert stats.errors == {"status": 1, "check": 1}
    assert stats.bytes_in == sum(r["bytes_in"] for r in ran.rows)
    # The worker counts iterations itself; the flow only counts requests.
    assert stats.iterations == 0


class _SwapStatsOnSecondSend:
    """Delegates to the real client; before the second request it replaces the
    recorder's stats window, as the worker's ticker does at each second."""

    def __init__(self, recorder: Recorder, client: Client) -> None:
        self.recorder = recorder
        self.client = client
        self.sends = 0
        self.first_window = recorder.stats

    async def send(self, request: Request) -> Result:
        self.sends += 1
        if self.sends == 2:
            self.recorder.stats = WindowStats()
        return await self.client.send(request)

    def clear_cookies(self) -> None:
        self.client.clear_cookies()

    async def aclose(self) -> None:
        await self.client.aclose()


def test_a_request_is_counted_in_the_window_current_when_it_finishes(
    target: DemoTarget,
) -> None:
    wrappers: list[_SwapStatsOnSecondSend] = []

    def wrap(recorder: Recorder, client: Client) -> Client:
        wrappers.append(_SwapStatsOnSecondSend(recorder, client))
        return wrappers[0]

    flow = "      - {name: one, path: /healthz}\n      - {name: two, path: /healthz}"
    ran = run(make_profile(target.url, flow), wrap=wrap)
    assert ran.errors == [None, None]
    assert wrappers[0].first_window.requests == 1
    assert ran.recorder.stats.requests == 1


# -- stopping and failing before sending ----------------------------------------------


def test_a_stop_flag_set_before_the_iteration_sends_nothing(
    target: DemoTarget,
) -> None:
    before = served(target)
    ran = run(make_profile(target.url, LOGIN + PROFILE_WITH_TOKEN), stop_first=True)
    assert ran.raw == []
    assert ran.recorder.stats.requests == 0
    assert served(target) == before


def test_a_request_that_cannot_be_rendered_records_template_and_sends_nothing(
    target: DemoTarget,
) -> None:
    before = served(target)
    # The password variable is missing, as when a worker's variables are wrong.
    ran = run(make_profile(target.url, LOGIN + PROFILE_WITH_TOKEN), base_variables={})
    assert [(r["step"], r["status"], r["error"]) for r in ran.rows] == [
        ("login", 0, "template")
    ]
    assert ran.recorder.stats.errors == {"template": 1}
    assert served(target) == before


def test_a_cancelled_request_is_recorded_and_the_cancellation_goes_on() -> None:
    flow = """
      - name: slow login
        method: POST
        path: /api/auth/login
        json: {email: loadtest@example.com, password: "{{ password }}"}
"""
    with DemoTarget.start(service_ms=1000) as slow:
        profile = make_profile(slow.url, flow)
        scenario = compile_scenario(profile, profile.scenarios[0])
        recorder = Recorder(0, RecordBuffer(), WindowStats(), Clock())
        client = make_client("fast", Origin.parse(profile.target), profile.http, None)
        reached_end = []

        async def main() -> None:
            with trio.move_on_after(0.1) as scope:
                await run_iteration(
                    VU(5, client),
                    scenario,
                    {"password": PASSWORD},
                    recorder,
                    StopFlag(),
                    time.perf_counter_ns(),
                    "steady",
                    1.0,
                )
                reached_end.append(True)
            await client.aclose()
            assert scope.cancelled_caught

        trio.run(main)
    assert reached_end == []
    rows = [dict(zip(FIELDS, row, strict=True)) for row in recorder.buffer.rows]
    assert [(r["status"], r["error"], r["vu"]) for r in rows] == [(0, "cancelled", 5)]
    assert recorder.cancelled == 1


# -- choosing a scenario --------------------------------------------------------------


def scenarios(*names: str) -> tuple[PreparedScenario, ...]:
    return tuple(PreparedScenario(name, (), 0.0) for name in names)


def test_scenario_picker_honours_weights() -> None:
    choices = scenarios("browse", "buy", "never")
    pick = scenario_picker(choices, (1.0, 3.0, 0.0), random.Random(20240101))
    counts = Counter(pick().name for _ in range(20_000))
    # Expected 5000 and 15000; the bounds are ten standard deviations wide.
    assert 4_400 <= counts["browse"] <= 5_600
    assert 14_400 <= counts["buy"] <= 15_600
    assert counts["never"] == 0


def test_scenario_picker_with_a_zero_weight_first_never_picks_it() -> None:
    pick = scenario_picker(scenarios("off", "on"), (0.0, 2.0), random.Random(3))
    assert {pick().name for _ in range(1_000)} == {"on"}


def test_scenario_picker_repeats_itself_for_the_same_seed() -> None:
    choices = scenarios("a", "b", "c")
    weights = (30.0, 25.0, 45.0)
    first = scenario_picker(choices, weights, random.Random(7))
    second = scenario_picker(choices, weights, random.Random(7))
    assert [first().name for _ in range(200)] == [second().name for _ in range(200)]


def test_scenario_picker_with_one_scenario_always_picks_it() -> None:
    (only,) = scenarios("only")
    pick = scenario_picker((only,), (5.0,), random.Random(1))
    assert all(pick() is only for _ in range(100))


# -- a tiny server that answers plain text --------------------------------------------


class _TextServer:
    """A real HTTP/1.1 server on loopback that answers every request with text/plain,
    in a thread, for checks that must meet a body that is not JSON."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10.0)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve_one, daemon=True)

    def _serve_one(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10.0)
            seen = b""
            while b"\r\n\r\n" not in seen and len(seen) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                seen += chunk
            body = b"all good, but not JSON"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                b"Connection: close\r\n\r\n" + body
            )

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(timeout=10.0)
