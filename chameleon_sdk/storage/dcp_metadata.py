"""Safe reading of ``torch.distributed.checkpoint`` metadata (which ``dcp.load`` would unpickle with plain pickle)."""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.storage.paths import checked_path

__all__ = ["verify_dcp_metadata"]


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles ``torch.distributed.checkpoint`` metadata only: its dataclasses and enums, tensor
    sizes, dtypes, layouts, memory formats and paths. Any other global is refused, so no code runs."""

    _DCP = "torch.distributed.checkpoint."
    _PATHS = frozenset({"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"})

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        import dataclasses
        import enum
        import importlib

        allowed = (
            (module == "torch" and name == "Size")
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "pathlib" and name in self._PATHS)
            or (module == "collections" and name == "OrderedDict")
        )
        if not allowed and (module == "torch" or module.startswith(self._DCP)):
            try:
                found = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                found = None
            allowed = isinstance(found, (torch.dtype, torch.layout, torch.memory_format)) or (
                module.startswith(self._DCP)
                and isinstance(found, type)
                and (dataclasses.is_dataclass(found) or issubclass(found, enum.Enum))
            )
        if not allowed:
            raise CheckpointError(
                f"refusing to load {self.source!r}: it needs {module}.{name}, which is not part of checkpoint "
                "metadata (the file is never unpickled with it)"
            )
        return super().find_class(module, name)


def verify_dcp_metadata(directory: str | os.PathLike[str]) -> None:
    """Check the metadata files of a ``torch.distributed.checkpoint`` directory before ``dcp.load``.

    ``dcp.load`` unpickles ``.metadata`` with plain :mod:`pickle`, which would run any code a crafted
    file holds; this reads every ``*.metadata`` file of ``directory`` with an unpickler that allows
    only the checkpoint-metadata classes, so such a file is refused before it is ever loaded.

    :raises CheckpointError: naming the file and what it needed, or a missing or corrupt file.
    """
    directory = checked_path(directory, "directory")
    files = sorted(directory.glob("*.metadata")) if directory.is_dir() else []
    if not files:
        raise CheckpointError(f"{str(directory)!r} holds no .metadata file: not a torch.distributed.checkpoint")
    for path in files:
        try:
            with path.open("rb") as f:
                _MetadataUnpickler(f, str(path)).load()
        except CheckpointError:
            raise
        except Exception as exc:  # pickle raises many types for a damaged file
            raise CheckpointError(f"checkpoint metadata {str(path)!r} is corrupt: {exc!r}") from exc
