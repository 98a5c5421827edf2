"""Typed configuration: frozen, keyword-only attrs classes with strict JSON/TOML round trips.

Components are named by their registry names (strings), never by Python types, so every config
serialises. ``from_dict`` is strict on purpose: no silent coercion (``"12"`` is not an int, ``3.7``
is not an int, ``1`` is not a bool), and an unknown key is an error naming the valid ones.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from chameleon_sdk.bounded_read import MAX_CONFIG_BYTES, read_bounded
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import ConfigError
from chameleon_sdk.storage.atomic_files import atomic_write_text
from chameleon_sdk.validation import check_number

__all__ = [
    "ComponentSpec",
    "ModelConfig",
    "PipelineConfig",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]

T = TypeVar("T")


@functools.cache
def _field_types(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def typed(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """An attrs validator: ``value`` must match the field's annotation, by the strict rules of
    :func:`from_dict` (no ``"12"`` for an int, no ``True`` for a number); :class:`ConfigError` otherwise."""
    cls: Any = type(instance)
    _convert(_field_types(cls)[attribute.name], value, f"{cls.__name__}.{attribute.name}")


def check_types(instance: Any) -> None:
    """Run :func:`typed` on every field of an attrs instance (for ``__attrs_post_init__``)."""
    for attribute in attrs.fields(type(instance)):
        typed(instance, attribute, getattr(instance, attribute.name))


def one_of(*choices: Any) -> Any:
    """An attrs validator: the value must be one of ``choices`` (:class:`ConfigError` names them)."""

    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"{type(instance).__name__}.{attribute.name} must be one of {list(choices)}, got {value!r}"
            )

    return check


def positive(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """An attrs validator: :func:`typed`, and a number > 0 (None passes where the field allows it)."""
    typed(instance, attribute, value)
    if value is not None:
        check_number(value, f"{type(instance).__name__}.{attribute.name}", low=0, low_open=True)


#: the longest context a ModelConfig may ask for (its rotary tables are allocated up front)
MAX_SEQ_LEN = 2**20


def _at_most(limit: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        check_number(value, f"{type(instance).__name__}.{attribute.name}", high=limit)

    return check


def _fraction(instance: object, attribute: attrs.Attribute, value: float) -> None:
    typed(instance, attribute, value)
    check_number(value, f"{type(instance).__name__}.{attribute.name}", low=0, high=1, high_open=True)


def _name(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"a component name must be a non-empty string, got {value!r}")


def _options_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"component options must be a mapping, got {type(value).__name__}: {value!r}")
    return dict(value)


@attrs.frozen(kw_only=True)
class ComponentSpec:
    """A plugin chosen by registry name, with its options as plain data.

    In JSON/TOML a spec is either the bare name (``"sentencepiece"``) or a table
    ``{"name": "sentencepiece", "options": {"vocab_size": 4000}}``. Options are validated
    against the plugin's own options class when the component is built.
    """

    name: str = attrs.field(validator=_name)
    options: dict[str, Any] = attrs.field(factory=dict, converter=_options_dict, hash=False)

    @classmethod
    def of(cls, value: str | ComponentSpec | Mapping[str, Any]) -> ComponentSpec:
        """Coerce a name, a mapping or a spec into a spec."""
        if isinstance(value, ComponentSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, Mapping):
            return from_dict(cls, value)
        raise ConfigError(f"a component must be a name or {{'name', 'options'}}, got {value!r}")


def _spec(value: str | ComponentSpec | Mapping[str, Any]) -> ComponentSpec:
    return ComponentSpec.of(value)


def _slot(default: str) -> Any:
    """An attrs field holding one ComponentSpec, defaulting to the plugin named ``default``."""
    return attrs.field(factory=lambda: ComponentSpec(name=default), converter=_spec)


def _specs(values: Any) -> tuple[ComponentSpec, ...]:
    if isinstance(values, (str, Mapping, ComponentSpec)):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise ConfigError(f"expected a list of components (names or {{'name', 'options'}}), got {values!r}")
    return tuple(ComponentSpec.of(v) for v in values)


def _model_config(value: Any) -> Any:
    if value is None or isinstance(value, ModelConfig):
        return value
    if isinstance(value, Mapping):
        return from_dict(ModelConfig, value, where="PipelineConfig.model")
    raise ConfigError(f"PipelineConfig.model must be a ModelConfig or a mapping of its fields, got {value!r}")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """Shape and regularisation of the decoder-only transformer.

    ``vocab_size=None`` means "take it from the pipeline's vocabulary". ``num_kv_heads=None`` means
    multi-head attention (as many kv heads as heads). ``ffn_dim=None`` derives the SwiGLU width as
    Llama does: ``int(2 * 4 * dim / 3)`` rounded up to a multiple of ``ffn_multiple_of``.
    """

    dim: int = attrs.field(validator=positive)
    num_layers: int = attrs.field(validator=positive)
    num_heads: int = attrs.field(validator=positive)
    num_kv_heads: int | None = attrs.field(default=None, validator=positive)
    vocab_size: int | None = attrs.field(default=None, validator=positive)
    ffn_dim: int | None = attrs.field(default=None, validator=positive)
    ffn_multiple_of: int = attrs.field(default=256, validator=positive)
    rope_theta: float = attrs.field(default=10000.0, validator=positive)
    norm_eps: float = attrs.field(default=1e-5, validator=positive)
    max_seq_len: int = attrs.field(default=4096, validator=[positive, _at_most(MAX_SEQ_LEN)])
    dropout: float = attrs.field(default=0.0, validator=_fraction)
    init_std: float = attrs.field(default=0.02, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ConfigError(f"ModelConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"ModelConfig head_dim ({self.head_dim}) must be even for rotary embeddings")
        if self.num_heads % self.kv_heads:
            raise ConfigError(
                f"ModelConfig.num_heads ({self.num_heads}) must be divisible by num_kv_heads ({self.kv_heads})"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def hidden_dim(self) -> int:
        """The SwiGLU inner width actually used."""
        if self.ffn_dim is not None:
            return self.ffn_dim
        m = self.ffn_multiple_of
        return -(-int(2 * 4 * self.dim / 3) // m) * m


#: ``appended``: the text tokenizer's ids, then end-of-turn, then each modality's block (models trained
#: here); ``chameleon``: the released 65,536-id layout; ``tokenizer``: the ids the text tokenizer's own
#: file names (the released ``tokenizer.json``: image codes ``IMGIMG...``, ``<racm3:break>``...), with
#: modalities it does not name appended after them.
VocabularyLayout = Literal["appended", "chameleon", "tokenizer"]


@attrs.frozen(kw_only=True)
class PipelineConfig:
    """Names the plugin for every slot of the system, plus the model shape.

    Slots hold :class:`ComponentSpec` values; plain names and ``{"name", "options"}`` mappings are
    accepted and converted.
    """

    text_tokenizer: ComponentSpec = _slot("sentencepiece")
    modalities: tuple[ComponentSpec, ...] = attrs.field(default=(), converter=_specs)
    vocabulary: VocabularyLayout = attrs.field(default="appended", validator=one_of(*typing.get_args(VocabularyLayout)))
    attention: ComponentSpec = _slot("sdpa")
    stability: tuple[ComponentSpec, ...] = attrs.field(default=(), converter=_specs)
    trainer: ComponentSpec = _slot("local")
    sampler: ComponentSpec = _slot("greedy")
    checkpoint_format: ComponentSpec = _slot("native")
    callbacks: tuple[ComponentSpec, ...] = attrs.field(
        factory=lambda: (ComponentSpec(name="metrics-jsonl"),), converter=_specs
    )
    model: ModelConfig | None = attrs.field(default=None, converter=_model_config)

    def __attrs_post_init__(self) -> None:
        names = [m.name for m in self.modalities]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"PipelineConfig.modalities lists {dupes} more than once")


# --- strict (de)serialisation ---------------------------------------------------------------


def to_dict(config: Any) -> Any:
    """Turn a config (or any nesting of attrs classes, tuples, dicts) into JSON-ready data."""
    if attrs.has(type(config)):
        return {f.name: to_dict(getattr(config, f.name)) for f in attrs.fields(type(config))}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {str(k): to_dict(v) for k, v in config.items()}
    return config


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build nested attrs classes."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # an optional value (``ModelConfig | None``): its own reason is the answer
            raise errors[0]
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if tp is ComponentSpec:
        if isinstance(value, (str, Mapping, ComponentSpec)):
            return ComponentSpec.of(value) if not isinstance(value, Mapping) else from_dict(ComponentSpec, value, where)
        raise ConfigError(f"{where}: expected a plugin name or {{name, options}}, got {value!r}")
    if attrs.has(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return check_number(value, where, integer=True)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(check_number(value, where))
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
    """Build the attrs class ``cls`` from plain data, strictly.

    :raises ConfigError: naming the field path, the bad value and what was expected, or the
        unknown key and the valid ones.
    """
    is_config = isinstance(cls, type) and attrs.has(cls)  # (a plain bool: no narrowing of ``cls``)
    if not is_config:
        raise ConfigError(f"from_dict: {cls!r} is not a config class (an attrs class)")
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of options, got {data!r}")
    fields = {f.name: f for f in attrs.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    missing = [f.name for f in fields.values() if f.default is attrs.NOTHING and f.name not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(path: str | os.PathLike[str], cls: type[T] = PipelineConfig) -> T:  # type: ignore[assignment]
    """Read a config from a ``.json`` or ``.toml`` file."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load_config: expected a path to a .json or .toml file, got {path!r}")
    path = Path(path)
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"config file {str(path)!r}: expected a .json or .toml file")
    return from_dict(cls, read_config_data(path), where=path.name)


def read_config_data(path: str | os.PathLike[str]) -> Any:
    """The plain data of a ``.toml`` file, or of any other file as JSON: read bounded (a regular file
    of at most 16 MiB), parsed strictly (UTF-8, no NaN/Infinity, nesting and integer digits within
    the parsers' limits). :class:`ConfigError` names the file otherwise."""
    path = Path(path)
    raw = read_bounded(path, limit=MAX_CONFIG_BYTES, what="config file", error=ConfigError)
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        with foreign_errors(f"config file {str(path)!r}", ConfigError):
            if kind == "TOML":
                return tomllib.loads(raw.decode("utf-8"))
            return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid {kind}: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a number a config may hold", name, 0)


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write a config as JSON (atomically)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"save_config: expected a file path, got {path!r}")
    try:
        text = json.dumps(to_dict(config), indent=2, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"save_config: {type(config).__name__} is not a JSON-serialisable config: {exc}") from exc
    atomic_write_text(path, text + "\n")
