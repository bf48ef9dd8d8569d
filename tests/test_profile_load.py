from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from analysis.slo import EndpointSlo, Slos, SystemLimit
from analysis.thresholds import ThresholdRule, parse
from harness.errors import EXIT_BAD_INPUT, Location, ProfileError
from harness.profile.load import (
    COMMAND_LINE,
    is_secret_name,
    load_profile,
    load_profile_text,
)
from harness.profile.model import (
    DEFAULT_GRACEFUL_STOP_S,
    Capture,
    Checks,
    ClosedModel,
    HttpSettings,
    OpenModel,
    Phase,
    Profile,
    Scenario,
    Stage,
    Step,
    Variable,
)

HERE = Path(__file__).parent
INVALID = HERE / "profiles" / "invalid"
VALID = HERE / "profiles" / "valid"
ROOT = HERE.parent

ENV = {"HARNESS_TEST_PASSWORD": "s3cret!"}


def _expectation(file: Path) -> tuple[int | None, str, str, str]:
    """The error an invalid fixture must raise, from its four header lines:
    ``# line:``, ``# path:``, ``# problem:`` and ``# fix:`` (fragments)."""
    header = dict(
        line.removeprefix("# ").split(":", 1)
        for line in file.read_text().splitlines()[:4]
    )
    line = header["line"].strip()
    return (
        None if line == "none" else int(line),
        header["path"].strip(),
        header["problem"].strip(),
        header["fix"].strip(),
    )


INVALID_FILES = sorted(INVALID.glob("*.yaml"))


@pytest.mark.parametrize("file", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_profile_is_refused_at_its_line_and_field(file: Path) -> None:
    line, path, problem, fix = _expectation(file)
    with pytest.raises(ProfileError) as caught:
        load_profile(file, env={})
    error = caught.value
    assert error.location == Location(str(file), line, path)
    assert problem in error.problem
    assert fix in error.fix
    assert error.exit_code == EXIT_BAD_INPUT


def test_invalid_fixtures_cover_every_kind_of_mistake() -> None:
    assert len(INVALID_FILES) >= 60
    assert all(_expectation(file)[2] for file in INVALID_FILES)


def test_error_text_starts_with_file_line_and_field_path() -> None:
    file = INVALID / "unknown_phase_key.yaml"
    with pytest.raises(ProfileError) as caught:
        load_profile(file, env={})
    text = str(caught.value)
    assert text.startswith(f"{file}:10: load.phases[1].rampTo: unknown key 'rampTo'")
    assert "\n  fix: did you mean 'ramp_to'?" in text


def test_missing_file_is_a_profile_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ProfileError) as caught:
        load_profile(missing)
    assert caught.value.location == Location(str(missing), None, "")
    assert "cannot read the profile" in caught.value.problem


