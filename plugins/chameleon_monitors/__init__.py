"""Built-in callback ``stability-monitor``: records the model's stability monitors step by step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_monitors.stability_monitor import MonitorOptions, StabilityMonitor, StabilityWarning

__all__ = ["MonitorOptions", "StabilityMonitor", "StabilityWarning"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_callbacks(register):
    register(
        "stability-monitor",
        "chameleon_monitors.stability_monitor:StabilityMonitor",
        options="chameleon_monitors.stability_monitor:MonitorOptions",
    )
