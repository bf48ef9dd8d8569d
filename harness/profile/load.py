"""Load a profile from YAML: parse, validate everything, build the model.

How this works: the YAML text is *composed* into a node tree rather than constructed
into Python values, so every node still knows the line it came from. The loader walks
that tree, carrying a field path such as ``scenarios[1].flow[0].capture.accessToken``,
checks each value's type and range, and raises :class:`~harness.errors.ProfileError`
at the first problem with the file, the line, the path, what is wrong and how to fix
it. Templates are compiled here too, and every name they read is checked against
what is defined at that point: the profile's variables, plus the names captured by
earlier steps of the same scenario. So a profile that loads can run; nothing is sent
before the whole file has passed. Threshold expressions and the ``slos`` block are
checked with the analysis package's own parsers, so whatever loads here is what the
analysis will evaluate.

Environment references (``${NAME}``, ``${NAME:-default}``) are expanded in variable
values, in ``target`` and in ``http.proxy``, and nowhere else: a request's headers
and path reach the environment through a variable, which marks it secret.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from analysis.slo import Slos, SloSpecError, parse_slos
from analysis.thresholds import ThresholdRule, ThresholdSyntaxError
from analysis.thresholds import parse as parse_threshold

from ..durations import DurationError, parse_duration
from ..errors import Location, ProfileError
from ..feeder import (
    TEXT_KINDS,
    FeederError,
    NoDataRows,
    check_data_file,
    csv_first_line,
    parquet_columns,
)
from ..jsonpath import JsonPathError, compile_path
from ..template import (
    NAME_PATTERN,
    Template,
    TemplateSyntaxError,
    compile_json_body,
    compile_template,
)
from .model import (
    DEFAULT_GRACEFUL_RAMP_DOWN_S,
    DEFAULT_GRACEFUL_STOP_S,
    DEFAULT_MAX_VUS,
    DEFAULT_PROMETHEUS_TIMEOUT_S,
    Arrivals,
    BodyKind,
    Capture,
    Checks,
    ClosedModel,
    DataFormat,
    DataOrder,
    DataSource,
    Engine,
    HttpSettings,
    LoadModel,
    MonitorSettings,
    MonitorTarget,
    OpenModel,
    Phase,
    PostgresSource,
    Profile,
    PrometheusSource,
    RedisSource,
    Scenario,
    Stage,
    Step,
    Variable,
)

COMMAND_LINE = "command line"
"""The file name in the location of an error about a command-line override."""

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

SECRET_WORDS = ("pass", "secret", "token", "key", "auth", "cookie", "credential")
"""A variable whose name contains one of these (in any case) is treated as secret."""

CLIENT_HEADERS = ("host", "content-length", "transfer-encoding", "connection")
"""Headers the client writes itself; a profile setting them would send them twice."""

TOP_KEYS = (
    "name",
    "target",
    "graceful_stop",
    "http",
    "variables",
    "load",
    "thresholds",
    "slos",
    "monitor",
    "data",
    "setup",
    "scenarios",
)
SETUP_KEYS = ("flow",)
DATA_KEYS = ("file", "format", "columns", "header", "delimiter", "order", "reuse")
LOOP_KEYS = ("count", "flow")
MAX_STEPS = 10_000
"""Steps a scenario may have once its loops are expanded."""
MONITOR_KEYS = ("enabled", "interval", "target", "prometheus", "postgres", "redis")
MONITOR_TARGET_KEYS = (
    "pid",
    "port",
    "name",
    "command",
    "ready_url",
    "ready_timeout",
    "stop_grace",
)
PROMETHEUS_KEYS = ("url", "metrics", "timeout", "source")
POSTGRES_KEYS = ("dsn", "source")
REDIS_KEYS = ("url", "source")
HTTP_KEYS = (
    "timeout",
    "connect_timeout",
    "verify_tls",
    "engine",
    "http2",
    "proxy",
    "headers",
)
OPEN_KEYS = ("model", "arrivals", "max_vus", "phases")
CLOSED_KEYS = ("model", "graceful_ramp_down", "stages")
PHASE_KEYS = ("name", "duration", "rate", "ramp_to")
STAGE_KEYS = ("name", "duration", "target")
SCENARIO_KEYS = ("name", "weight", "think", "flow")
STEP_KEYS = (
    "name",
    "method",
    "path",
    "headers",
    "json",
    "form",
    "body",
    "capture",
    "check",
    "think",
)
CHECK_KEYS = ("status", "json", "max_latency")
THRESHOLD_KEYS = (
    "threshold",
    "abort_on_fail",
    "delay_abort_eval",
    "abortOnFail",
    "delayAbortEval",
)
"""Keys of a threshold written as a mapping; the camelCase ones are k6's spelling."""