def test_file_that_is_not_utf8_is_refused_at_the_bad_line(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes(b"target: http://127.0.0.1:1\nname: caf\xe9\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(file)
    assert caught.value.location.line == 2
    assert "not UTF-8" in caught.value.problem


def test_minimal_closed_profile_gets_every_default() -> None:
    file = VALID / "minimal.yaml"
    profile = load_profile(file, env={})
    step = Step(
        name="GET /",
        method="GET",
        path="/",
        endpoint="/",
        location=Location(str(file), 9, "scenarios[0].flow[0]"),
    )
    scenario = Scenario(
        name="home",
        weight=1.0,
        steps=(step,),
        location=Location(str(file), 7, "scenarios[0]"),
    )
    assert profile == Profile(
        name="minimal",
        target="http://127.0.0.1:13010",
        load=ClosedModel(stages=(Stage(duration_s=60.0, target=5),)),
        scenarios=(scenario,),
        http=HttpSettings(),
        graceful_stop_s=DEFAULT_GRACEFUL_STOP_S,
        source_file=str(file),
        source_sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
    )


def test_open_profile_with_every_key_loads_into_the_model() -> None:
    file = VALID / "open_full.yaml"
    profile = load_profile(file, env=ENV)
    assert profile.name == "full open"
    assert profile.target == "https://api.example.test:8443/v1"
    assert profile.graceful_stop_s == 5.0
    assert profile.http == HttpSettings(
        timeout_s=2.5,
        connect_timeout_s=0.5,
        verify_tls=False,
        engine="httpx",
        headers=(("User-Agent", "harness"), ("X-Region", "{{ region }}")),
        http2=True,
        proxy="http://127.0.0.1:3128",
    )
    assert profile.load == OpenModel(
        phases=(
            Phase(duration_s=10.0, rate=10.0, name="warm"),
            Phase(duration_s=20.0, rate=10.0, ramp_to=50.0, name="ramp"),
            Phase(duration_s=90.0, rate=0.5),
        ),
        arrivals="poisson",
        max_vus=100,
    )
    assert profile.thresholds == (
        ("http_req_duration", ("p(95)<500", "p(99)<900")),
        ("http_req_failed", ("rate<0.01",)),
    )
    assert profile.threshold_rules == (
        ThresholdRule(parse("http_req_duration", "p(95)<500")),
        ThresholdRule(parse("http_req_duration", "p(99)<900")),
        ThresholdRule(parse("http_req_failed", "rate<0.01")),
    )
    assert profile.slos is None
    assert [s.name for s in profile.scenarios] == ["Authentication Flow", "Browse"]
    auth = profile.scenarios[0]
    assert (auth.weight, auth.think_s) == (30.0, 1.0)
    assert auth.location == Location(str(file), 35, "scenarios[0]")


def test_variables_are_text_as_written_and_secrets_are_marked() -> None:
    profile = load_profile(VALID / "open_full.yaml", env=ENV)
    assert profile.variables == (
        Variable("testUserEmail", "loadtest@example.com"),
        Variable("testUserPassword", "s3cret!", True, "${HARNESS_TEST_PASSWORD}"),
        Variable("region", "eu", True, "${HARNESS_TEST_REGION:-eu}"),
        Variable("apiKey", "k-123", True),
        Variable("pageSize", "050"),
        Variable("verbose", "no"),
        Variable("price", "${NOT_EXPANDED}"),
    )


def test_json_step_keeps_its_value_captures_and_checks() -> None:
    file = VALID / "open_full.yaml"
    login = load_profile(file, env=ENV).scenarios[0].steps[0]
    assert (login.name, login.method, login.endpoint) == (
        "login",
        "POST",
        "/api/auth/login",
    )
    assert login.body_kind == "json"
    assert login.body == {
        "email": "{{ testUserEmail }}",
        "password": "{{ testUserPassword }}",
        "remember": True,
        "attempts": 3,
        "tags": ["a", "{{ region }}"],
    }
    assert login.captures == (
        Capture(
            "accessToken",
            "$.data.access_token",
            Location(str(file), 49, "scenarios[0].flow[0].capture.accessToken"),
        ),
        Capture(
            "userId",
            "$.data.user.id",
            Location(str(file), 50, "scenarios[0].flow[0].capture.userId"),
        ),
    )
    assert login.checks == Checks(
        status=(200,),
        json=(("$.success", True), ("$.data.user.role", "user")),
        max_latency_ms=200.0,
    )
    assert login.think_s == 0.5


def test_steps_of_every_body_kind_load() -> None:
    steps = load_profile(VALID / "open_full.yaml", env=ENV).scenarios[0].steps
    get, form, raw = steps[1], steps[2], steps[3]
    assert get.name == "GET /api/users/{userId}"
    assert get.path == "/api/users/{{ userId }}?expand={{ $randomInt(1, 3) }}"
    assert get.headers == (("Authorization", "Bearer {{ accessToken }}"),)
    assert (get.body_kind, get.body) == ("none", None)
    assert get.checks == Checks(status=(200, 304))
    assert (form.method, form.body_kind) == ("PUT", "form")
    assert form.body == (
        ("display_name", "user {{ $randomString(6) }}"),
        ("page_size", "25"),
    )
    assert (raw.method, raw.body_kind) == ("PATCH", "raw")
    assert raw.body == "note {{ $uuid() }} at {{ $timestamp() }}"
    assert raw.headers == (("Content-Type", "text/plain"),)


def test_closed_profile_with_anchors_and_merge_keys_loads() -> None:
    profile = load_profile(VALID / "closed_anchors.yaml", env={})
    assert profile.target == "http://127.0.0.1:13010/base"
    assert profile.load == ClosedModel(
        stages=(
            Stage(30.0, 10, "ramp"),
            Stage(120.0, 10, "hold"),
            Stage(10.0, 0),
        ),
        graceful_ramp_down_s=0.0,
    )
    steps = profile.scenarios[0].steps
    assert profile.scenarios[0].weight == 0.25
    common = (("Accept", "application/json"), ("X-Client", "harness"))
    assert steps[0].headers == common
    assert dict(steps[1].headers) == {
        "Accept": "application/json",
        "X-Client": "override",
    }
    assert steps[2].headers == common


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/api/users/{{ userId }}?x=1", "/api/users/{userId}"),
        ("/u/{{userId}}/o/{{ $randomInt(1, 9) }}", "/u/{userId}/o/{randomInt}"),
        ("/api/items?page={{ $randomInt(1, 3) }}", "/api/items"),
        ("/", "/"),
    ],
)
def test_endpoint_is_the_path_template_without_its_query(
    path: str, endpoint: str
) -> None:
    step = _one_step(f"      - path: {path}\n", variables="variables: {userId: '7'}\n")
    assert step.endpoint == endpoint
    assert step.name == f"GET {endpoint}"


