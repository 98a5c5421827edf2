"""A pipeline -> a folder in a released layout (the inverse of :mod:`chameleon_sdk.released`).

- ``"hf"``: what ``transformers`` loads (``ChameleonForConditionalGeneration``, ``ChameleonProcessor``):
  ``config.json`` with the full ``vocabulary_map`` and the image tokenizer's ``vq_config``, the
  weights (the image tokenizer's encoder under ``model.vqmodel.``), ``tokenizer.json``,
  ``tokenizer_config.json`` and ``processor_config.json``.
- ``"original"``: Meta's download, ``models/7b/{params.json, consolidated.pth}`` and
  ``tokenizer/{text_tokenizer.json, vqgan.yaml, vqgan.ckpt}``, which Meta's inference code reads.

Both need the text tokenizer's own JSON file (the ``bpe`` plugin: ids and names are the released
ones) and an ``image`` modality; the weights come through the ``hf`` and ``original`` checkpoint
formats. Every file is written into a staging folder that replaces ``directory`` whole.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chameleon_sdk.checkpoint import save_model
from chameleon_sdk.contracts.text_tokenizer import NamedTokenizer
from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.image_tokenizer import save_image_tokenizer
from chameleon_sdk.released import RESAMPLE_FILTERS
from chameleon_sdk.storage import read_safetensors, staging_directory, write_json, write_safetensors, write_torch_file

if TYPE_CHECKING:
    from chameleon_sdk.pipeline import Pipeline

__all__ = ["RELEASE_LAYOUTS", "write_release"]

RELEASE_LAYOUTS = ("hf", "original")
_RESAMPLE_CODES = {name: code for code, name in RESAMPLE_FILTERS.items()}


def write_release(pipe: Pipeline, directory: str | Path, layout: str, *, legacy_processor: bool = False) -> Path:
    """Write ``pipe`` (its model, text tokenizer and image tokenizer) as a ``layout`` folder.

    :param legacy_processor: for ``"hf"``, write ``preprocessor_config.json`` (older ``transformers``)
        instead of ``processor_config.json``.
    :raises CheckpointError: when the pipeline has no model, no ``image`` modality, or a text
        tokenizer without a ``tokenizers`` file (the layouts have no place for another).
    """
    if layout not in RELEASE_LAYOUTS:
        raise CheckpointError(f"release layout must be one of {list(RELEASE_LAYOUTS)}, got {layout!r}")
    if pipe.model is None:
        raise CheckpointError("the pipeline has no model to write")
    if not isinstance(pipe.text_tokenizer, NamedTokenizer):
        raise CheckpointError(
            f"the {layout} layout keeps the text tokenizer as a tokenizers JSON file; text tokenizer "
            f"{pipe.config.text_tokenizer.name!r} has none (convert a released checkpoint or a 'bpe' pipeline)"
        )
    image = pipe.modalities.get("image")
    if image is None or not hasattr(image, "to_checkpoint"):
        raise CheckpointError(f"the {layout} layout needs the pipeline's 'image' modality (a VQGAN image tokenizer)")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(directory, manifest=False) as tmp:
        if layout == "hf":
            _write_hf(pipe, image, tmp, legacy_processor=legacy_processor)
        else:
            _write_original(pipe, image, tmp)
    return directory


def _tokenizer_file(pipe: Pipeline) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        pipe.text_tokenizer.save(Path(tmp))
        files = list(Path(tmp).glob("*.json"))
        if len(files) != 1:
            raise CheckpointError("the text tokenizer did not save exactly one tokenizers JSON file")
        return files[0].read_text(encoding="utf-8")


def _write_hf(pipe: Pipeline, image: Any, directory: Path, *, legacy_processor: bool) -> None:
    names: dict[str, int] = pipe.text_tokenizer.token_ids()  # type: ignore[attr-defined]
    save_model(pipe.model, directory, format="hf", registry=pipe.registry)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        save_image_tokenizer(image, Path(tmp) / "vq", format="hf", registry=pipe.registry)
        vq_config = json.loads((Path(tmp) / "vq" / "config.json").read_text())
        vq_tensors = read_safetensors(Path(tmp) / "vq")
    tensors = {k: v for k, v in read_safetensors(directory).items() if not k.startswith("model.vqmodel.")}
    tensors.update({f"model.vqmodel.{key}": value for key, value in vq_tensors.items()})
    for stale in [*directory.glob("model*.safetensors"), *directory.glob("model.safetensors.index.json")]:
        stale.unlink()
    (directory / "manifest.json").unlink(missing_ok=True)  # an HF folder has none; the one we had is stale
    write_safetensors(tensors, directory)
    config = json.loads((directory / "config.json").read_text())
    for key in ("model_type", "architectures"):
        vq_config.pop(key, None)
    placeholder = "<image>" if "<image>" in names else "<reserved08707>"
    config.update(vocabulary_map=names, vq_config=vq_config)
    if placeholder in names:
        config["image_token_id"] = names[placeholder]
    write_json(directory / "config.json", config)
    (directory / "tokenizer.json").write_text(_tokenizer_file(pipe), encoding="utf-8")
    specials = pipe.vocabulary.specials
    by_id = {i: n for n, i in names.items()}
    write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": by_id[specials["bos"]],
            "eos_token": by_id[specials["eos"]],
            "pad_token": by_id[specials["pad"]],
            "sep_token": by_id[specials.get("eot", specials["eos"])],
            "image_token": placeholder,
            "model_max_length": pipe.model.config.max_seq_len,  # type: ignore[union-attr]
        },
    )
    processor = _processor_config(image)
    if legacy_processor:
        write_json(directory / "preprocessor_config.json", {**processor, "processor_class": "ChameleonProcessor"})
    else:
        write_json(
            directory / "processor_config.json",
            {
                "processor_class": "ChameleonProcessor",
                "image_seq_length": image.block_length,
                "image_token": placeholder,
                "image_processor": processor,
            },
        )


def _processor_config(image: Any) -> dict[str, Any]:
    """``ChameleonImageProcessor`` settings for the image modality's options. Meta's rule has no exact
    equivalent there (it rounds the resized side and divides by 127.5); its nearest one is written."""
    options = image.options
    size = options.resolution
    hf = options.preprocessing == "hf"
    return {
        "image_processor_type": "ChameleonImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "resample": _RESAMPLE_CODES[options.resample if hf else "lanczos"],
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": options.rescale_factor if hf else 1 / 127.5,
        "do_normalize": True,
        "image_mean": [options.image_mean if hf else 1.0] * 3,
        "image_std": [options.image_std if hf else 1.0] * 3,
        "do_convert_rgb": True,
    }


def _write_original(pipe: Pipeline, image: Any, directory: Path) -> None:
    if not getattr(image, "can_decode", True):
        raise CheckpointError(
            "Meta's layout keeps the whole VQGAN (vqgan.ckpt with its decoder); this image tokenizer is "
            "encoder-only (a Hugging Face release)"
        )
    models = directory / "models" / "7b"
    save_model(pipe.model, models, format="original", registry=pipe.registry)  # type: ignore[arg-type]
    (models / "manifest.json").unlink(missing_ok=True)  # Meta's download has checklist.chk files instead
    tokenizer = directory / "tokenizer"
    tokenizer.mkdir(parents=True)
    (tokenizer / "text_tokenizer.json").write_text(_tokenizer_file(pipe), encoding="utf-8")
    checkpoint = image.to_checkpoint()
    a = checkpoint.architecture
    ddconfig = {
        "double_z": False,
        "z_channels": a.latent_channels,
        "resolution": a.resolution,
        "in_channels": a.in_channels,
        "out_ch": a.in_channels,
        "ch": a.base_channels,
        "ch_mult": list(a.channel_multipliers),
        "num_res_blocks": a.num_res_blocks,
        "attn_resolutions": list(a.attn_resolutions),
        "attn_type": "vanilla" if a.mid_attention else "none",
        "dropout": 0.0,
    }
    if a.codebook_metric != "l2":
        raise CheckpointError(f"Meta's VQGAN looks codes up by L2 distance; this tokenizer's is {a.codebook_metric!r}")
    params = {"embed_dim": a.embed_dim, "n_embed": a.codebook_size, "ddconfig": ddconfig}
    yaml_text = json.dumps({"model": {"target": "taming.models.vqgan.VQModel", "params": params}}, indent=2)
    (tokenizer / "vqgan.yaml").write_text(yaml_text + "\n", encoding="utf-8")  # JSON is valid YAML
    write_torch_file({"state_dict": dict(checkpoint.state_dict)}, tokenizer / "vqgan.ckpt")
