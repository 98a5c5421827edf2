"""Each plugin kind is declared once, on its hook; every built-in plugin follows its kind's contract."""

from __future__ import annotations

import inspect
import typing

import pytest

import chameleon_sdk
from chameleon_sdk import contracts, hookspecs, plugin_api


def test_kinds_are_read_from_the_hook_specifications():
    specs = [name for name in dir(hookspecs) if name.startswith("register_") and name != "register_commands"]
    assert sorted(plugin_api.KINDS.values()) == sorted(specs)  # register_commands adds subcommands, not a kind
    assert list(plugin_api.KINDS) == [kind.name for kind in hookspecs.KIND_LIST]
    assert len(set(plugin_api.KINDS)) == len(hookspecs.KIND_LIST)  # no kind declared twice


@pytest.mark.parametrize("kind", hookspecs.KIND_LIST, ids=lambda kind: kind.name)
def test_every_contract_is_public(kind):
    """Plugin authors find it in plugin_api, or in the user API when users write them too (callbacks)."""
    assert kind.contract in contracts.__all__
    surface = plugin_api if kind.contract in plugin_api.__all__ else chameleon_sdk
    assert getattr(surface, kind.contract) is getattr(contracts, kind.contract)


def _built_ins() -> list[tuple[hookspecs.Kind, plugin_api.PluginRecord]]:
    kinds = {kind.name: kind for kind in hookspecs.KIND_LIST}
    registry = chameleon_sdk.get_registry()
    return [(kinds[r.kind], r) for r in registry.records() if r.provider == "chameleon-sdk"]


@pytest.mark.parametrize("kind, record", _built_ins(), ids=lambda x: getattr(x, "name", ""))
def test_every_built_in_plugin_follows_its_contract(kind, record):
    try:
        component = record.build()
    except chameleon_sdk.ChameleonError as exc:  # needs options, or a library this machine lacks
        pytest.skip(f"{record.kind}/{record.name} does not build with default options here: {exc}")
    contract = getattr(contracts, kind.contract)
    if getattr(contract, "_is_protocol", False):  # look members up statically: an untrained tokenizer's
        missing = [m for m in typing._get_protocol_attrs(contract) if not _has(component, m)]  # properties raise
        assert not missing, (record.kind, record.name, missing)
    else:
        assert isinstance(component, contract), (record.kind, record.name)


def _has(component: object, member: str) -> bool:
    try:
        inspect.getattr_static(component, member)
    except AttributeError:
        return False
    return True
