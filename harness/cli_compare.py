"""``harness compare BASELINE CANDIDATE``: did the candidate run get better or worse?

The command opens both run folders, compares them endpoint by endpoint with
:func:`analysis.compare.compare_runs` (the method is described there and in
docs/compare.md), prints one line per endpoint, writes ``compare.html`` and
``compare.json``, and exits

* 0 when no endpoint regressed beyond the tolerance,
* 1 (:data:`~harness.errors.EXIT_THRESHOLDS_FAILED`) when one did, so that CI fails,
* 2 (:data:`~harness.errors.EXIT_BAD_INPUT`) when a folder is not a run, a run's
  request part cannot be read (the message names the run and the file), or an
  option is out of range (a bare number of 1 or more for a fraction included: see
  :func:`parse_fraction`).

The analysis modules (scipy, matplotlib) are imported when the command runs, not
when the command line starts, so other commands do not pay for them.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .errors import EXIT_OK, EXIT_THRESHOLDS_FAILED, UsageError

if TYPE_CHECKING:
    from analysis.dataset import Run


def parse_fraction(text: str, option: str) -> float:
    """``"10%"`` or ``"0.1"`` as 0.1; a finite number of 0 or more.

    A bare number of 1 or more is refused: ``--tolerance 10`` would mean 1000 %,
    which switches the gate off, while whoever typed it almost surely meant 10 %.
    Such a value must be written as a percentage (``1000%``) to be taken. Raises
    :class:`UsageError` naming ``option`` and saying how to write the value.
    """
    raw = text.strip()
    percent = raw.endswith("%")
    if percent:
        raw = raw[:-1].strip()
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    value = number / 100 if percent else number
    if not math.isfinite(value) or value < 0:
        raise UsageError(
            f"{option} {text!r} is not a fraction: write a percentage like 10% or "
            "a number like 0.1"
        )
    if not percent and value >= 1:
        raise UsageError(
            f"{option} {text!r} reads as {value * 100:g} %; write {value:g}% or "
            f"{value / 100:g}"
        )
    return value


def _open(path: Path, role: str) -> Run:
    from analysis.dataset import open_run

    try:
        run = open_run(path)
    except FileNotFoundError as exc:
        raise UsageError(f"{role} {exc}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{role} {path}: its manifest.json cannot be read ({exc}); pass a run "
            "folder written by `harness run`"
        ) from None
    if not run.request_parts():
        raise UsageError(
            f"{role} {path}: the run has no finished request records under "
            f"{path / 'requests'}; compare runs that sent requests"
        )
    return run


@click.command()
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for compare.html and compare.json "
    "[default: CANDIDATE/compare-<baseline run id>].",
)
@click.option(
    "--tolerance",
    default="10%",
    show_default=True,
    help="A latency regression is a p50 or p95 this much above the baseline's. "
    "Write 10% or 0.1: a bare number of 1 or more is refused.",
)
@click.option(
    "--alpha",
    default="0.01",
    show_default=True,
    help="Significance level of the tests (the intervals are at 1 - alpha).",
)
@click.option(
    "--min-effect",
    default="5%",
    show_default=True,
    help="Smallest latency shift, at the near end of its interval, called a change.",
)
@click.option(
    "--min-tail-effect",
    default="25%",
    show_default=True,
    help="The same for p95, which moves more between runs of one build.",
)
@click.option(
    "--error-tolerance",
    default="0.5%",
    show_default=True,
    help="An error regression is an error rate this much above, in percentage "
    "points (0.5% is half a point); at most 100%.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the sampling and the bootstrap (0 or more).",
)
def compare(
    baseline: Path,
    candidate: Path,
    out: Path | None,
    tolerance: str,
    alpha: str,
    min_effect: str,
    min_tail_effect: str,
    error_tolerance: str,
    seed: int,
) -> None:
    """Compare CANDIDATE with BASELINE (two run folders), endpoint by endpoint.

    Exits 1 when an endpoint regressed beyond the tolerance, 0 otherwise.
    """
    from analysis.compare import (
        DamagedRun,
        compare_runs,
        format_comparison,
        write_comparison,
    )

    base = _open(baseline, "baseline")
    cand = _open(candidate, "candidate")
    if seed < 0:
        raise UsageError(f"--seed {seed}: use a whole number of 0 or more, e.g. 0")
    level = parse_fraction(alpha, "--alpha")
    if not 0 < level < 1:
        raise UsageError(
            f"--alpha {alpha!r} is a significance level: use a value between 0 and "
            "1, e.g. 0.01"
        )
    effects = {}
    for option, text in (
        ("--min-effect", min_effect),
        ("--min-tail-effect", min_tail_effect),
    ):
        effects[option] = parse_fraction(text, option)
        if effects[option] >= 1:
            raise UsageError(f"{option} {text!r} must be under 100%, e.g. 5%")
    latency_limit = parse_fraction(tolerance, "--tolerance")
    error_limit = parse_fraction(error_tolerance, "--error-tolerance")
    if error_limit > 1:
        raise UsageError(
            f"--error-tolerance {error_tolerance!r} is more than 100 percentage "
            "points, more than an error rate can rise: write the rise you accept, "
            "e.g. 0.5% (100% turns the error check off)"
        )
    try:
        comparison = compare_runs(
            base,
            cand,
            tolerance=latency_limit,
            alpha=level,
            min_effect=effects["--min-effect"],
            min_tail_effect=effects["--min-tail-effect"],
            error_tolerance=error_limit,
            seed=seed,
        )
    except DamagedRun as exc:
        role = "baseline" if exc.run_path == base.path else "candidate"
        raise UsageError(
            f"the {role} run {exc.run_id} ({exc.run_path}) has a damaged request "
            f"part: {exc.part} cannot be read ({exc.cause}). The file is cut "
            "short or corrupt: restore it from a copy of the run, or rename it "
            f"(e.g. to {exc.part.name}.damaged) to compare the run without its rows"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{exc}; see `harness compare --help`") from None
    folder = out if out is not None else candidate / f"compare-{base.run_id}"
    try:
        written = write_comparison(comparison, folder)
    except OSError as exc:
        raise UsageError(
            f"cannot write the report into {folder}: {exc}; choose another --out"
        ) from None
    click.echo(
        f"baseline {base.run_id} ({comparison.baseline.profile}), "
        f"candidate {cand.run_id} ({comparison.candidate.profile})"
    )
    for note in comparison.notes:
        click.echo(f"note: {note}")
    click.echo("")
    click.echo(format_comparison(comparison))
    click.echo("")
    for e in comparison.regressions:
        click.echo(f"regression: {e.name}: " + "; ".join(e.reasons))
    click.echo(f"report: {written['html']}")
    click.echo(f"figures: {written['json']}")
    if comparison.regressions:
        click.echo(f"{len(comparison.regressions)} endpoint(s) regressed")
        sys.exit(EXIT_THRESHOLDS_FAILED)
    click.echo("no regression beyond tolerance")
    sys.exit(EXIT_OK)
