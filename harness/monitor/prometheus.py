"""Sample a process through its Prometheus ``/metrics`` page.

How this works. Each :meth:`PrometheusSampler.sample` fetches the page (plain HTTP
GET, the text exposition format), parses it with ``prometheus_client``'s parser and
turns the standard process metrics that client libraries export into columns:

* ``rss_bytes`` (int): ``process_resident_memory_bytes``
* ``vms_bytes`` (int): ``process_virtual_memory_bytes``
* ``cpu_seconds_total`` (float): ``process_cpu_seconds_total``
* ``cpu_percent`` (float): the change of the above over wall time
* ``open_fds`` (int): ``process_open_fds``
* ``prom_<name>`` (float): each extra metric asked for

A metric is matched by the name that starts its sample lines (``foo_total`` for a
counter, ``foo_bucket``/``foo_sum``/``foo_count`` for a histogram), and its value is
the sum over all of its label sets. A column whose metric the page does not carry is
null; a missing extra metric is logged once (again only after it came back and went
away). ``cpu_percent`` is of one core (200 means two cores busy), measured between
two consecutive successful scrapes, so it is null on the first sample, after a failed
one, when the counter went backwards (the process restarted), and when the scrape
came less than ``min_cpu_span_s`` after the previous figure (the monitor's last
sample at the stop): client libraries count CPU in ticks of 10 ms, so a figure over
a few milliseconds is noise.

A scrape that fails mid-run (the service is down, slow, or answers garbage) yields
a row of nulls and one warning per run of failures; the next success logs that
sampling resumed. Only :meth:`~PrometheusSampler.open` raises.
"""

from __future__ import annotations

import base64
import http.client
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .base import MonitorError, Outage, redact_credentials

log = logging.getLogger("harness.monitor.prometheus")

