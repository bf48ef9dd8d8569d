"""``index.html``: the report page, one file with its plots inline.

Rendered from ``summary.json``'s content (see :mod:`analysis.report`) and the plots
as base64 PNG; no script, no external link, every text escaped. A run that did not
complete, or whose records are not all there, says so at the top in amber, under an
``incomplete: ...`` badge.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def observed_text(value: float | None) -> str:
    """An observed figure in six significant digits, or "no data"."""
    if value is None:
        return "no data"
    return f"{value:.6g}"


def records_missing_text(block: Mapping[str, Any]) -> str:
    """``records missing: N listed / M found`` (or the damaged parts when the
    manifest gives no count)."""
    listed = block.get("listed_requests")
    if listed is None:
        damaged = len(block.get("damaged_parts") or ())
        return (
            f"records missing: {damaged} damaged part(s), "
            f"{block.get('found_requests', 0):,} requests found"
        )
    found = block.get("found_requests", 0)
    return f"records missing: {listed:,} listed / {found:,} found"


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2430; margin: 0; background: #f6f7f9; }
main { max-width: 1140px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #d9dde3;
     padding-bottom: 4px; }
.sub { color: #556070; margin: 0 0 16px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px;
         font-weight: 600; font-size: 13px; vertical-align: middle; }
.passed { background: #d9f2dd; color: #155d22; }
.failed { background: #fadcd9; color: #8a1c12; }
.neutral { background: #e6e9ee; color: #3b4452; }
.incomplete { background: #fdeec4; color: #744f00; }
.alert { background: #fdeec4; color: #4a3300; border-left: 4px solid #d49a00;
         padding: 8px 12px; margin: 8px 0 16px; }
.alert ul { margin: 4px 0 0; padding-left: 20px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px;
           margin: 0; }
dl.facts dt { color: #556070; } dl.facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 14px; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e4e7ec; text-align: right;
         white-space: nowrap; }
th { background: #eef0f4; position: sticky; top: 0; }
td.name, th.name { text-align: left; white-space: normal; }
tr.total td { font-weight: 600; border-top: 2px solid #c9ced6; }
td.weak { color: #8a6d00; }
figure { margin: 16px 0 28px; background: #fff; padding: 8px;
         border: 1px solid #e4e7ec; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: #556070; font-size: 13px; margin-top: 6px; }
.note { color: #556070; font-size: 13px; }
"""


