"""The plugin system: discovery, registration, lookup, errors and isolation."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import types

import attrs
import pytest

import chameleon_sdk
from chameleon_sdk import ConfigError, DuplicatePluginError, PluginLoadError, PluginNotFoundError, PluginRegistry
from chameleon_sdk import plugins as plugins_module
from chameleon_sdk.cli import main
from chameleon_sdk.plugin_api import hookimpl


def _plugin(name: str, kind_hook: str = "register_samplers", **register_kwargs):
    """A plugin module registering one component named ``name`` through ``kind_hook``."""
    module = types.ModuleType(f"test_plugin_{name.replace('-', '_')}")

    def factory():
        """A test component."""
        return object()

    def hook(register):
        register(name, factory, **register_kwargs)

    setattr(module, kind_hook, hookimpl(hook))
    hook.__name__ = kind_hook
    return module


def test_builtin_plugins_come_from_entry_points(registry):
    record = registry.get("text_tokenizer", "sentencepiece")
    assert record.provider == "chameleon-sdk"
    assert record.version == chameleon_sdk.__version__
    assert record.plugin == "text"
    assert record.options is not None and attrs.has(record.options)


def test_unknown_plugin_lists_registered_names_and_closest(registry):
    with pytest.raises(PluginNotFoundError) as info:
        registry.get("text_tokenizer", "sentencepeice")
    message = str(info.value)
    assert "'sentencepiece'" in message and "Did you mean 'sentencepiece'" in message
    assert info.value.available == ["bpe", "sentencepiece"]
    with pytest.raises(PluginNotFoundError, match="plugin kind"):
        registry.records("tokenizers")


def test_runtime_registration_and_unregistration(registry):
    name = chameleon_sdk.register_plugin(_plugin("my-sampler"), name="mine")
    assert name == "mine"
    record = registry.get("sampler", "my-sampler")
    assert record.provider == "test_plugin_my_sampler" and record.description == "A test component."
    chameleon_sdk.unregister_plugin("mine")
    with pytest.raises(PluginNotFoundError):
        registry.get("sampler", "my-sampler")
    with pytest.raises(PluginNotFoundError, match="no plugin named 'mine'"):
        chameleon_sdk.unregister_plugin("mine")


def test_a_plugin_registered_by_reference_is_imported_on_first_use(registry, tmp_path, monkeypatch):
    package = tmp_path / "lazy_sampler_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "impl.py").write_text(
        "import attrs\n\n"
        "@attrs.frozen\nclass Options:\n    scale: float = 1.0\n\n"
        'class Sampler:\n    """Samples lazily."""\n\n'
        "    def __init__(self, options):\n        self.options = options\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = types.ModuleType("test_plugin_lazy")

    def register_samplers(register):
        register("lazy", "lazy_sampler_pkg.impl:Sampler", options="lazy_sampler_pkg.impl:Options")

    plugin.register_samplers = hookimpl(register_samplers)
    chameleon_sdk.register_plugin(plugin, name="lazy-plugin")
    try:
        record = registry.get("sampler", "lazy")
        assert record.description == "Samples lazily."
        assert record.to_json()["options"] == "lazy_sampler_pkg.impl.Options"
        assert "lazy_sampler_pkg.impl" not in sys.modules  # listed and described, not imported
        built = registry.build("sampler", "lazy", {"scale": 2.0})
        assert type(built).__name__ == "Sampler" and built.options.scale == 2.0
        assert "lazy_sampler_pkg.impl" in sys.modules
    finally:
        chameleon_sdk.unregister_plugin("lazy-plugin")


@pytest.mark.parametrize(
    ("factory", "options", "match"),
    [
        ("lazy_missing_module:Thing", None, "cannot import 'lazy_missing_module:Thing'"),
        ("chameleon_sdk.plugins:NoSuchName", None, "cannot import"),
        ("chameleon_sdk.plugins:PluginRegistry", "chameleon_sdk.plugins:get_registry", "must be an attrs class"),
    ],
)
def test_bad_references_are_plugin_load_errors_naming_them(registry, factory, options, match):
    plugin = types.ModuleType("test_plugin_bad_reference")

    def register_samplers(register):
        register("bad-reference", factory, options=options)

    plugin.register_samplers = hookimpl(register_samplers)
    chameleon_sdk.register_plugin(plugin, name="bad-reference-plugin")
    try:
        with pytest.raises(PluginLoadError, match=match):
            registry.build("sampler", "bad-reference")
    finally:
        chameleon_sdk.unregister_plugin("bad-reference-plugin")


def test_a_malformed_reference_is_refused_at_registration(registry):
    plugin = types.ModuleType("test_plugin_malformed")

    def register_samplers(register):
        register("malformed", "no_colon_here")

    plugin.register_samplers = hookimpl(register_samplers)
    with pytest.raises(PluginLoadError, match=r"package\.module:Name"):
        chameleon_sdk.register_plugin(plugin, name="malformed-plugin")
        registry.records()


def test_builtins_can_be_unregistered_by_name(registry):
    registry.unregister("text")
    assert registry.records("text_tokenizer") == []


def test_registered_plugin_fixture_cleans_up(registry, registered_plugin):
    registered_plugin(_plugin("fixture-sampler"), name="fixture")
    assert registry.get("sampler", "fixture-sampler").plugin == "fixture"


def test_fixture_registration_did_not_leak():
    names = [r.name for r in chameleon_sdk.available_plugins("sampler")]
    assert "fixture-sampler" not in names


def test_duplicate_names_name_both_providers(registry):
    registry.register(_plugin("dup"), name="first")
    registry.register(_plugin("dup"), name="second")
    with pytest.raises(DuplicatePluginError) as info:
        registry.records()
    assert "'first'" in str(info.value) and "'second'" in str(info.value)


def test_misspelt_hook_is_an_error(registry):
    module = types.ModuleType("typo_plugin")
    module.register_samplerz = hookimpl(lambda register: None)
    module.register_samplerz.__name__ = "register_samplerz"
    with pytest.raises(PluginLoadError, match="register_samplerz"):
        registry.register(module, name="typo")
    assert not registry.pm.has_plugin("typo")


def test_hook_with_unknown_argument_is_an_error(registry):
    class Bad:
        @hookimpl
        def register_samplers(self, register, bogus):
            pass

    with pytest.raises(PluginLoadError, match="invalid hook implementation"):
        registry.register(Bad(), name="bad")


@attrs.frozen(kw_only=True)
class _Options:
    temperature: float = 1.0
    top_k: int = 0


def test_invalid_options_name_plugin_field_value_and_expectation(registry):
    registry.register(_plugin("opt-sampler", options=_Options), name="opt")
    record = registry.get("sampler", "opt-sampler")
    with pytest.raises(ConfigError) as info:
        record.make_options({"top_k": "five"})
    message = str(info.value)
    assert "'opt-sampler'" in message and "top_k" in message and "'five'" in message and "integer" in message
    with pytest.raises(ConfigError, match="unknown key 'top_p'"):
        record.make_options({"top_p": 0.9})
    assert record.make_options({"top_k": 5}) == _Options(top_k=5)


class _FakeDist:
    def __init__(self, name: str) -> None:
        self.metadata = {"Name": name}
        self.version = "9.9"


def _entry_point(name: str, value: str, dist: str):
    ep = importlib.metadata.EntryPoint(name, value, plugins_module.ENTRY_POINT_GROUP)
    return ep._for(_FakeDist(dist)) if hasattr(ep, "_for") else ep


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Install extra entry points next to the real ones."""
    extra: list = []
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        return [*real(**kwargs), *extra] if kwargs.get("group") == plugins_module.ENTRY_POINT_GROUP else real(**kwargs)

    monkeypatch.setattr(plugins_module.importlib.metadata, "entry_points", entry_points)
    return extra


