from __future__ import annotations

import json
import pickle
import re
import time
import uuid
from urllib.parse import parse_qsl, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.template import (
    TemplateSyntaxError,
    compile_form_body,
    compile_json_body,
    compile_template,
)

VARIABLES = {"userId": "42", "token": "t0k", "email": "a@example.com"}


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("/api/users", "/api/users"),
        ("", ""),
        ("{{ userId }}", "42"),
        ("{{userId}}", "42"),
        ("{{   userId\t}}", "42"),
        ("/api/users/{{ userId }}/orders", "/api/users/42/orders"),
        ("Bearer {{ token }}", "Bearer t0k"),
        ("{{ userId }}{{ token }}", "42t0k"),
        ("}} {{ userId }} }}", "}} 42 }}"),
        ("{ userId }", "{ userId }"),
    ],
)
def test_render_substitutes_variables(source: str, rendered: str) -> None:
    assert compile_template(source).render(VARIABLES) == rendered


def test_constant_template_reports_no_names_and_needs_no_variables() -> None:
    template = compile_template("/api/health?full=1")
    assert template.is_constant
    assert template.names == frozenset()
    assert template.render({}) == "/api/health?full=1"


def test_template_lists_the_variables_and_functions_it_uses() -> None:
    template = compile_template("/u/{{ userId }}/{{ $uuid() }}?t={{ token }}")
    assert not template.is_constant
    assert template.names == {"userId", "token"}
    assert template.functions == {"uuid"}


def test_render_raises_key_error_for_an_undefined_name() -> None:
    with pytest.raises(KeyError, match="missing"):
        compile_template("/x/{{ missing }}").render(VARIABLES)


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("/api/users/{{ userId }}?x=1", "/api/users/{userId}?x=1"),
        ("/api/{{ $randomInt(1, 9) }}/{{$uuid()}}", "/api/{randomInt}/{uuid}"),
        ("/static", "/static"),
    ],
)
def test_pattern_shows_each_slot_by_name(source: str, pattern: str) -> None:
    assert compile_template(source).pattern == pattern


def test_random_int_over_a_huge_range_stays_within_its_bounds() -> None:
    template = compile_template("{{ $randomInt(-10000000000, 10000000000) }}")
    values = [int(template.render({})) for _ in range(200)]
    assert all(-10_000_000_000 <= v <= 10_000_000_000 for v in values)
    assert len(set(values)) > 100


def test_random_int_stays_within_its_inclusive_bounds_and_reaches_both() -> None:
    template = compile_template("{{ $randomInt(-2, 2) }}")
    seen = {int(template.render({})) for _ in range(2000)}
    assert seen == {-2, -1, 0, 1, 2}


@pytest.mark.parametrize(
    ("source", "length"),
    [("$randomString()", 10), ("$randomString(3)", 3), ("$randomString( 25 )", 25)],
)
def test_random_string_has_the_asked_length_of_letters_and_digits(
    source: str, length: int
) -> None:
    template = compile_template("{{ " + source + " }}")
    values = {template.render({}) for _ in range(50)}
    assert all(re.fullmatch(f"[A-Za-z0-9]{{{length}}}", v) for v in values)
    assert len(values) > 1


def test_uuid_is_a_fresh_version_4_uuid_each_time() -> None:
    template = compile_template("{{ $uuid() }}")
    first, second = template.render({}), template.render({})
    assert uuid.UUID(first).version == 4
    assert str(uuid.UUID(first)) == first
    assert first != second


def test_timestamp_is_the_current_epoch_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = int(compile_template("{{ $timestamp() }}").render({}))
    after = time.time_ns() // 1_000_000
    assert before <= value <= after


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("/x/{{ userId", "never closed"),
        ("{{ }}", "empty"),
        ("{{ user id }}", "neither a variable name nor a function call"),
        ("{{ 1abc }}", "neither a variable name nor a function call"),
        ("{{ $randomFoo() }}", "unknown template function '$randomFoo'"),
        ("{{ $randomInt(a) }}", "'a' is not an integer"),
        ("{{ $randomInt(1) }}", "takes 2 arguments, not 1"),
        ("{{ $randomInt(9, 1) }}", "first bound is above the second"),
        ("{{ $randomString(0) }}", "between 1 and"),
        ("{{ $randomString(1, 2) }}", "takes 0 or 1 arguments, not 2"),
        ("{{ $uuid }}", "missing its parentheses"),
        ("{{ $uuid(4) }}", "takes 0 arguments, not 1"),
        ("{{ $timestamp(x) }}", "'x' is not an integer"),
        ("{{ email | upper }}", "unknown filter 'upper'"),
        ("{{ | urlencode }}", "empty"),
    ],
)
def test_compile_refuses_malformed_templates_with_a_fix(
    source: str, fragment: str
) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_template(source)
    assert fragment in caught.value.problem
    assert caught.value.fix
    assert isinstance(caught.value, ValueError)


def test_unknown_function_error_lists_the_known_functions() -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_template("{{ $now() }}")
    for usage in ("$randomString()", "$randomInt(min, max)", "$uuid()", "$timestamp()"):
        assert usage in caught.value.fix


def test_template_survives_pickling_for_spawned_workers() -> None:
    template = compile_template("/u/{{ userId }}/{{ $randomInt(1, 1) }}")
    copy = pickle.loads(pickle.dumps(template))
    assert copy == template
    assert copy.render(VARIABLES) == "/u/42/1"