def render_html(summary: Mapping[str, Any], images: Sequence[tuple[str, str]]) -> str:
    """The report page: one file, plots inline, no script, every text escaped."""
    run = summary["run"]
    e = html.escape
    verdict = summary["verdict"]
    badge = _badge_kind(verdict)
    title = f"Run {run['run_id']}: {run.get('profile') or ''}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{e(title)} <span class='badge {badge}'>{e(verdict)}</span></h1>",
        f"<p class='sub'>{e(str(run.get('target') or ''))} &middot; status "
        f"<strong>{e(str(run.get('status')))}</strong> &middot; "
        f"{e(_duration_text(run.get('duration_s')))}</p>",
        _incomplete_notice(summary),
        _facts(run, summary.get("records")),
        _verdict_section(summary),
        _findings_section(summary),
        _endpoint_section(summary),
        _status_code_section(summary) or _errors_section(summary),
    ]
    if images:
        parts.append("<h2>Plots</h2>")
        for caption, data in images:
            parts.append(
                f"<figure><img alt='{e(caption, quote=True)}' "
                f"src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
    parts.append(_phase_section(summary))
    parts.append(_event_section(summary))
    parts.append(
        f"<p class='note'>Generated {e(str(summary['generated_at']))} by "
        f"{e(str(summary['generated_by']))}; every figure here is also in "
        "summary.json beside this page.</p>"
    )
    parts.append("</main></body></html>")
    return "\n".join(p for p in parts if p)


def _duration_text(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return ""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _badge_kind(verdict: str) -> str:
    if verdict.startswith("incomplete"):
        return "incomplete"
    return {"passed": "passed", "failed": "failed"}.get(verdict, "neutral")


def _incomplete_notice(summary: Mapping[str, Any]) -> str:
    """Why the run cannot pass (its status, missing records), in amber at the top."""
    reasons = list(summary.get("incomplete_reasons") or ())
    records = summary.get("records") or {}
    if not reasons:
        return ""
    e = html.escape
    items = "".join(f"<li>{e(str(r))}</li>" for r in reasons)
    detail = ""
    if records.get("complete") is False and records.get("note"):
        detail = f"<p>{e(str(records['note']))}</p>"
    return (
        "<div class='alert'><strong>This run is not complete, so it does not "
        f"pass:</strong><ul>{items}</ul>{detail}</div>"
    )


def _facts(run: Mapping[str, Any], records: Mapping[str, Any] | None = None) -> str:
    e = html.escape
    counts = run.get("counts") or {}
    dropped = counts.get("dropped")
    if dropped is None:
        # The workers report their drops when they finish.
        dropped = "not yet known" if run.get("status") == "running" else "-"
    records_text = (records or {}).get("note")
    rows = [
        ("started", run.get("started_at")),
        ("ended", run.get("ended_at") or "still running or not recorded"),
        ("profile file", run.get("profile_file")),
        ("load model", run.get("model")),
        ("workers", run.get("workers")),
        ("time scale", run.get("time_scale")),
        ("iterations", counts.get("iterations")),
        ("arrivals dropped", dropped),
        ("requests cut short", counts.get("cancelled")),
        ("measured, not written (disk full)", counts.get("unsaved")),
        ("stopped early because", run.get("abort_reason")),
        ("records", records_text),
        ("run folder", run.get("path")),
    ]
    items = "".join(
        f"<dt>{e(name)}</dt><dd>{e(str(value))}</dd>"
        for name, value in rows
        if value not in (None, "", 0) or name == "arrivals dropped"
    )
    return f"<dl class='facts'>{items}</dl>"


def _status_code_section(summary: Mapping[str, Any]) -> str:
    """Per endpoint, requests by HTTP status (0 is no response) and errors by kind;
    empty for a summary without status counts (the plain errors table stands in)."""
    rows = list(summary["endpoints"])
    if summary.get("totals"):
        rows.append(summary["totals"])
    if not any(r.get("statuses") for r in rows):
        return ""
    e = html.escape
    codes = sorted({int(c) for r in rows for c in r.get("statuses") or {}})
    kinds = sorted({k for r in rows for k in r.get("errors_by_kind") or {}})
    head = "".join(
        f"<th>{'no response' if code == 0 else code}</th>" for code in codes
    ) + "".join(f"<th>error: {e(k)}</th>" for k in kinds)
    body = []
    for r in rows:
        total = r["method"] == "ALL"
        name = "all endpoints" if total else f"{r['method']} {r['endpoint']}"
        statuses = r.get("statuses") or {}
        errors = r.get("errors_by_kind") or {}
        body.append(
            f"<tr{' class=total' if total else ''}><td class='name'>{e(name)}</td>"
            + "".join(_cell(statuses.get(str(code))) for code in codes)
            + "".join(_cell(errors.get(k)) for k in kinds)
            + "</tr>"
        )
    return (
        "<h2>Status codes and errors</h2><table><thead><tr>"
        "<th class='name'>endpoint</th>"
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table><p class='note'>Requests per HTTP status (no response: "
        "the connection failed, timed out or was cut short) and failed requests per "
        "error kind; a check can fail a request whatever its status.</p>"
    )


def _status_badge(status: str) -> str:
    kind = {"passed": "passed", "failed": "failed"}.get(status, "neutral")
    return f"<span class='badge {kind}'>{html.escape(status)}</span>"


def _verdict_section(summary: Mapping[str, Any]) -> str:
    e = html.escape
    thresholds = summary["thresholds"]
    slos = summary["slos"]
    if not thresholds and not slos:
        return (
            "<h2>Thresholds</h2><p class='note'>The profile declares no thresholds "
            "and no SLOs.</p>"
        )
    rows = []
    for t in thresholds:
        rows.append(
            f"<tr><td class='name'>{e(t['metric'])}</td>"
            f"<td class='name'>{e(t['expression'])}</td>"
            f"<td>{e(observed_text(t['observed']))}</td><td>{t['samples']}</td>"
            f"<td>{_status_badge(t['status'])}</td>"
            f"<td class='name'>{e(t['note'])}</td></tr>"
        )
    for s in slos:
        rows.append(
            f"<tr><td class='name'>{e(s['slo'])}</td>"
            f"<td class='name'>{e(s['target'])}</td>"
            f"<td>{e(observed_text(s['observed']))}</td><td>{s['samples']}</td>"
            f"<td>{_status_badge(s['status'])}</td>"
            f"<td class='name'>{e(s['note'])}</td></tr>"
        )
    return (
        "<h2>Thresholds and SLOs</h2><table><thead><tr>"
        "<th class='name'>metric</th><th class='name'>requirement</th>"
        "<th>observed</th><th>samples</th><th>verdict</th><th class='name'>note</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        "<p class='note'>Latency figures are in milliseconds, rates are fractions "
        "(0.01 is 1 %), throughput in requests per second.</p>"
    )


_FINDING_TITLES = {
    "leak": "Memory leak",
    "degradation": "Degradation over time",
    "breaking_point": "Breaking point",
    "generator": "Load generator",
}
_FINDING_ALARMS = (
    "leak suspected",
    "degrading",
    "broke at",
    "fell behind",
    "dropped arrivals",
)


def _findings_section(summary: Mapping[str, Any]) -> str:
    """The detectors' verdicts, each with the sentence that explains it."""
    findings = summary.get("findings") or {}
    if not findings:
        return ""
    e = html.escape
    rows = []
    for name, finding in findings.items():
        verdict = str(finding.get("verdict", ""))
        alarm = verdict.startswith(_FINDING_ALARMS)
        calm = verdict in ("no leak", "stable", "kept up") or verdict.startswith(
            "held up"
        )
        kind = "failed" if alarm else "passed" if calm else "neutral"
        rows.append(
            f"<tr><td class='name'>{e(_FINDING_TITLES.get(name, name))}</td>"
            f"<td><span class='badge {kind}'>{e(verdict)}</span></td>"
            f"<td class='name'>{e(str(finding.get('explanation', '')))}</td></tr>"
        )
    return (
        "<h2>Findings</h2><table><thead><tr><th class='name'>question</th>"
        "<th>answer</th><th class='name'>why</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table><p class='note'>From the records and the resource "
        "samples; the methods are in docs/detectors.md of the harness.</p>"
    )


def _cell(value: object, digits: int = 2, weak: bool = False) -> str:
    css = " class='weak'" if weak else ""
    if value is None:
        return f"<td{css}>&ndash;</td>"
    if isinstance(value, float):
        return f"<td{css}>{value:,.{digits}f}</td>"
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"<td{css}>{html.escape(text)}</td>"


def _endpoint_section(summary: Mapping[str, Any]) -> str:
    e = html.escape
    rows = list(summary["endpoints"])
    if summary.get("totals"):
        rows.append(summary["totals"])
    if not rows:
        return "<h2>Endpoints</h2><p class='note'>No request was recorded.</p>"
    body = []
    weak_any = False
    for r in rows:
        weak = set(r.get("low_samples", ()))
        weak_any = weak_any or bool(weak)
        total = r["method"] == "ALL"
        name = "all endpoints" if total else f"{r['method']} {r['endpoint']}"
        error_rate = r.get("error_rate")
        body.append(
            f"<tr{' class=total' if total else ''}><td class='name'>{e(name)}</td>"
            + _cell(r.get("requests"))
            + _cell(r.get("errors"))
            + _cell(None if error_rate is None else 100 * error_rate, 2)
            + _cell(r.get("rps"), 1)
            + "".join(
                _cell(r.get(k), 2, k in weak)
                for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "response_p99_ms")
            )
            + "</tr>"
        )
    note = (
        "<p class='note'>Service time is measured from the moment a request was "
        "sent; the last column measures from the moment it was due, so it also "
        "counts any wait for the load generator."
    )
    if weak_any:
        note += (
            " Figures in amber rest on fewer samples than that quantile needs "
            "(10 / (1 &minus; q)) and should not be trusted."
        )
    rel = (summary.get("totals") or {}).get("quantile_rel_error") or 0
    if rel:
        note += f" Quantiles are from histograms, within {100 * rel:.2f} %."
    note += "</p>"
    return (
        "<h2>Endpoints</h2><table><thead><tr><th class='name'>endpoint</th>"
        "<th>requests</th><th>errors</th><th>error %</th><th>req/s</th>"
        "<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th>"
        "<th>p99 from due ms</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
        + note
    )


def _errors_section(summary: Mapping[str, Any]) -> str:
    errors = summary["errors"]
    if not errors:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td class='name'>{e(x['kind'])}</td><td>{x['count']:,}</td></tr>"
        for x in errors
    )
    return (
        "<h2>Errors by kind</h2><table style='width:auto'><thead><tr>"
        "<th class='name'>kind</th><th>requests</th></tr></thead><tbody>"
        + rows
        + "</tbody></table>"
    )


def _phase_section(summary: Mapping[str, Any]) -> str:
    phases = summary["phases"]
    if not phases:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td class='name'>{e(p['name'])}</td><td>{p['start_s']:.1f}</td>"
        f"<td>{p['end_s']:.1f}</td></tr>"
        for p in phases
    )
    return (
        "<h2>Phases</h2><table style='width:auto'><thead><tr>"
        "<th class='name'>phase</th><th>from s</th><th>to s</th></tr></thead>"
        "<tbody>" + rows + "</tbody></table>"
    )


def _event_section(summary: Mapping[str, Any]) -> str:
    events = summary["events"]
    if not events:
        return ""
    e = html.escape
    rows = []
    for event in events:
        details = ", ".join(
            f"{k}={v}" for k, v in event.items() if k not in ("time", "event")
        )
        rows.append(
            f"<tr><td class='name'>{e(str(event['time']))}</td>"
            f"<td class='name'>{e(str(event['event']))}</td>"
            f"<td class='name'>{e(details)}</td></tr>"
        )
    return (
        "<h2>Notable events</h2><table><thead><tr><th class='name'>time (UTC)</th>"
        "<th class='name'>event</th><th class='name'>details</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )
