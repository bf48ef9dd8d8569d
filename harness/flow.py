"""One VU running one iteration of a scenario: render, send, check, capture, record.

Steps are compiled once per worker (:func:`compile_scenario`): constant parts of each
request are encoded to bytes up front, so the per-request work is filling in the few
templates that change and joining bytes. Each response becomes one row appended to the
worker's :class:`~harness.record.RecordBuffer`; nothing here writes files.

Times: ``intended_ns`` of the first request of an iteration is the instant the
scheduler meant it to start. Later steps carry the same lag forward (``intended = start
- iteration lag``), so response time measured from the intended start includes every
delay the scheduler caused, as it would for a real user who arrived on time.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .client.base import Client, Request
from .jsonpath import JsonPath, compile_path
from .livestats import WindowStats
from .profile.model import Profile, Scenario, Step
from .record import RecordBuffer
from .template import Template, compile_form_body, compile_json_body, compile_template


@dataclass(frozen=True, slots=True)
class PreparedStep:
    step: Step
    name: str
    method: bytes
    endpoint: str
    target: Template
    target_bytes: bytes | None
    """The encoded request target when it holds no template."""
    static_headers: tuple[tuple[bytes, bytes], ...]
    dynamic_headers: tuple[tuple[bytes, Template], ...]
    render_body: Callable[[dict[str, str]], bytes] | None
    body_bytes: bytes
    keep_body: bool
    captures: tuple[tuple[str, JsonPath], ...]
    check_status: frozenset[int]
    check_json: tuple[tuple[JsonPath, object], ...]
    max_latency_ns: int | None
    think_s: float


@dataclass(frozen=True, slots=True)
class PreparedScenario:
    name: str
    steps: tuple[PreparedStep, ...]
    think_s: float


def _compile_step(
    step: Step, default_headers: tuple[tuple[str, str], ...]
) -> PreparedStep:
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (*default_headers, *step.headers):
        merged[name.lower()] = (name, value)
    render_body: Callable[[dict[str, str]], bytes] | None = None
    body_bytes = b""
    content_type: str | None = None
    if step.body_kind == "json":
        json_body = compile_json_body(step.body)
        content_type = "application/json"
        if json_body.names or not json_body.is_constant:
            render_body = json_body.render
        else:
            body_bytes = json_body.render({})
    elif step.body_kind == "form":
        assert isinstance(step.body, tuple)
        form = compile_form_body(step.body)
        content_type = "application/x-www-form-urlencoded"
        if form.is_constant:
            body_bytes = form.render({})
        else:
            render_body = form.render
    elif step.body_kind == "raw":
        raw = compile_template(str(step.body))
        if raw.is_constant:
            body_bytes = raw.source.encode()
        else:

            def render_raw(variables: dict[str, str], _t: Template = raw) -> bytes:
                return _t.render(variables).encode()

            render_body = render_raw
    if content_type is not None and "content-type" not in merged:
        merged["content-type"] = ("Content-Type", content_type)
    static: list[tuple[bytes, bytes]] = []
    dynamic: list[tuple[bytes, Template]] = []
    for name, value in merged.values():
        template = compile_template(value)
        if template.is_constant:
            static.append((name.encode("latin-1"), template.source.encode("latin-1")))
        else:
            dynamic.append((name.encode("latin-1"), template))
    target = compile_template(step.path)
    captures = tuple((c.name, compile_path(c.json_path)) for c in step.captures)
    check_json = tuple((compile_path(p), v) for p, v in step.checks.json)
    max_latency = step.checks.max_latency_ms
    return PreparedStep(
        step=step,
        name=step.name,
        method=step.method.encode("ascii"),
        endpoint=step.endpoint,
        target=target,
        target_bytes=target.source.encode() if target.is_constant else None,
        static_headers=tuple(static),
        dynamic_headers=tuple(dynamic),
        render_body=render_body,
        body_bytes=body_bytes,
        keep_body=bool(captures or check_json),
        captures=captures,
        check_status=frozenset(step.checks.status),
        check_json=check_json,
        max_latency_ns=None if max_latency is None else int(max_latency * 1e6),
        think_s=step.think_s,
    )


def compile_scenario(profile: Profile, scenario: Scenario) -> PreparedScenario:
    """Compile a scenario's steps; the client adds the target's base path."""
    steps = tuple(_compile_step(s, profile.http.headers) for s in scenario.steps)
    return PreparedScenario(scenario.name, steps, scenario.think_s)


class Clock:
    """One wall-clock anchor per worker plus the monotonic clock for everything else."""

    __slots__ = ("perf_anchor_ns", "wall_anchor_ns")

    def __init__(self) -> None:
        self.wall_anchor_ns = time.time_ns()
        self.perf_anchor_ns = time.perf_counter_ns()

    def wall_ns(self, perf_ns: int) -> int:
        return self.wall_anchor_ns + (perf_ns - self.perf_anchor_ns)


class StopFlag:
    """Set when the worker stops: no new step begins, think times are cut short."""

    def __init__(self) -> None:
        self.stopping = False
        self.event = trio.Event()

    def set(self) -> None:
        self.stopping = True
        self.event.set()

    async def pause(self, seconds: float) -> None:
        if seconds > 0 and not self.stopping:
            with trio.move_on_after(seconds):
                await self.event.wait()


@dataclass(slots=True)
class Recorder:
    """What a VU needs to record a request: the worker's buffer, stats and clock."""

    shard: int
    buffer: RecordBuffer
    stats: WindowStats
    clock: Clock
    cancelled: int = 0


class VU:
    """A virtual user: its id, its client (one connection, one cookie jar)."""

    __slots__ = ("client", "id", "iteration")

    def __init__(self, vu_id: int, client: Client) -> None:
        self.id = vu_id
        self.client = client
        self.iteration = 0


