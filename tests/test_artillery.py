"""Artillery configurations: recognised, translated, refused where unsupported, and
run unchanged against the demo target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import pacing
from harness.demo.process import DemoTarget
from harness.errors import ProfileError
from harness.profile.load import load_profile, load_profile_text
from harness.profile.model import OpenModel, Phase

REPO = Path(__file__).resolve().parent.parent
PLATFORM = REPO / "profiles" / "artillery-platform.yml"
FEATURES = Path(__file__).resolve().parent / "profiles" / "artillery" / "features.yml"

SCENARIOS = (
    "Authentication Flow",
    "Exchange Account Management",
    "Margin Guard Operations",
    "Admin Dashboard",
    "Simulation Testing",
)


def artillery(body: str, config: str = "") -> str:
    """A small Artillery file: one phase, the given extra config lines, and
    ``body`` as the flow of one scenario (both already indented)."""
    return (
        "config:\n"
        "  target: http://127.0.0.1:13010\n"
        "  phases:\n"
        "    - {duration: 10, arrivalRate: 1}\n"
        f"{config}"
        "scenarios:\n"
        "  - name: s\n"
        "    flow:\n"
        f"{body}"
    )


def load_text(text: str, tmp_path: Path) -> object:
    return load_profile_text(text, str(tmp_path / "art.yml"))


# -- recognising and translating ----------------------------------------------------


def test_platform_config_translates_to_an_open_model_with_five_scenarios() -> None:
    profile = load_profile(PLATFORM)
    assert isinstance(profile.load, OpenModel)
    assert [(p.name, p.duration_s, p.rate) for p in profile.load.phases] == [
        ("Warm up", 60.0, 10.0),
        ("Ramp up load", 120.0, 50.0),
        ("Sustained load", 300.0, 100.0),
        ("Peak load", 60.0, 200.0),
        ("Cool down", 60.0, 10.0),
    ]
    assert tuple(s.name for s in profile.scenarios) == SCENARIOS
    assert [s.weight for s in profile.scenarios] == [30, 25, 20, 15, 10]
    assert profile.http.timeout_s == 30.0
    login = profile.scenarios[3].steps[0]
    assert (login.method, login.path, login.body_kind) == (
        "POST",
        "/api/auth/login",
        "json",
    )
    assert [(c.name, c.json_path) for c in login.captures] == [
        ("accessToken", "$.data.access_token")
    ]
    secret = {v.name: v.secret for v in profile.variables}
    assert secret == {
        "baseUrl": False,
        "testUserEmail": False,
        "testUserPassword": True,
    }


def test_platform_config_warns_once_per_plugin_naming_the_replacement() -> None:
    profile = load_profile(PLATFORM)
    assert len(profile.warnings) == 3
    by_endpoint, datadog, cloudwatch = profile.warnings
    assert "metrics-by-endpoint" in by_endpoint and "built in" in by_endpoint
    assert "'datadog'" in datadog and "Parquet records" in datadog
    assert "'cloudwatch'" in cloudwatch and "report" in cloudwatch


def test_native_profile_is_not_taken_for_artillery(tmp_path: Path) -> None:
    text = (
        "target: http://127.0.0.1:1\n"
        "load: {model: open, phases: [{duration: 1s, rate: 1}]}\n"
        "scenarios: [{name: s, flow: [{path: /}]}]\n"
    )
    profile = load_profile_text(text, str(tmp_path / "native.yaml"))
    assert profile.warnings == ()
    mixed = "config: {target: http://127.0.0.1:1}\n" + text
    with pytest.raises(ProfileError, match="unknown key 'config'"):
        load_profile_text(mixed, str(tmp_path / "mixed.yaml"))


def test_features_translate_to_the_native_model() -> None:
    profile = load_profile(FEATURES)
    assert profile.warnings == (
        "Artillery plugin 'statsd' is ignored: plugins do not run here (the run's "
        "records and report are in its run folder)",
    )
    assert profile.http.timeout_s == 5.0
    assert profile.http.connect_timeout_s == 5.0
    assert profile.http.verify_tls is False
    assert profile.http.headers == (("User-Agent", "artillery-config"),)
    region = next(v for v in profile.variables if v.name == "region")
    assert region.choices == ("eu", "us", "ap")
    (data,) = profile.data
    assert data.path == str(FEATURES.parent / "users.csv")
    assert (data.columns, data.header, data.order, data.reuse) == (
        ("userId", "email", "password"),
        True,
        "sequence",
        True,
    )
    assert data.secret_columns == ("password",)
    assert dict(profile.thresholds) == {
        "http_req_duration": ("p(95)<=250",),
        "http_req_failed": ("rate<=0.01",),
    }
    browse, second = profile.scenarios
    assert second.name == "scenario 2"
    login, *pages = browse.steps
    assert login.checks.status == (200, 401)
    assert login.think_s == 2.0
    assert len(pages) == 3
    assert {p.path for p in pages} == {
        "/api/simulations?page={{ page | urlencode }}"
        "&region={{ region | urlencode }}&q=a%20b"
    }
    assert {p.endpoint for p in pages} == {"/api/simulations"}
    assert [p.think_s for p in pages] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("phase", "expected_arrivals"),
    [
        ("{duration: 10, arrivalRate: 5}", 50),
        ('{duration: "10s", arrivalRate: 2, rampTo: 8}', 50),
        ('{duration: "2m", arrivalCount: 30}', 30),
        ("{duration: 7, arrivalCount: 10}", 10),
        ("{pause: 30}", 0),
    ],
)
def test_phases_give_the_expected_number_of_arrivals(
    tmp_path: Path, phase: str, expected_arrivals: int
) -> None:
    text = (
        f"config:\n  target: http://127.0.0.1:1\n  phases:\n    - {phase}\n"
        "scenarios:\n  - flow: [{get: {url: /}}]\n"
    )
    profile = load_profile_text(text, str(tmp_path / "p.yml"))
    assert isinstance(profile.load, OpenModel)
    assert pacing.total_arrivals(profile.load.phases) == expected_arrivals
    schedules = [
        list(pacing.ArrivalSchedule(profile.load.phases, shard, 2, "uniform", 1))
        for shard in range(2)
    ]
    assert sum(len(s) for s in schedules) == expected_arrivals


def test_arrival_count_spreads_arrivals_evenly(tmp_path: Path) -> None:
    text = artillery("      - get: {url: /}\n").replace(
        "{duration: 10, arrivalRate: 1}", "{duration: 8, arrivalCount: 4}"
    )
    profile = load_profile_text(text, str(tmp_path / "p.yml"))
    assert isinstance(profile.load, OpenModel)
    assert profile.load.phases == (Phase(8.0, 0.5),)
    times = list(pacing.ArrivalSchedule(profile.load.phases, 0, 1, "uniform", 1))
    assert times == pytest.approx([0.0, 2.0, 4.0, 6.0])


# -- refusing what is not supported -----------------------------------------------

UNSUPPORTED_CASES = [
    # (config lines, flow lines, key named, line, words in the fix)
    ("  processor: ./funcs.js\n", "      - get: {url: /}\n", "processor", 5, "flow"),
    (
        "",
        "      - get:\n          url: /\n          beforeRequest: sign\n",
        "beforeRequest",
        10,
        "flow",
    ),
    ("", "      - function: setUp\n", "function", 8, "JavaScript"),
    (
        "",
        "      - loop:\n          - get: {url: /}\n        over: items\n",
        "over",
        10,
        "count",
    ),
    (
        "",
        "      - loop:\n          - get: {url: /}\n        whileTrue: more\n",
        "whileTrue",
        10,
        "count",
    ),
    (
        "",
        "      - get:\n          url: /\n          ifTrue: flag\n",
        "ifTrue",
        10,
        "weights",
    ),
    (
        "",
        "      - get:\n          url: /\n"
        "          capture: {regexp: 'id=(\\d+)', as: id}\n",
        "regexp",
        10,
        "json: $.path",
    ),
    (
        "",
        "      - get:\n          url: /\n          capture:\n"
        "            - header: x-id\n              as: id\n",
        "header",
        11,
        "json",
    ),
    (
        "",
        "      - get:\n          url: /\n          capture: {xpath: //a, as: id}\n",
        "xpath",
        10,
        "json",
    ),
    (
        "  environments: {prod: {target: x}}\n",
        "      - get: {url: /}\n",
        "environments",
        5,
        "--target",
    ),
    ("  socketio: {}\n", "      - get: {url: /}\n", "socketio", 5, "HTTP"),
    ("  frobnicate: 1\n", "      - get: {url: /}\n", "frobnicate", 5, "keys supported"),
    (
        "",
        "      - get:\n          url: /\n          expect: [{contentType: json}]\n",
        "contentType",
        10,
        "native profile",
    ),
    (
        "  payload: {path: users.csv, fields: [a], loadAll: true, name: all}\n",
        "      - get: {url: /}\n",
        "loadAll",
        5,
        "own row",
    ),
    ("", "      - loop:\n          - get: {url: /}\n", "count", 8, "count: 3"),
    ("", "      - get: {url: 'http://other/x'}\n", "url", 8, "path alone"),
]


@pytest.mark.parametrize(
    ("config", "flow", "key", "line", "fix"),
    UNSUPPORTED_CASES,
    ids=[case[2] for case in UNSUPPORTED_CASES],
)
def test_unsupported_key_is_refused_with_its_name_and_line(
    tmp_path: Path, config: str, flow: str, key: str, line: int, fix: str
) -> None:
    (tmp_path / "users.csv").write_text("a\n1\n")
    text = artillery(flow, config)
    with pytest.raises(ProfileError) as caught:
        load_profile_text(text, str(tmp_path / "art.yml"))
    error = caught.value
    assert error.location.line == line, str(error)
    assert key in error.location.path or key in error.problem, str(error)
    assert key in error.problem, str(error)
    assert fix in error.fix, str(error)


def test_think_before_the_first_request_is_refused(tmp_path: Path) -> None:
    text = artillery("      - think: 1\n      - get: {url: /}\n")
    with pytest.raises(ProfileError, match="before the first request") as caught:
        load_profile_text(text, str(tmp_path / "art.yml"))
    assert caught.value.location.line == 8


def test_capture_used_before_it_is_captured_names_the_capturing_step(
    tmp_path: Path,
) -> None:
    text = artillery(
        "      - get: {url: '/a/{{ id }}'}\n"
        "      - get: {url: /b, capture: {json: $.id, as: id}}\n"
    )
    with pytest.raises(ProfileError, match="captured by scenarios") as caught:
        load_profile_text(text, str(tmp_path / "art.yml"))
    assert caught.value.location.path == "scenarios[0].flow[0].get.url"


def test_unsupported_key_makes_the_command_exit_with_code_2(tmp_path: Path) -> None:
    path = tmp_path / "art.yml"
    path.write_text(artillery("      - get: {url: /}\n", "  processor: ./f.js\n"))
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{path}:5: config.processor" in result.stderr
    assert "not supported" in result.stderr


# -- the platform config, run unchanged ------------------------------------------


@pytest.mark.slow
def test_platform_config_runs_unchanged_against_the_demo_target(
    tmp_path: Path, demo_target: DemoTarget
) -> None:
    original = PLATFORM.read_bytes()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "harness", "run", str(PLATFORM)),
            *("--target", demo_target.url, "--time-scale", "0.01", "--workers", "2"),
            *("--out", str(tmp_path), "--run-id", "artillery"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert PLATFORM.read_bytes() == original
    warnings = [
        line for line in result.stderr.splitlines() if line.startswith("warning: ")
    ]
    assert len(warnings) == 3, result.stderr
    assert "metrics-by-endpoint" in warnings[0] and "built in" in warnings[0]
    assert "'datadog'" in warnings[1] and "Parquet records" in warnings[1]
    assert "'cloudwatch'" in warnings[2]

    rows = pd.read_parquet(tmp_path / "artillery" / "requests")
    # 10/s, 50/s, 100/s, 200/s and 10/s for 0.6, 1.2, 3, 0.6 and 0.6 s.
    iterations = rows[["vu", "iteration"]].drop_duplicates()
    assert len(iterations) == 492
    assert rows["error"].isna().all(), rows["error"].value_counts()
    assert set(rows["scenario"]) == set(SCENARIOS)
    admin = rows[rows["endpoint"].str.startswith("/api/admin/")]
    assert set(admin["endpoint"]) == {
        "/api/admin/dashboard",
        "/api/admin/users",
        "/api/admin/analytics",
    }
    assert (admin["status"] == 200).all()
    created = rows[rows["method"] == "POST"].groupby("endpoint")["status"].max()
    assert created["/api/simulations"] == 201
    assert created["/api/auth/login"] == 200


def test_native_loop_repeats_its_steps_count_times(tmp_path: Path) -> None:
    text = (
        "target: http://127.0.0.1:1\n"
        "load: {model: open, phases: [{duration: 1s, rate: 1}]}\n"
        "scenarios:\n"
        "  - name: s\n"
        "    flow:\n"
        "      - {path: /login, capture: {token: $.token}}\n"
        "      - loop:\n"
        "          count: 2\n"
        "          flow:\n"
        "            - {path: '/a?t={{ token }}', think: 1s}\n"
        "            - loop: {count: 2, flow: [{path: /b}]}\n"
    )
    profile = load_profile_text(text, str(tmp_path / "p.yaml"))
    paths = [s.path for s in profile.scenarios[0].steps]
    assert paths == ["/login", *["/a?t={{ token }}", "/b", "/b"] * 2]
    with pytest.raises(ProfileError, match="holds only 'loop'") as caught:
        load_profile_text(
            text.replace("      - loop:\n", "      - path: /x\n        loop:\n"),
            str(tmp_path / "p.yaml"),
        )
    assert caught.value.location.line == 7


# -- payloads, query strings, loops and recognition ------------------------------


def test_misspelt_scenarios_key_is_named_with_a_did_you_mean(tmp_path: Path) -> None:
    text = artillery("      - get: {url: /}\n").replace("scenarios:", "scenario:")
    with pytest.raises(ProfileError) as caught:
        load_text(text, tmp_path)
    error = caught.value
    assert error.location.path == "scenario"
    assert "'scenario' in an Artillery file" in error.problem
    assert "did you mean 'scenarios'?" in error.fix
    only_config = "config:\n  target: http://127.0.0.1:1\n  phases: []\n"
    with pytest.raises(ProfileError, match="'scenarios' is required"):
        load_text(only_config, tmp_path)


_LOAD_WITH_LITTLE_MEMORY = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from harness.errors import ProfileError
from harness.profile.load import load_profile_text
try:
    load_profile_text(sys.stdin.read(), "p.yml")
except ProfileError as exc:
    print(exc.location.line, exc.problem, "|", exc.fix)
"""

