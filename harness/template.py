"""Templates in profile strings: ``{{ name }}`` and ``{{ $function(args) }}``.

How this works: a template is compiled once, when the profile is loaded (to validate
it) and again in each worker (to use it). Compiling splits the text into literal
pieces and slots. Rendering copies the list of pieces, fills each slot with a
variable's value or a function's output, and joins: no parsing happens per request,
and a template without slots returns its text at once.

Inside ``{{ }}`` spaces are optional. A name is letters, digits and ``_``, not
starting with a digit. ``{{ name | urlencode }}`` (or a function call followed by
``| urlencode``) percent-encodes the rendered value for a query string or a path
segment: every character but ``A-Z a-z 0-9 - . _ ~`` becomes ``%XX`` of its UTF-8
bytes, so a value holding ``&``, ``=``, ``+``, ``#`` or a space stays one value. The
Artillery translator writes it for every templated ``qs`` value. The functions are:

* ``$randomString()`` / ``$randomString(n)`` - ``n`` (default 10) characters of
  ``[A-Za-z0-9]``,
* ``$randomInt(a, b)`` - an integer between ``a`` and ``b``, both included,
* ``$uuid()`` - a random UUID (version 4),
* ``$timestamp()`` - the current time in epoch milliseconds.

Their arguments are integer literals. Random values come from :mod:`random`, which is
seeded per process: good enough for test data, not for secrets.

:class:`JsonBody` and :class:`FormBody` apply the same idea to request bodies: the
JSON text (or form encoding) around the templated strings is produced once, and each
rendered value is escaped for its place (a JSON string, a form field) as it is
substituted, so a value holding a quote or an ``&`` cannot break the body.

Known limitation: there is no escape for a literal ``{{``; any ``{{`` starts a
template. Profiles for JSON APIs have not needed one, and adding ``{{ '{{' }}``
style quoting later does not change how existing templates read.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from json.encoder import encode_basestring
from urllib.parse import quote, quote_plus

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What a variable or capture name may be, so that ``{{ name }}`` can refer to it."""

_CALL = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_INTEGER = re.compile(r"[+-]?\d+")
_ALPHABET = string.ascii_letters + string.digits
_random = random.random

MAX_RANDOM_STRING = 1_000_000
"""Longest ``$randomString(n)``: a bound so a typo cannot build gigabyte bodies."""

TEMPLATE_FORM = "{{ name }} or {{ $function(args) }}"

URLENCODE = "urlencode"
"""The one filter: ``{{ name | urlencode }}`` percent-encodes the value."""


