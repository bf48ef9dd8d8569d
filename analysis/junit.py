"""``junit.xml``: a run's verdicts as test cases, for CI systems.

One ``<testsuite>`` per run: a case for the run's status, one for its records, one
per threshold and one per SLO entry. The status case fails for any run that did not
complete (interrupted, still running, lost, degraded, aborted, failed); the records
case fails when records the manifest lists are missing or damaged
(``records missing: N listed / M found``). A failed threshold is a ``<failure>``
whose message names the expression and the observed value; an entry with nothing to
judge is ``<skipped>``.
It is rendered from ``summary.json``'s content (see :mod:`analysis.report`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from .page import observed_text, records_missing_text


def render_junit(summary: Mapping[str, Any]) -> str:
    """One test case per threshold and SLO entry, one for the run's status and one
    for its records (when the summary has a ``records`` block).

    A failed threshold is a ``<failure>`` whose message names the expression and
    the observed value; an entry with nothing to judge is ``<skipped>``.
    """
    run = summary["run"]
    suite = ET.Element("testsuite", name=f"harness run {run['run_id']}")
    cases = 0
    failures = 0
    skipped = 0

    def case(classname: str, name: str) -> ET.Element:
        nonlocal cases
        cases += 1
        return ET.SubElement(suite, "testcase", classname=classname, name=name)

    status = str(run.get("status"))
    element = case("run", "run status")
    if status != "completed":
        failures += 1
        reasons = [
            str(r)
            for r in summary.get("incomplete_reasons") or ()
            if not str(r).startswith("records missing")
        ]
        why = (reasons[0] if reasons else "") or run.get("abort_reason")
        why = why or f"the run did not complete (status {status})"
        ET.SubElement(element, "failure", message=f"status {status}: {why}")
    records = summary.get("records")
    if isinstance(records, Mapping):
        element = case("run", "run records")
        note = str(records.get("note") or "")
        if records.get("complete") is False:
            failures += 1
            ET.SubElement(
                element, "failure", message=records_missing_text(records)
            ).text = note or None
        elif records.get("complete") is None:
            skipped += 1
            ET.SubElement(element, "skipped", message=note or "cannot be told")
        else:
            ET.SubElement(element, "system-out").text = note
    for t in summary["thresholds"]:
        element = case("thresholds", f"{t['metric']}: {t['expression']}")
        observed = observed_text(t["observed"])
        if t["status"] == "failed":
            failures += 1
            ET.SubElement(
                element,
                "failure",
                message=f"{t['metric']}: {t['expression']} failed: observed "
                f"{observed} over {t['samples']} samples",
            ).text = t["note"] or None
        elif t["status"] != "passed":
            skipped += 1
            ET.SubElement(element, "skipped", message=t["note"] or t["status"])
        else:
            ET.SubElement(element, "system-out").text = f"observed {observed}"
    for s in summary["slos"]:
        element = case("slos", f"{s['slo']}: {s['target']}")
        if s["status"] == "failed":
            failures += 1
            ET.SubElement(
                element,
                "failure",
                message=f"{s['slo']} failed: observed "
                f"{observed_text(s['observed'])}; required {s['target']}",
            ).text = s["note"] or None
        elif s["status"] != "passed":
            skipped += 1
            ET.SubElement(
                element, "skipped", message=f"{s['status']}: {s['note']}".strip(": ")
            )
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    suite.set("time", str(run.get("duration_s") or 0))
    root = ET.Element(
        "testsuites", tests=str(cases), failures=str(failures), errors="0"
    )
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        root, encoding="unicode"
    )
