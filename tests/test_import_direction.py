"""The dependency points one way: plugins -> public API of chameleon_sdk; never the reverse or sideways."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import chameleon_sdk

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DISTS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
# package name -> folder: built-in plugins are packages in plugins/; a separately installable plugin
# distribution (plugins/<dist>/pyproject.toml, e.g. chameleon-audio) holds its packages one level down
PLUGIN_DIRS = {
    package.name: package
    for folder in [ROOT / "plugins", *PLUGIN_DISTS]
    for package in folder.iterdir()
    if (package / "__init__.py").is_file()
}
PLUGIN_PACKAGES = sorted(PLUGIN_DIRS)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every import in a file, relative imports resolved to ''."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "" if node.level else (node.module or "")
            found.append((module, [a.name for a in node.names], node.lineno))
    return found


def _files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.py"))


def test_there_are_plugins_to_check():
    assert "chameleon_text" in PLUGIN_PACKAGES
    for dist in PLUGIN_DISTS:  # every plugin distribution's packages are checked too
        assert any(folder.parent == dist for folder in PLUGIN_DIRS.values()), dist


def test_core_never_imports_a_plugin():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _files(ROOT / "chameleon_sdk")
        for module, _, line in _imports(path)
        if module.split(".")[0] in PLUGIN_PACKAGES
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("package", PLUGIN_PACKAGES)
def test_plugins_import_only_the_public_api_and_not_each_other(package):
    public = set(chameleon_sdk.__all__)
    offenders = []
    for path in _files(PLUGIN_DIRS[package]):
        for module, names, line in _imports(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top == "chameleon_sdk":
                if module != "chameleon_sdk":
                    offenders.append(f"{where} imports {module} (only `chameleon_sdk` itself is public)")
                offenders += [f"{where} imports non-public chameleon_sdk.{n}" for n in names if n not in public]
            elif top in PLUGIN_PACKAGES and top != package:
                offenders.append(f"{where} imports another plugin, {module}")
    assert not offenders, offenders


def test_plugins_use_only_public_attributes_of_the_package():
    """``chameleon_sdk.X`` attribute access inside plugins must also be public."""
    public = set(chameleon_sdk.__all__)
    offenders = []
    for package in PLUGIN_PACKAGES:
        for path in _files(PLUGIN_DIRS[package]):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "chameleon_sdk"
                    and node.attr not in public
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses chameleon_sdk.{node.attr}")
    assert not offenders, offenders