NATIVE_LOOP = (
    "target: http://127.0.0.1:1\n"
    "load: {model: open, phases: [{duration: 1s, rate: 1}]}\n"
    "scenarios:\n"
    "  - name: s\n"
    "    flow:\n"
    "      - loop: {count: 1000000000, flow: [{path: /}]}\n"
)


@pytest.mark.parametrize(
    "text",
    [
        # A billion copies of one step, and 30 000 copies of 10 000 steps.
        artillery("      - loop: [{get: {url: /}}]\n        count: 1000000000\n"),
        artillery(
            "      - loop:\n          - loop: [{get: {url: /}}]\n"
            "            count: 10000\n        count: 30000\n"
        ),
        NATIVE_LOOP,
    ],
    ids=["artillery", "artillery-nested", "native"],
)
def test_loop_too_large_is_refused_before_it_is_expanded(text: str) -> None:
    """In a process limited to 1 GiB of memory: building the copies first (8 GB
    of references for a billion) would end in a MemoryError there."""
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WITH_LITTLE_MEMORY],
        input=text,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "over 10000 steps" in result.stdout, result.stdout
    assert "lower the loop's count" in result.stdout
    assert result.stdout.startswith(("6 ", "8 ")), result.stdout


def test_arrival_count_must_be_a_whole_number(tmp_path: Path) -> None:
    text = artillery("      - get: {url: /}\n").replace(
        "{duration: 10, arrivalRate: 1}", "{duration: 8, arrivalCount: 2.5}"
    )
    with pytest.raises(ProfileError, match="must be an integer") as caught:
        load_text(text, tmp_path)
    assert caught.value.location.path == "config.phases[0].arrivalCount"


