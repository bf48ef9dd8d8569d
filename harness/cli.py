"""The ``harness`` command line.

Exit codes (the same for every command):

* 0 - the run completed (and, where thresholds are set, they passed);
* 1 - thresholds failed;
* 2 - bad input: a profile or an option is invalid, nothing was started;
* 3 - run error: the run could not be carried out, a worker was lost or stopped on
  an unreadable data line, or the disk ran low (``degraded``: the load was not what
  the profile asked for), or a record, event or the manifest could not be written;
* 130 - interrupted by Ctrl-C, SIGTERM or a hang-up (everything measured until then
  is on disk).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .disk import DEFAULT_MIN_FREE_BYTES, parse_size
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_THRESHOLDS_FAILED,
    HarnessError,
    UsageError,
)
from .profile.model import Profile

if TYPE_CHECKING:
    from analysis.dataset import Run

log = logging.getLogger("harness.cli")

DEFAULT_OUT = Path("runs")


def _default_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _positive(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be more than 0, not {value}")
    return value


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loadharness", prog_name="harness")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def cli(verbose: int) -> None:
    """Stress and endurance harness for HTTP services."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")


@cli.command()
@click.argument("profile_path", metavar="PROFILE", type=click.Path(dir_okay=False))
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=256),
    default=None,
    help="Worker processes (default: one per CPU).",
)
@click.option(
    "--time-scale",
    type=float,
    default=1.0,
    callback=_positive,
    help="Multiply every duration and think time, e.g. 0.05 turns 10 min into 30 s.",
)
@click.option(
    "--duration",
    type=str,
    default=None,
    help="Cap the run's length (e.g. 30s, 5m), after the time scale.",
)
@click.option(
    "--target", type=str, default=None, help="Replace the profile's target URL."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder that receives the run folder.",
)
@click.option(
    "--run-id", type=str, default=None, help="Run folder name (default: time)."
)
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option(
    "--part-seconds",
    type=float,
    default=60.0,
    show_default=True,
    callback=_positive,
    help="Close a Parquet part this often; a killed worker loses at most this much.",
)
@click.option(
    "--min-free-space",
    type=str,
    default="64MiB",
    show_default=True,
    callback=_size,
    help="Refuse to start, or stop gracefully, when the disk of --out has less free "
    "space than this (0: never).",
)
@click.option(
    "--progress-interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between progress lines when stdout is not a terminal.",
)
@click.option(
    "--no-report",
    is_flag=True,
    help="Do not write report/ (HTML, summary.json, junit.xml) after the run.",
)
@click.option(
    "--monitor-pid",
    type=click.IntRange(min=1),
    default=None,
    help="Sample this process and its children as the target (replaces the "
    "profile's monitor.target).",
)
@click.option(
    "--monitor-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Sample the process listening on this TCP port as the target.",
)
@click.option(
    "--monitor-name",
    type=str,
    default=None,
    help="Sample the process with this name as the target.",
)
@click.option(
    "--no-monitor",
    is_flag=True,
    help="Sample no resources (target, host, harness) during the run.",
)
def run(
    profile_path: str,
    workers: int | None,
    time_scale: float,
    duration: str | None,
    target: str | None,
    out: Path,
    run_id: str | None,
    seed: int,
    part_seconds: float,
    min_free_space: int,
    progress_interval: float,
    no_report: bool,
    monitor_pid: int | None,
    monitor_port: int | None,
    monitor_name: str | None,
    no_monitor: bool,
) -> None:
    """Run PROFILE (a YAML file) and record every request under OUT/RUN_ID/."""
    from .profile.load import load_profile

    profile = load_profile(profile_path, target=target)
    for warning in profile.warnings:
        click.echo(f"warning: {profile_path}: {warning}", err=True)
    profile = _monitor_override(
        profile, monitor_pid, monitor_port, monitor_name, no_monitor
    )
    code = _run_profile(
        profile,
        workers=workers,
        time_scale=time_scale,
        duration=duration,
        out=out,
        run_id=run_id,
        seed=seed,
        progress_interval=progress_interval,
        part_s=part_seconds,
        min_free_bytes=min_free_space,
        report=not no_report,
    )
    sys.exit(code)


