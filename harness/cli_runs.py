"""``harness runs``: list, show and stop runs, from any terminal."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import click

from . import service

_OUT = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=service.DEFAULT_OUT,
    show_default=True,
    help="Folder that holds the run folders.",
)


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


@click.group()
def runs() -> None:
    """List, show and stop runs (started here, elsewhere, or from Python)."""


@runs.command("list")
@_OUT
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
def list_command(out: Path, as_json: bool) -> None:
    """Every run under OUT, newest first."""
    found = service.list_runs(out)
    if as_json:
        for item in found:
            click.echo(json.dumps(item.as_dict()))
        return
    if not found:
        click.echo(f"no runs under {out}")
        return
    click.echo(
        f"{'run id':<28} {'status':<12} {'started (UTC)':<20} {'elapsed':>8} "
        f"{'requests':>10}  profile"
    )
    for s in found:
        click.echo(
            f"{s.run_id:<28} {s.status:<12} {_when(s.started_at):<20} "
            f"{_seconds(s.elapsed_s):>8} {s.requests:>10}  {s.profile}"
        )


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@_OUT
@click.option("--json", "as_json", is_flag=True, help="The results as JSON.")
def show_command(run_id: str, out: Path, as_json: bool) -> None:
    """RUN's status and results: totals, error rate, latency, throughput, per
    scenario, and the system metrics the monitor measured.

    A run that is still going (or was lost) can only be read up to its last closed
    part: a note says how many requests and up to when, with the live count."""
    figures = service.results(run_id, out)
    if as_json:
        click.echo(json.dumps(figures, indent=1))
        return
    s = figures["run"]
    click.echo(
        f"run {s['run_id']}: {s['status']} ({s['profile']} against {s['target']})"
    )
    click.echo(f"folder: {s['run_dir']}")
    click.echo(
        f"started {_when(s['started_at'])} UTC, elapsed {_seconds(s['elapsed_s'])}"
        + (f", stopped early: {s['abort_reason']}" if s["abort_reason"] else "")
    )
    if s["status"] == "failed" and s["stop_reason"]:
        click.echo(f"failed: {s['stop_reason']}")
    elif s["stop_reason"] and s["status"] != "completed" and not s["abort_reason"]:
        click.echo(f"stop reason: {s['stop_reason']}")
    if figures["note"]:
        click.echo(
            textwrap.fill(f"note: {figures['note']}.", width=88, subsequent_indent="  ")
        )
    click.echo("")
    # With nothing closed yet, a table of zeros would misstate a run that sends.
    if figures["final"] or figures["records"]["rows"]:
        _print_table(figures)
    _print_system(figures)


def _print_table(figures: dict[str, Any]) -> None:
    rows = [("all", figures), *sorted(figures["scenarios"].items())]
    click.echo(
        f"{'scenario':<32} {'requests':>9} {'failed':>7} {'err %':>6} {'req/s':>8} "
        f"{'avg ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    )
    for name, f in rows:
        click.echo(
            f"{name[:32]:<32} {f['total_requests']:>9} {f['failed_requests']:>7} "
            f"{_pct(f['error_rate']):>6} {_num(f['throughput_rps'], 1):>8} "
            f"{_num(f['average_response_time_ms']):>8} "
            f"{_num(f['p95_response_time_ms']):>8} {_num(f['p99_response_time_ms']):>8}"
        )
    if figures["errors"]:
        kinds = ", ".join(f"{k} {v}" for k, v in figures["errors"].items())
        click.echo(f"errors: {kinds}")


def _print_system(figures: dict[str, Any]) -> None:
    system = figures["system"]
    if system is None:
        where = "this run" if figures["final"] else "the parts closed so far"
        click.echo(f"system: no resource samples in {where}")
        return
    target = system.get("target")
    if target:
        rss = target.get("rss_bytes_max")
        click.echo(
            f"target: cpu mean {_num(target['cpu_percent_mean'], 1)} %, max "
            f"{_num(target['cpu_percent_max'], 1)} %; rss max "
            f"{'-' if rss is None else f'{rss / 2**20:.1f}'} MiB"
        )
    for name in ("host", "postgres", "redis"):
        if name in system:
            parts = ", ".join(
                f"{k} {_num(v)}" for k, v in system[name].items() if k.endswith("_max")
            )
            click.echo(f"{name}: {parts}")


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


@runs.command("stop")
@click.argument("run_id", metavar="RUN")
@_OUT
@click.option(
    "--timeout",
    type=float,
    default=service.STOP_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for requests in flight to finish.",
)
def stop_command(run_id: str, out: Path, timeout: float) -> None:
    """Stop RUN gracefully, as Ctrl-C in its terminal would: requests in flight
    finish and every record is kept."""
    before = service.status(run_id, out)
    if not before.running:
        click.echo(f"run {before.run_id} is not running ({before.status})")
        return
    click.echo(f"stopping run {before.run_id} (pid {before.coordinator_pid}) ...")
    after = service.stop(run_id, out=out, timeout_s=timeout)
    click.echo(
        f"run {after.run_id}: {after.status}, {after.requests} requests recorded"
    )
