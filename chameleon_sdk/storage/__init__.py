"""Storage helpers that checkpoint formats, trainers and tokenizers build on.

One job per module: :mod:`.paths` (the path check), :mod:`.directories` (directories swapped into
place whole), :mod:`.manifest` (SHA-256 manifests), :mod:`.json_files`, :mod:`.tensor_files`
(safetensors and ``torch.save`` files), :mod:`.dcp_metadata` (distributed-checkpoint metadata read
safely), :mod:`.steps` (trainer step folders
and RNG state), :mod:`.sync` (flushing to disk) and :mod:`.atomic_files` (single files written
whole). Every error is a :class:`~chameleon_sdk.errors.CheckpointError` naming the file. Names
import on first use, so a light module (config) can take one without loading torch.
"""

from typing import TYPE_CHECKING

from chameleon_sdk.lazy_exports import lazy_module_attributes

if TYPE_CHECKING:
    from chameleon_sdk.storage.atomic_files import atomic_write_bytes, atomic_write_text
    from chameleon_sdk.storage.dcp_metadata import verify_dcp_metadata
    from chameleon_sdk.storage.directories import replace_directory, staging_directory
    from chameleon_sdk.storage.json_files import read_json, write_json
    from chameleon_sdk.storage.manifest import MANIFEST_FILE, read_manifest, verify_manifest, write_manifest
    from chameleon_sdk.storage.paths import checked_path
    from chameleon_sdk.storage.steps import (
        global_rng_state,
        prune_step_directories,
        set_global_rng_state,
        step_directories,
        step_directory,
    )
    from chameleon_sdk.storage.tensor_files import (
        SAFETENSORS_FILE,
        SAFETENSORS_INDEX_FILE,
        read_safetensors,
        read_safetensors_shapes,
        read_torch_file,
        read_torch_weights,
        write_safetensors,
        write_torch_file,
    )

__all__ = [
    "MANIFEST_FILE",
    "SAFETENSORS_FILE",
    "SAFETENSORS_INDEX_FILE",
    "atomic_write_bytes",
    "atomic_write_text",
    "checked_path",
    "global_rng_state",
    "prune_step_directories",
    "read_json",
    "read_manifest",
    "read_safetensors",
    "read_safetensors_shapes",
    "read_torch_file",
    "read_torch_weights",
    "replace_directory",
    "set_global_rng_state",
    "staging_directory",
    "step_directories",
    "step_directory",
    "verify_dcp_metadata",
    "verify_manifest",
    "write_json",
    "write_manifest",
    "write_safetensors",
    "write_torch_file",
]

__getattr__ = lazy_module_attributes(__name__, __file__)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
