from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.jsonpath import JsonPathError, compile_path, format_parts

DOC = {
    "success": True,
    "data": {
        "access_token": "abc",
        "user-id": 7,
        "items": [{"id": 1}, {"id": 2}, {"id": 3}],
        "a key": {'with "quotes"': "deep"},
        "empty": None,
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", DOC),
        ("$.success", True),
        ("$.data.access_token", "abc"),
        ("$.data.user-id", 7),
        ("$.data.items[0].id", 1),
        ("$.data.items[-1].id", 3),
        ('$["data"]["items"][1]', {"id": 2}),
        ('$.data["a key"]["with \\"quotes\\""]', "deep"),
        ("$.data.empty", None),
    ],
)
def test_get_returns_the_value_at_the_path(path: str, expected: object) -> None:
    assert compile_path(path).get(DOC) == expected


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("$.data.missing", "the object at $.data lacks it"),
        ("$.data.items[3]", "has 3 elements"),
        ("$.data.items[-4]", "has 3 elements"),
        ("$.data.access_token.x", "$.data.access_token is a string, not an object"),
        ("$.data.items.id", "$.data.items is an array, not an object"),
        ("$[0]", "$ is an object, not an array"),
        ("$.data.empty.x", "is null"),
    ],
)
def test_get_raises_lookup_error_naming_the_missing_part(
    path: str, fragment: str
) -> None:
    with pytest.raises(LookupError) as caught:
        compile_path(path).get(DOC)
    assert fragment in str(caught.value)
    assert "abc" not in str(caught.value)  # never the document's content


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("data.token", "must start with '$'"),
        ("", "must start with '$'"),
        ("$..x", "recursive descent"),
        ("$[abc", "never closed"),
        ("$[abc]", "neither an integer index nor a double-quoted key"),
        ("$.", "must be followed by a key"),
        ("$.*", "wildcards"),
        ("$[*]", "wildcards"),
        ("$[1:2]", "slices"),
        ("$[?(@.a)]", "filters"),
        ("$['a']", "double quotes"),
        ('$["a\\q"]', "bad escape"),
        ("$x", "unexpected 'x'"),
        ("$.a b", "at character 4"),
    ],
)
def test_compile_path_refuses_malformed_paths_with_the_accepted_form(
    path: str, fragment: str
) -> None:
    with pytest.raises(JsonPathError) as caught:
        compile_path(path)
    assert fragment in caught.value.problem
    assert '["key with spaces"]' in str(caught.value)


def test_compiled_path_keeps_its_source() -> None:
    path = compile_path("$.data.items[0]")
    assert path.source == "$.data.items[0]"
    assert str(path) == "$.data.items[0]"
    assert path.parts == ("data", "items", 0)


@given(st.lists(st.text() | st.integers(-5, 5), max_size=5))
def test_any_key_or_index_survives_formatting_and_parsing(
    parts: list[str | int],
) -> None:
    path = compile_path(format_parts(tuple(parts)))
    assert path.parts == tuple(parts)


@given(st.text(), st.text())
def test_quoted_keys_find_their_member_in_a_parsed_document(
    key: str, value: str
) -> None:
    doc = json.loads(json.dumps({"outer": {key: value}}))
    path = compile_path(f"$.outer[{json.dumps(key)}]")
    assert path.get(doc) == value
