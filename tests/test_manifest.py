"""The run directory's bookkeeping: the profile as the manifest shows it, the atomic
JSON write, and the append-only event log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.manifest import (
    EventLog,
    describe_profile,
    host_info,
    versions,
    write_json_atomic,
)
from harness.profile.load import load_profile_text
from harness.profile.model import Profile

ENV_PASSWORD = "env-Pa55word-from-the-environment"
ENV_API_KEY = "env-api-key-0f1e2d3c4b5a"
LITERAL_TOKEN = "literal-token-in-the-file-8c7b6a"
BEARER = "static-bearer-value-77aa99"
BODY_PASSWORD = "body-password-in-a-json-body-31337"
BODY_NOTE = "free text of a request body 5e4d"

SECRET_PROFILE = f"""
name: secrets
target: http://127.0.0.1:13010
http:
  headers:
    Authorization: "Bearer {BEARER}"
    X-Api-Key: "{{{{ apiKey }}}}"
    User-Agent: harness-test
variables:
  password: ${{TEST_PASSWORD}}
  apiKey: ${{TEST_API_KEY}}
  sessionToken: {LITERAL_TOKEN}
  email: loadtest@example.com
load:
  model: open
  phases: [{{name: steady, duration: 1m, rate: 5}}]
scenarios:
  - name: login
    weight: 2
    flow:
      - name: login
        method: POST
        path: /api/auth/login
        json:
          email: "{{{{ email }}}}"
          password: "{{{{ password }}}}"
          note: "{BODY_NOTE}"
          nested: {{password: "{BODY_PASSWORD}"}}
        capture: {{accessToken: $.data.access_token}}
      - name: profile
        path: /api/user/profile
        headers:
          Authorization: "Bearer {{{{ accessToken }}}}"
          X-Session: "{{{{ sessionToken }}}}"
  - name: form
    weight: 1
    flow:
      - method: POST
        path: /api/forms
        form: {{user: "{{{{ email }}}}", password: "{BODY_PASSWORD}"}}
"""

SECRET_VALUES = (
    ENV_PASSWORD,
    ENV_API_KEY,
    LITERAL_TOKEN,
    BEARER,
    BODY_PASSWORD,
    BODY_NOTE,
)


def secret_profile() -> Profile:
    return load_profile_text(
        SECRET_PROFILE,
        "secrets.yaml",
        env={"TEST_PASSWORD": ENV_PASSWORD, "TEST_API_KEY": ENV_API_KEY},
    )


def test_the_described_profile_holds_no_secret_and_no_body_text() -> None:
    profile = secret_profile()
    # The profile itself does hold them: the test would prove nothing otherwise.
    assert {v.value for v in profile.variables} >= {
        ENV_PASSWORD,
        ENV_API_KEY,
        LITERAL_TOKEN,
    }

    text = json.dumps(describe_profile(profile))

    for value in SECRET_VALUES:
        assert value not in text


def test_secret_variables_show_how_they_were_written() -> None:
    variables = describe_profile(secret_profile())["variables"]
    assert variables == {
        "password": "${TEST_PASSWORD}",
        "apiKey": "${TEST_API_KEY}",
        "sessionToken": "<secret>",
        "email": "loadtest@example.com",
    }


def test_credential_headers_are_redacted_and_other_headers_kept() -> None:
    headers = describe_profile(secret_profile())["http"]["headers"]
    assert headers == {
        "Authorization": "<redacted>",
        "X-Api-Key": "<redacted>",
        "User-Agent": "harness-test",
    }


def test_steps_are_described_by_shape_not_content() -> None:
    scenarios = describe_profile(secret_profile())["scenarios"]
    login, profile_step = scenarios[0]["steps"]
    assert login["body"] == "json"
    assert login["captures"] == ["accessToken"]
    assert login["endpoint"] == "/api/auth/login"
    assert profile_step["headers"] == ["Authorization", "X-Session"]
    assert scenarios[1]["steps"][0]["body"] == "form"
    assert [s["weight"] for s in scenarios] == [2, 1]


def test_the_described_profile_keeps_the_load_shape() -> None:
    document = describe_profile(secret_profile())
    assert document["name"] == "secrets"
    assert document["target"] == "http://127.0.0.1:13010"
    assert document["duration_s"] == 60.0
    assert document["load"]["model"] == "open"
    assert document["load"]["phases"] == [
        {"name": "steady", "duration_s": 60.0, "rate": 5.0, "ramp_to": None}
    ]
    assert len(document["source_sha256"]) == 64


def test_a_closed_profile_is_described_by_its_stages() -> None:
    profile = load_profile_text(
        """
