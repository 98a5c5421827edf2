"""Every hookspec is documented in docs/plugins/hooks.md under a heading with its exact signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from chameleon_sdk import hookspecs
from chameleon_sdk.plugin_api import KINDS

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins" / "hooks.md").read_text(encoding="utf-8")
HEADINGS = dict(re.findall(r"^### (\w+)(\(.*\))$", DOC, flags=re.M))
SPECS = sorted(name for name, obj in vars(hookspecs).items() if name.startswith("register_") and callable(obj))
#: hooks that register no component kind
NOT_KINDS = ["register_commands"]


def test_every_kind_has_a_hook():
    assert sorted([*KINDS.values(), *NOT_KINDS]) == SPECS


@pytest.mark.parametrize("name", SPECS)
def test_hook_documented_with_its_signature(name):
    signature = "(" + ", ".join(inspect.signature(getattr(hookspecs, name)).parameters) + ")"
    assert HEADINGS.get(name) == signature, f"docs/plugins/hooks.md needs '### {name}{signature}'"


def test_no_documented_hook_is_missing_from_the_code():
    assert set(HEADINGS) <= set(SPECS)