def _check(step: PreparedStep, status: int, latency_ns: int, body: bytes) -> str | None:
    """The error kind a response earns, or None when it passes."""
    if step.check_status:
        if status not in step.check_status:
            return "check"
    elif status >= 400:
        return "status"
    if step.max_latency_ns is not None and latency_ns > step.max_latency_ns:
        return "check"
    if step.check_json:
        try:
            doc = json.loads(body)
        except ValueError:
            return "check"
        for path, expected in step.check_json:
            try:
                if not _json_equal(path.get(doc), expected):
                    return "check"
            except LookupError:
                return "check"
    return None


def _json_equal(actual: object, expected: object) -> bool:
    """Equality as JSON means it: ``true`` is not ``1``, though ``1`` is ``1.0``."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return actual == expected


def _capture(step: PreparedStep, body: bytes, variables: dict[str, str]) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    for name, path in step.captures:
        try:
            value = path.get(doc)
        except LookupError:
            return False
        variables[name] = value if isinstance(value, str) else json.dumps(value)
    return True


def render(step: PreparedStep, variables: dict[str, str]) -> Request:
    target = step.target_bytes
    if target is None:
        target = step.target.render(variables).encode()
    headers = list(step.static_headers)
    for name, template in step.dynamic_headers:
        headers.append((name, template.render(variables).encode("latin-1")))
    body = step.body_bytes
    if step.render_body is not None:
        body = step.render_body(variables)
    return Request(step.method, target, headers, body, step.keep_body)


async def run_iteration(
    vu: VU,
    scenario: PreparedScenario,
    base_variables: dict[str, str],
    recorder: Recorder,
    stop: StopFlag,
    intended_perf_ns: int,
    phase: str,
    offered: float,
    variables: dict[str, str] | None = None,
) -> bool:
    """Run the scenario's steps once for ``vu``; record every request sent.

    The steps read ``base_variables`` and capture into a copy of them, or into
    ``variables`` itself when it is given (the setup keeps what it captured).
    Returns True when at least one request went out (the client then passed
    through a checkpoint, so the caller need not add one)."""
    vu.iteration += 1
    iteration = vu.iteration
    if variables is None:
        variables = dict(base_variables)
    lag_ns: int | None = None
    sent = False
    row_head = (recorder.shard, vu.id, iteration, scenario.name)
    buffer = recorder.buffer
    clock = recorder.clock

    for step in scenario.steps:
        if stop.stopping:
            break
        try:
            request = render(step, variables)
        except (KeyError, ValueError, UnicodeError):
            _record_unanswered(
                recorder,
                row_head,
                step,
                "template",
                time.perf_counter_ns(),
                lag_ns,
                intended_perf_ns,
                phase,
                offered,
            )
            return sent
        sent_perf_ns = time.perf_counter_ns()
        try:
            result = await vu.client.send(request)
        except trio.Cancelled:
            _record_unanswered(
                recorder,
                row_head,
                step,
                "cancelled",
                sent_perf_ns,
                lag_ns,
                intended_perf_ns,
                phase,
                offered,
            )
            recorder.cancelled += 1
            raise
        sent = True
        if lag_ns is None:
            lag_ns = max(0, result.start_ns - intended_perf_ns)
        error = result.error
        stop_iteration = error is not None
        if error is None:
            error = _check(step, result.status, result.latency_ns, result.body)
            if step.captures and not _capture(step, result.body, variables):
                error = error or "capture"
                stop_iteration = True
        start_wall = clock.wall_ns(result.start_ns)
        buffer.append(
            (
                *row_head,
                step.name,
                step.step.method,
                step.endpoint,
                result.status,
                error,
                start_wall - lag_ns,
                start_wall,
                result.latency_ns,
                result.ttfb_ns,
                result.connect_ns,
                result.bytes_out,
                result.bytes_in,
                phase,
                offered,
            )
        )
        recorder.stats.add(result.latency_ns, error, result.bytes_in)
        if stop_iteration:
            return sent
        if step.think_s:
            await stop.pause(step.think_s)
    return sent


def _record_unanswered(
    recorder: Recorder,
    row_head: tuple[int, int, int, str],
    step: PreparedStep,
    error: str,
    start_perf_ns: int,
    lag_ns: int | None,
    intended_perf_ns: int,
    phase: str,
    offered: float,
) -> None:
    """Record a request that got no response: not rendered, or cut short."""
    clock = recorder.clock
    now_perf = time.perf_counter_ns()
    start_wall = clock.wall_ns(start_perf_ns)
    intended = (
        start_wall - lag_ns
        if lag_ns is not None
        else clock.wall_ns(min(intended_perf_ns, start_perf_ns))
    )
    latency_ns = now_perf - start_perf_ns
    recorder.buffer.append(
        (
            *row_head,
            step.name,
            step.step.method,
            step.endpoint,
            0,
            error,
            intended,
            start_wall,
            latency_ns,
            0,
            0,
            0,
            0,
            phase,
            offered,
        )
    )
    # The ticker swaps the window every second: always add to the current one.
    recorder.stats.add(latency_ns, error, 0)


def scenario_picker(
    scenarios: tuple[PreparedScenario, ...], weights: tuple[float, ...], rng: Any
) -> Callable[[], PreparedScenario]:
    """A function drawing a scenario by weight with ``rng.random()``."""
    if len(scenarios) == 1:
        only = scenarios[0]
        return lambda: only
    total = sum(weights)
    edges = []
    running = 0.0
    for w in weights:
        running += w / total
        edges.append(running)
    edges[-1] = 1.0

    def pick() -> PreparedScenario:
        return scenarios[bisect_right(edges, rng.random())]

    return pick