def test_target_from_the_environment_suggests_the_target_option(
    tmp_path: Path,
) -> None:
    text = artillery("      - get: {url: /}\n").replace(
        "http://127.0.0.1:13010", "'{{ $processEnvironment.TARGET }}'"
    )
    with pytest.raises(ProfileError) as caught:
        load_text(text, tmp_path)
    assert caught.value.location.path == "config.target"
    assert "--target" in caught.value.fix
    assert "config.variables" not in caught.value.fix


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ("{path: users.csv, fields: id}", "fields: [id, email]"),
        ("{path: users.csv, fields: [id, 2nd]}", "with fields: [...]"),
        ("{path: users.data, fields: [id, email]}", ".csv"),
        ("{path: users.parquet, skipHeader: true}", "remove 'skipHeader'"),
    ],
)
def test_payload_fixes_use_artillery_names(
    tmp_path: Path, payload: str, words: str
) -> None:
    (tmp_path / "users.csv").write_text("id,email\n1,a@example.com\n")
    (tmp_path / "users.data").write_text("id,email\n1,a@example.com\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1]}), tmp_path / "users.parquet")
    text = artillery("      - get: {url: /}\n", f"  payload: {payload}\n")
    with pytest.raises(ProfileError) as caught:
        load_text(text, tmp_path)
    error = caught.value
    assert words in error.fix, str(error)
    assert "columns:" not in error.fix and "format:" not in error.fix, str(error)
    assert "header:" not in error.fix, str(error)


def test_payload_header_with_a_byte_order_mark_names_its_columns(
    tmp_path: Path,
) -> None:
    (tmp_path / "users.csv").write_bytes(b"\xef\xbb\xbfid,email\n1,a@example.com\n")
    text = artillery(
        "      - get: {url: '/u/{{ id }}'}\n",
        "  payload: {path: users.csv, skipHeader: true}\n",
    )
    profile = load_profile_text(text, str(tmp_path / "art.yml"))
    assert profile.data[0].columns == ("id", "email")


def test_payload_with_a_header_and_no_rows_is_refused(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("id,email\n")
    text = artillery(
        "      - get: {url: /}\n", "  payload: {path: users.csv, skipHeader: true}\n"
    )
    with pytest.raises(ProfileError, match="no data rows") as caught:
        load_text(text, tmp_path)
    assert caught.value.location.path == "config.payload.path"
    assert "skipHeader: false" in caught.value.fix


def test_qs_values_are_percent_encoded_after_rendering(tmp_path: Path) -> None:
    from harness.template import compile_template

    text = artillery(
        "      - get:\n"
        "          url: /u\n"
        "          qs: {e: '{{ email }}', 'k {{ n }}': 'x {{ $randomInt(7, 7) }}'}\n",
        "  variables: {email: 'john doe+x@ex.com&admin=1', n: 'a=b'}\n",
    )
    profile = load_profile_text(text, str(tmp_path / "art.yml"))
    step = profile.scenarios[0].steps[0]
    assert step.endpoint == "/u"
    rendered = compile_template(step.path).render(
        {"email": "john doe+x@ex.com&admin=1", "n": "a=b"}
    )
    assert rendered == "/u?e=john%20doe%2Bx%40ex.com%26admin%3D1&k%20a%3Db=x%207"


@pytest.mark.slow
def test_one_row_payload_feeds_every_arrival_on_every_worker_encoded(
    tmp_path: Path,
) -> None:
    """A one-row payload on two workers: every arrival gets the row (Artillery's
    rows cycle), and its value reaches the server as one encoded query value."""
    from .servers import run_nginx

    (tmp_path / "one.csv").write_text("john doe+x@ex.com&admin=1\n")
    root = tmp_path / "nginx"
    with run_nginx(root, log_uris=True) as url:
        path = tmp_path / "art.yml"
        path.write_text(
            "config:\n"
            f"  target: {url}\n"
            "  phases: [{duration: 2, arrivalRate: 5}]\n"
            "  payload: {path: one.csv, fields: [a]}\n"
            "scenarios:\n"
            "  - flow: [{get: {url: /u, qs: {e: '{{ a }}'}}}]\n"
        )
        result = subprocess.run(
            [
                *(sys.executable, "-m", "harness", "run", str(path)),
                *("--workers", "2", "--out", str(tmp_path / "runs")),
                *("--run-id", "r", "--no-report"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    logged = (root / "access.log").read_text().splitlines()
    assert logged == ["/u?e=john%20doe%2Bx%40ex.com%26admin%3D1"] * 10
    rows = pd.read_parquet(tmp_path / "runs" / "r" / "requests")
    assert sorted(rows.groupby("worker").size()) == [5, 5]
