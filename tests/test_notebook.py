"""notebooks/analyze-run.ipynb, executed on a real run so that it never rots.

One short smoke run against the demo target feeds two executions of the notebook, so
that both branches of the resource cell run: a copy of the run without its resource
samples, and the run with the samples the harness's monitor took. A third run,
interrupted in its first phase, checks that the notebook says the run was stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from analysis import open_run
from analysis.dataset import finished_parts
from harness.demo.process import DemoTarget

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "analyze-run.ipynb"
SMOKE = REPO / "profiles" / "smoke.yaml"

KERNEL_NAME = "loadharness-notebook-test"
CELL_TIMEOUT_S = 120
RUN_TIMEOUT_S = 60.0
NO_SAMPLES = "no resource samples"
# The smoke profile with a first phase long enough to be interrupted in: 60 s at 20
# iterations/s, then the smoke profile's other two phases.
LONG_WARM_UP = ("duration: 5s, rate: 5}", "duration: 60s, rate: 20}")
REQUESTS_BEFORE_STOP = 20


@dataclass(frozen=True)
class Executed:
    """A notebook after execution: its cells with their outputs."""

    cells: list[Any]

    def outputs(self) -> list[Any]:
        return [o for c in self.cells if c.cell_type == "code" for o in c.outputs]

    def pngs(self) -> int:
        return sum("image/png" in o.get("data", {}) for o in self.outputs())

    def errors(self) -> list[str]:
        return [
            f"{o.ename}: {o.evalue}" for o in self.outputs() if o.output_type == "error"
        ]

    def stream(self, name: str) -> str:
        """What the cells printed to ``name`` (stdout or stderr)."""
        return "".join(
            o.text
            for o in self.outputs()
            if o.output_type == "stream" and o.name == name
        )


def kernel_manager(folder: Path) -> AsyncKernelManager:
    """A kernel of this very interpreter, whatever kernelspecs the machine has.

    A ``python3`` kernelspec found in the user's Jupyter folder could point at
    another Python without the project installed, so the test writes its own into
    ``folder`` and looks nowhere else.
    """
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL_NAME, "language": "python"})
    )
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def execute(run_dir: Path, scratch: Path) -> Executed:
    """Run every cell of the stored notebook with HARNESS_RUN_DIR=run_dir, from the
    notebooks folder as Jupyter would. A failing cell raises CellExecutionError."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        km=kernel_manager(scratch),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    # cleanup_kc: the client shuts down a kernel it did not create only when asked.
    client.execute(env={**os.environ, "HARNESS_RUN_DIR": str(run_dir)}, cleanup_kc=True)
    return Executed(list(nb.cells))


def make_run(target: DemoTarget, out: Path, run_id: str) -> Path:
    """``harness run`` the smoke profile at a quarter of its length (the resource
    monitor samples the target and the workers); the run folder."""
    proc = subprocess.run(
        [
            sys.executable, "-m", "harness", "run", str(SMOKE),
            "--target", target.url, "--workers", "1", "--time-scale", "0.25",
            "--run-id", run_id, "--out", str(out), "--no-report",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out / run_id


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    with DemoTarget.start() as target:
        return make_run(target, out, "nb")


@pytest.fixture(scope="module")
def executed_plain(
    smoke_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Executed]:
    """The notebook on a copy of the run without resource samples."""
    copy = tmp_path_factory.mktemp("plain") / smoke_run.name
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("resources"))
    return copy, execute(copy, tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def executed_with_resources(
    smoke_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Executed]:
    """The notebook on the run as the harness wrote it, with the monitor's samples."""
    assert finished_parts(smoke_run / "resources"), "the monitor wrote no samples"
    return smoke_run, execute(smoke_run, tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the smoke profile stopped by SIGINT (as Ctrl-C) in its first phase,
    once the target has served a few requests."""
    out = tmp_path_factory.mktemp("interrupted")
    profile = out / "long-warm-up.yaml"
    text = SMOKE.read_text()
    assert LONG_WARM_UP[0] in text
    profile.write_text(text.replace(*LONG_WARM_UP))
    with DemoTarget.start() as target:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "harness", "run", str(profile),
                "--target", target.url, "--workers", "1",
                "--run-id", "stopped", "--out", str(out), "--no-report",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )  # fmt: skip
        try:
            for _ in range(600):  # at most about 30 s, far below the 60 s phase
                if target.stats()["requests_served"] >= REQUESTS_BEFORE_STOP:
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be stopped"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    return out / "stopped"


def test_stored_notebook_has_no_outputs_and_explains_every_code_cell() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert code, "the notebook has no code cell"
    for i in code:
        cell = nb.cells[i]
        assert cell.outputs == [] and cell.execution_count is None, (
            f"code cell {i} ({cell.id}) is stored with outputs; clear them"
        )
        assert i > 0 and nb.cells[i - 1].cell_type == "markdown", (
            f"code cell {i} ({cell.id}) has no markdown cell before it"
        )


@pytest.mark.slow
def test_notebook_runs_on_a_fresh_run_and_names_its_endpoints(
    executed_plain: tuple[Path, Executed],
) -> None:
    folder, executed = executed_plain
    assert executed.errors() == []
    # A pandas or matplotlib deprecation inside the kernel is rot in the making.
    assert "Warning" not in executed.stream("stderr")
    # Latency and throughput over time.
    assert executed.pngs() >= 2
    printed = executed.stream("stdout")
    assert f"run directory: {folder}" in printed
    endpoints = pd.read_parquet(folder / "requests")["endpoint"].unique()
    assert len(endpoints) == 2
    for endpoint in endpoints:
        assert endpoint in printed
    # The copy has no resource samples: the resource cell says so instead of failing.
    assert NO_SAMPLES in printed
    assert "The run completed: it went through its phases and ended." in printed
    assert "No unusual events." in printed
    assert "stopped" not in printed


@pytest.mark.slow
def test_notebook_plots_resources_when_the_run_has_samples(
    executed_plain: tuple[Path, Executed],
    executed_with_resources: tuple[Path, Executed],
) -> None:
    folder, executed = executed_with_resources
    sources = set(open_run(folder).resources()["source"])
    assert {"target", "harness-worker-0"} <= sources
    assert executed.errors() == []
    assert "Warning" not in executed.stream("stderr")
    assert NO_SAMPLES not in executed.stream("stdout")
    # The resource figure comes in addition to latency and throughput.
    assert executed.pngs() == executed_plain[1].pngs() + 1


@pytest.mark.slow
def test_notebook_says_when_and_why_a_run_was_stopped_in_its_first_phase(
    interrupted_run: Path, tmp_path: Path
) -> None:
    manifest = json.loads((interrupted_run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["stop_reason"] == "interrupted"
    executed = execute(interrupted_run, tmp_path)
    assert executed.errors() == []
    assert "Warning" not in executed.stream("stderr")
    printed = executed.stream("stdout")
    assert "No unusual events" not in printed
    assert "went through its phases" not in printed
    assert "The run was stopped " in printed
    assert "in phase 1 of 3 ('warm up'), out of 75 s planned" in printed
    assert "it was interrupted (Ctrl-C, SIGTERM or `harness runs stop`)" in printed
    assert "Status interrupted" in printed
    assert "1 unusual event(s): stop (1)" in printed
    events = open_run(interrupted_run).events()
    start = float(events.loc[events["event"] == "run_start", "time"].min())
    stop = float(events.loc[events["event"] == "stop", "time"].min())
    assert f"stopped {stop - start:.1f} s after the start" in printed
