"""The dependency points one way: plugins -> chameleon_sdk (the user API) and chameleon_sdk.plugin_api; never the
reverse or sideways."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

import chameleon_sdk
from chameleon_sdk import plugin_api

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


#: the stubs left where the applications' modules were (``chameleon_sdk.demo`` ...): each imports its new
#: home in chameleon_apps and warns, for one release; nothing else in the core may name a plugin
MOVED_TO_APPS = {
    f"chameleon_sdk/{name}"
    for name in (
        "demo.py",
        "plotting.py",
        "shapes/__init__.py",
        "shapes/world.py",
        "shapes/evaluate.py",
        "lab/__init__.py",
        "lab/mot.py",
        "lab/stability.py",
        "lab/synthetic.py",
        "lab/report.py",
    )
}


def test_core_never_imports_a_plugin():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _files(ROOT / "chameleon_sdk")
        for module, _, line in _imports(path)
        if module.split(".")[0] in PLUGIN_PACKAGES
        and not (path.relative_to(ROOT).as_posix() in MOVED_TO_APPS and module.startswith("chameleon_apps."))
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("stub", sorted(MOVED_TO_APPS))
def test_a_moved_module_is_its_new_home_and_warns(stub):
    old = stub.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    new = old.replace("chameleon_sdk.", "chameleon_apps.", 1)
    for name in [n for n in sys.modules if n == old or n.startswith(f"{old}.")]:
        del sys.modules[name]
    with pytest.warns(DeprecationWarning, match=f"{re.escape(old)} moved to {re.escape(new)}"):
        moved = importlib.import_module(old)
    home = importlib.import_module(new)
    assert moved.__all__ == home.__all__
    assert all(getattr(moved, name) is getattr(home, name) for name in home.__all__)


#: what a plugin may import from the SDK: module -> the names it exports
PUBLIC = {"chameleon_sdk": {*chameleon_sdk.__all__, "plugin_api"}, "chameleon_sdk.plugin_api": set(plugin_api.__all__)}


@pytest.mark.parametrize("package", PLUGIN_PACKAGES)
def test_plugins_import_only_the_public_api_and_not_each_other(package):
    offenders = []
    for path in _files(PLUGIN_DIRS[package]):
        for module, names, line in _imports(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top == "chameleon_sdk":
                if module not in PUBLIC:
                    offenders.append(f"{where} imports {module} (only chameleon_sdk and chameleon_sdk.plugin_api)")
                    continue
                offenders += [f"{where} imports non-public {module}.{n}" for n in names if n not in PUBLIC[module]]
            elif top in PLUGIN_PACKAGES and top != package:
                offenders.append(f"{where} imports another plugin, {module}")
    assert not offenders, offenders


def test_plugins_use_only_public_attributes_of_the_sdk():
    """``chameleon_sdk.X`` and ``plugin_api.X`` inside plugins must be exported names, and none deprecated."""
    offenders = []
    for package in PLUGIN_PACKAGES:
        for path in _files(PLUGIN_DIRS[package]):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    module = {"chameleon_sdk": "chameleon_sdk", "plugin_api": "chameleon_sdk.plugin_api"}.get(
                        node.value.id
                    )
                    if module is not None and node.attr not in PUBLIC[module]:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {module}.{node.attr}")
    assert not offenders, offenders


def test_the_user_api_and_the_plugin_api_do_not_overlap():
    """Each name has one home; a plugin author's name reached through ``chameleon_sdk`` warns (for one release)."""
    assert not set(chameleon_sdk.__all__) & set(plugin_api.__all__)
    with pytest.warns(DeprecationWarning, match="chameleon_sdk.staging_directory moved to chameleon_sdk.plugin_api"):
        assert chameleon_sdk.staging_directory is plugin_api.staging_directory


def _core_imports() -> list[tuple[str, str, int]]:
    """(importing module, imported chameleon_sdk module, line) for every absolute import in the core."""
    found = []
    for path in _files(ROOT / "chameleon_sdk"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        importer = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for module, names, line in _imports(path):
            if module == "chameleon_sdk":  # `from chameleon_sdk import storage`: the submodules named
                found += [(importer, f"chameleon_sdk.{n}", line) for n in names]
            elif module.startswith("chameleon_sdk."):
                found.append((importer, module, line))
    return found


def _in(module: str, group: set[str]) -> bool:
    return any(module == g or module.startswith(f"{g}.") for g in group)


#: the bottom layer: errors, checks at the boundary and file storage; it imports nothing above it
FOUNDATION = {
    f"chameleon_sdk.{m}" for m in ("errors", "validation", "bounded_read", "error_mapping", "lazy_exports", "storage")
}
#: applications built on the library; the library never imports them
APPLICATIONS = {f"chameleon_sdk.{m}" for m in ("cli", "__main__", "serve", "finetune_plan")}


def test_the_foundation_imports_only_the_foundation():
    offenders = [
        f"{importer}:{line} imports {module}"
        for importer, module, line in _core_imports()
        if _in(importer, FOUNDATION) and not _in(module, FOUNDATION)
    ]
    assert not offenders, offenders


def test_the_library_never_imports_an_application():
    offenders = [
        f"{importer}:{line} imports {module}"
        for importer, module, line in _core_imports()
        if not _in(importer, APPLICATIONS) and _in(module, APPLICATIONS)
    ]
    assert not offenders, offenders