class TemplateSyntaxError(ValueError):
    """A template is malformed. ``problem`` says what, ``fix`` how to correct it."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


def _random_string(length: int) -> str:
    return "".join(random.choices(_ALPHABET, k=length))


def _random_int(low: int, high: int) -> str:
    return str(random.randint(low, high))


def _random_int_small(low: int, span: int) -> str:
    # A float draw is twice as fast as randint; with 53 random bits its bias over
    # at most 2**31 values is below one part in 2**22.
    return str(low + int(_random() * span))


def _uuid() -> str:
    return str(uuid.uuid4())


def _timestamp() -> str:
    return str(time.time_ns() // 1_000_000)


@dataclass(frozen=True, slots=True)
class _Function:
    usage: str
    min_args: int
    max_args: int
    make: Callable[..., Callable[[], str]]


def _make_random_string(length: int = 10) -> Callable[[], str]:
    if not 1 <= length <= MAX_RANDOM_STRING:
        raise TemplateSyntaxError(
            f"$randomString({length}): the length must be between 1 and "
            f"{MAX_RANDOM_STRING}",
            "write a length such as $randomString(12)",
        )
    return partial(_random_string, length)


def _make_random_int(low: int, high: int) -> Callable[[], str]:
    if low > high:
        raise TemplateSyntaxError(
            f"$randomInt({low}, {high}): the first bound is above the second",
            f"write $randomInt({high}, {low})",
        )
    if high - low < 2**31:
        return partial(_random_int_small, low, high - low + 1)
    return partial(_random_int, low, high)


def _make_uuid() -> Callable[[], str]:
    return _uuid


def _make_timestamp() -> Callable[[], str]:
    return _timestamp


FUNCTIONS: dict[str, _Function] = {
    "randomString": _Function(
        "$randomString() or $randomString(length)", 0, 1, _make_random_string
    ),
    "randomInt": _Function("$randomInt(min, max)", 2, 2, _make_random_int),
    "uuid": _Function("$uuid()", 0, 0, _make_uuid),
    "timestamp": _Function("$timestamp()", 0, 0, _make_timestamp),
}
"""The template functions, by name (without the ``$``)."""


def _known_functions() -> str:
    return ", ".join(f.usage for f in FUNCTIONS.values())


class Template:
    """A compiled template; :meth:`render` fills it from a VU's variables."""

    __slots__ = (
        "_calls",
        "_constant",
        "_pieces",
        "_quoted",
        "_single",
        "_slots",
        "functions",
        "is_constant",
        "names",
        "pattern",
        "source",
    )

    source: str
    names: frozenset[str]
    """The variables it reads."""
    functions: frozenset[str]
    """The functions it calls, without the ``$``."""
    is_constant: bool
    pattern: str
    """The text with each slot shown as ``{name}`` or ``{function}``:
    ``/api/users/{{ id }}`` gives ``/api/users/{id}``."""

    def __init__(
        self,
        source: str,
        pieces: list[str],
        slots: list[tuple[int, str]],
        calls: list[tuple[int, str, Callable[[], str]]],
        quoted: list[tuple[int, str]] | None = None,
    ) -> None:
        quoted = quoted or []
        self.source = source
        self._pieces = pieces
        self._slots = tuple(slots)
        self._quoted = tuple(quoted)
        self._calls = tuple((index, fn) for index, _, fn in calls)
        self.names = frozenset(name for _, name in (*slots, *quoted))
        self.functions = frozenset(fn_name for _, fn_name, _ in calls)
        self.is_constant = not slots and not calls and not quoted
        self._constant = "".join(pieces) if self.is_constant else None
        only_one = len(pieces) == 1 and len(slots) == 1
        self._single = slots[0][1] if only_one else None
        shown = list(pieces)
        for index, name in (*slots, *quoted):
            shown[index] = "{" + name + "}"
        for index, fn_name, _ in calls:
            shown[index] = "{" + fn_name + "}"
        self.pattern = "".join(shown)

    def render(self, variables: Mapping[str, str]) -> str:
        """The text with every slot filled; ``KeyError`` if a variable is missing."""
        if self._constant is not None:
            return self._constant
        if self._single is not None:
            return variables[self._single]
        out = self._pieces.copy()
        for index, name in self._slots:
            out[index] = variables[name]
        for index, name in self._quoted:
            out[index] = _url_quote(variables[name])
        for index, fn in self._calls:
            out[index] = fn()
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def __reduce__(self) -> tuple[Callable[[str], Template], tuple[str]]:
        # Recompiled from the source in the receiving process, so nothing compiled
        # (bound functions, slots) has to survive pickling.
        return compile_template, (self.source,)


def compile_template(text: str) -> Template:
    """Compile ``text``; raise :class:`TemplateSyntaxError` if a ``{{ }}`` is bad."""
    pieces: list[str] = []
    slots: list[tuple[int, str]] = []
    quoted: list[tuple[int, str]] = []
    calls: list[tuple[int, str, Callable[[], str]]] = []
    position = 0
    while True:
        start = text.find("{{", position)
        if start < 0:
            break
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateSyntaxError(
                f"'{{{{' at character {start + 1} of {text!r} is never closed "
                "by '}}'",
                f"write {TEMPLATE_FORM}",
            )
        if start > position:
            pieces.append(text[position:start])
        inner, encode = _split_filter(text[start + 2 : end].strip(), text)
        if NAME_PATTERN.fullmatch(inner):
            (quoted if encode else slots).append((len(pieces), inner))
        else:
            fn_name, fn = _compile_call(inner, text)
            if encode:
                fn = partial(_quote_call, fn)
            calls.append((len(pieces), fn_name, fn))
        pieces.append("")
        position = end + 2
    if position < len(text) or not pieces:
        pieces.append(text[position:])
    return Template(text, pieces, slots, calls, quoted)


