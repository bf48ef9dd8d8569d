"""A small, strict JSON path: enough to pick one value out of a response.

The accepted form is ``$`` followed by any number of parts:

* ``.key`` - a member of an object; the key is letters, digits, ``_`` or ``-``,
* ``["any key"]`` - a member whose key needs quoting (JSON string syntax, so
  ``["a \\"quoted\\" key"]`` works too),
* ``[0]``, ``[-1]`` - an element of an array, counted from the end when negative.

Wildcards, recursive descent (``..``), filters and slices are refused when the path
is compiled, not when a response arrives: a capture picks exactly one value, so a
path that could match several is a mistake to report before the run starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ACCEPTED_FORM = (
    '$, then .key, ["key with spaces"], [0] or [-1] parts, as in $.data[0].id'
)

_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(-?\d+)\]")
_QUOTED = re.compile(r'\["((?:[^"\\]|\\.)*)"\]')

PathPart = str | int
_ABSENT = object()


class JsonPathError(ValueError):
    """A JSON path is malformed; the message says where and gives the accepted form."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.fix = f"write {ACCEPTED_FORM}"
        super().__init__(f"{problem}; {self.fix}")


@dataclass(frozen=True, slots=True)
class JsonPath:
    source: str
    parts: tuple[PathPart, ...]

    def get(self, doc: object) -> object:
        """Return the value at this path in ``doc``, or raise :class:`LookupError`.

        The error names the part of the path that was missing, never the document's
        content, since responses may carry secrets.
        """
        value = doc
        for depth, part in enumerate(self.parts):
            if isinstance(part, str):
                found = value.get(part, _ABSENT) if isinstance(value, dict) else _ABSENT
                if found is _ABSENT:
                    raise LookupError(self._missing(depth, value, "key"))
                value = found
            else:
                if not isinstance(value, list) or not -len(value) <= part < len(value):
                    raise LookupError(self._missing(depth, value, "index"))
                value = value[part]
        return value

    def _missing(self, depth: int, value: object, what: str) -> str:
        reached = format_parts(self.parts[:depth])
        wanted = format_parts(self.parts[: depth + 1])
        if what == "key" and isinstance(value, dict):
            return f"{self.source}: no {wanted} (the object at {reached} lacks it)"
        if what == "index" and isinstance(value, list):
            return (
                f"{self.source}: no {wanted} "
                f"(the array at {reached} has {len(value)} elements)"
            )
        kind = "an object" if what == "key" else "an array"
        found = _json_kind(value)
        return f"{self.source}: {reached} is {found}, not {kind}"

    def __str__(self) -> str:
        return self.source


def compile_path(text: str) -> JsonPath:
    """Parse ``text`` into a :class:`JsonPath`, or raise :class:`JsonPathError`."""
    if not isinstance(text, str):
        raise JsonPathError(f"a JSON path must be text, got {type(text).__name__}")
    if not text.startswith("$"):
        raise JsonPathError(
            f"JSON path {text!r} must start with '$' (the whole document)"
        )
    parts: list[PathPart] = []
    position = 1
    while position < len(text):
        char = text[position]
        if char == ".":
            match = _KEY.match(text, position + 1)
            if match is None:
                raise _error(text, position, _dot_problem(text, position))
            parts.append(match.group())
            position = match.end()
        elif char == "[":
            index = _INDEX.match(text, position)
            quoted = _QUOTED.match(text, position) if index is None else None
            if index is not None:
                parts.append(int(index.group(1)))
                position = index.end()
            elif quoted is not None:
                parts.append(_unquote(text, position, quoted.group(1)))
                position = quoted.end()
            else:
                raise _error(text, position, _bracket_problem(text, position))
        else:
            raise _error(
                text, position, f"unexpected {char!r}; each part starts with '.' or '['"
            )
    return JsonPath(text, tuple(parts))


def format_parts(parts: tuple[PathPart, ...]) -> str:
    """Write ``parts`` back in the accepted form (``$.data[0]["a b"]``)."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _KEY.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


def _unquote(text: str, position: int, inner: str) -> str:
    try:
        key = json.loads(f'"{inner}"')
    except json.JSONDecodeError as exc:
        raise _error(text, position, f"bad escape in quoted key ({exc.msg})") from None
    assert isinstance(key, str)
    return key


def _dot_problem(text: str, position: int) -> str:
    following = text[position + 1 : position + 2]
    if following == ".":
        return "recursive descent '..' is not supported"
    if following == "*":
        return "wildcards are not supported"
    if not following:
        return "a '.' must be followed by a key"
    return (
        f"a key after '.' is letters, digits, '_' or '-'; "
        f'quote others as ["{text[position + 1 :]}"]'
    )


def _bracket_problem(text: str, position: int) -> str:
    rest = text[position:]
    if "]" not in rest:
        return "'[' is never closed by ']'"
    inside = rest[1 : rest.index("]")]
    if inside.strip() == "*":
        return "wildcards are not supported"
    if ":" in inside:
        return "slices are not supported"
    if inside.startswith("?"):
        return "filters are not supported"
    if inside.startswith("'"):
        return "quote keys with double quotes"
    return f"[{inside}] is neither an integer index nor a double-quoted key"


def _error(text: str, position: int, problem: str) -> JsonPathError:
    return JsonPathError(f"JSON path {text!r}, at character {position + 1}: {problem}")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
