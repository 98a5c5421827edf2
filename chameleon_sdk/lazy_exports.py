"""Where each public name lives, read from the package's ``if TYPE_CHECKING:`` import block.

The package ``__init__`` imports its public names only for type checkers and resolves them on first
attribute access (PEP 562 ``__getattr__``) from the map this module builds, the way
scientific-python's ``lazy_loader.attach_stub`` reads a stub file: one list of imports serves both
the type checker and the runtime, so they cannot drift apart.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["exports_of", "lazy_module_attributes"]


def exports_of(init_file: str) -> dict[str, str]:
    """``{name: module}`` for every ``from module import name`` inside ``if TYPE_CHECKING:`` in ``init_file``."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"), filename=init_file)
    exports: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                    exports.update({alias.asname or alias.name: statement.module for alias in statement.names})
    return exports


def lazy_module_attributes(module_name: str, init_file: str) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` for the package ``module_name`` that imports each name of its
    ``if TYPE_CHECKING:`` block on first access (and keeps it), e.g. a plugin package whose classes
    need torch but whose registration hook must not::

        if TYPE_CHECKING:
            from my_plugin.tricks import MyTrick
        __getattr__ = chameleon_sdk.plugin_api.lazy_module_attributes(__name__, __file__)
    """
    exports = exports_of(init_file)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[module_name], name, value)
        return value

    return __getattr__