def test_json_body_renders_compact_json_with_templates_in_keys_and_values() -> None:
    body = compile_json_body(
        {
            "email": "{{ email }}",
            "n": 1,
            "ok": True,
            "none": None,
            "ratio": 0.5,
            "list": ["{{ userId }}", "x-{{ token }}"],
            "{{ token }}": {"nested": "constant"},
        }
    )
    assert body.names == {"email", "userId", "token"}
    assert not body.is_constant
    assert body.render(VARIABLES) == (
        b'{"email":"a@example.com","n":1,"ok":true,"none":null,"ratio":0.5,'
        b'"list":["42","x-t0k"],"t0k":{"nested":"constant"}}'
    )


def test_json_body_keeps_a_lone_template_a_string() -> None:
    body = compile_json_body({"id": "{{ userId }}"})
    assert json.loads(body.render(VARIABLES)) == {"id": "42"}


def test_json_body_escapes_quotes_and_control_characters_in_values() -> None:
    body = compile_json_body({"password": "{{ pw }}"})
    rendered = body.render({"pw": 'a"b\\c\n\x00}'})
    assert json.loads(rendered) == {"password": 'a"b\\c\n\x00}'}


def test_json_body_sends_non_ascii_as_utf8() -> None:
    body = compile_json_body({"city": "{{ c }}", "fixed": "Zürich"})
    rendered = body.render({"c": "Kraków"})
    assert rendered == '{"city":"Kraków","fixed":"Zürich"}'.encode()


def test_json_body_escapes_lone_surrogates_instead_of_failing() -> None:
    body = compile_json_body({"v": "{{ raw }}"})
    rendered = body.render({"raw": "x\udcff"})
    assert rendered == b'{"v":"x\\udcff"}'
    assert json.loads(rendered) == {"v": "x\udcff"}


def test_constant_json_body_is_encoded_once() -> None:
    body = compile_json_body([1, "two", {"three": 3}])
    assert body.is_constant
    assert body.render({}) is body.render({})
    assert body.render({}) == b'[1,"two",{"three":3}]'


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1: "a"}, TypeError),
        ({"when": object()}, TypeError),
        ({"x": float("nan")}, ValueError),
        ({"x": "{{ $nope() }}"}, TemplateSyntaxError),
    ],
)
def test_json_body_refuses_values_json_cannot_hold(
    value: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        compile_json_body(value)


# Text without "{{": any "{{" in a JSON body's strings starts a template.
plain_text = st.text().filter(lambda s: "{{" not in s)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | plain_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(plain_text, children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.text(), json_values)
def test_any_substituted_string_yields_json_that_round_trips(
    value: str, surrounding: object
) -> None:
    body = compile_json_body({"value": "{{ v }}", "other": surrounding})
    decoded = json.loads(body.render({"v": value}))
    assert decoded == {"value": value, "other": surrounding}


@given(st.text().filter(lambda s: "{{" not in s))
def test_text_without_braces_renders_as_itself(text: str) -> None:
    template = compile_template(text)
    assert template.is_constant
    assert template.render({}) == text


def test_form_body_encodes_names_and_values() -> None:
    form = compile_form_body(
        [("email", "{{ email }}"), ("note", "a b&c=d"), ("x{{ userId }}", "é")]
    )
    assert form.names == {"email", "userId"}
    assert (
        form.render(VARIABLES) == b"email=a%40example.com&note=a+b%26c%3Dd&x42=%C3%A9"
    )


def test_constant_form_body_needs_no_variables() -> None:
    form = compile_form_body([("a", "1"), ("b", "two words"), ("a", "a")])
    assert form.is_constant
    assert form.render({}) == b"a=1&b=two+words&a=a"


@given(st.lists(st.tuples(st.text(), st.text()), max_size=5))
def test_any_form_values_decode_back_to_themselves(
    pairs: list[tuple[str, str]],
) -> None:
    fields = [(f"f{i}", "{{ v" + str(i) + " }}") for i in range(len(pairs))]
    variables = {f"v{i}": value for i, (_, value) in enumerate(pairs)}
    form = compile_form_body(fields)
    decoded = parse_qsl(form.render(variables).decode("ascii"), keep_blank_values=True)
    assert decoded == [(f"f{i}", value) for i, (_, value) in enumerate(pairs)]


def test_urlencode_filter_percent_encodes_the_rendered_value() -> None:
    template = compile_template(
        "/u?e={{ email | urlencode }}&raw={{ email }}&r={{$randomInt(7, 7)|urlencode}}"
    )
    assert template.names == frozenset({"email"})
    assert template.pattern == "/u?e={email}&raw={email}&r={randomInt}"
    value = "john doe+x@ex.com&admin=1"
    assert template.render({"email": value}) == (
        f"/u?e=john%20doe%2Bx%40ex.com%26admin%3D1&raw={value}&r=7"
    )
    alone = compile_template("{{email|urlencode}}")
    assert alone.render({"email": "a/b é"}) == "a%2Fb%20%C3%A9"
    assert pickle.loads(pickle.dumps(alone)).render({"email": "#"}) == "%23"


@given(st.text())
def test_any_urlencoded_value_decodes_back_to_itself(value: str) -> None:
    rendered = compile_template("{{ v | urlencode }}").render({"v": value})
    assert re.fullmatch(r"[A-Za-z0-9._~%-]*", rendered)
    assert unquote(rendered, errors="surrogateescape") == value
