"""The plugin manager: discovery, registration, lookup.

Built-in plugins and third-party plugins take the same path: an entry point in the group
``chameleon_sdk`` names a module holding ``@hookimpl`` functions. :class:`PluginRegistry` wraps a
pluggy ``PluginManager``; it loads entry points lazily and once, calls every ``register_*`` hook
with a ``register`` callback, and keeps one :class:`PluginRecord` per (kind, name).

Environment switches:

- ``CHAMELEON_LOAD_PLUGINS``: a comma list of entry-point or distribution names to load besides
  the built-ins; set but empty loads the built-ins only. Unset loads everything installed.
- ``CHAMELEON_TRACE_PLUGINS``: when set to anything but ``""``/``0``, print every hook call and
  registration to stderr.

There is a process-wide default registry for convenience (``get_registry()``), but nothing depends
on it being the only one: tests build their own with ``PluginRegistry()`` or swap the default
with ``use_registry(...)``.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pluggy

from chameleon_sdk import hookspecs
from chameleon_sdk.config import from_dict
from chameleon_sdk.errors import (
    ConfigError,
    DuplicatePluginError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PluginRecord",
    "PluginRegistry",
    "available_plugins",
    "get_registry",
    "register_plugin",
    "unregister_plugin",
    "use_registry",
]

ENTRY_POINT_GROUP = "chameleon_sdk"
BUILTIN_DISTRIBUTION = "chameleon-sdk"

#: plugin kind -> the hook that registers it (read from the hook specifications, where each is declared)
KINDS: Mapping[str, str] = {kind.name: kind.hook for kind in hookspecs.KIND_LIST}


def resolve_reference(reference: str) -> Any:
    """The object a ``"package.module:Qualified.name"`` reference names (importing its module)."""
    module_name, _, qualname = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise PluginLoadError(f"cannot import {reference!r}: {exc}") from exc
    return target


def _docstring_without_import(reference: str) -> str | None:
    """The docstring of what ``reference`` names, read from its module's source (nothing is imported
    but the module's parent packages); None when the source cannot say."""
    module_name, _, qualname = reference.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        node: Any = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    for part in qualname.split("."):
        node = next((n for n in node.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part), None)
        if node is None:
            return None
    return ast.get_docstring(node)


def _check_reference(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, str) and (":" not in value or not all(value.partition(":")[::2])):
        raise PluginLoadError(f"a plugin reference must look like 'package.module:Name', got {value!r}")


