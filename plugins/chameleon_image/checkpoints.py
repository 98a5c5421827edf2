"""Reading image tokenizer weights in the three layouts the ``pretrained`` option accepts.

1. This plugin's own (``image_tokenizer.json`` + ``image_tokenizer.safetensors``), from ``save()``.
2. Hugging Face Chameleon (``config.json`` with ``vq_config`` + ``model.safetensors`` or a sharded
   ``model.safetensors.index.json``; keys ``model.vqmodel.*``). HF ships the **encoder only**: no
   decoder weights exist in that layout, so the tokenizer is built with ``decoder=False`` and can
   encode but not decode. A decoder has to come from the original release or from training.
3. The original release (``vqgan.yaml`` + ``vqgan.ckpt``; keys ``encoder.*``, ``decoder.*``,
   ``quantize.embedding.weight``, ``quant_conv.*``, ``post_quant_conv.*``, usually under
   ``state_dict``; ``loss.*`` training-loss weights are ignored). The checkpoint is read with
   ``torch.load(weights_only=True)`` only: a file that needs arbitrary pickled code is refused.

Only layers the network has are read; every error is a :class:`~chameleon_sdk.CheckpointError`
naming the file.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors import SafetensorError, safe_open

from chameleon_image.options import ImageTokenizerOptions
from chameleon_sdk import CheckpointError, ConfigError

HF_PREFIXES = ("model.vqmodel.", "vqmodel.")
HF_MODULES = ("encoder.", "quantize.", "quant_conv.", "post_quant_conv.")
ORIGINAL_MODULES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


def read_pretrained(options: ImageTokenizerOptions) -> tuple[ImageTokenizerOptions, dict[str, torch.Tensor]]:
    """Options with the checkpoint's architecture, and the weights, for ``options.pretrained``."""
    from chameleon_image.tokenizer import OPTIONS_FILE, read_saved

    path = Path(str(options.pretrained))
    if path.is_file() and path.suffix == ".ckpt":
        yaml_path = next((p for p in (path.with_suffix(".yaml"), path.parent / "vqgan.yaml") if p.is_file()), None)
        if yaml_path is None:
            raise CheckpointError(f"{str(path)!r}: no {path.stem}.yaml or vqgan.yaml beside the checkpoint")
        arch, state = read_original(yaml_path, path)
    elif not path.is_dir():
        raise CheckpointError(f"image tokenizer checkpoint {str(path)!r} does not exist or is not a directory")
    elif (path / OPTIONS_FILE).is_file():
        saved, state = read_saved(path)
        arch = saved.architecture()
    elif (path / "config.json").is_file():
        arch, state = read_hf(path)
    elif (path / "vqgan.yaml").is_file() and (path / "vqgan.ckpt").is_file():
        arch, state = read_original(path / "vqgan.yaml", path / "vqgan.ckpt")
    else:
        raise CheckpointError(
            f"{str(path)!r} holds no image tokenizer checkpoint: expected {OPTIONS_FILE} (this SDK), "
            "config.json + model.safetensors (Hugging Face) or vqgan.yaml + vqgan.ckpt (original release)"
        )
    try:
        return attrs.evolve(options, **arch), state
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r}: unsupported image tokenizer configuration: {exc}") from exc


# -- Hugging Face -------------------------------------------------------------------------------------


