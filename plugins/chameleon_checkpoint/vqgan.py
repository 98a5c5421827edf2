"""Image tokenizer (VQGAN) checkpoints in the three built-in layouts.

Each format class delegates its :class:`plugin_api.ImageTokenizerFormat` methods here. What they
read and write is an :class:`plugin_api.ImageTokenizerCheckpoint`: a
:class:`plugin_api.VQGANArchitecture` and a state dict under taming's key names.

``native`` (read and write): ``image_tokenizer.json``::

    {"format": "chameleon-image-tokenizer", "format_version": 2, "architecture": {...VQGANArchitecture...}}

plus ``image_tokenizer.safetensors`` with the state dict as it is. Version 1 files (their
``"options"`` hold every option of the ``image`` modality) are read too: the architecture is taken
from them and the rest ignored.

``hf`` (read and write): Hugging Face Chameleon. Read from a full model directory (``config.json``
with ``model_type: "chameleon"`` and a ``vq_config``; weights ``model.vqmodel.*``, single file or
sharded) or from a standalone ``ChameleonVQVAE`` directory (``model_type: "chameleon_vqgan"``, keys
without a prefix). Written as the standalone one, which ``transformers.ChameleonVQVAE.from_pretrained``
loads. The layout has **no decoder**: reading gives an encoder-only tokenizer, and writing keeps the
encoder side (``encoder.*``, ``quantize.*``, ``quant_conv.*``, ``post_quant_conv.*``) and drops
``decoder.*``. Its quantizer is L2 only, so a cosine codebook is refused.

``original`` (read only): Meta's release, ``vqgan.yaml`` (a taming ``VQModel`` config) and
``vqgan.ckpt`` (keys under ``state_dict``; ``loss.*`` training weights ignored), as a directory or
the ``.ckpt`` file with a ``.yaml`` beside it. The checkpoint is read with
``torch.load(weights_only=True)`` only: a file that needs arbitrary pickled code is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

import chameleon_sdk
from chameleon_checkpoint.layout import json_object
from chameleon_sdk import CheckpointError, ConfigError, plugin_api
from chameleon_sdk.plugin_api import ImageTokenizerCheckpoint, VQGANArchitecture, read_torch_file

NATIVE_CONFIG = "image_tokenizer.json"
NATIVE_WEIGHTS = "image_tokenizer.safetensors"
NATIVE_TAG = "chameleon-image-tokenizer"
NATIVE_VERSION = 2
HF_CONFIG = "config.json"
HF_FULL_PREFIX = "model.vqmodel."
HF_STANDALONE_PREFIX = "vqmodel."
HF_MODULES = ("encoder.", "quantize.", "quant_conv.", "post_quant_conv.")
ORIGINAL_CONFIG = "vqgan.yaml"
ORIGINAL_WEIGHTS = "vqgan.ckpt"
ORIGINAL_MODULES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
#: Meta's ``ImageTokenizer`` feeds its VQGAN 512 x 512 pictures and reads a 32 x 32 grid of codes,
#: whatever ``vqgan.yaml`` says its resolution is
ORIGINAL_INPUT_SIZE = 512
RELEASED_BLOCK_LENGTH = 1024
RELEASED_CODES = 8192


def _architecture(fields: Mapping[str, Any], where: str) -> VQGANArchitecture:
    try:
        return chameleon_sdk.from_dict(VQGANArchitecture, dict(fields), where=where)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: unsupported image tokenizer configuration: {exc}") from exc


def _fields(architecture: VQGANArchitecture) -> dict[str, Any]:
    return chameleon_sdk.to_dict(architecture.architecture())  # type: ignore[no-any-return]


# -- native -------------------------------------------------------------------------------------------


def detect_native(path: Path) -> bool:
    return path.is_dir() and (path / NATIVE_CONFIG).is_file()


def read_native(path: Path) -> ImageTokenizerCheckpoint:
    config_file = path / NATIVE_CONFIG
    where = str(config_file)
    meta = plugin_api.read_json(config_file)
    if not isinstance(meta, dict) or meta.get("format") != NATIVE_TAG:
        raise CheckpointError(f"{where!r} is not a {NATIVE_TAG} file")
    version = meta.get("format_version")
    if version == 1 and isinstance(meta.get("options"), dict):
        names = {f.name for f in attrs.fields(VQGANArchitecture)}
        fields = {k: v for k, v in meta["options"].items() if k in names}
    elif version == NATIVE_VERSION and isinstance(meta.get("architecture"), dict):
        fields = meta["architecture"]
    else:
        raise CheckpointError(
            f"{where!r}: format_version {version!r} is not supported (expected 1 or {NATIVE_VERSION})"
        )
    architecture = _architecture(fields, where)
    state = plugin_api.read_safetensors(path / NATIVE_WEIGHTS)
    return ImageTokenizerCheckpoint(architecture=architecture, state_dict=state, source=str(path), format="native")


def write_native(checkpoint: ImageTokenizerCheckpoint, path: Path) -> None:
    """Weights first, then the JSON (its presence marks a complete directory)."""
    state = dict(checkpoint.state_dict)
    (written,) = plugin_api.write_safetensors(state, path, metadata={"format": NATIVE_TAG})
    (path / written).replace(path / NATIVE_WEIGHTS)
    meta = {"format": NATIVE_TAG, "format_version": NATIVE_VERSION, "architecture": _fields(checkpoint.architecture)}
    plugin_api.write_json(path / NATIVE_CONFIG, meta)


# -- Hugging Face -------------------------------------------------------------------------------------


def _hf_vq_config(path: Path) -> tuple[dict[str, Any], bool] | None:
    """``(vq config, is a full model)`` for a Chameleon ``config.json``, or None for anything else."""
    config = json_object(path / HF_CONFIG) if path.is_dir() else None
    if config is None:
        return None
    if config.get("model_type") == "chameleon_vqgan":
        return config, False
    if config.get("model_type") == "chameleon" and isinstance(config.get("vq_config"), dict):
        return config["vq_config"], True
    return None


def detect_hf(path: Path) -> bool:
    return _hf_vq_config(path) is not None


def architecture_from_hf(vq: Mapping[str, Any], where: str) -> VQGANArchitecture:
    """Our architecture for a ``transformers`` ``ChameleonVQVAEConfig`` dict (encoder only)."""
    if vq.get("double_latent"):
        raise CheckpointError(f"{where}: vq_config.double_latent=true is not supported")
    attn_type = vq.get("attn_type", "vanilla")
    if attn_type not in ("vanilla", "none"):
        raise CheckpointError(f"{where}: vq_config.attn_type {attn_type!r} is not supported")
    vanilla = attn_type == "vanilla"
    fields = {
        "resolution": vq.get("resolution", 512),
        "in_channels": vq.get("in_channels", 3),
        "base_channels": vq.get("base_channels", 128),
        "channel_multipliers": list(vq.get("channel_multiplier", (1, 1, 2, 2, 4))),
        "num_res_blocks": vq.get("num_res_blocks", 2),
        "attn_resolutions": list(vq.get("attn_resolutions") or ()) if vanilla else [],
        "mid_attention": vanilla,
        "latent_channels": vq.get("latent_channels", 256),
        "embed_dim": vq.get("embed_dim", 256),
        "codebook_size": vq.get("num_embeddings", 8192),
        "codebook_metric": "l2",
        "decoder": False,
    }
    return _architecture(fields, where)


def hf_vq_config(architecture: VQGANArchitecture, where: str) -> dict[str, Any]:
    """The ``ChameleonVQVAEConfig`` dict for ``architecture``, refusing what the layout cannot express."""
    a = architecture
    if a.codebook_metric != "l2":
        raise CheckpointError(
            f"{where}: the hf layout has no place for a {a.codebook_metric!r} codebook (transformers looks codes up "
            "by L2 distance); save it as 'native'"
        )
    if not a.mid_attention and a.attn_resolutions:
        raise CheckpointError(
            f"{where}: the hf layout switches all attention on or off (attn_type), but this tokenizer has "
            f"attention at {list(a.attn_resolutions)} and none in the middle block; save it as 'native'"
        )
    return {
        "model_type": "chameleon_vqgan",
        "architectures": ["ChameleonVQVAE"],
        "embed_dim": a.embed_dim,
        "num_embeddings": a.codebook_size,
        "double_latent": False,
        "latent_channels": a.latent_channels,
        "resolution": a.resolution,
        "in_channels": a.in_channels,
        "base_channels": a.base_channels,
        "channel_multiplier": list(a.channel_multipliers),
        "num_res_blocks": a.num_res_blocks,
        "attn_resolutions": list(a.attn_resolutions),
        "attn_type": "vanilla" if a.mid_attention else "none",
        "dropout": 0.0,
        "initializer_range": 0.02,
    }


def read_hf(path: Path) -> ImageTokenizerCheckpoint:
    found = _hf_vq_config(path)
    config_file = str(path / HF_CONFIG)
    if found is None:
        raise CheckpointError(f"{config_file!r} has no vq_config: not a Chameleon checkpoint")
    vq, full = found
    architecture = architecture_from_hf(vq, config_file)
    if full:  # only the image tokenizer's tensors are materialised, never the language model's
        raw = plugin_api.read_safetensors(path, prefix=HF_FULL_PREFIX, strip_prefix=True)
    else:
        raw = plugin_api.read_safetensors(path)
        if any(k.startswith(HF_STANDALONE_PREFIX) for k in raw):  # saved from a wrapper that named it
            raw = {k.removeprefix(HF_STANDALONE_PREFIX): v for k, v in raw.items()}
    state = {k: v for k, v in raw.items() if k.startswith(HF_MODULES)}
    if not state:
        raise CheckpointError(f"{str(path)!r}: no {HF_FULL_PREFIX}* weights found")
    return ImageTokenizerCheckpoint(architecture=architecture, state_dict=state, source=str(path), format="hf")


def write_hf(checkpoint: ImageTokenizerCheckpoint, path: Path, *, max_shard_bytes: int | None = None) -> None:
    """A standalone ``ChameleonVQVAE`` directory: the encoder side only (the layout has no decoder)."""
    config = hf_vq_config(checkpoint.architecture, str(path))
    state = {k: v for k, v in checkpoint.state_dict.items() if k.startswith(HF_MODULES)}
    plugin_api.write_safetensors(state, path, max_shard_bytes=max_shard_bytes)
    plugin_api.write_json(path / HF_CONFIG, config)


# -- the original release -----------------------------------------------------------------------------


def _original_files(path: Path) -> tuple[Path, Path] | None:
    """``(vqgan.yaml, vqgan.ckpt)`` for a release directory or a ``.ckpt`` file, else None."""
    if path.is_dir():
        yaml_path, ckpt_path = path / ORIGINAL_CONFIG, path / ORIGINAL_WEIGHTS
        return (yaml_path, ckpt_path) if yaml_path.is_file() and ckpt_path.is_file() else None
    if path.is_file() and path.suffix == ".ckpt":
        beside = (path.with_suffix(".yaml"), path.parent / ORIGINAL_CONFIG)
        yaml_path = next((p for p in beside if p.is_file()), None)
        if yaml_path is None:
            raise CheckpointError(f"{str(path)!r}: no {path.stem}.yaml or {ORIGINAL_CONFIG} beside the checkpoint")
        return yaml_path, path
    return None


def detect_original(path: Path) -> bool:
    return (path.is_file() and path.suffix == ".ckpt") or (path.is_dir() and _original_files(path) is not None)


def architecture_from_taming(config: Any, where: str) -> VQGANArchitecture:
    """Our architecture for the original ``vqgan.yaml`` (``model.params``)."""
    try:
        params = config["model"]["params"]
        dd = params["ddconfig"]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: expected model.params.ddconfig (a taming VQModel config)") from exc
    if params.get("remap") is not None:
        raise CheckpointError(f"{where}: codebook remapping (params.remap) is not supported")
    for flag in ("double_z", "give_pre_end", "tanh_out", "use_linear_attn"):
        if dd.get(flag):
            raise CheckpointError(f"{where}: ddconfig.{flag}=true is not supported")
    if dd.get("out_ch", 3) != dd.get("in_channels", 3):
        raise CheckpointError(f"{where}: ddconfig.out_ch must equal in_channels")
    attn_type = dd.get("attn_type", "vanilla")
    if attn_type not in ("vanilla", "none"):
        raise CheckpointError(f"{where}: ddconfig.attn_type {attn_type!r} is not supported")
    try:
        resolution, attn_resolutions = _meta_input_size(
            dd["resolution"], list(dd["ch_mult"]), dd.get("attn_resolutions")
        )
        fields = {
            "resolution": resolution,
            "in_channels": dd.get("in_channels", 3),
            "base_channels": dd["ch"],
            "channel_multipliers": list(dd["ch_mult"]),
            "num_res_blocks": dd["num_res_blocks"],
            "attn_resolutions": attn_resolutions,
            "mid_attention": attn_type == "vanilla",
            "latent_channels": dd["z_channels"],
            "embed_dim": params["embed_dim"],
            "codebook_size": params["n_embed"],
            "codebook_metric": "l2",
            "decoder": True,
        }
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: malformed ddconfig: {exc!r}") from exc
    return _architecture(fields, where)


def _meta_input_size(resolution: Any, multipliers: list[Any], attn_resolutions: Any) -> tuple[Any, list[Any]]:
    """The input size and attention placement Meta's ``ImageTokenizer`` runs a ``vqgan.yaml`` with.

    It feeds 512 x 512 pictures and decodes a 32 x 32 grid whatever ``ddconfig.resolution`` says, so
    a 16x-downsampling VQGAN (the release's) gets resolution 512, with ``attn_resolutions`` (feature
    map sides the yaml counts from its own resolution) scaled so attention stays at the same levels.
    Other shapes, which that class cannot run, keep the yaml's resolution.
    """
    attn = list(attn_resolutions or ())
    if len(multipliers) != 5 or not isinstance(resolution, int) or resolution <= 0 or resolution == ORIGINAL_INPUT_SIZE:
        return resolution, attn
    if ORIGINAL_INPUT_SIZE % resolution or not all(isinstance(r, int) for r in attn):
        return resolution, attn
    scale = ORIGINAL_INPUT_SIZE // resolution
    return ORIGINAL_INPUT_SIZE, [r * scale for r in attn]


def read_original_architecture(yaml_path: Path) -> VQGANArchitecture:
    """The architecture a ``vqgan.yaml`` describes, as Meta's ``ImageTokenizer`` runs it."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml is a dependency
        raise CheckpointError(f"reading {ORIGINAL_CONFIG} needs the 'pyyaml' package") from exc
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"cannot read {str(yaml_path)!r}: {exc}") from exc
    return architecture_from_taming(config, str(yaml_path))


def read_original(path: Path) -> ImageTokenizerCheckpoint:
    files = _original_files(path)
    if files is None:
        raise CheckpointError(f"{str(path)!r}: expected {ORIGINAL_CONFIG} + {ORIGINAL_WEIGHTS} or a .ckpt file")
    yaml_path, ckpt_path = files
    architecture = read_original_architecture(yaml_path)
    # mapped, not read: a released VQGAN is ~270 MB and a release's loader reads it twice, once for
    # the architecture and once for the modality; only the weights a model copies are paged in
    loaded = read_torch_file(ckpt_path, mmap=True)
    raw = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{str(ckpt_path)!r}: expected a state dict of tensors (optionally under 'state_dict')")
    unknown = sorted(k for k in raw if not k.startswith((*ORIGINAL_MODULES, "loss.")))
    if unknown:
        raise CheckpointError(f"{str(ckpt_path)!r}: unexpected weights {unknown[:5]} (not a taming VQModel?)")
    state = {k: v for k, v in raw.items() if k.startswith(ORIGINAL_MODULES)}
    return ImageTokenizerCheckpoint(
        architecture=architecture, state_dict=state, source=str(ckpt_path), format="original"
    )