def _split_filter(inner: str, text: str) -> tuple[str, bool]:
    """``name | urlencode`` -> (``name``, True); ``name`` -> (``name``, False)."""
    if "|" not in inner:
        return inner, False
    expression, _, name = inner.partition("|")
    name = name.strip()
    if name != URLENCODE:
        raise TemplateSyntaxError(
            f"unknown filter {name!r} in {text!r}",
            f"the one filter is {URLENCODE}: write {{{{ name | {URLENCODE} }}}}, "
            "or remove the '|'",
        )
    return expression.strip(), True


_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]*")


def _url_quote(text: str) -> str:
    """``text`` percent-encoded as one query value or path segment."""
    if _URL_SAFE.fullmatch(text):
        return text  # nothing to encode, and quote costs microseconds
    # surrogateescape gives back the original bytes of an environment variable that
    # was not valid UTF-8, which is what the user meant to send.
    return quote(text, safe="", errors="surrogateescape")


def _quote_call(fn: Callable[[], str]) -> str:
    return _url_quote(fn())


def _compile_call(inner: str, text: str) -> tuple[str, Callable[[], str]]:
    match = _CALL.fullmatch(inner)
    if not inner:
        raise TemplateSyntaxError(
            f"empty '{{{{ }}}}' in {text!r}", f"write {TEMPLATE_FORM}"
        )
    if match is None:
        raise TemplateSyntaxError(
            f"'{{{{ {inner} }}}}' in {text!r} is neither a variable name nor a "
            "function call",
            f"write {TEMPLATE_FORM}; names are letters, digits and '_'",
        )
    fn_name, arg_text = match.groups()
    spec = FUNCTIONS.get(fn_name)
    if spec is None:
        raise TemplateSyntaxError(
            f"unknown template function '${fn_name}' in {text!r}",
            f"use one of {_known_functions()}",
        )
    if arg_text is None:
        raise TemplateSyntaxError(
            f"'${fn_name}' in {text!r} is missing its parentheses",
            f"write {spec.usage}",
        )
    raw_args = [a.strip() for a in arg_text.split(",")] if arg_text.strip() else []
    bad = [a for a in raw_args if not _INTEGER.fullmatch(a)]
    if bad or not spec.min_args <= len(raw_args) <= spec.max_args:
        takes = " or ".join(str(n) for n in range(spec.min_args, spec.max_args + 1))
        reason = (
            f"{bad[0]!r} is not an integer"
            if bad
            else f"it takes {takes} arguments, not {len(raw_args)}"
        )
        fix = f"write {spec.usage}"
        if spec.max_args:
            fix += "; arguments are integers"
        raise TemplateSyntaxError(
            f"bad arguments in '${fn_name}({arg_text})' in {text!r}: {reason}", fix
        )
    return fn_name, spec.make(*(int(a) for a in raw_args))


class JsonBody:
    """A JSON-able value whose strings (keys and values) may hold templates."""

    __slots__ = ("_constant", "_pieces", "_slots", "is_constant", "names", "value")

    value: object
    names: frozenset[str]
    is_constant: bool

    def __init__(self, value: object) -> None:
        self.value = value
        pieces: list[str] = []
        slots: list[tuple[int, Template]] = []
        _emit_json(value, pieces, slots)
        merged, merged_slots = _merge_literals(pieces, slots)
        self._pieces = merged
        self._slots = tuple(merged_slots)
        self.names = frozenset().union(*(t.names for _, t in merged_slots))
        self.is_constant = not merged_slots
        self._constant = _utf8_json("".join(merged)) if self.is_constant else None

    def render(self, variables: Mapping[str, str]) -> bytes:
        """Compact JSON, UTF-8; ``KeyError`` if a variable is missing."""
        if self._constant is not None:
            return self._constant
        out = self._pieces.copy()
        for index, template in self._slots:
            out[index] = encode_basestring(template.render(variables))
        return _utf8_json("".join(out))

    def __repr__(self) -> str:
        return f"JsonBody({self.value!r})"


def compile_json_body(value: object) -> JsonBody:
    """Compile a JSON body.

    Raises :class:`TemplateSyntaxError` for a bad template and ``TypeError`` or
    ``ValueError`` for a value JSON cannot hold (a date, a set, NaN, a number key).
    """
    return JsonBody(value)


