"""The run directory's bookkeeping: ``manifest.json`` and ``events.jsonl``.

The manifest is rewritten whole (to a temporary name, then renamed) at the start and at
the end of a run, so a reader never sees half a file. Events are appended one JSON
object per line and flushed at once, so they survive a crash of the coordinator.

Nothing secret goes in either: variable values that are secrets are replaced by how
they were written (``${LOADTEST_PASSWORD}``) or by ``"<secret>"``, header values that
carry credentials are replaced, and request bodies are described, never copied.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from . import __version__
from .feeder import source_summary
from .monitor.base import redact_credentials
from .profile.model import ClosedModel, MonitorSettings, Profile, Step

log = logging.getLogger("harness.manifest")

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"}
)

_PACKAGES = ("trio", "httpx", "httptools", "pyarrow", "pandas", "psutil", "click")


def versions() -> dict[str, str]:
    found = {"harness": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


_ENV_DEFAULT = re.compile(r":-[^}]*\}")


def _secret_shown(source: str) -> str:
    """How a secret variable was written, with any default value in it hidden:
    ``${LOADTEST_PASSWORD:-hunter2}`` shows as ``${LOADTEST_PASSWORD:-<secret>}``."""
    if not source:
        return "<secret>"
    return _ENV_DEFAULT.sub(":-<secret>}", source)


def _header_value(name: str, value: str) -> str:
    return "<redacted>" if name.lower() in SECRET_HEADERS else value


def describe_profile(profile: Profile) -> dict[str, Any]:
    """The profile as resolved, with every secret left out."""
    load: dict[str, Any]
    if isinstance(profile.load, ClosedModel):
        load = {
            "model": "closed",
            "graceful_ramp_down_s": profile.load.graceful_ramp_down_s,
            "stages": [
                {"name": s.name, "duration_s": s.duration_s, "target": s.target}
                for s in profile.load.stages
            ],
        }
    else:
        load = {
            "model": "open",
            "arrivals": profile.load.arrivals,
            "max_vus": profile.load.max_vus,
            "phases": [
                {
                    "name": p.name,
                    "duration_s": p.duration_s,
                    "rate": p.rate,
                    "ramp_to": p.ramp_to,
                }
                for p in profile.load.phases
            ],
        }
    return {
        "name": profile.name,
        "target": profile.target,
        "source_file": profile.source_file,
        "source_sha256": profile.source_sha256,
        "duration_s": profile.duration_s,
        "graceful_stop_s": profile.graceful_stop_s,
        "http": {
            "engine": profile.http.engine,
            "timeout_s": profile.http.timeout_s,
            "connect_timeout_s": profile.http.connect_timeout_s,
            "verify_tls": profile.http.verify_tls,
            "headers": {n: _header_value(n, v) for n, v in profile.http.headers},
        },
        "variables": {
            v.name: _secret_shown(v.source) if v.secret else v.value
            for v in profile.variables
        },
        "load": load,
        "thresholds": {metric: list(exprs) for metric, exprs in profile.thresholds},
        "abort_on_fail": [
            {
                "threshold": str(rule.threshold.source),
                "delay_abort_eval_s": rule.delay_abort_eval_s,
            }
            for rule in profile.threshold_rules
            if rule.abort_on_fail
        ],
        "slos": profile.slos.as_mapping() if profile.slos is not None else None,
        "monitor": _describe_monitor(profile.monitor),
        "data": [source_summary(d) for d in profile.data],
        "scenarios": [
            {
                "name": sc.name,
                "weight": sc.weight,
                "think_s": sc.think_s,
                "steps": [_describe_step(st) for st in sc.steps],
            }
            for sc in profile.scenarios
        ],
        "setup": [_describe_step(st) for st in profile.setup],
    }


def _describe_step(step: Step) -> dict[str, Any]:
    """A step's shape: names of headers and captures, never their values."""
    return {
        "name": step.name,
        "method": step.method,
        "endpoint": step.endpoint,
        "headers": sorted(n for n, _ in step.headers),
        "body": step.body_kind,
        "captures": [c.name for c in step.captures],
        "think_s": step.think_s,
    }


def _describe_monitor(monitor: MonitorSettings) -> dict[str, Any]:
    """The monitor block with passwords in DSNs and URLs replaced; of a command,
    only the program (its arguments may carry a secret)."""
    target: dict[str, Any] | None = None
    if monitor.target is not None:
        t = monitor.target
        target = {"how": t.how, "pid": t.pid, "port": t.port, "name": t.name}
        if t.command:
            target["command"] = f"{t.command[0]} ..."
            target["ready_url"] = redact_credentials(t.ready_url or "")
            target["ready_timeout_s"] = t.ready_timeout_s
            target["stop_grace_s"] = t.stop_grace_s
    return {
        "enabled": monitor.enabled,
        "interval_s": monitor.interval_s,
        "target": target,
        "prometheus": [
            {
                "url": redact_credentials(p.url),
                "metrics": list(p.metrics),
                "timeout_s": p.timeout_s,
                "source": p.source,
            }
            for p in monitor.prometheus
        ],
        "postgres": [
            {"dsn": redact_credentials(p.dsn), "source": p.source}
            for p in monitor.postgres
        ],
        "redis": [
            {"url": redact_credentials(r.url), "source": r.source}
            for r in monitor.redis
        ],
    }


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class EventLog:
    """Appends one JSON object per line to ``events.jsonl``, each with one
    ``write(2)`` of its own, so that nothing waits in a buffer.

    An event that cannot be written (a full disk) is not worth stopping a run for:
    the first failure is logged, ``lost`` counts the events that did not make it,
    and writing goes on with the next one. A line cut short is ended before the
    next, so it stays one unreadable line that readers skip.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._cut = False
        self.lost = 0
        self.error = ""
        """The first write error, as text; empty while every event was written."""

    def write(self, kind: str, wall_ns: int | None = None, **data: Any) -> None:
        if self._fd is None:
            return
        record = {
            "time": (wall_ns if wall_ns is not None else time.time_ns()) / 1e9,
            "event": kind,
            **data,
        }
        line = (json.dumps(record, default=str) + "\n").encode()
        if self._cut:
            line = b"\n" + line
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            self._lose(exc)
            return
        self._cut = written < len(line)
        if self._cut:
            self._lose(OSError(f"only {written} of {len(line)} bytes written"))

    def _lose(self, exc: OSError) -> None:
        self.lost += 1
        if not self.error:
            self.error = str(exc)
            log.error("cannot write to %s (%s); the run goes on", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