def test_step_can_use_names_captured_by_earlier_steps() -> None:
    text = _profile(
        "      - path: /login\n"
        "        capture: {token: $.token, id: $.user.id}\n"
        "      - path: /users/{{ id }}\n"
        '        headers: {Authorization: "Bearer {{ token }}"}\n'
    )
    profile = load_profile_text(text, "inline.yaml", env={})
    assert profile.scenarios[0].steps[1].endpoint == "/users/{id}"


def test_environment_default_applies_when_unset_or_empty() -> None:
    text = _profile(
        "      - path: /\n", variables="variables: {region: '${REG:-eu}'}\n"
    )
    for env, expected in [({}, "eu"), ({"REG": ""}, "eu"), ({"REG": "us"}, "us")]:
        profile = load_profile_text(text, "inline.yaml", env=env)
        assert profile.variables[0].value == expected


def test_environment_set_to_empty_counts_as_set_without_a_default() -> None:
    text = _profile("      - path: /\n", variables="variables: {pw: '${PW}'}\n")
    profile = load_profile_text(text, "inline.yaml", env={"PW": ""})
    assert profile.variables[0] == Variable("pw", "", True, "${PW}")


def test_environment_is_read_from_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_TEST_TARGET_PORT", "18080")
    text = _profile("      - path: /\n").replace(
        "http://127.0.0.1:13010", "http://127.0.0.1:${HARNESS_TEST_TARGET_PORT}"
    )
    assert load_profile_text(text, "inline.yaml").target == "http://127.0.0.1:18080"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("testUserPassword", True),
        ("PASSWD", True),
        ("apiKey", True),
        ("clientSecret", True),
        ("accessToken", True),
        ("authHeader", True),
        ("sessionCookie", True),
        ("awsCredentials", True),
        ("email", False),
        ("region", False),
    ],
)
def test_secret_names_are_recognised_in_any_case(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_target_override_replaces_the_profile_target_and_keeps_its_path() -> None:
    text = _profile("      - path: /\n")
    profile = load_profile_text(
        text, "inline.yaml", env={}, target="http://[::1]:8080/base/"
    )
    assert profile.target == "http://[::1]:8080/base"


def test_target_override_stands_in_for_a_missing_target() -> None:
    text = _profile("      - path: /\n").replace("target: http://127.0.0.1:13010\n", "")
    profile = load_profile_text(text, "inline.yaml", env={}, target="https://h.test")
    assert profile.target == "https://h.test"


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("localhost:8080", "not an http:// or https:// URL"),
        ("http://", "with a host"),
        ("http://h:99999", "port"),
        ("http://user:pw@h:1", "user name or password"),
        ("http://h:1/?q=1", "query or fragment"),
        ("http://h 1", "spaces"),
    ],
)
def test_bad_target_override_is_reported_as_a_command_line_error(
    override: str, problem: str
) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile_text(_profile("      - path: /\n"), "p.yaml", target=override)
    assert caught.value.location == Location(COMMAND_LINE, None, "--target")
    assert problem in caught.value.problem
    assert str(caught.value).startswith("command line: --target: ")