@attrs.frozen(kw_only=True)
class PluginRecord:
    """One registered component: what it is, who provided it, and how to build it.

    The factory and the options class may be registered as ``"package.module:Name"`` references:
    they are imported on first use (building, validating options), so listing plugins imports none
    of their code.
    """

    kind: str
    name: str
    _factory: Callable[..., Any] | str = attrs.field(eq=False, repr=False, validator=_check_reference)
    _options: type | str | None = attrs.field(default=None, eq=False, validator=_check_reference)
    provider: str
    version: str | None = None
    plugin: str
    traits: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    @property
    def factory(self) -> Callable[..., Any]:
        """What builds the component (imported now if it was registered by reference)."""
        return resolve_reference(self._factory) if isinstance(self._factory, str) else self._factory

    @property
    def options(self) -> type | None:
        """The attrs class of the component's options, or None (imported now if registered by reference)."""
        options = resolve_reference(self._options) if isinstance(self._options, str) else self._options
        if options is not None and not attrs.has(options):
            raise PluginLoadError(
                f"plugin {self.plugin!r}: options for {self.kind} {self.name!r} must be an attrs class"
            )
        return options

    @property
    def description(self) -> str:
        doc = None
        if isinstance(self._factory, str) and self._factory.partition(":")[0] not in sys.modules:
            doc = _docstring_without_import(self._factory)
        if doc is None:
            doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def make_options(self, options: Any = None) -> Any:
        """Validate ``options`` (None, a mapping or an options instance) against the options class."""
        where = f"{self.kind} plugin {self.name!r} options"
        if self.options is None:
            if options:
                raise ConfigError(f"{where}: this plugin takes no options, got {dict(options)!r}")
            return None
        if isinstance(options, self.options):
            return options
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}: expected a mapping or {self.options.__name__}, got {options!r}")
        return from_dict(self.options, options, where=where)

    def build(self, options: Any = None) -> Any:
        """Create the component, validating ``options`` first.

        A modality is told its registry name (``modality.name``), which is the name of its block in
        the vocabulary and of its generation mode, so it never has to repeat it by hand.
        """
        opts = self.make_options(options)
        factory = self.factory
        component = factory() if self.options is None else factory(opts)
        if self.kind == "modality":
            try:
                component.name = self.name
            except (AttributeError, TypeError) as exc:  # a frozen class or __slots__ without "name"
                raise PluginError(
                    f"modality {self.name!r} ({type(component).__name__}) must accept a `name` attribute, "
                    f"which the registry sets: {exc}"
                ) from exc
        return component

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "provider": self.provider,
            "version": self.version,
            "plugin": self.plugin,
            "options": self._options_name(),
            "traits": {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in self.traits.items()},
            "description": self.description,
        }

    def _options_name(self) -> str | None:
        if isinstance(self._options, str):
            return self._options.replace(":", ".")
        return None if self._options is None else f"{self._options.__module__}.{self._options.__qualname__}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class PluginRegistry:
    """A pluggy plugin manager plus the records its ``register_*`` hooks produce."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.load_errors: list[PluginLoadError] = []
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._providers: dict[str, tuple[str, str | None]] = {}
        self._records: dict[tuple[str, str], PluginRecord] | None = None
        self._lock = threading.RLock()
        self._trace = _env_flag("CHAMELEON_TRACE_PLUGINS")
        if self._trace:
            self.pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"chameleon_sdk: {msg}"))
            self.pm.enable_tracing()

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> None:
        """Load entry points once (idempotent, thread-safe)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            if self._load_entry_points:
                self._load_from_entry_points()

    def _load_from_entry_points(self) -> None:
        wanted_env = os.environ.get("CHAMELEON_LOAD_PLUGINS")
        wanted = None if wanted_env is None else {w.strip() for w in wanted_env.split(",") if w.strip()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else None
            builtin = dist == BUILTIN_DISTRIBUTION
            if wanted is not None and not builtin and ep.name not in wanted and dist not in wanted:
                continue
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                self._register(plugin, ep.name, (dist, version))
            except Exception as exc:  # a broken plugin must not take the others down
                error = PluginLoadError(
                    f"plugin entry point {ep.name!r} ({ep.value}) from distribution {dist!r} failed to load: "
                    f"{type(exc).__name__}: {exc}"
                )
                self.load_errors.append(error)
                warnings.warn(str(error), RuntimeWarning, stacklevel=3)

    def _register(self, plugin: object, name: str, provider: tuple[str, str | None]) -> None:
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # pluggy: name already registered or blocked
            raise PluginLoadError(f"cannot register plugin {name!r}: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"plugin {name!r} has an invalid hook implementation: {exc}") from exc
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            raise PluginLoadError(
                f"plugin {name!r} implements a hook that does not exist (misspelt?): {exc}; "
                f"known hooks: {sorted(KINDS.values())}"
            ) from exc
        self._providers[name] = provider
        self._records = None

    # -- runtime registration ---------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a module or object holding hook implementations; returns its plugin name."""
        self.load()
        with self._lock:
            if name is None:
                name = plugin.__name__ if isinstance(plugin, ModuleType) else f"{type(plugin).__name__}-{id(plugin):x}"
            if not isinstance(name, str) or not name:
                raise PluginLoadError(f"a plugin name must be a non-empty string, got {name!r}")
            module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
            self._register(plugin, name, (module.split(".")[0], None))
            if not self.pm.get_hookcallers(plugin):
                self.pm.unregister(name=name)
                self._providers.pop(name, None)
                raise PluginLoadError(
                    f"{plugin!r:.60} has no @chameleon_sdk.plugin_api.hookimpl functions, so it registers nothing; "
                    f"hooks: {sorted(KINDS.values())}"
                )
            return name

    def unregister(self, name: str) -> None:
        """Remove a plugin by its plugin name (a built-in's is its entry-point name)."""
        self.load()  # entry points are loaded once, so an unregistered built-in stays away
        with self._lock:
            if not self.pm.has_plugin(name):
                raise PluginNotFoundError("plugin", name, sorted(self._providers), _closest(name, self._providers))
            self.pm.unregister(name=name)
            self._providers.pop(name, None)
            self._records = None

    # -- lookup -----------------------------------------------------------------------------

    def _collect(self) -> dict[tuple[str, str], PluginRecord]:
        records: dict[tuple[str, str], PluginRecord] = {}
        for kind, hook_name in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            # Call each implementation with its own `register` so every record knows its provider.
            for impl in reversed(hook.get_hookimpls()):
                dist, version = self._providers.get(impl.plugin_name, (impl.plugin_name, None))

                def register(
                    name: str,
                    factory: Callable[..., Any] | str,
                    *,
                    options: type | str | None = None,
                    _kind: str = kind,
                    _impl: Any = impl,
                    _dist: str = dist,
                    _version: str | None = version,
                    **traits: Any,
                ) -> None:
                    if not isinstance(name, str) or not name:
                        raise PluginLoadError(f"plugin {_impl.plugin_name!r} registered a {_kind} with name {name!r}")
                    if options is not None and not isinstance(options, str) and not attrs.has(options):
                        raise PluginLoadError(
                            f"plugin {_impl.plugin_name!r}: options for {_kind} {name!r} must be an attrs class"
                        )
                    record = PluginRecord(
                        kind=_kind,
                        name=name,
                        factory=factory,
                        options=options,
                        provider=_dist,
                        version=_version,
                        plugin=_impl.plugin_name,
                        traits=dict(traits),
                    )
                    existing = records.get((_kind, name))
                    if existing is not None:
                        raise DuplicatePluginError(
                            f"{_kind} {name!r} is registered twice: by plugin {existing.plugin!r} "
                            f"(distribution {existing.provider!r}) and by plugin {record.plugin!r} "
                            f"(distribution {record.provider!r}); unregister one of them"
                        )
                    if self._trace:
                        sys.stderr.write(f"chameleon_sdk: {_impl.plugin_name} registered {_kind} {name!r}\n")
                    records[(_kind, name)] = record

                if self._trace:
                    sys.stderr.write(f"chameleon_sdk: {hook_name}() -> {impl.plugin_name}\n")
                impl.function(*[{"register": register}[arg] for arg in impl.argnames])
        return records

    def records(self, kind: str | None = None) -> list[PluginRecord]:
        """All records, or those of one kind, sorted by (kind, name)."""
        self.load()
        if kind is not None and kind not in KINDS:
            raise PluginNotFoundError("plugin kind", kind, list(KINDS), _closest(kind, KINDS))
        with self._lock:
            if self._records is None:
                self._records = self._collect()
            found = [r for (k, _), r in self._records.items() if kind is None or k == kind]
        return sorted(found, key=lambda r: (list(KINDS).index(r.kind), r.name))

    def get(self, kind: str, name: str) -> PluginRecord:
        """The record for ``(kind, name)``; :class:`PluginNotFoundError` lists what exists."""
        names = [r.name for r in self.records(kind)]
        for record in self.records(kind):
            if record.name == name:
                return record
        raise PluginNotFoundError(kind, name, names, _closest(name, names))

    def build(self, kind: str, name: str, options: Any = None) -> Any:
        """Look up a component and build it with validated options."""
        return self.get(kind, name).build(options)


def _closest(name: Any, names: Any) -> str | None:
    matches = difflib.get_close_matches(str(name), [str(n) for n in names], n=1, cutoff=0.5)
    return matches[0] if matches else None


# -- the default registry ----------------------------------------------------------------------

_default: PluginRegistry | None = None
_default_lock = threading.Lock()


def get_registry() -> PluginRegistry:
    """The process-wide default registry, created (and its entry points loaded) on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PluginRegistry()
        return _default


@contextlib.contextmanager
def use_registry(registry: PluginRegistry | None = None) -> Iterator[PluginRegistry]:
    """Make ``registry`` (a fresh one by default) the default for the duration of the block."""
    global _default
    if registry is not None and not isinstance(registry, PluginRegistry):
        raise PluginError(f"use_registry: expected a PluginRegistry or None, got {type(registry).__name__}")
    registry = registry or PluginRegistry()
    with _default_lock:
        previous, _default = _default, registry
    try:
        yield registry
    finally:
        with _default_lock:
            _default = previous


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a module or object with ``@hookimpl`` functions in the default registry."""
    return get_registry().register(plugin, name=name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin (a built-in too) from the default registry by its plugin name."""
    get_registry().unregister(name)


def available_plugins(kind: str | None = None) -> list[PluginRecord]:
    """Records of every registered component in the default registry, optionally of one kind."""
    return get_registry().records(kind)
