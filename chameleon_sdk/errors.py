"""The one error hierarchy of chameleon-sdk.

Every error the public API raises for bad input is a :class:`ChameleonError`. Where a builtin
exception family fits, the subclass also inherits from it (``ConfigError`` is a ``ValueError``),
so ``except ValueError`` in an app keeps working.
"""

from __future__ import annotations

__all__ = [
    "ChameleonError",
    "CheckpointError",
    "ConfigError",
    "DocumentError",
    "DuplicatePluginError",
    "GenerationError",
    "ImageDecodeError",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "TokenizationError",
    "TrainingError",
]


class ChameleonError(Exception):
    """Base class of every error chameleon-sdk raises on purpose."""


class ConfigError(ChameleonError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class PluginError(ChameleonError):
    """Base class of plugin-system errors."""


class PluginNotFoundError(PluginError, LookupError):
    """No plugin of the requested kind is registered under the requested name."""

    def __init__(self, kind: str, name: str, available: list[str], closest: str | None, *, hint: str = "") -> None:
        self.kind, self.name, self.available, self.closest = kind, name, available, closest
        close = f" Did you mean {closest!r}?" if closest else ""
        names = ", ".join(repr(n) for n in available) or "none"
        noun = kind if kind.startswith("plugin") else f"{kind} plugin"  # "plugin", "plugin kind"
        extra = f" {hint[:1].upper()}{hint[1:]}." if hint else ""
        super().__init__(f"no {noun} named {name!r}.{close} Registered: {names}.{extra}")


class PluginLoadError(PluginError, ImportError):
    """A plugin's entry point could not be imported or registered."""


class DuplicatePluginError(PluginError, ValueError):
    """Two plugins registered the same kind and name."""


class DocumentError(ChameleonError, TypeError):
    """A document, segment or serialised document is malformed."""


class TokenizationError(ChameleonError, ValueError):
    """Text or token ids cannot be encoded or decoded."""


class ImageDecodeError(ChameleonError, ValueError):
    """An image file or buffer cannot be decoded into pixels."""


class CheckpointError(ChameleonError, ValueError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the model."""


class GenerationError(ChameleonError, ValueError):
    """Generation was asked for something it cannot do."""


class TrainingError(ChameleonError, RuntimeError):
    """Training cannot go on (for example: too many non-finite steps in a row)."""
