"""Open a run directory written by the harness.

A run directory holds ``manifest.json``, ``events.jsonl`` and ``requests/`` (one folder
of Parquet parts per worker). Only finished parts are read: a part still being written
has a name starting with a dot, which pyarrow skips, so a run that is still going can
be opened too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds


class RunNotFound(FileNotFoundError):
    """The path is not a run directory."""


@dataclass(frozen=True, slots=True)
class Run:
    path: Path
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.path.name))

    def requests_table(self, columns: list[str] | None = None) -> pa.Table:
        folder = self.path / "requests"
        if not folder.is_dir() or not any(folder.rglob("*.parquet")):
            return pa.table({})
        return ds.dataset(folder, format="parquet").to_table(columns=columns)

    def requests(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self.requests_table(columns).to_pandas()

    def events(self) -> pd.DataFrame:
        path = self.path / "events.jsonl"
        if not path.exists():
            return pd.DataFrame()
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        return pd.DataFrame(rows)


def open_run(path: str | Path) -> Run:
    """Open one run directory (``runs/<run-id>``)."""
    folder = Path(path)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise RunNotFound(
            f"{folder} is not a run directory (no manifest.json); pass the folder "
            "that `harness run` printed, like runs/<run-id>"
        )
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    return Run(folder, manifest)
