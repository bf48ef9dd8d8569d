"""A disk that fills up during a run: the guard stops it and every request stays on
disk; sizes, the reserve and the writer's margin on their own.

The full-disk runs need a small disk of their own: a tmpfs mounted for the test
(root only; skipped elsewhere), filled by the test while a run writes to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from harness.demo.process import DemoTarget
from harness.disk import DiskLow, Reserve, format_size, free_bytes, parse_size
from harness.record import PartWriter, rows_to_table

REPO = Path(__file__).resolve().parent.parent
DEMO_PROFILE = REPO / "harness" / "demo" / "profile.yaml"


# -- sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("512", 512),
        ("64MiB", 64 * 2**20),
        ("64 mib", 64 * 2**20),
        ("500MB", 500 * 10**6),
        ("1.5G", 1_500_000_000),
        ("2GiB", 2 * 2**30),
        ("10k", 10_000),
    ],
)
def test_sizes_are_read_in_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5MiB", "5 parsecs", "1e3"])
def test_a_size_that_is_not_one_says_how_to_write_it(text: str) -> None:
    with pytest.raises(ValueError, match="64MiB"):
        parse_size(text)


def test_sizes_are_shown_in_binary_units() -> None:
    assert format_size(0) == "0 B"
    assert format_size(3 * 2**20 + 2**19) == "3.5 MiB"
    assert format_size(2**31) == "2.0 GiB"


# -- the reserve and the writer's margin, on the real disk ------------------------


def test_reserve_takes_its_space_and_gives_it_back(tmp_path: Path) -> None:
    path = tmp_path / ".reserve"
    reserve = Reserve(path, 8 * 2**20)
    # Allocated, not merely sized: the blocks are taken.
    assert path.stat().st_blocks * 512 >= 8 * 2**20
    assert reserve.release() is True
    assert not path.exists()
    assert reserve.release() is False
    assert Reserve(tmp_path / ".none", 0).release() is False
    assert not (tmp_path / ".none").exists()


def _rows(n: int) -> list[tuple[object, ...]]:
    return [
        (0, 1, i, "s", "step", "GET", "/x", 200, None, i, i, 1000, 900, 0, 10, 20,
         "steady", 10.0)
        for i in range(n)
    ]  # fmt: skip


def test_writer_refuses_a_row_group_inside_its_margin_and_keeps_the_part(
    tmp_path: Path,
) -> None:
    writer = PartWriter(tmp_path, {})
    writer.write(rows_to_table(_rows(100)))
    # A margin larger than the disk: the next row group is refused before
    # anything is written, and the part in progress can still be closed.
    writer.min_free_bytes = free_bytes(tmp_path) + 2**40
    with pytest.raises(DiskLow, match="free on the disk holding"):
        writer.write(rows_to_table(_rows(50)))
    writer.write(rows_to_table(_rows(50)), keep_margin=False)
    writer.close()
    assert writer.rows_finished == 150
    assert len(pd.read_parquet(tmp_path)) == 150


# -- runs on a small disk of their own --------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs, mounted for this test only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path, leave: int) -> None:
    """Write ``path`` until the disk has ``leave`` bytes free (or none)."""
    chunk = b"\0" * 2**20
    with open(path, "wb") as fh:
        try:
            while free_bytes(path.parent) > leave:
                fh.write(chunk[: max(4096, min(len(chunk), free_bytes(path.parent)))])
                fh.flush()
        except OSError:
            pass  # full


def _run_and_fill(
    disk: Path, leave: int, after_s: float = 5.0
) -> tuple[subprocess.CompletedProcess[str], int, Path]:
    """The demo profile for 15 s on 2 workers into ``disk``, with the disk filled
    to ``leave`` bytes free after ``after_s``; the result, the requests the
    target served and the run folder."""
    with DemoTarget.start() as target:
        filler = threading.Timer(after_s, _fill, (disk / "filler", leave))
        filler.start()
        try:
            proc = subprocess.run(
                [
                    sys.executable, "-m", "harness", "run", str(DEMO_PROFILE),
                    "--target", target.url, "--workers", "2", "--time-scale", "0.05",
                    "--duration", "15s", "--out", str(disk), "--run-id", "r",
                    "--min-free-space", "16MiB",
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=120,
            )  # fmt: skip
        finally:
            filler.join()
        served = int(target.stats()["requests_served"])
    return proc, served, disk / "r"


@pytest.mark.slow
@pytest.mark.parametrize(
    "leave", [10 * 2**20, 0], ids=["under-the-margin", "to-the-last-byte"]
)
def test_a_disk_filling_mid_run_stops_it_with_every_request_recorded(
    small_disk: Path, leave: int
) -> None:
    started = time.monotonic()
    proc, served, run_dir = _run_and_fill(small_disk, leave)
    assert time.monotonic() - started < 14, "the run was not stopped early"
    assert proc.returncode == 3, proc.stdout + proc.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "degraded"
    assert manifest["stop_reason"] == "disk_low"
    assert "free on the disk holding" in manifest["abort_reason"]
    assert manifest["counts"]["unsaved"] == 0
    rows = pd.read_parquet(run_dir / "requests")
    assert len(rows) == served == manifest["counts"]["requests"] > 100
    assert "stopping: only" in proc.stdout
    # No part left unfinished, and no reserved space left taken.
    left = sorted(p.name for p in (run_dir / "requests").rglob(".*"))
    assert left == [], left
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    kinds = [e["event"] for e in events]
    assert "disk_low" in kinds and kinds[-1] == "run_end"


def _demo_run(*args: str) -> subprocess.CompletedProcess[str]:
    """``harness run`` of the demo profile with ``args``, which stop it early."""
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", str(DEMO_PROFILE), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_a_disk_already_too_full_refuses_the_run_before_it_starts(
    tmp_path: Path,
) -> None:
    proc = _demo_run("--out", str(tmp_path), "--run-id", "r",
                     "--min-free-space", "1000000GiB")  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "free on the disk holding" in proc.stderr
    assert "--min-free-space" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_margin_that_is_not_a_size_is_bad_input(tmp_path: Path) -> None:
    proc = _demo_run("--out", str(tmp_path), "--min-free-space", "lots")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--min-free-space" in proc.stderr
    assert "64MiB" in proc.stderr