REQUIRED_EXAMPLES = {
    "load": "load: {model: open, phases: [{duration: 1m, rate: 10}]}",
    "scenarios": "scenarios: [{name: browse, flow: [{path: /}]}]",
    "model": "model: open (arrival rates) or model: closed (virtual users)",
    "phases": "phases: [{duration: 1m, rate: 10}]",
    "stages": "stages: [{duration: 1m, target: 10}]",
    "duration": "duration: 1m",
    "rate": "rate: 10 (arrivals per second)",
    "target": "target: 10 (virtual users)",
    "name": "name: browse",
    "flow": "flow: [{path: /}]",
    "path": "path: /api/items",
}
"""What to suggest when a required key is missing."""

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG + "merge"
_ENV_START = re.compile(r"\$(\$?)\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_PATH_CHARS = re.compile(r"[\s\x00-\x1f\x7f#]")
_BAD_HEADER_CHARS = re.compile(r"[\r\n\x00]")
_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_ENGINES = ("fast", "httpx")
_ARRIVALS = ("uniform", "poisson")
_FORMATS = ("csv", "parquet")
_ORDERS = ("sequence", "random")


def load_profile(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    target: str | None = None,
) -> Profile:
    """Read, validate and build the profile at ``path``.

    ``env`` (default :data:`os.environ`) resolves ``${NAME}`` references; ``target``
    replaces the profile's target, as ``--target`` does on the command line.
    Raises :class:`ProfileError` for anything wrong with the file or the override.
    """
    filename = os.fspath(path)
    try:
        data = Path(filename).read_bytes()
    except OSError as exc:
        raise ProfileError(
            Location(filename, None, ""),
            f"cannot read the profile: {exc.strerror or exc}",
            "check the path; profiles are YAML files such as profiles/smoke.yaml",
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProfileError(
            Location(filename, line, ""),
            f"the profile is not UTF-8 text (byte {data[exc.start]:#04x})",
            "save the file as UTF-8",
        ) from None
    sha256 = hashlib.sha256(data).hexdigest()
    return _Loader(filename, env).load(text, sha256, target)


def load_profile_text(
    text: str,
    filename: str,
    *,
    env: Mapping[str, str] | None = None,
    target: str | None = None,
) -> Profile:
    """Like :func:`load_profile`, for YAML already in memory; ``filename`` is used in
    error locations and as the default profile name."""
    sha256 = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _Loader(filename, env).load(text, sha256, target)


def is_secret_name(name: str) -> bool:
    """True when a variable's name says it holds a secret (``apiKey``, ``PASSWORD``)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def validate_target(url: str) -> str:
    """Return ``url`` without its trailing slash, or raise ``ValueError`` saying why
    it is not a usable base URL."""
    if _BAD_HEADER_CHARS.search(url) or any(c.isspace() for c in url):
        raise ValueError(f"target {url!r} contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"target {url!r} is not an http:// or https:// URL with a host"
        )
    try:
        _ = parts.port  # urlsplit checks the port only when it is asked for
    except ValueError:
        raise ValueError(
            f"target {url!r} has a port that is not a number 0-65535"
        ) from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"target {parts.scheme}://...@{parts.hostname} holds a user name or "
            "password, which would end up in the run's manifest"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        # The query is left out of the message: it may carry an API key.
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
        raise ValueError(
            f"target {shown}?... has a query or fragment; steps' paths are "
            "appended to it"
        )
    return url.rstrip("/")


TARGET_FIX = (
    "write it like http://127.0.0.1:13010 (a base path is kept: "
    "http://127.0.0.1:13010/api); put credentials in a header through a variable"
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """One key of a YAML mapping, with the nodes of the key and of its value."""

    key: str
    key_node: Node
    node: Node
    path: str


class _Loader:
    """Walks one profile's node tree; every check raises at the first problem."""

    def __init__(self, filename: str, env: Mapping[str, str] | None) -> None:
        self.file = filename
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.constructor = SafeConstructor()
        self.visiting: set[int] = set()

    # -- errors ---------------------------------------------------------------

    def fail(
        self, node: Node | None, path: str, problem: str, fix: str = ""
    ) -> NoReturn:
        line = None if node is None else node.start_mark.line + 1
        raise ProfileError(Location(self.file, line, path), problem, fix)

    def bad(self, entry: _Entry, problem: str, fix: str = "") -> NoReturn:
        self.fail(entry.node, entry.path, problem, fix)

    # -- the document -----------------------------------------------------------

    def load(self, text: str, sha256: str, target_override: str | None) -> Profile:
        root = self.compose(text)
        # Imported here: the Artillery translator builds on this module's loader.
        from .artillery import ArtilleryLoader, is_artillery

        if is_artillery(root, TOP_KEYS):
            return ArtilleryLoader(self.file, self.env).translate(
                root, sha256, target_override
            )
        top = self.mapping(root, "", TOP_KEYS, "the profile")
        name = Path(self.file).stem
        if "name" in top:
            name = self.name(top["name"])
        target = self.target(top, root, target_override)
        graceful_stop_s = DEFAULT_GRACEFUL_STOP_S
        if "graceful_stop" in top:
            graceful_stop_s = self.duration(top["graceful_stop"], positive=False)
        variables = self.variables(top.get("variables"))
        defined = {v.name for v in variables}
        data = self.data(top.get("data"), defined)
        defined.update(name for source in data for name in source.columns)
        http = self.http(top.get("http"), defined)
        load = self.load_model(self.require(top, "load", root, ""))
        thresholds, threshold_rules = self.thresholds(top.get("thresholds"))
        slos = self.slos(top.get("slos"))
        monitor = self.monitor(top.get("monitor"))
        setup = self.setup(top.get("setup"), defined)
        defined.update(c.name for step in setup for c in step.captures)
        scenarios = self.scenarios(self.require(top, "scenarios", root, ""), defined)
        return Profile(
            name=name,
            target=target,
            load=load,
            scenarios=scenarios,
            http=http,
            variables=variables,
            thresholds=thresholds,
            threshold_rules=threshold_rules,
            slos=slos,
            monitor=monitor,
            data=data,
            setup=setup,
            graceful_stop_s=graceful_stop_s,
            source_file=self.file,
            source_sha256=sha256,
        )

    def compose(self, text: str) -> Node:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            self.yaml_error(exc)
        except yaml.reader.ReaderError as exc:
            line = text[: exc.position].count("\n") + 1
            raise ProfileError(
                Location(self.file, line, ""),
                f"character {exc.character!r} is not allowed in YAML",
                "remove it, or write it as an escape inside a double-quoted string",
            ) from None
        if root is None:
            self.fail(
                None,
                "",
                "the profile is empty",
                "start from the complete example in docs/profiles.md",
            )
        return root

    def yaml_error(self, exc: yaml.MarkedYAMLError) -> NoReturn:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or "malformed YAML"
        if exc.context:
            where = ""
            if exc.context_mark is not None and exc.context_mark is not mark:
                where = f" from line {exc.context_mark.line + 1}"
            problem = f"{exc.context}{where}: {problem}"
        fix = "check the indentation, colons, quotes and brackets near this line"
        if "'\\t'" in (exc.problem or ""):
            fix = "indent with spaces; YAML does not allow tabs"
        if "single document" in (exc.context or ""):
            fix = "keep one profile per file: remove the '---' line and what follows"
        raise ProfileError(
            Location(self.file, line, ""), f"invalid YAML, {problem}", fix
        ) from None

    # -- generic node checks ------------------------------------------------------

    def describe(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        kinds = {
            "str": f"the text {node.value!r}",
            "int": f"the integer {node.value}",
            "float": f"the number {node.value}",
            "bool": f"the boolean {node.value}",
            "null": "an empty value (null)",
            "timestamp": f"the date {node.value}",
        }
        tag = node.tag.removeprefix(_TAG)
        return kinds.get(tag, f"a value tagged {node.tag}")

    def wrong_type(self, entry: _Entry, expected: str, example: str = "") -> NoReturn:
        fix = f"write {example}" if example else ""
        self.bad(
            entry,
            f"'{_last(entry.path)}' must be {expected}, "
            f"not {self.describe(entry.node)}",
            fix,
        )

    def scalar(self, entry: _Entry) -> object:
        """The Python value of a scalar node (YAML's own typing)."""
        if not isinstance(entry.node, ScalarNode):
            return _NOT_SCALAR
        try:
            return self.constructor.construct_object(entry.node, deep=True)
        except ConstructorError as exc:
            self.bad(
                entry,
                f"cannot read this value: {exc.problem}",
                "remove the tag, or quote the value to make it text",
            )

    def require(
        self, entries: dict[str, _Entry], key: str, node: Node, path: str
    ) -> _Entry:
        if key in entries:
            return entries[key]
        where = "at the top of the profile" if not path else f"in {path}"
        example = REQUIRED_EXAMPLES.get(key, f"{key}: ...")
        self.fail(
            node,
            _join(path, key),
            f"'{key}' is required {where} but missing",
            f"add {example} (docs/profiles.md has a complete example)",
        )

    def mapping(
        self,
        node: Node,
        path: str,
        known: Sequence[str] | None,
        what: str,
        hint: Callable[[str], str] | None = None,
    ) -> dict[str, _Entry]:
        """The entries of a mapping node, merge keys applied, each key checked."""
        if not isinstance(node, MappingNode):
            self.fail(
                node,
                path,
                f"{what} must be a mapping of keys to values, "
                f"not {self.describe(node)}",
                "write key: value lines, indented under their parent",
            )
        entries = self.entries(node, path)
        if known is not None:
            for entry in entries.values():
                if entry.key not in known:
                    self.unknown_key(entry, known, what, hint)
        return entries

    def entries(self, node: MappingNode, path: str) -> dict[str, _Entry]:
        with self.guard(node, path):
            merged: dict[str, _Entry] = {}
            own: dict[str, _Entry] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    merged.update(self.merged(value_node, path))
                    continue
                key = self.key_text(key_node, path)
                if key in own:
                    self.fail(
                        key_node,
                        _join(path, key),
                        f"'{key}' appears twice in this mapping (first on line "
                        f"{own[key].key_node.start_mark.line + 1})",
                        "keep one of them",
                    )
                own[key] = _Entry(key, key_node, value_node, _join(path, key))
            return {**merged, **own}

    def merged(self, node: Node, path: str) -> dict[str, _Entry]:
        """Entries brought in by ``<<: *anchor``; the first listed source wins."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        result: dict[str, _Entry] = {}
        for source in reversed(sources):
            if not isinstance(source, MappingNode):
                self.fail(
                    source,
                    path,
                    f"'<<' merges mappings, not {self.describe(source)}",
                    "write <<: *anchor where the anchor names a mapping",
                )
            result.update(self.entries(source, path))
        return result

    def key_text(self, key_node: Node, path: str) -> str:
        if isinstance(key_node, ScalarNode) and key_node.tag == _TAG + "str":
            return str(key_node.value)
        self.fail(
            key_node,
            path,
            f"keys must be text, not {self.describe(key_node)}",
            f'quote the key: "{getattr(key_node, "value", "...")}": ...'
            if isinstance(key_node, ScalarNode)
            else "use a plain word as the key",
        )

    def unknown_key(
        self,
        entry: _Entry,
        known: Sequence[str],
        what: str,
        hint: Callable[[str], str] | None,
    ) -> NoReturn:
        fix = hint(entry.key) if hint is not None else ""
        if not fix:
            close = difflib.get_close_matches(entry.key, known, n=1, cutoff=0.6)
            fix = (
                f"did you mean '{close[0]}'?"
                if close
                else f"the keys allowed here are: {', '.join(known)}"
            )
        self.fail(
            entry.key_node, entry.path, f"unknown key '{entry.key}' in {what}", fix
        )

    @contextmanager
    def guard(self, node: Node, path: str) -> Iterator[None]:
        """Refuse YAML aliases that contain themselves, which would never end."""
        if id(node) in self.visiting:
            self.fail(
                node,
                path,
                "this value contains itself through a YAML alias",
                "an anchor (&name) cannot be used (*name) inside its own value",
            )
        self.visiting.add(id(node))
        try:
            yield
        finally:
            self.visiting.discard(id(node))

    def sequence(self, entry: _Entry, what: str, example: str) -> list[_Entry]:
        node = entry.node
        if not isinstance(node, SequenceNode):
            self.wrong_type(entry, f"a list of {what}", example)
        if not node.value:
            self.fail(
                node,
                entry.path,
                f"'{_last(entry.path)}' is empty; it must list one or more {what}",
                f"write {example}",
            )
        return [
            _Entry(str(i), item, item, f"{entry.path}[{i}]")
            for i, item in enumerate(node.value)
        ]

    # -- scalars --------------------------------------------------------------------

    def text(self, entry: _Entry, *, nonempty: bool = False) -> str:
        value = self.scalar(entry)
        if not isinstance(value, str):
            self.wrong_type(entry, "text", f'{_last(entry.path)}: "..."')
        if nonempty and not value.strip():
            self.fail(
                entry.node, entry.path, f"'{_last(entry.path)}' must not be empty"
            )
        return value

    def name(self, entry: _Entry) -> str:
        """A name: any single value, as written, not blank."""
        name = self.as_written(entry)
        if not name.strip():
            self.bad(entry, f"'{_last(entry.path)}' must not be empty")
        return name

    def as_written(self, entry: _Entry) -> str:
        """A scalar's text exactly as written: ``no`` stays "no", ``010`` "010"."""
        value = self.scalar(entry)
        if value is _NOT_SCALAR or value is None:
            self.wrong_type(entry, "a single value", f'{_last(entry.path)}: "..."')
        if not isinstance(value, str | int | float | bool):
            self.wrong_type(entry, "text or a number", f'{_last(entry.path)}: "..."')
        return str(entry.node.value)

    def integer(self, entry: _Entry, minimum: int, example: str) -> int:
        value = self.scalar(entry)
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(entry, "an integer", example)
        if value < minimum:
            self.bad(
                entry,
                f"'{_last(entry.path)}' is {value}, below the minimum of {minimum}",
                f"write {example}",
            )
        return value

    def number(self, entry: _Entry, example: str, *, positive: bool = False) -> float:
        value = self.scalar(entry)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong_type(entry, "a number", example)
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            self.bad(
                entry,
                f"'{_last(entry.path)}' must be a finite number",
                f"write {example}",
            )
        if number < 0 or (positive and number == 0):
            bound = "above zero" if positive else "zero or more"
            self.bad(
                entry,
                f"'{_last(entry.path)}' is {value}; it must be {bound}",
                f"write {example}",
            )
        return number

    def boolean(self, entry: _Entry) -> bool:
        value = self.scalar(entry)
        if not isinstance(value, bool):
            self.wrong_type(entry, "true or false", f"{_last(entry.path)}: true")
        return value

    def choice(self, entry: _Entry, choices: Sequence[str]) -> str:
        value = self.scalar(entry)
        if isinstance(value, str) and value in choices:
            return value
        options = " or ".join(choices)
        if not isinstance(value, str):
            self.wrong_type(entry, options, f"{_last(entry.path)}: {choices[0]}")
        close = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.5)
        self.bad(
            entry,
            f"'{_last(entry.path)}' is {value!r}; it must be {options}",
            f"did you mean '{close[0]}'?" if close else f"write one of: {options}",
        )

    def duration(self, entry: _Entry, *, positive: bool) -> float:
        value = self.scalar(entry)
        example = f"{_last(entry.path)}: 10s"
        if value is _NOT_SCALAR or value is None:
            self.wrong_type(entry, "a duration", example)
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            self.bad(entry, exc.problem, exc.fix)
        if positive and seconds == 0:
            self.bad(
                entry,
                f"'{_last(entry.path)}' must be longer than zero",
                f"write {example}",
            )
        return seconds

    # -- environment, target, variables --------------------------------------------

    def expand_env(self, entry: _Entry, text: str) -> tuple[str, bool]:
        """``text`` with ``${NAME}`` and ``${NAME:-default}`` replaced; True if any
        reference was found. ``$${`` stands for a literal ``${``."""
        out: list[str] = []
        position = 0
        used = False
        while (match := _ENV_START.search(text, position)) is not None:
            out.append(text[position : match.start()])
            position = match.end()
            if match.group(1):
                out.append("${")
                continue
            close = text.find("}", position)
            if close < 0:
                self.bad(
                    entry,
                    f"'${{' at character {match.start() + 1} is never closed by '}}'",
                    "write ${NAME} or ${NAME:-default}; write $${ for a literal ${",
                )
            name, has_default, default = text[position:close].partition(":-")
            if not _ENV_NAME.fullmatch(name):
                self.bad(
                    entry,
                    f"'${{{text[position:close]}}}' does not name an environment "
                    "variable",
                    "write ${NAME} or ${NAME:-default}, NAME being letters, digits "
                    "and '_'",
                )
            value = self.env.get(name)
            if has_default and not value:
                value = default
            if value is None:
                self.bad(
                    entry,
                    f"environment variable {name} is not set",
                    f"export {name}=... before the run, or give a default: "
                    f"${{{name}:-value}}",
                )
            out.append(value)
            position = close + 1
            used = True
        out.append(text[position:])
        return "".join(out), used

    def target(self, top: dict[str, _Entry], root: Node, override: str | None) -> str:
        if override is not None:
            try:
                return validate_target(override)
            except ValueError as exc:
                raise ProfileError(
                    Location(COMMAND_LINE, None, "--target"), str(exc), TARGET_FIX
                ) from None
        if "target" not in top:
            self.fail(
                root,
                "target",
                "'target' is required at the top of the profile but missing",
                "add target: http://127.0.0.1:13010, or pass --target on the "
                "command line",
            )
        entry = top["target"]
        url, _ = self.expand_env(entry, self.text(entry, nonempty=True))
        try:
            return validate_target(url)
        except ValueError as exc:
            self.bad(entry, str(exc), TARGET_FIX)

    def variables(self, entry: _Entry | None) -> tuple[Variable, ...]:
        if entry is None or _is_null(entry.node):
            return ()
        out = []
        for item in self.variable_items(entry):
            written = self.as_written(item)
            if "{{" in written:
                self.bad(
                    item,
                    "variable values are used as written; a '{{ }}' template in "
                    "one would be sent literally",
                    "put the template in the step's path, headers or body instead",
                )
            value, from_env = self.expand_env(item, written)
            secret = from_env or is_secret_name(item.key)
            source = written if from_env else ""
            out.append(Variable(item.key, value, secret, source))
        return tuple(out)

    def variable_items(self, entry: _Entry) -> Iterator[_Entry]:
        """The entries of a ``variables`` mapping, each name checked to be usable
        in a template."""
        for item in self.mapping(entry.node, entry.path, None, "variables").values():
            if not NAME_PATTERN.fullmatch(item.key):
                self.fail(
                    item.key_node,
                    item.path,
                    f"variable name {item.key!r} cannot be used in a template",
                    "use letters, digits and '_', not starting with a digit",
                )
            yield item

    # -- http -------------------------------------------------------------------------

    def http(self, entry: _Entry | None, defined: set[str]) -> HttpSettings:
        if entry is None or _is_null(entry.node):
            return HttpSettings()
        http = self.mapping(entry.node, entry.path, HTTP_KEYS, "http")
        settings = HttpSettings()
        if "timeout" in http:
            timeout_s = self.duration(http["timeout"], positive=True)
            settings = replace(settings, timeout_s=timeout_s)
        if "connect_timeout" in http:
            connect_s = self.duration(http["connect_timeout"], positive=True)
            settings = replace(settings, connect_timeout_s=connect_s)
        if "verify_tls" in http:
            settings = replace(settings, verify_tls=self.boolean(http["verify_tls"]))
        if "engine" in http:
            engine: Engine = "fast"
            if self.choice(http["engine"], _ENGINES) == "httpx":
                engine = "httpx"
            settings = replace(settings, engine=engine)
        if "http2" in http:
            settings = replace(settings, http2=self.boolean(http["http2"]))
            if settings.http2 and settings.engine == "fast":
                self.fast_engine_conflict(http["http2"], "HTTP/2")
        if "proxy" in http and not _is_null(http["proxy"].node):
            settings = replace(settings, proxy=self.proxy(http["proxy"]))
            if settings.engine == "fast":
                self.fast_engine_conflict(http["proxy"], "a proxy")
        if "headers" in http:
            headers = self.headers(http["headers"], defined, None)
            settings = replace(settings, headers=headers)
        return settings

    def fast_engine_conflict(self, entry: _Entry, feature: str) -> NoReturn:
        self.bad(
            entry,
            f"the fast engine does not support {feature}",
            "add engine: httpx under http, or remove this key",
        )

    def proxy(self, entry: _Entry) -> str:
        url, _ = self.expand_env(entry, self.text(entry, nonempty=True))
        parts = urlsplit(url)
        if parts.scheme not in _PROXY_SCHEMES or not parts.hostname:
            self.bad(
                entry,
                f"proxy {parts.scheme}://{parts.hostname or ''}... is not a proxy URL",
                "write it like http://127.0.0.1:3128 (schemes: "
                f"{', '.join(_PROXY_SCHEMES)})",
            )
        return url

    def headers(
        self, entry: _Entry, defined: set[str], later: Mapping[str, str] | None
    ) -> tuple[tuple[str, str], ...]:
        if _is_null(entry.node):
            return ()
        seen: dict[str, str] = {}
        out = []
        for item in self.mapping(entry.node, entry.path, None, "headers").values():
            lowered = item.key.lower()
            if not _HEADER_NAME.fullmatch(item.key):
                self.fail(
                    item.key_node,
                    item.path,
                    f"{item.key!r} is not a valid header name",
                    "use letters, digits and '-', as in X-Request-Id",
                )
            if lowered in CLIENT_HEADERS:
                self.fail(
                    item.key_node,
                    item.path,
                    f"the client sets the {item.key} header itself",
                    "remove it"
                    + ("; the host comes from target" if lowered == "host" else ""),
                )
            if lowered in seen:
                self.fail(
                    item.key_node,
                    item.path,
                    f"header {item.key!r} is already set here as {seen[lowered]!r}",
                    "header names ignore case; keep one",
                )
            seen[lowered] = item.key
            value = self.as_written(item)
            self.no_env_reference(item, value)
            if _BAD_HEADER_CHARS.search(value):
                self.bad(
                    item,
                    "a header value cannot hold line breaks or NUL characters",
                    "write the value on one line",
                )
            template = self.template(item, value, defined, later)
            try:
                template.pattern.encode("latin-1")
            except UnicodeEncodeError:
                self.bad(
                    item,
                    "header values are sent as Latin-1 and this one has characters "
                    "outside it",
                    "percent-encode or remove the non-Latin-1 characters",
                )
            out.append((item.key, value))
        return tuple(out)

    def no_env_reference(self, entry: _Entry, text: str) -> None:
        match = re.search(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)
        if match:
            name = match.group(1)
            self.bad(
                entry,
                f"environment references like ${{{name}}} are expanded only in "
                "variables, target and http.proxy",
                f"add {name.lower()}: ${{{name}}} under variables and write "
                f"{{{{ {name.lower()} }}}} here",
            )

    def template(
        self,
        entry: _Entry,
        text: str,
        defined: set[str],
        later: Mapping[str, str] | None,
    ) -> Template:
        """Compile ``text`` and check that every name it reads is defined here.

        ``later`` maps names captured by this or later steps of the scenario to the
        step capturing them, to explain why such a name is not yet available.
        """
        try:
            template = compile_template(text)
        except TemplateSyntaxError as exc:
            self.bad(entry, exc.problem, exc.fix)
        for name in sorted(template.names - defined):
            problem = f"'{{{{ {name} }}}}' names an undefined variable '{name}'"
            if later is not None and name in later:
                problem += (
                    f"; it is captured by {later[name]}, and a step can only use "
                    "names captured by steps before it"
                )
            known = ", ".join(sorted(defined)) if defined else "none"
            if later is None:
                fix = (
                    f"names defined here (the variables): {known}; define '{name}' "
                    "under variables (default headers cannot use captures)"
                )
            else:
                fix = (
                    "names defined here (the variables and earlier steps' "
                    f"captures): {known}; define '{name}' under variables or "
                    "capture it in an earlier step"
                )
            self.bad(entry, problem, fix)
        return template

    # -- load model --------------------------------------------------------------------

    def load_model(self, entry: _Entry) -> LoadModel:
        entries = self.mapping(entry.node, entry.path, None, "load")
        kind = self.choice(
            self.require(entries, "model", entry.node, "load"), ("open", "closed")
        )
        if kind == "open":
            self.check_keys(entries, OPEN_KEYS, CLOSED_KEYS, "open")
            return self.open_model(entries, entry)
        self.check_keys(entries, CLOSED_KEYS, OPEN_KEYS, "closed")
        return self.closed_model(entries, entry)

    def check_keys(
        self,
        entries: dict[str, _Entry],
        known: Sequence[str],
        other: Sequence[str],
        kind: str,
    ) -> None:
        other_kind = "closed" if kind == "open" else "open"

        own = ", ".join(k for k in known if k != "model")

        def hint(key: str) -> str:
            if key in other:
                return (
                    f"'{key}' belongs to the {other_kind} model; set model: "
                    f"{other_kind}, or use {own}"
                )
            return ""

        for item in entries.values():
            if item.key not in known:
                self.unknown_key(item, known, f"load (model: {kind})", hint)

    def open_model(self, entries: dict[str, _Entry], entry: _Entry) -> OpenModel:
        arrivals: Arrivals = "uniform"
        poisson = "arrivals" in entries and (
            self.choice(entries["arrivals"], _ARRIVALS) == "poisson"
        )
        if poisson:
            arrivals = "poisson"
        max_vus = DEFAULT_MAX_VUS
        if "max_vus" in entries:
            max_vus = self.integer(entries["max_vus"], 1, "max_vus: 100")
        example = "phases: [{duration: 1m, rate: 10}]"
        phases_entry = self.require(entries, "phases", entry.node, "load")
        phases = tuple(
            self.phase(item) for item in self.sequence(phases_entry, "phases", example)
        )
        return OpenModel(phases=phases, arrivals=arrivals, max_vus=max_vus)

    def phase(self, item: _Entry) -> Phase:
        entries = self.mapping(item.node, item.path, PHASE_KEYS, "a phase")
        duration_s = self.duration(
            self.require(entries, "duration", item.node, item.path), positive=True
        )
        rate = self.number(
            self.require(entries, "rate", item.node, item.path), "rate: 10"
        )
        ramp_to = None
        if "ramp_to" in entries:
            ramp_to = self.number(entries["ramp_to"], "ramp_to: 50")
        name = self.name(entries["name"]) if "name" in entries else ""
        return Phase(duration_s=duration_s, rate=rate, ramp_to=ramp_to, name=name)

    def closed_model(self, entries: dict[str, _Entry], entry: _Entry) -> ClosedModel:
        ramp_down_s = DEFAULT_GRACEFUL_RAMP_DOWN_S
        if "graceful_ramp_down" in entries:
            ramp_down_s = self.duration(entries["graceful_ramp_down"], positive=False)
        example = "stages: [{duration: 1m, target: 10}]"
        stages_entry = self.require(entries, "stages", entry.node, "load")
        stages = tuple(
            self.stage(item) for item in self.sequence(stages_entry, "stages", example)
        )
        return ClosedModel(stages=stages, graceful_ramp_down_s=ramp_down_s)

    def stage(self, item: _Entry) -> Stage:
        entries = self.mapping(item.node, item.path, STAGE_KEYS, "a stage")
        duration_s = self.duration(
            self.require(entries, "duration", item.node, item.path), positive=True
        )
        target = self.integer(
            self.require(entries, "target", item.node, item.path), 0, "target: 10"
        )
        name = self.name(entries["name"]) if "name" in entries else ""
        return Stage(duration_s=duration_s, target=target, name=name)

    # -- thresholds --------------------------------------------------------------------

    def thresholds(
        self, entry: _Entry | None
    ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[ThresholdRule, ...]]:
        """The expressions as written, by metric key, and the same parsed."""
        if entry is None or _is_null(entry.node):
            return (), ()
        written = []
        rules: list[ThresholdRule] = []
        for item in self.mapping(entry.node, entry.path, None, "thresholds").values():
            example = f'{item.key}: ["p(95)<500"]'
            expressions = []
            for part in self.sequence(item, "expressions", example):
                rule = self.threshold_rule(item, part)
                expressions.append(rule.threshold.source)
                rules.append(rule)
            written.append((item.key, tuple(expressions)))
        return tuple(written), tuple(rules)

    def threshold_rule(self, metric: _Entry, part: _Entry) -> ThresholdRule:
        """One threshold: an expression, or a mapping with k6's abort settings."""
        abort_on_fail = False
        delay_s = 0.0
        expression_entry = part
        if isinstance(part.node, MappingNode):
            fields = self.mapping(part.node, part.path, THRESHOLD_KEYS, "a threshold")
            for snake, camel in (
                ("abort_on_fail", "abortOnFail"),
                ("delay_abort_eval", "delayAbortEval"),
            ):
                if snake in fields and camel in fields:
                    second = fields[camel]
                    self.fail(
                        second.key_node,
                        second.path,
                        f"'{snake}' and '{camel}' are the same setting",
                        "keep one of them",
                    )
            example = '{threshold: "p(95)<500", abort_on_fail: true}'
            if "threshold" not in fields:
                self.fail(
                    part.node,
                    part.path,
                    "a threshold written as a mapping needs 'threshold', the "
                    "expression",
                    f"write {example}",
                )
            expression_entry = fields["threshold"]
            abort = fields.get("abort_on_fail") or fields.get("abortOnFail")
            if abort is not None:
                abort_on_fail = self.boolean(abort)
            delay = fields.get("delay_abort_eval") or fields.get("delayAbortEval")
            if delay is not None:
                delay_s = self.duration(delay, positive=False)
        elif not isinstance(part.node, ScalarNode):
            self.wrong_type(
                part, "an expression or a mapping", '"p(95)<500" or {threshold: ...}'
            )
        expression = self.text(expression_entry, nonempty=True)
        try:
            threshold = parse_threshold(metric.key, expression)
        except ThresholdSyntaxError as exc:
            if exc.part == "metric":
                self.fail(metric.key_node, metric.path, exc.problem, exc.fix)
            self.bad(expression_entry, exc.problem, exc.fix)
        return ThresholdRule(threshold, abort_on_fail, delay_s)

    # -- slos --------------------------------------------------------------------------

    def slos(self, entry: _Entry | None) -> Slos | None:
        if entry is None or _is_null(entry.node):
            return None
        self.mapping(entry.node, entry.path, None, "slos")
        block = self.json_value(entry, None, None)
        try:
            return parse_slos(block)
        except SloSpecError as exc:
            node, path = self.node_at(entry, exc.path, on_key=exc.on_key)
            self.fail(node, path, exc.problem, exc.fix)

    def node_at(
        self, entry: _Entry, keys: Sequence[str], *, on_key: bool
    ) -> tuple[Node, str]:
        """The node and field path reached from ``entry`` through mapping ``keys``;
        the key's own node when ``on_key``. Stops where the keys leave the tree."""
        node, key_node, path = entry.node, entry.node, entry.path
        for key in keys:
            if not isinstance(node, MappingNode):
                break
            found = self.mapping(node, path, None, "a mapping").get(key)
            if found is None:
                break
            node, key_node, path = found.node, found.key_node, found.path
        return (key_node if on_key else node), path

    # -- monitor ----------------------------------------------------------------------

    def monitor(self, entry: _Entry | None) -> MonitorSettings:
        if entry is None or _is_null(entry.node):
            return MonitorSettings()
        fields = self.mapping(entry.node, entry.path, MONITOR_KEYS, "monitor")
        settings = MonitorSettings()
        if "enabled" in fields:
            settings = replace(settings, enabled=self.boolean(fields["enabled"]))
        if "interval" in fields:
            interval_s = self.duration(fields["interval"], positive=True)
            if interval_s < 0.1:
                self.bad(
                    fields["interval"],
                    f"a monitor interval of {interval_s:g}s would cost more than it "
                    "shows",
                    "write interval: 1s (0.1s at least)",
                )
            settings = replace(settings, interval_s=interval_s)
        if "target" in fields and not _is_null(fields["target"].node):
            settings = replace(settings, target=self.monitor_target(fields["target"]))
        sources: dict[str, str] = {}
        prometheus = []
        for item in self.one_or_more(fields.get("prometheus")):
            url, metrics, timeout_s, source = self.remote(
                item, PROMETHEUS_KEYS, "prometheus", sources
            )
            prometheus.append(PrometheusSource(url, metrics, timeout_s, source))
        postgres = tuple(
            PostgresSource(dsn, source=source)
            for dsn, _, _, source in (
                self.remote(item, POSTGRES_KEYS, "postgres", sources)
                for item in self.one_or_more(fields.get("postgres"))
            )
        )
        redis = tuple(
            RedisSource(url, source=source)
            for url, _, _, source in (
                self.remote(item, REDIS_KEYS, "redis", sources)
                for item in self.one_or_more(fields.get("redis"))
            )
        )
        return replace(
            settings, prometheus=tuple(prometheus), postgres=postgres, redis=redis
        )

    def one_or_more(self, entry: _Entry | None) -> list[_Entry]:
        """A mapping, or a list of mappings (several servers of one kind)."""
        if entry is None or _is_null(entry.node):
            return []
        if isinstance(entry.node, SequenceNode):
            return self.sequence(entry, "mappings", f"{_last(entry.path)}: [{{...}}]")
        return [entry]

    def monitor_target(self, entry: _Entry) -> MonitorTarget:
        fields = self.mapping(
            entry.node, entry.path, MONITOR_TARGET_KEYS, "monitor.target"
        )
        ways = [k for k in ("pid", "port", "name", "command") if k in fields]
        if len(ways) != 1:
            problem = (
                "monitor.target says how to find the target in more than one way: "
                + ", ".join(ways)
                if ways
                else "monitor.target must say how to find the target"
            )
            self.fail(
                entry.node,
                entry.path,
                problem,
                "write one of {pid: 1234}, {port: 8080}, {name: nginx} or "
                '{command: "...", ready_url: http://127.0.0.1:8080/healthz}',
            )
        target = MonitorTarget()
        if "pid" in fields:
            target = replace(target, pid=self.integer(fields["pid"], 1, "pid: 1234"))
        if "port" in fields:
            port = self.integer(fields["port"], 1, "port: 8080")
            if port > 65535:
                self.bad(fields["port"], f"port {port} is above 65535")
            target = replace(target, port=port)
        if "name" in fields:
            target = replace(target, name=self.text(fields["name"], nonempty=True))
        command_only = ("ready_url", "ready_timeout", "stop_grace")
        if "command" not in fields:
            for key in command_only:
                if key in fields:
                    self.fail(
                        fields[key].key_node,
                        fields[key].path,
                        f"'{key}' applies only to a target started with 'command'",
                        f"remove {key}, or start the target with command: ...",
                    )
            return target
        command = self.command(fields["command"])
        if "ready_url" not in fields:
            self.fail(
                entry.node,
                _join(entry.path, "ready_url"),
                "a target started with 'command' needs 'ready_url', which it "
                "answers once it is ready",
                "add ready_url: http://127.0.0.1:8080/healthz",
            )
        ready_url = self.http_url(fields["ready_url"])
        target = replace(target, command=command, ready_url=ready_url)
        if "ready_timeout" in fields:
            seconds = self.duration(fields["ready_timeout"], positive=True)
            target = replace(target, ready_timeout_s=seconds)
        if "stop_grace" in fields:
            seconds = self.duration(fields["stop_grace"], positive=False)
            target = replace(target, stop_grace_s=seconds)
        return target

    def command(self, entry: _Entry) -> tuple[str, ...]:
        example = 'command: "python app.py --port 8080"'
        if isinstance(entry.node, SequenceNode):
            words = [
                self.text(item, nonempty=True)
                for item in self.sequence(entry, "words", example)
            ]
        else:
            text, _ = self.expand_env(entry, self.text(entry, nonempty=True))
            try:
                words = shlex.split(text)
            except ValueError as exc:
                self.bad(entry, f"cannot split the command: {exc}", "check its quotes")
        if not words:
            self.bad(entry, "the command is empty", f"write {example}")
        return tuple(words)

    def http_url(self, entry: _Entry) -> str:
        url, _ = self.expand_env(entry, self.text(entry, nonempty=True))
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.bad(
                entry,
                f"{_last(entry.path)} {parts.scheme}://{parts.hostname or ''}... is "
                "not an http:// or https:// URL with a host",
                f"write it like {_last(entry.path)}: http://127.0.0.1:8080/healthz",
            )
        return url

    def remote(
        self, item: _Entry, known: Sequence[str], kind: str, sources: dict[str, str]
    ) -> tuple[str, tuple[str, ...], float, str]:
        """One remote sampler (``kind``), checked: its address (URL or DSN), extra
        metrics, timeout and source; ``sources`` holds the source names so far."""
        fields = self.mapping(item.node, item.path, known, f"monitor.{kind}")
        address = "dsn" if kind == "postgres" else "url"
        value_entry = self.require(fields, address, item.node, item.path)
        if kind == "prometheus":
            value = self.http_url(value_entry)
        else:
            value, _ = self.expand_env(
                value_entry, self.text(value_entry, nonempty=True)
            )
            schemes = ("redis", "rediss", "unix")
            if kind == "redis" and urlsplit(value).scheme not in schemes:
                self.bad(
                    value_entry,
                    "the redis url must start with redis://, rediss:// or unix://",
                    "write url: redis://127.0.0.1:6379/0 (a password comes from "
                    "the environment: redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0)",
                )
        names: list[str] = []
        if "metrics" in fields:
            example = "metrics: [process_open_fds]"
            for metric in self.sequence(fields["metrics"], "metric names", example):
                name = self.text(metric, nonempty=True)
                if not _METRIC_NAME.fullmatch(name):
                    self.bad(
                        metric,
                        f"{name!r} is not a Prometheus metric name",
                        "use letters, digits, '_' and ':', not starting with a digit",
                    )
                names.append(name)
        timeout_s = DEFAULT_PROMETHEUS_TIMEOUT_S
        if "timeout" in fields:
            timeout_s = self.duration(fields["timeout"], positive=True)
        source_entry = fields.get("source")
        source = kind if source_entry is None else self.name(source_entry)
        reserved = source in _MONITOR_SOURCES or source.startswith("harness-worker-")
        if source in sources or reserved:
            where = sources.get(source, "the harness's own samplers")
            self.fail(
                (source_entry or item).node,
                _join(item.path, "source"),
                f"source {source!r} is already used by {where}",
                "give each sampler its own source: name, e.g. source: "
                f"{kind}-2; the rows of a run are told apart by it",
            )
        sources[source] = item.path
        return value, tuple(names), timeout_s, source

    # -- data files ------------------------------------------------------------------

    def data(self, entry: _Entry | None, defined: set[str]) -> tuple[DataSource, ...]:
        """The ``data`` block: one file as a mapping, or a list of them."""
        if entry is None or _is_null(entry.node):
            return ()
        example = "data: {file: users.csv}"
        items = (
            self.sequence(entry, "data files", example)
            if isinstance(entry.node, SequenceNode)
            else [entry]
        )
        taken = set(defined)
        out = []
        for item in items:
            fields = self.mapping(item.node, item.path, DATA_KEYS, "a data file")
            source = self.data_source(item, fields, taken)
            taken.update(source.columns)
            out.append(source)
        return tuple(out)

    def data_source(
        self,
        item: _Entry,
        fields: dict[str, _Entry],
        taken: set[str],
        *,
        header_default: bool = True,
        order_default: DataOrder = "sequence",
        reuse_default: bool = False,
        keys: Mapping[str, str] | None = None,
    ) -> DataSource:
        """One data file from its fields (native names: ``file``, ``format``,
        ``columns``, ``header``, ``delimiter``, ``order``, ``reuse``); the Artillery
        translator passes its own entries under these names, so errors point at
        what the user wrote, and ``keys`` maps the native names to the ones it
        writes, so fixes name them too. The file's first line or schema is read to
        learn the column names, which become template names, and the start of the
        file is parsed as the workers will (:func:`check_data_file`): a malformed
        line or a file without data rows is refused here rather than in the run."""
        shown = dict(keys or {})
        file_entry = self.require(fields, "file", item.node, item.path)
        written = self.text(file_entry, nonempty=True)
        path = Path(written)
        if not path.is_absolute():
            path = Path(self.file).resolve().parent / path
        if not path.is_file():
            self.bad(
                file_entry,
                f"data file {written!r} does not exist (looked for {path})",
                f"a relative path is read from the folder of {Path(self.file).name}",
            )
        fmt: DataFormat
        suffix = path.suffix.lower()
        if "format" in fields:
            chosen = self.choice(fields["format"], _FORMATS)
            fmt = "parquet" if chosen == "parquet" else "csv"
        elif suffix in (".parquet", ".pq"):
            fmt = "parquet"
        elif suffix in (".csv", ".tsv", ".txt"):
            fmt = "csv"
        else:
            self.bad(
                file_entry,
                f"cannot tell the format of {written!r} from its extension",
                "add format: csv or format: parquet"
                if keys is None
                else "give the file a .csv (or .parquet) extension",
            )
        order: DataOrder = order_default
        if "order" in fields:
            chosen = self.choice(fields["order"], _ORDERS)
            order = "random" if chosen == "random" else "sequence"
        reuse = self.boolean(fields["reuse"]) if "reuse" in fields else reuse_default
        if fmt == "csv":
            columns, header, delimiter = self.csv_columns(
                file_entry, fields, str(path), header_default, suffix, shown
            )
            file_columns: tuple[str, ...] = ()
        else:
            columns = self.parquet_columns(file_entry, fields, str(path), shown)
            file_columns, header, delimiter = columns, False, ","
        names_entry = fields.get("columns", file_entry)
        seen: set[str] = set()
        columns_key = shown.get("columns", "columns")
        for name in columns:
            if not NAME_PATTERN.fullmatch(name):
                self.bad(
                    names_entry,
                    f"column {name!r} of {written!r} cannot be used in a template",
                    "name the columns with letters, digits and '_' (not starting "
                    f"with a digit), in the file or with {columns_key}: [...]",
                )
            if name in seen or name in taken:
                self.bad(
                    names_entry,
                    f"column name {name!r} of {written!r} is already used by "
                    + ("this file" if name in seen else "a variable or another file"),
                    "give each column and variable its own name",
                )
            seen.add(name)
        source = DataSource(
            path=str(path),
            format=fmt,
            columns=columns,
            file_columns=file_columns,
            order=order,
            reuse=reuse,
            header=header,
            delimiter=delimiter,
            secret_columns=tuple(c for c in columns if is_secret_name(c)),
            location=Location(self.file, item.node.start_mark.line + 1, item.path),
        )
        try:
            check_data_file(source)
        except FeederError as exc:
            fix = "correct the line, or remove it; line numbers count every line"
            if isinstance(exc, NoDataRows):
                fix = "add rows to the file, or point at the file that has them"
                if header:
                    fix += (
                        f"; with {shown.get('header', 'header')}: false the first "
                        "line is read as data"
                    )
            self.bad(file_entry, str(exc), fix)
        return source

    def csv_columns(
        self,
        file_entry: _Entry,
        fields: dict[str, _Entry],
        path: str,
        header_default: bool,
        suffix: str,
        shown: Mapping[str, str],
    ) -> tuple[tuple[str, ...], bool, str]:
        """Column names, header flag and delimiter of a CSV data file."""
        columns_key = shown.get("columns", "columns")
        header = header_default
        if "header" in fields:
            header = self.boolean(fields["header"])
        delimiter = "\t" if suffix == ".tsv" else ","
        if "delimiter" in fields:
            delimiter = self.text(fields["delimiter"])
            if len(delimiter) != 1 or delimiter in '\r\n"':
                self.bad(
                    fields["delimiter"],
                    f"the delimiter must be one character, not {delimiter!r}",
                    'write delimiter: ";" (or "\\t" for tabs)',
                )
        try:
            first = csv_first_line(path, delimiter)
        except FeederError as exc:
            self.bad(file_entry, str(exc), "check the file")
        if "columns" in fields:
            entry = fields["columns"]
            names = tuple(
                self.text(part, nonempty=True)
                for part in self.sequence(
                    entry, "column names", f"{columns_key}: [id, email]"
                )
            )
            if len(names) != len(first):
                self.bad(
                    entry,
                    f"{len(names)} column names are given but the file's first line "
                    f"has {len(first)} fields",
                    "name every column of the file, in order",
                )
            return names, header, delimiter
        if not header:
            self.bad(
                file_entry,
                "a CSV file without a header line needs its columns named",
                f"add {columns_key}: [id, email, ...], one name per field",
            )
        return tuple(first), header, delimiter

    def parquet_columns(
        self,
        file_entry: _Entry,
        fields: dict[str, _Entry],
        path: str,
        shown: Mapping[str, str],
    ) -> tuple[str, ...]:
        """The Parquet columns to read (all, or those listed in ``columns``)."""
        columns_key = shown.get("columns", "columns")
        for key in ("header", "delimiter"):
            if key in fields:
                written = shown.get(key, key)
                self.fail(
                    fields[key].key_node,
                    fields[key].path,
                    f"'{written}' applies to CSV files, and this file is Parquet",
                    f"remove '{written}'",
                )
        try:
            kinds = parquet_columns(path)
        except FeederError as exc:
            self.bad(file_entry, str(exc), "check the file")
        names = tuple(kinds)
        names_entry = file_entry
        if "columns" in fields:
            names_entry = fields["columns"]
            names = tuple(
                self.text(part, nonempty=True)
                for part in self.sequence(
                    names_entry, "column names", f"{columns_key}: [id, email]"
                )
            )
            for name in names:
                if name not in kinds:
                    self.bad(
                        names_entry,
                        f"the Parquet file has no column {name!r}",
                        f"its columns are: {', '.join(kinds)}",
                    )
        for name in names:
            if kinds[name] not in TEXT_KINDS:
                self.bad(
                    names_entry,
                    f"column {name!r} holds {kinds[name]}, which is not sent as text",
                    "list only text, integer, number or boolean columns in "
                    f"{columns_key}: [...], or convert this one when writing the "
                    "file",
                )
        return names

    # -- scenarios and steps -----------------------------------------------------------

    def setup(self, entry: _Entry | None, defined: set[str]) -> tuple[Step, ...]:
        """``setup: {flow: [...]}``: steps run once per worker before the load."""
        if entry is None:
            return ()
        entries = self.mapping(entry.node, entry.path, SETUP_KEYS, "the setup")
        flow = self.require(entries, "flow", entry.node, entry.path)
        items = self.sequence(flow, "steps", "setup: {flow: [{path: /login}]}")
        return tuple(self.flow_steps(items, set(defined), self.captured_by(items)))

    def scenarios(self, entry: _Entry, defined: set[str]) -> tuple[Scenario, ...]:
        example = "scenarios: [{name: browse, flow: [{path: /}]}]"
        names: dict[str, str] = {}
        out = []
        for item in self.sequence(entry, "scenarios", example):
            scenario = self.scenario(item, defined)
            if scenario.name in names:
                name_node = self.mapping(item.node, item.path, None, "a scenario")[
                    "name"
                ]
                self.bad(
                    name_node,
                    f"scenario name {scenario.name!r} is already used by "
                    f"{names[scenario.name]}",
                    "give each scenario its own name; records are grouped by it",
                )
            names[scenario.name] = item.path
            out.append(scenario)
        return tuple(out)

    def scenario(self, item: _Entry, defined: set[str]) -> Scenario:
        entries = self.mapping(item.node, item.path, SCENARIO_KEYS, "a scenario")
        name = self.name(self.require(entries, "name", item.node, item.path))
        weight = 1.0
        if "weight" in entries:
            weight = self.number(entries["weight"], "weight: 1", positive=True)
        think_s = 0.0
        if "think" in entries:
            think_s = self.duration(entries["think"], positive=False)
        flow = self.require(entries, "flow", item.node, item.path)
        items = self.sequence(flow, "steps", "flow: [{path: /}]")
        later = self.captured_by(items)
        steps = self.flow_steps(items, set(defined), later)
        location = Location(self.file, item.node.start_mark.line + 1, item.path)
        return Scenario(name, weight, tuple(steps), think_s, location)

    def flow_steps(
        self, items: list[_Entry], scope: set[str], later: dict[str, str]
    ) -> list[Step]:
        """The steps of a flow, each ``loop`` expanded into its steps repeated
        ``count`` times; ``scope`` gains each step's captures as it goes."""
        steps: list[Step] = []
        for step_item in items:
            loop = self.loop(step_item)
            if loop is None:
                step = self.step(step_item, scope, later)
                scope.update(c.name for c in step.captures)
                steps.append(step)
                continue
            count, body = loop
            # The first pass is checked with the fewest names defined, so it is the
            # strictest; the other passes are copies of it. The size is checked
            # before the copies are made: a count of a billion must not build them.
            once = self.flow_steps(body, scope, later)
            if len(steps) + len(once) * count > MAX_STEPS:
                self.bad(
                    step_item,
                    f"with its loops expanded this flow has over {MAX_STEPS} steps "
                    f"({len(once)} step(s) x count {count})",
                    "lower the loop's count; a long run repeats the scenario anyway",
                )
            steps.extend(once * count)
        return steps

    def loop(self, item: _Entry) -> tuple[int, list[_Entry]] | None:
        """``count`` and the steps of a ``{loop: {count: N, flow: [...]}}`` step, or
        None when the item is a request step."""
        if not isinstance(item.node, MappingNode):
            return None
        entries = self.entries(item.node, item.path)
        if "loop" not in entries:
            return None
        for entry in entries.values():
            if entry.key != "loop":
                self.fail(
                    entry.key_node,
                    entry.path,
                    f"a loop step holds only 'loop', but '{entry.key}' is set too",
                    "put the request in the loop's flow, or in a step of its own",
                )
        loop = entries["loop"]
        fields = self.mapping(loop.node, loop.path, LOOP_KEYS, "a loop")
        count = self.integer(
            self.require(fields, "count", loop.node, loop.path), 1, "count: 3"
        )
        body = self.require(fields, "flow", loop.node, loop.path)
        return count, self.sequence(body, "steps", "flow: [{path: /}]")

    def captured_by(self, items: list[_Entry]) -> dict[str, str]:
        """Which step captures each name, for messages about using it too early."""
        out: dict[str, str] = {}
        for item in items:
            if not isinstance(item.node, MappingNode):
                continue
            for key_node, value_node in item.node.value:
                key = getattr(key_node, "value", None)
                if key == "capture" and isinstance(value_node, MappingNode):
                    for name_node, _ in value_node.value:
                        out.setdefault(str(name_node.value), item.path)
                if key == "loop" and isinstance(value_node, MappingNode):
                    fields = {getattr(k, "value", None): v for k, v in value_node.value}
                    flow = fields.get("flow")
                    if isinstance(flow, SequenceNode):
                        nested = [
                            _Entry(str(i), n, n, f"{item.path}.loop.flow[{i}]")
                            for i, n in enumerate(flow.value)
                        ]
                        for name, where in self.captured_by(nested).items():
                            out.setdefault(name, where)
        return out

    def step(self, item: _Entry, defined: set[str], later: dict[str, str]) -> Step:
        entries = self.mapping(item.node, item.path, STEP_KEYS, "a step")
        visible = {k: v for k, v in later.items() if k not in defined}
        method = "GET"
        if "method" in entries:
            method = self.method(entries["method"])
        path_entry = self.require(entries, "path", item.node, item.path)
        path, endpoint = self.step_path(path_entry, defined, visible)
        headers: tuple[tuple[str, str], ...] = ()
        if "headers" in entries:
            headers = self.headers(entries["headers"], defined, visible)
        body_kind, body = self.body(entries, defined, visible)
        captures: tuple[Capture, ...] = ()
        if "capture" in entries:
            captures = self.captures(entries["capture"])
        checks = Checks()
        if "check" in entries:
            checks = self.checks(entries["check"])
        think_s = 0.0
        if "think" in entries:
            think_s = self.duration(entries["think"], positive=False)
        name = f"{method} {endpoint}"
        if "name" in entries:
            name = self.name(entries["name"])
        return Step(
            name=name,
            method=method,
            path=path,
            endpoint=endpoint,
            headers=headers,
            body_kind=body_kind,
            body=body,
            captures=captures,
            checks=checks,
            think_s=think_s,
            location=Location(self.file, item.node.start_mark.line + 1, item.path),
        )

    def method(self, entry: _Entry) -> str:
        value = self.scalar(entry)
        if not isinstance(value, str):
            self.wrong_type(entry, "an HTTP method", "method: POST")
        method = value.upper()
        if method not in METHODS:
            self.bad(
                entry,
                f"method {value!r} is not supported",
                f"use one of {', '.join(METHODS)}",
            )
        return method

    def step_path(
        self, entry: _Entry, defined: set[str], later: Mapping[str, str]
    ) -> tuple[str, str]:
        path = self.text(entry, nonempty=True)
        if not path.startswith("/"):
            self.bad(
                entry,
                f"path {path!r} must start with '/'",
                f"write path: /{path.lstrip('/')}; the host comes from target",
            )
        self.no_env_reference(entry, path)
        template = self.template(entry, path, defined, later)
        if _BAD_PATH_CHARS.search(template.pattern):
            self.bad(
                entry,
                f"path {path!r} holds a space, a control character or '#'",
                "percent-encode it (a space is %20, '#' is %23)",
            )
        return path, template.pattern.split("?", 1)[0]

    def body(
        self, entries: dict[str, _Entry], defined: set[str], later: Mapping[str, str]
    ) -> tuple[BodyKind, object]:
        given = [entries[k] for k in ("json", "form", "body") if k in entries]
        if len(given) > 1:
            second = given[1]
            self.fail(
                second.key_node,
                second.path,
                f"a step sends one body, but both '{given[0].key}' and "
                f"'{second.key}' are set",
                "keep one of json, form and body",
            )
        if not given:
            return "none", None
        entry = given[0]
        if entry.key == "json":
            value = self.json_value(entry, defined, later)
            try:
                compile_json_body(value)
            except (TypeError, ValueError) as exc:
                self.bad(entry, f"cannot send this as JSON: {exc}")
            return "json", value
        if entry.key == "form":
            return "form", self.form(entry, defined, later)
        text = self.text(entry)
        self.template(entry, text, defined, later)
        return "raw", text

    def json_value(
        self, entry: _Entry, defined: set[str] | None, later: Mapping[str, str] | None
    ) -> object:
        """A JSON-able value built from YAML; strings are checked as templates
        unless ``defined`` is None (expected values of checks are literal)."""
        node = entry.node
        if isinstance(node, MappingNode):
            return {
                key: self.json_value(item, defined, later)
                for key, item in self.mapping(
                    node, entry.path, None, "a JSON object"
                ).items()
            }
        if isinstance(node, SequenceNode):
            with self.guard(node, entry.path):
                return [
                    self.json_value(
                        _Entry(str(i), child, child, f"{entry.path}[{i}]"),
                        defined,
                        later,
                    )
                    for i, child in enumerate(node.value)
                ]
        value = self.scalar(entry)
        if isinstance(value, str):
            if defined is not None:
                self.template(entry, value, defined, later)
            return value
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
        self.bad(
            entry,
            f"{self.describe(entry.node)} cannot be sent as JSON",
            "quote it to send it as a string",
        )

    def form(
        self, entry: _Entry, defined: set[str], later: Mapping[str, str]
    ) -> tuple[tuple[str, str], ...]:
        out = []
        for item in self.mapping(entry.node, entry.path, None, "form").values():
            self.template(
                _Entry(item.key, item.key_node, item.key_node, item.path),
                item.key,
                defined,
                later,
            )
            value = self.as_written(item)
            self.template(item, value, defined, later)
            out.append((item.key, value))
        return tuple(out)

    def captures(self, entry: _Entry) -> tuple[Capture, ...]:
        if _is_null(entry.node):
            return ()
        out = []
        for item in self.mapping(entry.node, entry.path, None, "capture").values():
            if not NAME_PATTERN.fullmatch(item.key):
                self.fail(
                    item.key_node,
                    item.path,
                    f"capture name {item.key!r} cannot be used in a template",
                    "use letters, digits and '_', not starting with a digit",
                )
            path = self.text(item, nonempty=True)
            self.json_path(item, path)
            location = Location(self.file, item.node.start_mark.line + 1, item.path)
            out.append(Capture(item.key, path, location))
        return tuple(out)

    def json_path(self, entry: _Entry, text: str) -> None:
        try:
            compile_path(text)
        except JsonPathError as exc:
            self.bad(entry, exc.problem, exc.fix)

    def checks(self, entry: _Entry) -> Checks:
        if _is_null(entry.node):
            return Checks()
        entries = self.mapping(entry.node, entry.path, CHECK_KEYS, "check")
        status: tuple[int, ...] = ()
        if "status" in entries:
            status = self.statuses(entries["status"])
        expected: list[tuple[str, object]] = []
        if "json" in entries:
            json_entry = entries["json"]
            for item in self.mapping(
                json_entry.node, json_entry.path, None, "check json"
            ).values():
                self.json_path(
                    _Entry(item.key, item.key_node, item.key_node, item.path), item.key
                )
                expected.append((item.key, self.json_value(item, None, None)))
        max_latency_ms = None
        if "max_latency" in entries:
            seconds = self.duration(entries["max_latency"], positive=True)
            max_latency_ms = seconds * 1000.0
        return Checks(tuple(status), tuple(expected), max_latency_ms)

    def statuses(self, entry: _Entry) -> tuple[int, ...]:
        example = "status: 200, or status: [200, 201]"
        items = (
            self.sequence(entry, "status codes", example)
            if isinstance(entry.node, SequenceNode)
            else [entry]
        )
        codes = []
        for item in items:
            value = self.scalar(item)
            if isinstance(value, bool) or not isinstance(value, int):
                self.wrong_type(item, "a status code (an integer)", example)
            if not 100 <= value <= 599:
                self.bad(
                    item,
                    f"status {value} is not an HTTP status code",
                    "use codes from 100 to 599",
                )
            codes.append(value)
        return tuple(codes)


_NOT_SCALAR = object()
_METRIC_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MONITOR_SOURCES = ("target", "host", "coordinator")
"""Sources the harness's own samplers write (and ``harness-worker-K``)."""


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _join(path: str, key: str) -> str:
    part = key if _PLAIN_KEY.fullmatch(key) else None
    if part is None:
        escaped = key.replace("\\", "\\\\").replace('"', '\\"')
        return f'{path}["{escaped}"]'
    return f"{path}.{part}" if path else part


def _last(path: str) -> str:
    """The last field of a path, for messages: ``rate`` of ``load.phases[0].rate``."""
    if path.endswith("]"):
        head, _, tail = path.rpartition("[")
        if tail.startswith('"'):
            return tail[1:-2]
        return _last(head) if head else path
    return path.rpartition(".")[2]


__all__ = [
    "COMMAND_LINE",
    "METHODS",
    "SECRET_WORDS",
    "is_secret_name",
    "load_profile",
    "load_profile_text",
    "validate_target",
]
