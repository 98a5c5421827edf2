"""Built-in callback ``stability-monitor``: records the model's stability monitors step by step."""

from __future__ import annotations

import chameleon_sdk
from chameleon_monitors.stability_monitor import MonitorOptions, StabilityMonitor, StabilityWarning

__all__ = ["MonitorOptions", "StabilityMonitor", "StabilityWarning"]


@chameleon_sdk.hookimpl
def register_callbacks(register):
    register("stability-monitor", StabilityMonitor, options=MonitorOptions)
