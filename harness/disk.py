"""Free space on the disk that holds a run, and the guard that keeps a run from
filling it.

A Parquet part is only readable once its footer is written. A worker that meets a
full disk in the middle of a part loses the whole part, not just the rows it was
writing, so the harness never lets it get that far:

* the coordinator refuses to start a run on a disk with less than
  ``min_free_bytes`` free, and stops a running one gracefully (status
  ``degraded``, ``stop_reason: disk_low``) as soon as free space falls under it;
* each worker's writer keeps a quarter of that margin for itself: it does not
  start a row group that would leave less, keeps those rows in memory instead,
  and spends the margin at the end on the footers and the rows it held back;
* each worker also sets the same quarter aside in a :class:`Reserve` file when it
  starts, and gives it back when a write is refused or fails, so that even a disk
  that something else filled to the last byte has room for the footers and the
  rows held back.

So a disk that fills slowly (logs, another program, a long endurance run) ends the
run with every request recorded, and so does one filled at once, as long as the
rows held back fit in the reserve (a few seconds of records take well under a
MiB) and nothing else takes the space back first. What is lost is then counted:
``unsaved`` in the manifest, and exit code 3.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MIB = 2**20

DEFAULT_MIN_FREE_BYTES = 64 * MIB
"""Stop a run when its disk has less free space than this (``--min-free-space``)."""

WORKER_SHARE = 4
"""A worker's own margin is the run's margin divided by this."""

RESERVE_NAME = ".reserve"
"""The reserve file's name in each worker's folder of ``requests/``."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.I)


class DiskLow(OSError):
    """A write was not started because it would leave less than the margin free."""

    def __init__(self, path: Path, free: int, needed: int) -> None:
        self.path = path
        self.free = free
        self.needed = needed
        super().__init__(
            f"{format_size(free)} free on the disk holding {path}; "
            f"{format_size(needed)} wanted"
        )


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``path``
    (or of its nearest existing parent, for a folder not made yet)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"500MB"``, ``"1.5G"``, ``"0"``: a size in bytes.

    Decimal units (k, M, G, with or without B) are powers of 1000, binary ones
    (KiB, MiB, GiB) powers of 1024.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size; write a number with an optional unit, "
            "e.g. 64MiB, 500MB, 2G or 0"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: float) -> str:
    """Bytes for a person: ``"12.3 MiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


class Reserve:
    """Disk space set aside at the start of a run, given back when it is needed.

    A file of ``size`` bytes, allocated (not merely sized) so that the space is
    really taken. A writer that meets a full disk unlinks it and so has room for
    the footers and the last rows, whatever else filled the disk. Its name starts
    with a dot: readers of the run folder pass over it.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path: Path | None = None
        if size <= 0:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        self.path = path

    def release(self) -> bool:
        """Give the space back; True if there was any to give."""
        if self.path is None:
            return False
        self.path.unlink(missing_ok=True)
        self.path = None
        return True