def _monitor_override(
    profile: Profile,
    pid: int | None,
    port: int | None,
    name: str | None,
    off: bool,
) -> Profile:
    """The profile with its monitor block changed by the ``--monitor-*`` options."""
    from dataclasses import replace

    from .profile.model import MonitorTarget

    given = [
        option
        for option, value in (
            ("--monitor-pid", pid),
            ("--monitor-port", port),
            ("--monitor-name", name),
        )
        if value is not None
    ]
    if len(given) > 1 or (given and off):
        both = " and ".join([*given, *(["--no-monitor"] if off else [])])
        raise UsageError(f"{both} cannot be used together; give one of them")
    if name is not None and not name.strip():
        raise UsageError("--monitor-name must not be empty")
    monitor = profile.monitor
    if off:
        monitor = replace(monitor, enabled=False)
    elif given:
        target = MonitorTarget(pid=pid, port=port, name=name)
        monitor = replace(monitor, enabled=True, target=target)
    return replace(profile, monitor=monitor)


def _run_profile(
    profile: Profile,
    *,
    workers: int | None,
    time_scale: float,
    duration: str | None,
    out: Path,
    run_id: str | None,
    seed: int,
    progress_interval: float,
    part_s: float = 60.0,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    report: bool = True,
) -> int:
    from analysis.dataset import open_run
    from analysis.summary import endpoint_summary, format_summary

    from .coordinator import Coordinator, RunOptions
    from .durations import format_duration, parse_duration
    from .profile.model import OpenModel, duration_capped, time_scaled

    profile = time_scaled(profile, time_scale)
    if duration is not None:
        try:
            cap = parse_duration(duration)
        except ValueError as exc:
            raise UsageError(f"--duration {duration!r}: {exc}") from None
        if cap <= 0:
            raise UsageError(f"--duration must be more than 0, not {duration!r}")
        profile = duration_capped(profile, cap)
    run_id = run_id or _default_run_id()
    if "/" in run_id or run_id in (".", ".."):
        raise UsageError(f"--run-id {run_id!r} must be a plain folder name")
    if (out / run_id).exists():
        # Refused before anything is printed or started; the coordinator checks
        # again when it creates the folder.
        raise UsageError(
            f"run folder {out / run_id} already exists\n"
            "  fix: choose another --run-id, or remove that folder"
        )
    n_workers = workers or os.cpu_count() or 1
    # A shard's share of the VUs is a whole number: more workers than VUs would
    # leave some with none (every arrival dropped, or nothing to run).
    most_vus = (
        profile.load.max_vus
        if isinstance(profile.load, OpenModel)
        else max(s.target for s in profile.load.stages)
    )
    if 0 < most_vus < n_workers:
        click.echo(
            f"note: {most_vus} VUs at most, so {most_vus} workers, not {n_workers}"
        )
        n_workers = most_vus
    click.echo(
        f"run {run_id}: {profile.name} against {profile.target}, "
        f"{n_workers} workers, {format_duration(profile.duration_s)}"
    )
    coordinator = Coordinator(
        profile,
        RunOptions(
            out_dir=out,
            run_id=run_id,
            workers=n_workers,
            seed=seed,
            progress_interval_s=progress_interval,
            time_scale=time_scale,
            part_s=part_s,
            min_free_bytes=min_free_bytes,
        ),
    )
    outcome = coordinator.run()
    run = open_run(outcome.run_dir)
    click.echo("")
    click.echo(format_summary(endpoint_summary(run)))
    click.echo("")
    failed = _judge(profile, run)
    if report:
        _write_report(run)
    extra = ""
    if outcome.workers_lost:
        extra = f", workers lost: {outcome.workers_lost}"
    if outcome.cancelled:
        extra += f", {outcome.cancelled} requests cut short by the stop"
    if outcome.unsaved:
        extra += f", {outcome.unsaved} measured but not written (disk full)"
    for problem in outcome.problems:
        click.echo(f"error: {problem}", err=True)
    click.echo(f"{outcome.status}: {outcome.rows} requests recorded{extra}")
    click.echo(f"run folder: {outcome.run_dir}")
    if outcome.exit_code == EXIT_OK and failed:
        click.echo("thresholds failed")
        return EXIT_THRESHOLDS_FAILED
    return outcome.exit_code


def _write_report(run: Run) -> None:
    """Write the run's report; a failure here loses nothing (the records are on
    disk and ``harness report`` can try again), so it is a warning."""
    from analysis.report import write_report

    try:
        files = write_report(run)
    except Exception as exc:  # the run itself is done and recorded
        # A full disk is no bug of the report's: say it without a traceback.
        log.warning("report not written", exc_info=not isinstance(exc, OSError))
        click.echo(
            f"warning: the report could not be written ({exc}); the records are "
            f"intact, try again with: harness report {run.path}",
            err=True,
        )
        return
    _print_findings(files.summary_json)
    summary = json.loads(files.summary_json.read_text("utf-8"))
    records = summary.get("records") or {}
    if records.get("note") and records.get("complete") is False:
        click.echo(f"records: {records['note']}")
    click.echo(f"report: {files.html}")


