"""Profiles: the YAML format, its model and its validation."""

from .model import (
    Capture,
    Checks,
    ClosedModel,
    HttpSettings,
    LoadModel,
    OpenModel,
    Phase,
    Profile,
    Scenario,
    Stage,
    Step,
    Variable,
    duration_capped,
    time_scaled,
)

__all__ = [
    "Capture",
    "Checks",
    "ClosedModel",
    "HttpSettings",
    "LoadModel",
    "OpenModel",
    "Phase",
    "Profile",
    "Scenario",
    "Stage",
    "Step",
    "Variable",
    "duration_capped",
    "time_scaled",
]