def _emit_json(
    value: object, pieces: list[str], slots: list[tuple[int, Template]]
) -> None:
    if isinstance(value, str):
        template = compile_template(value)
        if template.is_constant:
            pieces.append(encode_basestring(value))
        else:
            slots.append((len(pieces), template))
            pieces.append("")
    elif value is None or isinstance(value, bool | int | float):
        pieces.append(json.dumps(value, allow_nan=False))
    elif isinstance(value, Mapping):
        pieces.append("{")
        for number, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be text, got {key!r}")
            if number:
                pieces.append(",")
            _emit_json(key, pieces, slots)
            pieces.append(":")
            _emit_json(item, pieces, slots)
        pieces.append("}")
    elif isinstance(value, list | tuple):
        pieces.append("[")
        for number, item in enumerate(value):
            if number:
                pieces.append(",")
            _emit_json(item, pieces, slots)
        pieces.append("]")
    else:
        raise TypeError(
            f"{type(value).__name__} value {value!r} cannot be sent as JSON"
        )


def _merge_literals(
    pieces: list[str], slots: list[tuple[int, Template]]
) -> tuple[list[str], list[tuple[int, Template]]]:
    """Join runs of literal pieces so rendering touches one piece per run."""
    slot_at = dict(slots)
    merged: list[str] = []
    merged_slots: list[tuple[int, Template]] = []
    run: list[str] = []
    for index, piece in enumerate(pieces):
        if index in slot_at:
            if run:
                merged.append("".join(run))
                run = []
            merged_slots.append((len(merged), slot_at[index]))
            merged.append("")
        else:
            run.append(piece)
    if run or not merged:
        merged.append("".join(run))
    return merged, merged_slots


def _utf8_json(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (undecodable bytes of an environment variable, or a
        # "\ud800" escape in a captured response) have no UTF-8 form; JSON's own
        # \uXXXX escapes carry them instead.
        return _reencode_ascii(json.loads(text)).encode("ascii")


def _reencode_ascii(value: object) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


class FormBody:
    """``application/x-www-form-urlencoded`` fields whose names and values may hold
    templates."""

    __slots__ = ("_constant", "_pieces", "_slots", "is_constant", "names", "pairs")

    pairs: tuple[tuple[str, str], ...]
    names: frozenset[str]
    is_constant: bool

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = tuple(pairs)
        pieces: list[str] = []
        slots: list[tuple[int, Template]] = []

        def add(text: str) -> None:
            template = compile_template(text)
            if template.is_constant:
                pieces.append(_form_quote(text))
            else:
                slots.append((len(pieces), template))
                pieces.append("")

        for number, (name, value) in enumerate(self.pairs):
            if number:
                pieces.append("&")
            add(name)
            pieces.append("=")
            add(value)
        merged, merged_slots = _merge_literals(pieces, slots)
        self._pieces = merged
        self._slots = tuple(merged_slots)
        self.names = frozenset().union(*(t.names for _, t in merged_slots))
        self.is_constant = not merged_slots
        self._constant = "".join(merged).encode("ascii") if self.is_constant else None

    def render(self, variables: Mapping[str, str]) -> bytes:
        """The encoded fields; ``KeyError`` if a variable is missing."""
        if self._constant is not None:
            return self._constant
        out = self._pieces.copy()
        for index, template in self._slots:
            out[index] = _form_quote(template.render(variables))
        return "".join(out).encode("ascii")

    def __repr__(self) -> str:
        return f"FormBody({self.pairs!r})"


def compile_form_body(pairs: Iterable[tuple[str, str]]) -> FormBody:
    """Compile form fields; raise :class:`TemplateSyntaxError` for a bad template."""
    return FormBody(pairs)


_FORM_SAFE = re.compile(r"[A-Za-z0-9._~-]*")


def _form_quote(text: str) -> str:
    if _FORM_SAFE.fullmatch(text):
        return text  # nothing to encode, and quote_plus costs microseconds
    # surrogateescape gives back the original bytes of an environment variable that
    # was not valid UTF-8, which is what the user meant to send.
    return quote_plus(text, safe="", errors="surrogateescape")


__all__ = [
    "FUNCTIONS",
    "NAME_PATTERN",
    "URLENCODE",
    "FormBody",
    "JsonBody",
    "Template",
    "TemplateSyntaxError",
    "compile_form_body",
    "compile_json_body",
    "compile_template",
]