def _print_findings(summary_json: Path) -> None:
    """One line per detector: its verdict and why."""
    summary = json.loads(summary_json.read_text("utf-8"))
    for name, finding in (summary.get("findings") or {}).items():
        label = "load generator" if name == "generator" else name.replace("_", " ")
        click.echo(f"{label}: {finding['verdict']} - {finding['explanation']}")


def _judge(profile: Profile, run: Run) -> bool:
    """Print the verdicts of the profile's thresholds and SLOs; True if any failed.

    The verdicts come from the Parquet records, not from the live view."""
    from analysis.slo import evaluate_slos, format_slo_verdicts
    from analysis.thresholds import any_failed, evaluate, format_verdicts

    failed = False
    if profile.threshold_rules:
        verdicts = evaluate(run, profile.threshold_rules)
        click.echo(format_verdicts(verdicts))
        failed = any_failed(verdicts)
    if profile.slos is not None:
        slo_verdicts = evaluate_slos(run, profile.slos)
        click.echo(format_slo_verdicts(slo_verdicts))
        failed = failed or any(v.passed is False for v in slo_verdicts)
    if profile.threshold_rules or profile.slos is not None:
        click.echo("")
    return failed


@cli.command()
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=2,
    show_default=True,
    help="Worker processes.",
)
@click.option(
    "--time-scale",
    type=float,
    default=0.05,
    show_default=True,
    callback=_positive,
    help="Scale of the demo profile's 10-minute shape.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
@click.option("--run-id", type=str, default=None)
def demo(workers: int, time_scale: float, out: Path, run_id: str | None) -> None:
    """Start the bundled demo target and run the demo profile against it."""
    from .demo.process import DemoTarget
    from .profile.load import load_profile_text

    text = resources.files("harness.demo").joinpath("profile.yaml").read_text("utf-8")
    with DemoTarget.start() as target:
        click.echo(f"demo target: {target.url} (pid {target.pid})")
        profile = load_profile_text(
            text, "harness/demo/profile.yaml", target=target.url
        )
        code = _run_profile(
            profile,
            workers=workers,
            time_scale=time_scale,
            duration=None,
            out=out,
            run_id=run_id,
            seed=1,
            progress_interval=5.0,
        )
        served = target.stats().get("requests_served")
        click.echo(f"demo target served {served} requests")
    sys.exit(code)


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the report (default: RUN/report).",
)
@click.option(
    "--every",
    type=str,
    default=None,
    help="Window length for the plots, whole seconds (default: about 200 windows).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 unless the run passed: a threshold or SLO failed, the run did not "
    "complete, or records are missing.",
)
def report(run_dir: Path, out: Path | None, every: str | None, check: bool) -> None:
    """Write RUN's report: report/index.html, summary.json and junit.xml.

    Works on a run that is still going (its finished Parquet parts). Damaged parts
    are skipped with a warning and counted as missing records. With --check, exit 1
    when a threshold or SLO failed, the run did not complete, or records are
    missing."""
    from analysis.dataset import RunNotFound, RunUnreadable, open_run
    from analysis.report import ReportError, fails_check, iter_failures, write_report
    from analysis.windows import WindowSpecError

    try:
        run = open_run(run_dir)
        files = write_report(run, out, every=every)
    except (RunNotFound, RunUnreadable) as exc:
        raise UsageError(str(exc)) from None
    except (ReportError, WindowSpecError) as exc:
        raise UsageError(str(exc)) from None
    summary = json.loads(files.summary_json.read_text("utf-8"))
    _print_findings(files.summary_json)
    records = summary.get("records") or {}
    if records.get("note"):
        click.echo(f"records: {records['note']}")
    click.echo(f"report: {files.html}")
    click.echo(f"summary: {files.summary_json}")
    click.echo(f"junit: {files.junit_xml}")
    click.echo(f"verdict: {summary['verdict']}")
    for line in iter_failures(summary):
        click.echo(f"failed: {line}")
    for reason in summary.get("incomplete_reasons") or ():
        click.echo(f"incomplete: {reason}")
    if check and fails_check(summary):
        sys.exit(EXIT_THRESHOLDS_FAILED)


@cli.group()
def target() -> None:
    """Targets the harness can serve itself."""


def _mount_commands() -> None:
    from .cli_compare import compare
    from .cli_runs import runs
    from .demo.server import command

    target.add_command(command, "demo")
    cli.add_command(runs)
    cli.add_command(compare)


_mount_commands()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_BAD_INPUT if exc.exit_code == 2 else exc.exit_code)
    except HarnessError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