def test_plugin_failing_on_import_is_a_warning_and_others_load(fake_entry_points, monkeypatch):
    broken = types.ModuleType("broken_plugin_mod")
    monkeypatch.setitem(sys.modules, "good_plugin_mod", _plugin("good-sampler"))
    fake_entry_points += [
        _entry_point("broken", "no_such_module_for_chameleon_tests", "broken-dist"),
        _entry_point("good", "good_plugin_mod", "good-dist"),
    ]
    del broken
    with pytest.warns(RuntimeWarning, match="'broken'.*broken-dist.*failed to load"):
        registry = PluginRegistry()
        registry.load()
    assert len(registry.load_errors) == 1 and isinstance(registry.load_errors[0], PluginLoadError)
    good = registry.get("sampler", "good-sampler")
    assert good.provider == "good-dist" and good.version == "9.9"
    assert registry.get("text_tokenizer", "sentencepiece").provider == "chameleon-sdk"


def test_load_plugins_env_restricts_to_builtins_plus_named(fake_entry_points, monkeypatch):
    monkeypatch.setitem(sys.modules, "third_a", _plugin("a-sampler"))
    monkeypatch.setitem(sys.modules, "third_b", _plugin("b-sampler"))
    fake_entry_points += [_entry_point("a", "third_a", "dist-a"), _entry_point("b", "third_b", "dist-b")]

    def names(env: str | None) -> set[str]:
        if env is None:
            monkeypatch.delenv("CHAMELEON_LOAD_PLUGINS", raising=False)
        else:
            monkeypatch.setenv("CHAMELEON_LOAD_PLUGINS", env)
        return {r.name for r in PluginRegistry().records()}

    assert {"a-sampler", "b-sampler", "sentencepiece"} <= names(None)
    assert "sentencepiece" in names("") and not {"a-sampler", "b-sampler"} & names("")
    assert "a-sampler" in names("a") and "b-sampler" not in names("a")
    assert "b-sampler" in names(" dist-b ")


def test_trace_env_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("CHAMELEON_TRACE_PLUGINS", "1")
    PluginRegistry().records()
    err = capsys.readouterr().err
    assert "register_text_tokenizers() -> text" in err
    assert "registered text_tokenizer 'sentencepiece'" in err


def test_use_registry_isolates_the_default():
    outer = chameleon_sdk.get_registry()
    with chameleon_sdk.use_registry() as inner:
        assert chameleon_sdk.get_registry() is inner is not outer
    assert chameleon_sdk.get_registry() is outer


def test_cli_plugins_json(registry, capsys):
    assert main(["plugins", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    sentencepiece = next(entry for entry in listed if entry["name"] == "sentencepiece")
    assert {
        "kind": "text_tokenizer",
        "name": "sentencepiece",
        "provider": "chameleon-sdk",
    }.items() <= sentencepiece.items()
    assert all({"kind", "name", "provider"} <= set(item) for item in listed)


def test_cli_plugins_table(registry, capsys):
    assert main(["plugins", "--kind", "text_tokenizer"]) == 0
    assert "sentencepiece" in capsys.readouterr().out
