"""Hook specifications: one ``register_*`` hook per plugin kind.

A plugin implements any of these with ``@chameleon_sdk.plugin_api.hookimpl``. Each hook receives a
``register`` callback (the pattern of the ``llm`` CLI) with this signature::

    register(name: str, factory: Callable[..., object], *, options: type | None = None, **traits)

- ``name``: the registry name users put in configs (``"sentencepiece"``, ``"sdpa"``).
- ``factory``: called as ``factory(options_instance)`` when the plugin declares an options class,
  else as ``factory()``; it returns the live component (usually the class itself is the factory).
- ``options``: an attrs class describing the plugin's options; plain dicts from configs are
  validated against it and a bad value raises :class:`~chameleon_sdk.errors.ConfigError`.
- ``traits``: kind-specific facts the core needs before building the component (for example an
  attention backend's ``mask_kinds``); they are kept on the registry record.

The core owns name collisions and records which distribution contributed each registration.
New arguments are only ever added as optional extras: pluggy lets an implementation accept a
subset of a hook's arguments, so old plugins keep working.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

import attrs
import pluggy

hookspec = pluggy.HookspecMarker("chameleon_sdk")
hookimpl = pluggy.HookimplMarker("chameleon_sdk")

Register = Callable[..., None]
Spec = TypeVar("Spec", bound=Callable[..., None])


@attrs.frozen
class Kind:
    """One plugin kind: its name in configs and the registry, the hook that registers it, and the
    name of its contract in :mod:`chameleon_sdk.contracts`."""

    name: str
    hook: str
    contract: str


#: every kind, in the order of the hook specifications below (each declared once, on its hook)
KIND_LIST: list[Kind] = []


def registers(kind: str, *, contract: str) -> Callable[[Spec], Spec]:
    """Declare a hook specification as the one that registers plugins of ``kind`` following ``contract``."""

    def declare(spec: Spec) -> Spec:
        KIND_LIST.append(Kind(kind, spec.__name__, contract))
        return hookspec(spec)

    return declare


# --- Data: how documents become tokens -------------------------------------------------------


@registers("text_tokenizer", contract="TextTokenizer")
def register_text_tokenizers(register: Register) -> None:
    """Register text tokenizers (kind ``text_tokenizer``).

    A text tokenizer turns strings into text ids and back, and can be trained from an iterator of
    strings. See :class:`chameleon_sdk.plugin_api.TextTokenizer` for the contract.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


@registers("modality", contract="Modality")
def register_modalities(register: Register) -> None:
    """Register non-text modalities such as images (kind ``modality``).

    A modality turns one payload (an image, an audio clip) into a block of discrete codes and back.
    The core wraps each block in the modality's begin/end tokens. See
    :class:`chameleon_sdk.plugin_api.Modality` for the contract.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


# --- Model: how the transformer computes -----------------------------------------------------


@registers("attention", contract="AttentionBackend")
def register_attention_backends(register: Register) -> None:
    """Register attention implementations (kind ``attention``).

    Every backend honours one call contract and must declare, as the trait ``mask_kinds``, the
    mask kinds it supports; the core refuses other combinations instead of dropping the mask.

    :param register: ``register(name, factory, *, options=None, mask_kinds=frozenset(...))``.
    """


@registers("stability", contract="StabilityTrick")
def register_stability_tricks(register: Register) -> None:
    """Register training-stability tricks such as QK-norm or z-loss (kind ``stability``).

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


# --- Training and inference: how the system runs ---------------------------------------------


@registers("trainer", contract="Trainer")
def register_trainers(register: Register) -> None:
    """Register training loops (kind ``trainer``), for example single-process or FSDP.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


@registers("sampler", contract="Sampler")
def register_samplers(register: Register) -> None:
    """Register token samplers (kind ``sampler``), for example greedy or top-p.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


@registers("quantization", contract="Quantization")
def register_quantizations(register: Register) -> None:
    """Register inference weight formats such as weight-only int8 (kind ``quantization``).

    A quantization rewrites a loaded model's weights in place for faster or smaller inference. See
    :class:`chameleon_sdk.plugin_api.Quantization` for the contract.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


@registers("checkpoint_format", contract="CheckpointFormat")
def register_checkpoint_formats(register: Register) -> None:
    """Register checkpoint readers/writers (kind ``checkpoint_format``).

    A format reads and writes models (:class:`chameleon_sdk.plugin_api.CheckpointFormat`) and may also hold
    image tokenizers (:class:`chameleon_sdk.plugin_api.ImageTokenizerFormat`).

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


@registers("image_tokenizer_loss", contract="ImageTokenizerLoss")
def register_image_tokenizer_losses(register: Register) -> None:
    """Register extra training losses of image tokenizers (kind ``image_tokenizer_loss``).

    A loss adds a term to the tokenizer's training loss and may train parameters of its own (a
    discriminator). See :class:`chameleon_sdk.plugin_api.ImageTokenizerLoss` for the contract.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


@registers("callback", contract="Callback")
def register_callbacks(register: Register) -> None:
    """Register training/inference callbacks (kind ``callback``), such as loggers.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


@registers("adapter", contract="Adapter")
def register_adapters(register: Register) -> None:
    """Register parameter-efficient fine-tuning methods such as LoRA (kind ``adapter``).

    An adapter adds trainable weights to a frozen model, saves only them, and merges them into the
    base weights. See :class:`chameleon_sdk.plugin_api.Adapter` for the contract.

    :param register: ``register(name, factory, *, options=None, **traits)``.
    """


# --- Applications: what the ``chameleon`` command offers ----------------------------------------


@hookspec
def register_commands(subcommands: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``chameleon`` command (not a component kind: nothing is registered).

    ``subcommands`` is the command's ``argparse`` sub-parser action: add a parser and give it the
    function to run, which takes the parsed ``args`` and returns the exit status::

        p = subcommands.add_parser("hello", help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    A :class:`~chameleon_sdk.ChameleonError` the function raises is printed as one ``error:`` line
    (exit status 2), as for the built-in commands. A name already taken is refused with a
    :class:`~chameleon_sdk.PluginError` naming the plugin.
    """
