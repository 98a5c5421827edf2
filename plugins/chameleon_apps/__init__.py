"""Applications built on chameleon-sdk's public API: the demo, the labs, Shapes World and plotting.

They add ``chameleon demo``, ``chameleon lab stability|mot`` and ``chameleon plot`` through the
``register_commands`` hook, as any third-party plugin would; the modules load only when a command runs.
"""

from __future__ import annotations

from chameleon_sdk import plugin_api


@plugin_api.hookimpl
def register_commands(subcommands):
    from chameleon_apps.commands import add_commands

    add_commands(subcommands)