target: http://127.0.0.1:13010
load:
  model: closed
  stages: [{duration: 30s, target: 4}, {name: hold, duration: 1m, target: 4}]
scenarios: [{name: browse, flow: [{path: /healthz}]}]
""",
        "closed.yaml",
    )
    load = describe_profile(profile)["load"]
    assert load["model"] == "closed"
    assert [(s["duration_s"], s["target"]) for s in load["stages"]] == [
        (30.0, 4),
        (60.0, 4),
    ]


def test_the_default_of_an_unset_secret_variable_stays_out() -> None:
    profile = load_profile_text(
        """
target: http://127.0.0.1:13010
variables:
  password: ${UNSET_TEST_PASSWORD:-default-Pa55-in-use}
load: {model: open, phases: [{duration: 1m, rate: 1}]}
scenarios: [{name: s, flow: [{path: "/?p={{ password }}"}]}]
""",
        "default.yaml",
        env={},
    )
    assert profile.variables[0].value == "default-Pa55-in-use"
    assert "default-Pa55-in-use" not in json.dumps(describe_profile(profile))


def test_the_described_profile_is_plain_json() -> None:
    document = describe_profile(secret_profile())
    assert json.loads(json.dumps(document)) == document


def test_versions_and_host_name_the_harness_and_python() -> None:
    found = versions()
    assert {"harness", "python", "trio", "pyarrow"} <= set(found)
    host = host_info()
    assert host["cpus"] >= 1
    assert host["python"] == found["python"]


def test_write_json_atomic_writes_the_document_and_no_temp_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"status": "running", "counts": {"requests": 0}})
    write_json_atomic(path, {"status": "completed", "counts": {"requests": 12}})

    assert json.loads(path.read_text(encoding="utf-8")) == {
        "status": "completed",
        "counts": {"requests": 12},
    }
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_write_json_atomic_writes_values_json_lacks_as_text(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"run_dir": tmp_path})
    assert json.loads(path.read_text(encoding="utf-8")) == {"run_dir": str(tmp_path)}


def unencodable() -> dict[str, Any]:
    # The encoder has written the first keys by the time it meets the tuple key.
    return {"status": "completed", "counts": {"requests": 5, (1, 2): "bad key"}}


def test_a_failed_write_leaves_the_previous_document_whole(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"status": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(path, unencodable())
    assert json.loads(path.read_text(encoding="utf-8")) == {"status": "running"}


def test_a_failed_first_write_leaves_no_document(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    with pytest.raises(TypeError):
        write_json_atomic(path, unencodable())
    assert not path.exists()


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    with pytest.raises(TypeError):
        write_json_atomic(path, unencodable())
    assert list(tmp_path.iterdir()) == []


def read_lines(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_events_are_one_json_object_per_line_readable_before_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    try:
        log.write("run_start", 1_700_000_000_500_000_000, workers=2, pids=[10, 11])
        assert read_lines(path) == [
            {
                "time": 1_700_000_000.5,
                "event": "run_start",
                "workers": 2,
                "pids": [10, 11],
            }
        ]
        log.write("stop", graceful=True, reason="interrupted\nsecond line")
        events = read_lines(path)
    finally:
        log.close()
    assert [e["event"] for e in events] == ["run_start", "stop"]
    assert events[1]["reason"] == "interrupted\nsecond line"
    assert events[0]["time"] < events[1]["time"]


def test_event_values_json_lacks_are_written_as_text(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("parts", 0, folder=tmp_path)
    log.close()
    assert read_lines(path) == [
        {"time": 0.0, "event": "parts", "folder": str(tmp_path)}
    ]


def test_writes_after_close_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("run_end", 0, status="completed")
    log.close()
    log.write("late", 0)
    log.close()
    assert [e["event"] for e in read_lines(path)] == ["run_end"]


def test_an_event_log_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for kind in ("first", "second"):
        log = EventLog(path)
        log.write(kind, 0)
        log.close()
    assert [e["event"] for e in read_lines(path)] == ["first", "second"]
