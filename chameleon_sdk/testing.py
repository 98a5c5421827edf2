"""Test helpers for plugin authors, loaded by pytest through the ``pytest11`` entry point.

``chameleon_registry`` gives each test a fresh registry (installed plugins loaded from their entry
points) as the default, so nothing a test registers leaks into the next. The ``registered_plugin``
fixture registers plugins for one test and removes them afterwards::

    def test_my_modality(registered_plugin):
        registered_plugin(my_plugin_module)
        pipe = Pipeline.from_config({"modalities": ["digits"]})
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from chameleon_sdk.plugins import PluginRegistry, get_registry, use_registry


@pytest.fixture
def chameleon_registry() -> Iterator[PluginRegistry]:
    """A fresh registry (installed plugins loaded from entry points), the default for one test."""
    with use_registry() as registry:
        yield registry


@pytest.fixture
def registered_plugin() -> Iterator[Callable[..., str]]:
    """A function ``register(plugin, name=None) -> name``; registrations end with the test."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        registered = get_registry().register(plugin, name=name)
        names.append(registered)
        return registered

    yield register
    registry = get_registry()
    for name in reversed(names):
        if registry.pm.has_plugin(name):
            registry.unregister(name)