DEFAULT_TIMEOUT_S = 2.0
MAX_PAGE_BYTES = 32 * 1024 * 1024
"""A larger page is refused: no metrics page should come near it."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_STANDARD: dict[str, str] = {
    "rss_bytes": "process_resident_memory_bytes",
    "vms_bytes": "process_virtual_memory_bytes",
    "cpu_seconds_total": "process_cpu_seconds_total",
    "open_fds": "process_open_fds",
}
_INTEGER_COLUMNS = frozenset({"rss_bytes", "vms_bytes", "open_fds"})
_ACCEPT = "text/plain; version=0.0.4; q=1.0, */*; q=0.1"


class _ScrapeFailed(Exception):
    """One scrape did not give a page; the message says why (no secrets)."""


@dataclass(frozen=True, slots=True)
class _Target:
    """The URL split into what is requested and what may be shown."""

    url: str
    """Without user and password; what the request goes to."""
    shown: str
    """Safe to print: no password, no query string."""
    authorization: str | None
    """``Basic ...`` when the URL carried a user, else None."""


def _parse_url(url: str) -> _Target:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MonitorError(
            f"prometheus sampler: {redact_credentials(url)!r} is not a URL ({exc}); "
            "give one like http://127.0.0.1:9100/metrics"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MonitorError(
            f"prometheus sampler: {redact_credentials(url)!r} is not an http(s) URL "
            "with a host; give one like http://127.0.0.1:9100/metrics"
        )
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path or "/"
    bare = urllib.parse.urlunsplit((parts.scheme, netloc, path, parts.query, ""))
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    shown = f"{parts.scheme}://{netloc}{path}"
    return _Target(bare, shown, authorization)


def _column_of(metric: str) -> str:
    return "prom_" + metric.replace(":", "_")


class PrometheusSampler:
    """Scrape ``url`` (a Prometheus text page) once per sample.

    ``metrics`` names extra metrics to record as ``prom_<name>`` columns (a colon in
    a name becomes an underscore in its column). ``timeout_s`` bounds each blocking
    step of a scrape (connect, each read). Proxies set in the environment are not
    used: the sampler talks to the service directly. ``min_cpu_span_s``: the
    shortest span between two scrapes that gives a ``cpu_percent``.
    """

    def __init__(
        self,
        url: str,
        metrics: tuple[str, ...] = (),
        timeout_s: float = DEFAULT_TIMEOUT_S,
        source: str = "prometheus",
        *,
        min_cpu_span_s: float = 0.0,
    ) -> None:
        self._target = _parse_url(url)
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise MonitorError(
                f"prometheus sampler for {self._target.shown}: timeout_s must be a "
                f"positive number of seconds, not {timeout_s!r}"
            )
        columns: dict[str, str] = {}
        for metric in metrics:
            if not isinstance(metric, str) or not _NAME.match(metric):
                raise MonitorError(
                    f"prometheus sampler for {self._target.shown}: {metric!r} is not "
                    "a metric name; names are letters, digits, '_' and ':' and do "
                    "not start with a digit"
                )
            column = _column_of(metric)
            if column in columns.values():
                raise MonitorError(
                    f"prometheus sampler for {self._target.shown}: {metric!r} is "
                    f"listed twice or collides with another name as column {column}; "
                    "list each metric once"
                )
            columns[metric] = column
        self.name = source
        self.source = source
        self.url = self._target.shown
        self.timeout_s = timeout_s
        self.min_cpu_span_s = min_cpu_span_s
        self._extra = columns
        self._wanted = frozenset(_STANDARD.values()) | frozenset(columns)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._last_cpu: tuple[float, int] | None = None
        """CPU seconds and the monotonic instant of the previous good scrape."""
        self.outage = Outage(log, source, self.url, "scraping")
        self._missing: set[str] = set()

    def open(self) -> None:
        """Scrape once; raise :class:`MonitorError` if the page cannot be had."""
        try:
            values, _ = self._scrape()
        except _ScrapeFailed as exc:
            raise MonitorError(
                f"prometheus sampler: cannot read {self.url}: {exc}\n  fix: check that "
                "the service runs and exposes its metrics there (the URL includes "
                "the path, often /metrics), or remove this sampler from the profile"
            ) from None
        absent = [m for m in _STANDARD.values() if m not in values]
        if absent:
            log.warning(
                "%s at %s exposes no %s; those columns stay empty",
                self.source,
                self.url,
                ", ".join(absent),
            )
        self._note_missing(values)

    def sample(self, now_ns: int) -> list[dict[str, object]]:
        """One row: the process figures and the extra metrics, nulls on failure."""
        try:
            values, at_ns = self._scrape()
        except _ScrapeFailed as exc:
            self.outage.failed(str(exc))
            self._last_cpu = None
            return [self._row({}, None)]
        self.outage.answered()
        self._note_missing(values)
        return [self._row(values, self._cpu_percent(values, at_ns))]

    def close(self) -> None:
        """Nothing stays open between scrapes; present for the interface."""
        self._last_cpu = None

    def _scrape(self) -> tuple[dict[str, float], int]:
        """The wanted sample values of one page, summed over label sets, and the
        monotonic instant the page was taken (the middle of the request)."""
        request = urllib.request.Request(self._target.url, headers={"Accept": _ACCEPT})
        if self._target.authorization is not None:
            request.add_unredirected_header("Authorization", self._target.authorization)
        started_ns = time.monotonic_ns()
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                body = response.read(MAX_PAGE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise _ScrapeFailed(f"HTTP status {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise _ScrapeFailed(str(reason) or type(reason).__name__) from None
        at_ns = (started_ns + time.monotonic_ns()) // 2
        if len(body) > MAX_PAGE_BYTES:
            raise _ScrapeFailed(f"the page is over {MAX_PAGE_BYTES} bytes")
        try:
            text = body.decode("utf-8")
            values: dict[str, float] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in self._wanted:
                        values[sample.name] = values.get(sample.name, 0.0) + float(
                            sample.value
                        )
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            # The parser quotes the offending line; a short piece is enough.
            raise _ScrapeFailed(
                f"the page is not in the Prometheus text format ({str(exc)[:80]})"
            ) from None
        return values, at_ns

    def _note_missing(self, values: dict[str, float]) -> None:
        for metric in self._extra:
            if metric in values:
                self._missing.discard(metric)
            elif metric not in self._missing:
                self._missing.add(metric)
                log.warning(
                    "%s: %s does not expose %s; column %s is null while it is absent",
                    self.source,
                    self.url,
                    metric,
                    self._extra[metric],
                )

    def _cpu_percent(self, values: dict[str, float], at_ns: int) -> float | None:
        cpu_s = values.get(_STANDARD["cpu_seconds_total"])
        previous = self._last_cpu
        if (
            cpu_s is not None
            and previous is not None
            and at_ns - previous[1] < self.min_cpu_span_s * 1e9
        ):
            return None  # too soon for a figure: keep the baseline
        self._last_cpu = None if cpu_s is None else (cpu_s, at_ns)
        if cpu_s is None or previous is None or at_ns <= previous[1]:
            return None
        used_s = cpu_s - previous[0]
        if used_s < 0:
            return None
        return used_s / ((at_ns - previous[1]) / 1e9) * 100.0

    def _row(
        self, values: dict[str, float], cpu_percent: float | None
    ) -> dict[str, object]:
        row: dict[str, object] = {"source": self.source}
        for column, metric in _STANDARD.items():
            value = values.get(metric)
            if value is not None and not math.isfinite(value):
                value = None
            if column in _INTEGER_COLUMNS and value is not None:
                row[column] = round(value)
            else:
                row[column] = value
            if column == "cpu_seconds_total":
                row["cpu_percent"] = cpu_percent
        for metric, column in self._extra.items():
            row[column] = values.get(metric)
        return row
