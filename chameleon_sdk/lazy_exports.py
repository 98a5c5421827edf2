"""Where each public name lives, read from the package's ``if TYPE_CHECKING:`` import block.

The package ``__init__`` imports its public names only for type checkers and resolves them on first
attribute access (PEP 562 ``__getattr__``) from the map this module builds, the way
scientific-python's ``lazy_loader.attach_stub`` reads a stub file: one list of imports serves both
the type checker and the runtime, so they cannot drift apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["exports_of"]


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
