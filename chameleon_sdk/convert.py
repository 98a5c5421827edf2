"""Converting checkpoints between layouts: ``chameleon convert SRC DST --to hf|native|original``.

A source with its tokenizers (a saved pipeline, a Hugging Face folder with ``tokenizer.json``, Meta's
download with ``tokenizer/``) converts as a whole pipeline: ``native`` writes a saved pipeline,
``hf`` and ``original`` write the released layouts (:func:`~chameleon_sdk.release_writer.write_release`).
A bare model folder converts as a model (``cs.save_model`` in that format).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import torch

from chameleon_sdk.checkpoint import load_model, save_model
from chameleon_sdk.config import ComponentSpec
from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.pipeline import PIPELINE_FILE, Pipeline
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.release_writer import write_release
from chameleon_sdk.released import HF_TOKENIZER, find_release

__all__ = ["CONVERT_TARGETS", "convert", "has_tokenizers", "write_pipeline"]

CONVERT_TARGETS = ("native", "hf", "original")


def has_tokenizers(path: Path) -> bool:
    """Whether ``path`` holds a whole pipeline (tokenizers included), not only a model."""
    if (path / PIPELINE_FILE).is_file():
        return True
    try:
        release = find_release(path)
    except CheckpointError:
        return False
    return release.layout == "meta" or (path / HF_TOKENIZER).is_file()


def convert(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    to: str,
    dtype: torch.dtype | None = None,
    registry: PluginRegistry | None = None,
) -> Path:
    """Read ``source`` in any layout and write it to ``destination`` in layout ``to``.

    :param to: ``"native"``, ``"hf"`` or ``"original"``.
    :param dtype: cast the weights (default: keep them as stored).
    :raises CheckpointError: for an unknown target, an unreadable source, or a model or pipeline the
        target layout cannot hold (named).
    """
    if to not in CONVERT_TARGETS:
        raise CheckpointError(f"convert: --to must be one of {list(CONVERT_TARGETS)}, got {to!r}")
    source, destination = Path(source), Path(destination)
    if not source.exists():
        raise CheckpointError(f"convert: the source {str(source)!r} does not exist")
    if destination.resolve() == source.resolve():
        raise CheckpointError("convert: the destination must differ from the source")
    registry = registry or get_registry()
    if not has_tokenizers(source):
        model = load_model(source, registry=registry, dtype=dtype)
        return save_model(model, destination, format=to, registry=registry)
    return write_pipeline(Pipeline.from_pretrained(source, dtype=dtype, registry=registry), destination, to)


def write_pipeline(pipe: Pipeline, destination: Path, layout: str) -> Path:
    """Write a whole pipeline: ``native`` as a saved pipeline, another layout as that release."""
    if layout != "native":
        return write_release(pipe, destination, layout)
    pipe.config = attrs.evolve(pipe.config, checkpoint_format=ComponentSpec(name="native"))
    return pipe.save_pretrained(destination)
