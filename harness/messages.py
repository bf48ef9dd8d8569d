"""Typed messages between the coordinator and its workers.

Coordinator to worker, over each worker's own pipe: :class:`Start`, :class:`Stop`.
Worker to coordinator, over one shared queue: :class:`Ready`, :class:`Snapshot`,
:class:`Event`, :class:`Done`, :class:`Failed`. Every message is a frozen dataclass;
the coordinator has one handler per type, never a switch on strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .livestats import WindowStats
from .profile.model import Profile
from .record import DEFAULT_FLUSH_S, DEFAULT_ROTATE_S


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker process needs, sent once when it is spawned."""

    run_id: str
    shard: int
    n_shards: int
    profile: Profile
    out_dir: Path
    seed: int
    metadata: dict[str, str] = field(default_factory=dict)
    log_level: int = 20
    flush_s: float = DEFAULT_FLUSH_S
    rotate_s: float = DEFAULT_ROTATE_S
    min_free_bytes: int = 0
    """The writer's own disk margin (see :mod:`harness.disk`); 0: no check."""


@dataclass(frozen=True, slots=True)
class Start:
    """Begin the load at this wall-clock instant (epoch ns), the same for all."""

    start_wall_ns: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop scheduling. ``graceful``: let requests in flight finish within
    ``grace_s``; otherwise cancel them now (after recording what was sent)."""

    graceful: bool
    grace_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Ready:
    shard: int
    pid: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One second of one worker, for the live view and live thresholds."""

    shard: int
    second: int
    """Whole seconds since the start instant; the window is [second, second + 1)."""
    stats: WindowStats
    active_vus: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth a line in events.jsonl, stamped by the worker."""

    shard: int
    kind: str
    wall_ns: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Done:
    shard: int
    rows: int
    iterations: int
    dropped: int
    cancelled: int
    """Requests cut short by an immediate stop (recorded with ``error=cancelled``)."""
    parts: tuple[str, ...]
    reason: str
    unsaved: int = 0
    """Rows measured but not written: the disk refused even the last write."""


@dataclass(frozen=True, slots=True)
class Failed:
    shard: int
    error: str