@pytest.mark.parametrize(
    "target",
    ["http://admin:hunter2@127.0.0.1:13010", "http://127.0.0.1:13010/?key=hunter2"],
)
def test_credentials_in_a_bad_target_are_not_repeated_in_the_error(
    target: str,
) -> None:
    text = _profile("      - path: /\n").replace("http://127.0.0.1:13010", target)
    with pytest.raises(ProfileError) as caught:
        load_profile_text(text, "p.yaml", env={})
    assert caught.value.location.path == "target"
    assert "hunter2" not in str(caught.value)


def test_text_profile_hash_and_name_come_from_the_text_and_filename() -> None:
    text = _profile("      - path: /\n")
    profile = load_profile_text(text, "dir/my-test.yaml", env={})
    assert profile.name == "my-test"
    assert profile.source_file == "dir/my-test.yaml"
    assert profile.source_sha256 == hashlib.sha256(text.encode()).hexdigest()


STEP_MISTAKES = [
    ("{path: /, json: {a: .nan}}", "json.a", "cannot be sent as JSON"),
    ("{path: /, json: !!binary aGk=}", "json", "cannot be sent as JSON"),
    ("{path: /, json: !custom x}", "json", "cannot read this value"),
    ("{path: /, body: [1]}", "body", "must be text"),
    ('{path: /, body: "{{ $uuid(1) }}"}', "body", "takes 0 arguments"),
    ("{path: /, headers: {X-A: [1]}}", "headers.X-A", "single value"),
    ("{path: /, headers: {X-A: a, x-a: b}}", "headers.x-a", "already set"),
    ('{path: /, headers: {X-A: "a\\nb"}}', "headers.X-A", "line breaks"),
    ('{path: /, headers: {X-A: "\u20ac"}}', "headers.X-A", "Latin-1"),
    ("{path: /, headers: {<<: [1]}}", "headers", "'<<' merges mappings"),
    ("{path: /, check: {status: []}}", "check.status", "is empty"),
    ('{path: /, check: {status: "200"}}', "check.status", "status code"),
    ("{path: /, check: {max_latency: 0}}", "check.max_latency", "longer than zero"),
    ("{path: /, capture: {2x: $.a}}", 'capture["2x"]', "capture name"),
    ("{path: /, method: 7}", "method", "must be an HTTP method"),
    ('{path: /, form: {a: "{{ nope }}"}}', "form.a", "undefined variable 'nope'"),
    ('{path: /, form: {"{{ b }}": a}}', 'form["{{ b }}"]', "undefined variable 'b'"),
    ('{path: "/x?a={{ a }}&b={{ $now() }}"}', "path", "unknown template function"),
]


