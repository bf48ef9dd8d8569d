"""Artillery configurations, run as they are: recognise one and translate it.

How this works
--------------
:func:`is_artillery` recognises an Artillery file: a top-level mapping whose ``config``
is a mapping, without any of the native format's other top-level keys (so a
misspelt ``scenario:`` is reported as an Artillery key, with a did-you-mean).
:class:`ArtilleryLoader` then walks the same YAML node tree the native loader walks
(it *is* that loader, with one more entry point), so every error carries the
Artillery file's name, the line and the Artillery field path
(``scenarios[2].flow[1].post.capture[0].regexp``), says what is not supported and
what to write instead. It builds the same :class:`~harness.profile.model.Profile`
a native profile gives, so nothing downstream knows where a profile came from.

What maps to what (docs/artillery.md has the full table):

* ``config.phases`` -> open-model phases: ``arrivalRate`` -> ``rate``, ``rampTo`` ->
  ``ramp_to``, ``arrivalCount`` over ``duration`` -> a constant rate of count /
  duration, ``pause`` -> a phase at rate 0;
* ``config.variables`` -> variables; a list becomes a value drawn per iteration;
* ``config.payload`` -> data files (each worker its own rows, which cycle);
* ``config.ensure`` -> thresholds; ``config.plugins`` -> warnings only;
* flow steps ``get``/``post``/... -> steps, ``think`` -> the previous step's
  think time, ``loop`` with ``count`` -> the native loop (expanded when loaded).

Anything else is refused, never skipped: a test that silently dropped a
``beforeRequest`` hook or an ``ifTrue`` condition would measure something else.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from analysis.thresholds import ThresholdRule, ThresholdSyntaxError
from analysis.thresholds import parse as parse_threshold

from ..errors import Location, ProfileError
from ..template import NAME_PATTERN, URLENCODE
from .load import (
    COMMAND_LINE,
    TARGET_FIX,
    _Entry,
    _is_null,
    _Loader,
    is_secret_name,
    validate_target,
)
from .model import (
    DEFAULT_CONNECT_TIMEOUT_S,
    Capture,
    Checks,
    DataSource,
    HttpSettings,
    OpenModel,
    Phase,
    Profile,
    Scenario,
    Step,
    Variable,
)

log = logging.getLogger("harness.profile.artillery")

REQUEST_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

TOP_KEYS = ("config", "scenarios")
CONFIG_KEYS = (
    "target",
    "phases",
    "http",
    "tls",
    "defaults",
    "variables",
    "payload",
    "plugins",
    "ensure",
)
PHASE_KEYS = ("duration", "arrivalRate", "rampTo", "arrivalCount", "pause", "name")
HTTP_KEYS = ("timeout",)
TLS_KEYS = ("rejectUnauthorized",)
DEFAULTS_KEYS = ("headers",)
PAYLOAD_KEYS = ("path", "fields", "order", "skipHeader", "delimiter", "loadAll", "name")
ENSURE_KEYS = ("p50", "median", "p75", "p90", "p95", "p99", "p999", "max", "min")
ENSURE_KEYS_ALL = (*ENSURE_KEYS, "maxErrorRate", "thresholds")
SCENARIO_KEYS = ("name", "weight", "flow", "engine")
REQUEST_KEYS = ("url", "json", "form", "body", "headers", "qs", "capture", "expect")
CAPTURE_KEYS = ("json", "as")
LOOP_KEYS = ("loop", "count")

_CUSTOM_CODE = (
    "custom JavaScript does not run here; express the request in the flow (url, "
    "headers, json, capture) or use a native profile (docs/profiles.md)"
)

UNSUPPORTED: dict[str, tuple[str, str]] = {
    # key: (what it is, what to do instead)
    "processor": ("a JavaScript processor file", _CUSTOM_CODE),
    "engines": ("extra engines", "only the HTTP engine is supported; remove it"),
    "environments": (
        "environments",
        "copy the chosen environment's settings into config, or pass --target",
    ),
    "includeFiles": ("included files", "remove it; no JavaScript runs here"),
    "before": (
        "a flow run once before the scenarios",
        "put the requests at the start of each scenario's flow",
    ),
    "after": ("a flow run once after the scenarios", "remove it"),
    "beforeScenario": ("a scenario hook", _CUSTOM_CODE),
    "afterScenario": ("a scenario hook", _CUSTOM_CODE),
    "beforeRequest": ("a request hook", _CUSTOM_CODE),
    "afterResponse": ("a response hook", _CUSTOM_CODE),
    "function": ("a function step", _CUSTOM_CODE),
    "ifTrue": (
        "a conditional request",
        "split the flow into scenarios with weights instead of a condition",
    ),
    "over": (
        "a loop over a list",
        "use loop with count; to give each iteration its own values, use payload",
    ),
    "whileTrue": ("a loop with a JavaScript condition", "use loop with count"),
    "parallel": ("parallel requests", "write the requests one after another"),
    "log": ("a log step", "remove it; every request is recorded anyway"),
    "ws": ("the WebSocket engine", "only HTTP scenarios are supported"),
    "socketio": ("the Socket.IO engine", "only HTTP scenarios are supported"),
    "emit": ("a Socket.IO emit", "only HTTP scenarios are supported"),
    "send": ("a WebSocket send", "only HTTP scenarios are supported"),
    "connect": ("a WebSocket connect", "only HTTP scenarios are supported"),
    "xpath": ("capture by XPath", "capture from JSON responses with json: $.path"),
    "regexp": ("capture by regular expression", "capture with json: $.path"),
    "header": ("capture from a response header", "capture with json: $.path"),
    "selector": ("capture by CSS selector", "capture with json: $.path"),
    "transform": ("a capture transform", "capture the value as it is"),
    "strict": (
        "a non-strict capture",
        "remove it; a capture that finds nothing ends the iteration",
    ),
    "formData": (
        "a multipart form",
        "send form (URL-encoded) or body with a Content-Type header",
    ),
    "auth": (
        "basic authentication",
        'set headers: {Authorization: "Basic <base64 of user:password>"} through '
        "a variable",
    ),
    "cookie": (
        "cookies set by hand",
        "set a Cookie header; cookies the server sets are kept per VU",
    ),
    "followRedirect": ("redirect settings", "remove it; redirects are not followed"),
    "gzip": ("gzip settings", "set an Accept-Encoding header"),
    "match": ("match checks", "use expect with statusCode"),
    "maxVusers": (
        "a per-phase cap on virtual users",
        "remove it; a native profile caps iterations in flight with load.max_vus",
    ),
    "cast": ("casting payload values", "remove it; values are sent as text"),
    "skipEmptyLines": ("an empty-line setting", "remove it; empty lines are skipped"),
    "conditions": (
        "ensure conditions",
        "use ensure.thresholds with http.response_time.* metrics, or p95/p99/"
        "maxErrorRate",
    ),
    "pool": ("a connection pool size", "remove it; each VU has its own connection"),
    "maxSockets": ("a socket cap", "remove it; each VU has its own connection"),
    "extendedMetrics": ("extended metrics", "remove it; every record has timings"),
}
"""Artillery keys that are refused wherever they appear, with what to do instead."""

PLUGIN_NOTES = {
    "metrics-by-endpoint": (
        "Artillery plugin 'metrics-by-endpoint' is not needed: per-endpoint metrics "
        "are built in (every record carries its endpoint; the summary and the "
        "analysis group by it)"
    ),
}
HANDLED_PLUGINS = ("expect", "ensure")
"""Plugins whose settings are translated (expect -> checks, ensure -> thresholds)."""

_ENV_IN_TEMPLATE = re.compile(
    r"\{\{\s*\$(?:processEnvironment|env)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}"
)
_ENV_ANYWHERE = re.compile(r"\$(?:processEnvironment|env)\.")
_TEMPLATE_PART = re.compile(r"(\{\{.*?\}\})")
_PERCENTILE_KEY = re.compile(r"p(\d+)")


def is_artillery(root: Node, native_keys: Sequence[str]) -> bool:
    """True when the document is an Artillery configuration: a mapping whose
    ``config`` is a mapping (or with ``config`` and ``scenarios``), and none of the
    native format's own top-level keys (``scenarios`` is in both). ``scenarios``
    itself is not needed to recognise the file: a missing or misspelt one is then
    reported as such."""
    if not isinstance(root, MappingNode):
        return False
    keys = {k.value for k, _ in root.value if isinstance(k, ScalarNode)}
    native_only = set(native_keys) - {"scenarios"}
    config = next(
        (
            value
            for key, value in root.value
            if isinstance(key, ScalarNode) and key.value == "config"
        ),
        None,
    )
    looks_like = isinstance(config, MappingNode) or {"config", "scenarios"} <= keys
    return looks_like and not keys & native_only


@dataclass(slots=True)
class _Item:
    """One element of a flow as translated: a request, or a pause after it."""

    step: Step | None
    think_s: float
    entry: _Entry


class ArtilleryLoader(_Loader):
    """Translates an Artillery configuration into a :class:`Profile`."""

    def translate(
        self, root: Node, sha256: str, target_override: str | None
    ) -> Profile:
        self.warnings: list[str] = []
        top = self.fields(root, "", TOP_KEYS, "an Artillery file")
        if "scenarios" not in top:
            self.fail(
                root,
                "scenarios",
                "'scenarios' is required at the top of an Artillery file but missing",
                "add scenarios: [{name: browse, flow: [{get: {url: /}}]}] beside "
                "config",
            )
        config_entry = top["config"]
        config = self.fields(config_entry.node, "config", CONFIG_KEYS, "config")
        target = self.art_target(config, config_entry, target_override)
        variables = self.art_variables(config.get("variables"))
        defined = {v.name for v in variables}
        data = self.payload(config.get("payload"), defined)
        defined.update(name for source in data for name in source.columns)
        http = self.art_http(config, defined)
        phases = self.phases(
            self.require(config, "phases", config_entry.node, "config")
        )
        thresholds, rules = self.ensure(config.get("ensure"))
        if "plugins" in config:
            self.plugins(config["plugins"])
        scenarios = self.art_scenarios(top["scenarios"], defined)
        # The command line prints them (Profile.warnings); a program reads them there.
        for warning in self.warnings:
            log.debug("%s: %s", self.file, warning)
        return Profile(
            name=Path(self.file).stem,
            target=target,
            load=OpenModel(phases=phases),
            scenarios=scenarios,
            http=http,
            variables=variables,
            thresholds=thresholds,
            threshold_rules=rules,
            data=data,
            warnings=tuple(self.warnings),
            source_file=self.file,
            source_sha256=sha256,
        )

    # -- keys ------------------------------------------------------------------------

    def fields(
        self, node: Node, path: str, known: Sequence[str], what: str
    ) -> dict[str, _Entry]:
        """The entries of a mapping; a key that is not translated is refused with
        what it is and what to use instead."""
        entries = self.mapping(node, path, None, what)
        for entry in entries.values():
            if entry.key not in known:
                self.unsupported(entry, known, what)
        return entries

    def unsupported(self, entry: _Entry, known: Sequence[str], what: str) -> NoReturn:
        if entry.key in UNSUPPORTED:
            thing, instead = UNSUPPORTED[entry.key]
            self.fail(
                entry.key_node,
                entry.path,
                f"'{entry.key}' ({thing}) is not supported when running Artillery "
                "configurations",
                instead,
            )
        close = difflib.get_close_matches(entry.key, known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        self.fail(
            entry.key_node,
            entry.path,
            f"'{entry.key}' in {what} is not a supported Artillery key",
            f"{hint}the keys supported here are: {', '.join(known)} "
            "(docs/artillery.md)",
        )

    def no_env_template(self, entry: _Entry, text: str, fix: str = "") -> None:
        if _ENV_ANYWHERE.search(text):
            self.bad(
                entry,
                "environment values are read only in config.variables",
                fix
                or "add name: '{{ $processEnvironment.NAME }}' under "
                "config.variables and write {{ name }} here",
            )

    # -- config ------------------------------------------------------------------------

    def art_target(
        self, config: dict[str, _Entry], config_entry: _Entry, override: str | None
    ) -> str:
        if override is not None:
            try:
                return validate_target(override)
            except ValueError as exc:
                raise ProfileError(
                    Location(COMMAND_LINE, None, "--target"), str(exc), TARGET_FIX
                ) from None
        if "target" not in config:
            self.fail(
                config_entry.node,
                "config.target",
                "'target' is required in config but missing",
                "add target: http://127.0.0.1:13010 under config, or pass --target",
            )
        entry = config["target"]
        url = self.text(entry, nonempty=True)
        # Templates are not expanded in the target, so a variable cannot carry it.
        self.no_env_template(
            entry,
            url,
            "pass the target on the command line instead: --target "
            '"$NAME" (it replaces config.target)',
        )
        try:
            return validate_target(url)
        except ValueError as exc:
            self.bad(entry, str(exc), TARGET_FIX)

    def art_variables(self, entry: _Entry | None) -> tuple[Variable, ...]:
        if entry is None or _is_null(entry.node):
            return ()
        out = []
        for item in self.variable_items(entry):
            parts = (
                self.sequence(item, "values", f"{item.key}: [a, b]")
                if isinstance(item.node, SequenceNode)
                else [item]
            )
            values = []
            from_env = False
            for part in parts:
                value, env = self.variable_value(part)
                values.append(value)
                from_env = from_env or env
            secret = from_env or is_secret_name(item.key)
            source = "{{ $processEnvironment }}" if from_env else ""
            choices = tuple(values) if isinstance(item.node, SequenceNode) else ()
            out.append(Variable(item.key, values[0], secret, source, choices))
        return tuple(out)

    def variable_value(self, entry: _Entry) -> tuple[str, bool]:
        """A value as written; ``{{ $processEnvironment.NAME }}`` (or ``$env``) as
        the whole value reads the environment. True when it did."""
        written = self.as_written(entry)
        match = _ENV_IN_TEMPLATE.fullmatch(written.strip())
        if match:
            name = match.group(1)
            value = self.env.get(name)
            if value is None:
                self.bad(
                    entry,
                    f"environment variable {name} is not set",
                    f"export {name}=... before the run",
                )
            return value, True
        if "{{" in written:
            self.bad(
                entry,
                "variable values are used as written; a '{{ }}' template in one "
                "would be sent literally",
                "put the template in the request's url, headers or body instead",
            )
        return written, False

    def art_http(self, config: dict[str, _Entry], defined: set[str]) -> HttpSettings:
        settings = HttpSettings()
        if "http" in config and not _is_null(config["http"].node):
            http = self.fields(config["http"].node, "config.http", HTTP_KEYS, "http")
            if "timeout" in http:
                timeout_s = self.duration(http["timeout"], positive=True)
                settings = replace(
                    settings,
                    timeout_s=timeout_s,
                    connect_timeout_s=min(timeout_s, DEFAULT_CONNECT_TIMEOUT_S),
                )
        if "tls" in config and not _is_null(config["tls"].node):
            tls = self.fields(config["tls"].node, "config.tls", TLS_KEYS, "tls")
            if "rejectUnauthorized" in tls:
                verify = self.boolean(tls["rejectUnauthorized"])
                settings = replace(settings, verify_tls=verify)
        if "defaults" in config and not _is_null(config["defaults"].node):
            defaults = self.fields(
                config["defaults"].node, "config.defaults", DEFAULTS_KEYS, "defaults"
            )
            if "headers" in defaults:
                entry = defaults["headers"]
                for item in self.mapping(
                    entry.node, entry.path, None, "headers"
                ).values():
                    self.no_env_template(item, str(getattr(item.node, "value", "")))
                headers = self.headers(entry, defined, None)
                settings = replace(settings, headers=headers)
        return settings

    def phases(self, entry: _Entry) -> tuple[Phase, ...]:
        example = "phases: [{duration: 60, arrivalRate: 10}]"
        return tuple(
            self.phase(item) for item in self.sequence(entry, "phases", example)
        )

    def phase(self, item: _Entry) -> Phase:
        fields = self.fields(item.node, item.path, PHASE_KEYS, "a phase")
        name = self.name(fields["name"]) if "name" in fields else ""
        if "pause" in fields:
            for key in ("duration", "arrivalRate", "rampTo", "arrivalCount"):
                if key in fields:
                    self.fail(
                        fields[key].key_node,
                        fields[key].path,
                        f"a pause phase has no '{key}'",
                        "write {pause: 30} alone, or a phase with duration and "
                        "arrivalRate",
                    )
            seconds = self.duration(fields["pause"], positive=True)
            return Phase(duration_s=seconds, rate=0.0, name=name)
        duration_s = self.duration(
            self.require(fields, "duration", item.node, item.path), positive=True
        )
        if "arrivalCount" in fields:
            for key in ("arrivalRate", "rampTo"):
                if key in fields:
                    self.fail(
                        fields[key].key_node,
                        fields[key].path,
                        f"'arrivalCount' and '{key}' cannot be combined",
                        "keep arrivalCount (arrivals spread over duration) or "
                        "arrivalRate (per second)",
                    )
            count = self.integer(fields["arrivalCount"], 0, "arrivalCount: 100")
            return Phase(duration_s=duration_s, rate=count / duration_s, name=name)
        if "arrivalRate" not in fields:
            self.fail(
                item.node,
                f"{item.path}.arrivalRate",
                "a phase needs arrivalRate, arrivalCount or pause",
                "add arrivalRate: 10 (new virtual users per second)",
            )
        rate = self.number(fields["arrivalRate"], "arrivalRate: 10")
        ramp_to = None
        if "rampTo" in fields:
            ramp_to = self.number(fields["rampTo"], "rampTo: 50")
        return Phase(duration_s=duration_s, rate=rate, ramp_to=ramp_to, name=name)

    def payload(
        self, entry: _Entry | None, defined: set[str]
    ) -> tuple[DataSource, ...]:
        if entry is None or _is_null(entry.node):
            return ()
        items = (
            self.sequence(entry, "payload files", "payload: {path: users.csv}")
            if isinstance(entry.node, SequenceNode)
            else [entry]
        )
        taken = set(defined)
        out = []
        for item in items:
            fields = self.fields(item.node, item.path, PAYLOAD_KEYS, "a payload")
            if "loadAll" in fields and self.boolean(fields["loadAll"]):
                self.bad(
                    fields["loadAll"],
                    "'loadAll: true' is not supported: it feeds loops with 'over', "
                    "which are not supported either",
                    "remove loadAll and name; each iteration then takes its own row",
                )
            if "name" in fields:
                self.fail(
                    fields["name"].key_node,
                    fields["name"].path,
                    "a payload 'name' only applies with loadAll, which is not "
                    "supported",
                    "remove name; the fields become template names",
                )
            header = False
            if "skipHeader" in fields:
                header = self.boolean(fields["skipHeader"])
            if "fields" not in fields and not header:
                self.fail(
                    item.node,
                    f"{item.path}.fields",
                    "a payload needs 'fields', the names of its columns",
                    "add fields: [id, email, ...], one name per column, or "
                    "skipHeader: true to take the names from the first line",
                )
            renamed = {
                native: fields[art]
                for art, native in (
                    ("path", "file"),
                    ("fields", "columns"),
                    ("skipHeader", "header"),
                    ("delimiter", "delimiter"),
                    ("order", "order"),
                )
                if art in fields
            }
            source = self.data_source(
                item,
                renamed,
                taken,
                header_default=False,
                order_default="random",
                reuse_default=True,
                keys=_PAYLOAD_NAMES,
            )
            taken.update(source.columns)
            out.append(source)
        return tuple(out)

    def ensure(
        self, entry: _Entry | None
    ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[ThresholdRule, ...]]:
        """``config.ensure`` as thresholds: latency limits in ms on
        ``http_req_duration`` (passing when at or under the limit) and
        ``maxErrorRate`` (a percentage) on ``http_req_failed``."""
        if entry is None or _is_null(entry.node):
            return (), ()
        fields = self.fields(entry.node, entry.path, ENSURE_KEYS_ALL, "ensure")
        by_metric: dict[str, list[str]] = {}
        rules: list[ThresholdRule] = []

        def add(item: _Entry, metric: str, expression: str) -> None:
            try:
                threshold = parse_threshold(metric, expression)
            except ThresholdSyntaxError as exc:
                self.bad(item, exc.problem, exc.fix)
            by_metric.setdefault(metric, []).append(threshold.source)
            rules.append(ThresholdRule(threshold, False, 0.0))

        for item in fields.values():
            if item.key == "thresholds":
                for part in self.sequence(item, "thresholds", "- p95: 200"):
                    for sub in self.mapping(
                        part.node, part.path, None, "a threshold"
                    ).values():
                        key = sub.key.removeprefix("http.response_time.")
                        if sub.key == key or key not in ENSURE_KEYS:
                            self.fail(
                                sub.key_node,
                                sub.path,
                                f"ensure threshold on {sub.key!r} is not supported",
                                "use http.response_time.p95 (or p50, p75, p90, "
                                "p99, p999, median, max, min)",
                            )
                        limit = self.number(sub, f"{sub.key}: 200")
                        add(sub, "http_req_duration", _latency_expression(key, limit))
            elif item.key == "maxErrorRate":
                percent = self.number(item, "maxErrorRate: 1 (percent)")
                add(item, "http_req_failed", f"rate<={percent / 100:g}")
            else:
                limit = self.number(item, f"{item.key}: 200")
                add(item, "http_req_duration", _latency_expression(item.key, limit))
        written = tuple((m, tuple(e)) for m, e in by_metric.items())
        return written, tuple(rules)

    def plugins(self, entry: _Entry) -> None:
        """Warn once per plugin (and per publish-metrics target) that is not run."""
        if _is_null(entry.node):
            return
        for item in self.mapping(entry.node, entry.path, None, "plugins").values():
            if item.key in HANDLED_PLUGINS:
                continue
            if item.key in PLUGIN_NOTES:
                self.warnings.append(PLUGIN_NOTES[item.key])
            elif item.key == "publish-metrics":
                self.publish_metrics(item)
            else:
                self.warnings.append(
                    f"Artillery plugin '{item.key}' is ignored: plugins do not run "
                    "here (the run's records and report are in its run folder)"
                )

    def publish_metrics(self, item: _Entry) -> None:
        targets = (
            self.sequence(item, "targets", "- type: datadog")
            if isinstance(item.node, SequenceNode)
            else [item]
        )
        for target in targets:
            kind = "?"
            if isinstance(target.node, MappingNode):
                fields = self.mapping(target.node, target.path, None, "a target")
                if "type" in fields:
                    kind = self.as_written(fields["type"])
            self.warnings.append(
                f"Artillery publish-metrics to '{kind}' is not done here: nothing is "
                "published; the run's Parquet records (runs/<id>/requests) and its "
                "report hold the metrics"
            )

    # -- scenarios -----------------------------------------------------------------

    def art_scenarios(self, entry: _Entry, defined: set[str]) -> tuple[Scenario, ...]:
        example = "scenarios: [{name: browse, flow: [{get: {url: /}}]}]"
        names: dict[str, str] = {}
        out = []
        for index, item in enumerate(self.sequence(entry, "scenarios", example)):
            fields = self.fields(item.node, item.path, SCENARIO_KEYS, "a scenario")
            name = f"scenario {index + 1}"
            if "name" in fields:
                name = self.name(fields["name"])
                if name in names:
                    self.bad(
                        fields["name"],
                        f"scenario name {name!r} is already used by {names[name]}",
                        "give each scenario its own name; records are grouped by it",
                    )
            names[name] = item.path
            if "engine" in fields:
                engine = self.as_written(fields["engine"])
                if engine != "http":
                    self.bad(
                        fields["engine"],
                        f"engine {engine!r} is not supported",
                        "only HTTP scenarios run here; remove the scenario or "
                        "the engine",
                    )
            weight = 1.0
            if "weight" in fields:
                weight = self.number(fields["weight"], "weight: 1", positive=True)
            flow = self.require(fields, "flow", item.node, item.path)
            items = self.sequence(flow, "steps", "flow: [{get: {url: /}}]")
            later = self.art_captured_by(items)
            translated = self.art_flow(items, set(defined), later)
            steps = _fold_thinks(self, translated)
            location = Location(self.file, item.node.start_mark.line + 1, item.path)
            out.append(Scenario(name, weight, tuple(steps), 0.0, location))
        return tuple(out)

    def art_captured_by(self, items: list[_Entry]) -> dict[str, str]:
        """Names captured anywhere in a flow, with the step, for messages."""
        out: dict[str, str] = {}
        for item in items:
            if not isinstance(item.node, MappingNode):
                continue
            for key_node, value in item.node.value:
                key = getattr(key_node, "value", "")
                path = f"{item.path}.{key}"
                if key == "loop" and isinstance(value, SequenceNode):
                    nested = [
                        _Entry(str(i), n, n, f"{path}[{i}]")
                        for i, n in enumerate(value.value)
                    ]
                    for name, where in self.art_captured_by(nested).items():
                        out.setdefault(name, where)
                if key in REQUEST_METHODS and isinstance(value, MappingNode):
                    for field_node, capture in value.value:
                        if getattr(field_node, "value", "") != "capture":
                            continue
                        parts = (
                            capture.value
                            if isinstance(capture, SequenceNode)
                            else [capture]
                        )
                        for part in parts:
                            if not isinstance(part, MappingNode):
                                continue
                            for name_key, name_node in part.value:
                                if getattr(name_key, "value", "") == "as":
                                    out.setdefault(str(name_node.value), path)
        return out

    def art_flow(
        self, items: list[_Entry], scope: set[str], later: dict[str, str]
    ) -> list[_Item]:
        out: list[_Item] = []
        for item in items:
            entries = self.mapping(item.node, item.path, None, "a flow step")
            if "loop" in entries:
                fields = self.fields(item.node, item.path, LOOP_KEYS, "a loop step")
                if "count" not in fields:
                    self.fail(
                        item.node,
                        f"{item.path}.count",
                        "a loop without 'count' would run until the end of the test",
                        "add count: 3 beside loop",
                    )
                count = self.integer(fields["count"], 1, "count: 3")
                body = self.sequence(fields["loop"], "steps", "loop: [{get: {url: /}}]")
                # Checked once, with the fewest names defined; the rest are copies,
                # made only once their number is known to be within the limit.
                once = self.art_flow(body, scope, later)
                if len(out) + len(once) * count > _MAX_ITEMS:
                    self.bad(
                        item,
                        f"with its loops expanded this flow has over {_MAX_ITEMS} "
                        f"steps ({len(once)} step(s) x count {count})",
                        "lower the loop's count",
                    )
                out.extend(once * count)
                continue
            if len(entries) != 1:
                keys = ", ".join(entries)
                first = next(iter(entries.values()))
                self.fail(
                    first.key_node,
                    item.path,
                    f"a flow step has one action, but this one has: {keys}",
                    "split it into one step per action (get, post, think, loop...)",
                )
            (action,) = entries.values()
            if action.key == "think":
                seconds = self.duration(action, positive=False)
                out.append(_Item(None, seconds, action))
            elif action.key in REQUEST_METHODS:
                step = self.request(action, scope, later)
                scope.update(c.name for c in step.captures)
                out.append(_Item(step, 0.0, action))
            else:
                self.unsupported(
                    action, (*REQUEST_METHODS, "think", "loop"), "a flow step"
                )
        return out

    def request(self, action: _Entry, scope: set[str], later: dict[str, str]) -> Step:
        fields = self.fields(action.node, action.path, REQUEST_KEYS, "a request")
        visible = {k: v for k, v in later.items() if k not in scope}
        method = action.key.upper()
        url_entry = self.require(fields, "url", action.node, action.path)
        path, endpoint = self.url(url_entry, fields.get("qs"), scope, visible)
        for key in ("json", "form", "body", "headers"):
            if key in fields:
                self.no_env_in(fields[key])
        headers: tuple[tuple[str, str], ...] = ()
        if "headers" in fields:
            headers = self.headers(fields["headers"], scope, visible)
        body_kind, body = self.body(fields, scope, visible)
        captures: tuple[Capture, ...] = ()
        if "capture" in fields:
            captures = self.art_captures(fields["capture"])
        checks = Checks()
        if "expect" in fields:
            checks = Checks(status=self.expect(fields["expect"]))
        return Step(
            name=f"{method} {endpoint}",
            method=method,
            path=path,
            endpoint=endpoint,
            headers=headers,
            body_kind=body_kind,
            body=body,
            captures=captures,
            checks=checks,
            location=Location(self.file, action.node.start_mark.line + 1, action.path),
        )

    def no_env_in(self, entry: _Entry) -> None:
        """Refuse ``$processEnvironment`` anywhere inside a value."""
        node = entry.node
        if isinstance(node, ScalarNode):
            self.no_env_template(entry, str(node.value))
        elif isinstance(node, MappingNode):
            for item in self.mapping(node, entry.path, None, "a mapping").values():
                self.no_env_in(item)
        elif isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                self.no_env_in(_Entry(str(i), child, child, f"{entry.path}[{i}]"))

    def url(
        self,
        entry: _Entry,
        qs: _Entry | None,
        scope: set[str],
        later: Mapping[str, str],
    ) -> tuple[str, str]:
        """The request target (path and query) and the endpoint recorded for it."""
        url = self.text(entry, nonempty=True)
        self.no_env_template(entry, url)
        if not url.startswith("/"):
            self.bad(
                entry,
                f"url {url!r} is not a path; only paths starting with '/' are "
                "supported",
                "write the path alone (url: /api/items); the host comes from "
                "config.target or --target",
            )
        if qs is not None and not _is_null(qs.node):
            pairs = []
            for item in self.mapping(qs.node, qs.path, None, "qs").values():
                value = self.as_written(item)
                self.no_env_template(item, value)
                pairs.append(f"{_encode(item.key)}={_encode(value)}")
            if pairs:
                url += ("&" if "?" in url else "?") + "&".join(pairs)
        template = self.template(entry, url, scope, later)
        if re.search(r"[\s\x00-\x1f\x7f#]", template.pattern):
            self.bad(
                entry,
                f"url {url!r} holds a space, a control character or '#'",
                "percent-encode it (a space is %20, '#' is %23)",
            )
        return url, template.pattern.split("?", 1)[0]

    def art_captures(self, entry: _Entry) -> tuple[Capture, ...]:
        parts = (
            self.sequence(entry, "captures", '- {json: "$.id", as: id}')
            if isinstance(entry.node, SequenceNode)
            else [entry]
        )
        out = []
        for part in parts:
            fields = self.fields(part.node, part.path, CAPTURE_KEYS, "a capture")
            if "json" not in fields or "as" not in fields:
                missing = "json" if "json" not in fields else "as"
                self.fail(
                    part.node,
                    f"{part.path}.{missing}",
                    f"a capture needs '{missing}'",
                    'write {json: "$.data.id", as: userId}',
                )
            name = self.text(fields["as"], nonempty=True)
            if not NAME_PATTERN.fullmatch(name):
                self.bad(
                    fields["as"],
                    f"capture name {name!r} cannot be used in a template",
                    "use letters, digits and '_', not starting with a digit",
                )
            json_path = self.text(fields["json"], nonempty=True)
            self.json_path(fields["json"], json_path)
            line = fields["json"].node.start_mark.line + 1
            out.append(Capture(name, json_path, Location(self.file, line, part.path)))
        return tuple(out)

    def expect(self, entry: _Entry) -> tuple[int, ...]:
        """The status codes an ``expect`` block accepts (only ``statusCode``)."""
        parts = (
            self.sequence(entry, "expectations", "- statusCode: 200")
            if isinstance(entry.node, SequenceNode)
            else [entry]
        )
        codes: tuple[int, ...] = ()
        for part in parts:
            for item in self.mapping(part.node, part.path, None, "expect").values():
                if item.key != "statusCode":
                    self.fail(
                        item.key_node,
                        item.path,
                        f"expectation '{item.key}' is not supported; only "
                        "statusCode is translated",
                        "remove it, or write the check in a native profile "
                        "(check.json in docs/profiles.md)",
                    )
                if codes:
                    self.fail(
                        item.key_node,
                        item.path,
                        "statusCode is expected twice in this request",
                        "write one statusCode: [200, 201] listing every code",
                    )
                codes = self.statuses(item)
        return codes


_MAX_ITEMS = 10_000
"""Flow items (requests and pauses) a scenario may have once loops are expanded."""

_PAYLOAD_NAMES = {
    "file": "path",
    "columns": "fields",
    "header": "skipHeader",
    "delimiter": "delimiter",
    "order": "order",
}
"""The native data keys and the payload keys written for them, for fixes."""


def _encode(text: str) -> str:
    """Percent-encode a ``qs`` name or value: its constant parts now, and each
    template's rendered value when the request is made (``| urlencode``), as
    Artillery encodes its query values after rendering them."""
    return "".join(
        _url_encoded_template(part) if part.startswith("{{") else quote(part, safe="")
        for part in _TEMPLATE_PART.split(text)
    )


def _url_encoded_template(part: str) -> str:
    """``{{ name }}`` -> ``{{ name | urlencode }}``; a filter already there stays."""
    inner = part[2:-2].strip()
    if not inner or "|" in inner:
        return part  # compiling it reports the mistake as written
    return f"{{{{ {inner} | {URLENCODE} }}}}"


def _latency_expression(key: str, limit_ms: float) -> str:
    """An ensure key (p95, median, max...) and limit as a threshold expression."""
    aggregation = {"median": "med", "max": "max", "min": "min"}.get(key)
    if aggregation is None:
        match = _PERCENTILE_KEY.fullmatch(key)
        assert match is not None, key
        digits = match.group(1)
        # Artillery writes p999 for the 99.9th percentile.
        n = digits if len(digits) <= 2 else f"{digits[:2]}.{digits[2:]}"
        aggregation = f"p({n})"
    return f"{aggregation}<={limit_ms:g}"


def _fold_thinks(loader: ArtilleryLoader, items: list[_Item]) -> list[Step]:
    """Requests with each ``think`` added to the request before it."""
    steps: list[Step] = []
    for item in items:
        if item.step is not None:
            steps.append(item.step)
        elif not steps:
            loader.bad(
                item.entry,
                "a think before the first request is not supported",
                "move it after a request; arrivals already set when a flow starts",
            )
        else:
            last = steps[-1]
            steps[-1] = replace(last, think_s=last.think_s + item.think_s)
    if not steps:
        loader.fail(
            None if not items else items[0].entry.node,
            "",
            "this flow sends no request",
            "add a request such as - get: {url: /}",
        )
    return steps


__all__ = ["ArtilleryLoader", "is_artillery"]