def hf_architecture(vq: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Our architecture options for a ``transformers`` ``ChameleonVQVAEConfig`` dict."""
    if vq.get("double_latent"):
        raise CheckpointError(f"{where}: vq_config.double_latent=true is not supported")
    vanilla = vq.get("attn_type", "vanilla") == "vanilla"
    try:
        return {
            "resolution": int(vq.get("resolution", 512)),
            "in_channels": int(vq.get("in_channels", 3)),
            "base_channels": int(vq.get("base_channels", 128)),
            "channel_multipliers": tuple(int(m) for m in vq.get("channel_multiplier", (1, 1, 2, 2, 4))),
            "num_res_blocks": int(vq.get("num_res_blocks", 2)),
            "attn_resolutions": tuple(int(r) for r in (vq.get("attn_resolutions") or ())) if vanilla else (),
            "mid_attention": vanilla,
            "latent_channels": int(vq.get("latent_channels", 256)),
            "embed_dim": int(vq.get("embed_dim", 256)),
            "codebook_size": int(vq.get("num_embeddings", 8192)),
            "codebook_metric": "l2",
            "decoder": False,
        }
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: malformed vq_config: {exc}") from exc


def read_hf(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Architecture and encoder weights from a Hugging Face Chameleon checkpoint directory."""
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {str(config_path)!r}: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(config_path)!r}: expected a JSON object")
    vq = config if config.get("model_type") == "chameleon_vqgan" else config.get("vq_config")
    if not isinstance(vq, dict):
        raise CheckpointError(f"{str(config_path)!r} has no vq_config: not a Chameleon checkpoint")
    arch = hf_architecture(vq, str(config_path))
    state: dict[str, torch.Tensor] = {}
    for file in _hf_weight_files(directory):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    prefix = next((p for p in HF_PREFIXES if key.startswith(p)), None)
                    if prefix is not None and key[len(prefix) :].startswith(HF_MODULES):
                        state[key[len(prefix) :]] = f.get_tensor(key)
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"cannot read weights {str(file)!r}: {exc}") from exc
    if not state:
        raise CheckpointError(f"{str(directory)!r}: no model.vqmodel.* weights found")
    return arch, state


def _hf_weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read {str(index)!r}: {exc}") from exc
        names = sorted({v for k, v in weight_map.items() if k.startswith(HF_PREFIXES)})
        return [directory / n for n in names]
    single = directory / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{str(directory)!r}: no model.safetensors or model.safetensors.index.json")
    return [single]


# -- original release ---------------------------------------------------------------------------------


def original_architecture(config: Any, where: str) -> dict[str, Any]:
    """Our architecture options for the original ``vqgan.yaml`` (``model.params``)."""
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
        return {
            "resolution": int(dd["resolution"]),
            "in_channels": int(dd.get("in_channels", 3)),
            "base_channels": int(dd["ch"]),
            "channel_multipliers": tuple(int(m) for m in dd["ch_mult"]),
            "num_res_blocks": int(dd["num_res_blocks"]),
            "attn_resolutions": tuple(int(r) for r in dd.get("attn_resolutions") or ()),
            "mid_attention": attn_type == "vanilla",
            "latent_channels": int(dd["z_channels"]),
            "embed_dim": int(params["embed_dim"]),
            "codebook_size": int(params["n_embed"]),
            "codebook_metric": "l2",
            "decoder": True,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: malformed ddconfig: {exc!r}") from exc


def read_original(yaml_path: Path, ckpt_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Architecture and weights from the original release's ``vqgan.yaml`` + ``vqgan.ckpt``."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml is a dependency
        raise CheckpointError("reading vqgan.yaml needs the 'pyyaml' package") from exc
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"cannot read {str(yaml_path)!r}: {exc}") from exc
    arch = original_architecture(config, str(yaml_path))
    try:
        loaded = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {str(ckpt_path)!r}: it needs arbitrary pickled code, which is never executed "
            f"(only torch.load(weights_only=True) is used): {str(exc).splitlines()[0]}"
        ) from exc
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {str(ckpt_path)!r}: {exc}") from exc
    raw = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{str(ckpt_path)!r}: expected a state dict of tensors (optionally under 'state_dict')")
    state = {k: v for k, v in raw.items() if k.startswith(ORIGINAL_MODULES)}
    unknown = sorted(k for k in raw if not k.startswith((*ORIGINAL_MODULES, "loss.")))
    if unknown:
        raise CheckpointError(f"{str(ckpt_path)!r}: unexpected weights {unknown[:5]} (not a taming VQModel?)")
    return arch, state