@pytest.mark.parametrize(("step", "field", "problem"), STEP_MISTAKES)
def test_invalid_step_values_are_refused_with_their_field_path(
    step: str, field: str, problem: str
) -> None:
    text = _profile(f"      - {step}\n", "variables: {a: '1'}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile_text(text, "p.yaml", env={})
    assert caught.value.location == Location(
        "p.yaml", 9, f"scenarios[0].flow[0].{field}"
    )
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ("variables: {a: '${}'}\n", "does not name an environment variable"),
        ("variables: {a: 'x${OPEN'}\n", "never closed"),
        ("variables: {a: null}\n", "must be a single value"),
        ("variables: {a: [1]}\n", "must be a single value"),
        ("variables: [a]\n", "variables must be a mapping"),
    ],
)
def test_invalid_variables_are_refused(variables: str, problem: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile_text(_profile("      - path: /\n", variables), "p.yaml", env={})
    assert caught.value.location.line == 1
    assert problem in caught.value.problem


def test_null_optional_sections_count_as_absent() -> None:
    text = _profile("      - {path: /, capture: null, check: null}\n").replace(
        "load:", "variables:\nhttp:\nthresholds:\nslos:\nload:"
    )
    profile = load_profile_text(text, "inline.yaml", env={})
    assert profile.variables == ()
    assert profile.http == HttpSettings()
    assert profile.thresholds == ()
    assert profile.threshold_rules == ()
    assert profile.slos is None


def test_thresholds_and_slos_load_parsed_beside_their_written_form() -> None:
    profile = load_profile(VALID / "thresholds_and_slos.yaml", env={})
    login = "http_req_duration{endpoint:/api/auth/login,method:POST}"
    assert profile.thresholds == (
        ("http_req_duration", ("p(95)<500", "p(99.9) < 1500")),
        (login, ("p(95)<200", "max<2000")),
        ("http_req_failed", ("rate<0.01",)),
        ("dropped_iterations", ("count==0",)),
    )
    assert profile.threshold_rules == (
        ThresholdRule(parse("http_req_duration", "p(95)<500")),
        ThresholdRule(parse("http_req_duration", "p(99.9) < 1500")),
        ThresholdRule(parse(login, "p(95)<200"), True, 30.0),
        ThresholdRule(parse(login, "max<2000"), False, 60.0),
        ThresholdRule(parse("http_req_failed", "rate<0.01")),
        ThresholdRule(parse("dropped_iterations", "count==0")),
    )
    assert profile.slos == Slos(
        endpoints=(
            EndpointSlo("/api/auth/login", 200.0, 100, 500.0),
            EndpointSlo("/api/automations/:id/execute", 1000.0),
        ),
        system=(
            SystemLimit("database", "max_connections", 100.0),
            SystemLimit("database", "max_query_time", 1000.0),
            SystemLimit("redis", "max_connections", 200.0),
            SystemLimit("redis", "max_memory_usage", 80.0),
            SystemLimit("application", "max_cpu_usage", 80.0),
            SystemLimit("application", "max_memory_usage", 2048.0),
            SystemLimit("application", "max_response_time", 5000.0),
        ),
    )


def test_threshold_error_names_the_file_line_and_the_accepted_forms() -> None:
    text = _profile("      - path: /\n").replace(
        "load:", 'thresholds:\n  checks: ["rate > 99%"]\nload:'
    )
    with pytest.raises(ProfileError) as caught:
        load_profile_text(text, "ci.yaml", env={})
    assert str(caught.value) == (
        "ci.yaml:4: thresholds.checks[0]: '99%' in 'rate > 99%' has a unit; "
        "threshold values are plain numbers (durations in milliseconds, rates as "
        "fractions)\n  fix: write the number alone: 500 for 500 ms, 0.01 for 1%"
    )
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_names_may_be_any_single_value_and_keep_their_text() -> None:
    text = _profile("      - {path: /, name: 2024}\n").replace(
        "name: only", "name: 007"
    )
    scenario = load_profile_text(text, "inline.yaml", env={}).scenarios[0]
    assert (scenario.name, scenario.steps[0].name) == ("007", "2024")


def test_profile_example_in_the_documentation_loads() -> None:
    text = (ROOT / "docs" / "profiles.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    complete = next(b for b in blocks if b.startswith("name: demo-mixed"))
    profile = load_profile_text(
        complete, "docs-example.yaml", env={"LOADTEST_PASSWORD": "pw"}
    )
    assert [s.name for s in profile.scenarios] == [
        "Authentication Flow",
        "Trading Setup",
    ]
    closed = next(b for b in blocks if b.startswith("load:\n  model: closed"))
    head = complete.split("\nload:")[0]
    tail = "\nthresholds:" + complete.split("\nthresholds:")[1]
    variant = load_profile_text(
        head + "\n" + closed + tail, "closed.yaml", env={"LOADTEST_PASSWORD": "pw"}
    )
    assert isinstance(variant.load, ClosedModel)
    assert variant.load.duration_s == 13 * 60


def test_the_embedded_demo_profile_loads_without_any_environment() -> None:
    # The profiles under profiles/ are loaded (and run) by test_bundled_profiles.py.
    profile = load_profile(ROOT / "harness/demo/profile.yaml", env={})
    assert profile.scenarios


def _profile(steps: str, variables: str = "# no variables\n") -> str:
    """A small valid profile whose one scenario's flow is ``steps``; ``variables``
    takes line 1, so the first step is always on line 9."""
    return (
        variables
        + "target: http://127.0.0.1:13010\n"
        + "load:\n"
        + "  model: open\n"
        + "  phases: [{duration: 10s, rate: 1}]\n"
        + "scenarios:\n"
        + "  - name: only\n"
        + "    flow:\n"
        + steps
    )


def _one_step(step: str, variables: str = "# no variables\n") -> Step:
    profile = load_profile_text(_profile(step, variables), "inline.yaml", env={})
    return profile.scenarios[0].steps[0]
