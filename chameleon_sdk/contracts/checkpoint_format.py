"""Kind ``checkpoint_format``: reading and writing models, and optionally image tokenizers, in one layout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from chameleon_sdk.image_tokenizer import ImageTokenizerCheckpoint
    from chameleon_sdk.plugins import PluginRegistry

__all__ = ["CheckpointFormat", "ImageTokenizerFormat"]


@runtime_checkable
class CheckpointFormat(Protocol):
    """What a ``checkpoint_format`` plugin's factory returns.

    - ``detect(path)``: True when ``path`` looks like a checkpoint of this format. Cheap (reads at
      most small metadata files) and never raises for a path of another format.
    - ``load(path, registry=..., dtype=None)``: build the model (attention and stability plugins
      come from ``registry``) and fill its weights, floating-point ones in ``dtype`` when given
      (build it inside :func:`~chameleon_sdk.plugin_api.parameters_on_meta` and fill it with
      :func:`~chameleon_sdk.plugin_api.load_weights`, so each weight is materialised once); returns the model.
      :func:`load_model` puts it in eval mode (and casts it when a format's ``load`` takes no ``dtype``).
    - ``save(model, path)``: write the model into the existing, empty directory ``path``.
    """

    def detect(self, path: Path) -> bool: ...

    def load(self, path: Path, *, registry: PluginRegistry, dtype: torch.dtype | None = None) -> nn.Module: ...

    def save(self, model: nn.Module, path: Path) -> None: ...


@runtime_checkable
class ImageTokenizerFormat(Protocol):
    """What a ``checkpoint_format`` plugin implements, besides the model methods, to hold image tokenizers.

    - ``detect_image_tokenizer(path)``: True when ``path`` (a directory, or a file for layouts that
      use one) holds an image tokenizer in this layout. Cheap, and never raises for other layouts.
    - ``read_image_tokenizer(path)``: the architecture and weights; :class:`CheckpointError` naming
      the file for anything unreadable or unsupported.
    - ``write_image_tokenizer(checkpoint, path)``: write into the existing, empty directory
      ``path``; a read-only layout raises :class:`CheckpointError`.
    """

    def detect_image_tokenizer(self, path: Path) -> bool: ...

    def read_image_tokenizer(self, path: Path) -> ImageTokenizerCheckpoint: ...

    def write_image_tokenizer(self, checkpoint: ImageTokenizerCheckpoint, path: Path) -> None: ...
