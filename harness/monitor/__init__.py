"""The resource monitor: what a run costs the service under test, the host and the
harness itself, sampled into ``runs/<id>/resources/`` (see docs/monitor.md).

:mod:`.base` holds what samplers share (the protocol, the columns, the error);
:mod:`.process` finds and samples process trees; :mod:`.host` the machine;
:mod:`.prometheus`, :mod:`.postgres` and :mod:`.redis` remote servers (their client
libraries are optional and load only when a profile uses them); :mod:`.writer`
writes the Parquet parts; :mod:`.monitor` drives them all during a run.
"""

from .base import COLUMNS, MonitorError, Row, Sampler

__all__ = ["COLUMNS", "MonitorError", "Row", "Sampler"]
