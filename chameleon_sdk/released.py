"""Released checkpoint folders -> the pipeline that runs them.

Three layouts hold the released weights and everything beside them:

- **Hugging Face** (``facebook/chameleon-7b``): ``config.json`` (``model_type: "chameleon"``), the
  safetensors weights, ``tokenizer.json``, and the image processor's settings in
  ``processor_config.json`` (``transformers`` 5.x, under ``image_processor``) or
  ``preprocessor_config.json`` (older versions). The image tokenizer is the encoder only.
- **Meta's download**: ``models/7b`` or ``models/30b`` (``params.json``, ``consolidated*.pth``) beside
  ``tokenizer/`` (``text_tokenizer.json``, ``vqgan.yaml``, ``vqgan.ckpt``).
- **Anole**: Meta's layout, with a ``consolidate_params.json`` and a ``vqgan.ckpt`` whose decoder
  draws.

:func:`find_release` reads no weights: it checks the files and says how to build the pipeline. The
text tokenizer is the ``bpe`` plugin on the release's own file, the vocabulary is the one that file
names (``vocabulary="tokenizer"``), and the ``image`` modality gets the release's architecture and
its own preprocessing rule (the two releases differ; see docs/image-tokenizer.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from chameleon_sdk.config import ComponentSpec, PipelineConfig, to_dict
from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.image_tokenizer import read_image_tokenizer
from chameleon_sdk.storage import read_json

__all__ = ["Release", "find_release"]

HF_CONFIG = "config.json"
HF_TOKENIZER = "tokenizer.json"
HF_PROCESSOR = ("processor_config.json", "preprocessor_config.json")
META_MODELS = ("7b", "30b", "34b")
META_TOKENIZER = ("text_tokenizer.json", "vqgan.yaml", "vqgan.ckpt")
#: ``PIL.Image`` resampling codes as processor configs store them -> the ``image`` modality's filter names
RESAMPLE_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@attrs.frozen(kw_only=True)
class Release:
    """How to load one released checkpoint folder.

    :param layout: ``"hf"`` or ``"meta"``.
    :param load_config: the config to build the components with (it names the release's files).
    :param config: the same components without file paths: what a saved copy of the pipeline records
        (their state is then saved beside it).
    :param model_path: the folder the ``checkpoint_format`` plugin ``model_format`` reads.
    """

    layout: str
    load_config: PipelineConfig
    config: PipelineConfig
    model_path: Path
    model_format: str


def _require(path: Path, purpose: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} is missing: it is {purpose}")
    return path


def _pipeline_configs(
    text_file: Path, image_options: dict[str, Any], image_source: Path, image_format: str, checkpoint_format: str
) -> tuple[PipelineConfig, PipelineConfig]:
    image_load = {**image_options, "pretrained": str(image_source), "pretrained_format": image_format}
    common: dict[str, Any] = {"vocabulary": "tokenizer", "checkpoint_format": ComponentSpec(name=checkpoint_format)}
    load = PipelineConfig(
        text_tokenizer=ComponentSpec(name="bpe", options={"path": str(text_file)}),
        modalities=(ComponentSpec(name="image", options=image_load),),
        **common,
    )
    portable = PipelineConfig(
        text_tokenizer=ComponentSpec(name="bpe"),
        modalities=(ComponentSpec(name="image", options=image_options),),
        **common,
    )
    return load, portable


def _architecture(path: Path, format: str) -> dict[str, Any]:
    checkpoint = read_image_tokenizer(path, format=format, verify=False)
    return dict(to_dict(checkpoint.architecture))


def _hf_image_options(directory: Path) -> dict[str, Any]:
    """The ``image`` modality's options for an HF folder: its VQ architecture and its processor's rule."""
    found = [directory / name for name in HF_PROCESSOR if (directory / name).is_file()]
    if not found:
        raise CheckpointError(
            f"{str(directory)!r} has neither {HF_PROCESSOR[0]!r} nor {HF_PROCESSOR[1]!r}: one of them holds the image "
            "processor's settings (resize, crop, rescale), which decide the image codes"
        )
    raw = read_json(found[0])
    processor = raw.get("image_processor", raw) if isinstance(raw, dict) else None
    where = str(found[0])
    if not isinstance(processor, dict):
        raise CheckpointError(f"{where!r}: expected a JSON object with the image processor's settings")
    options = _architecture(directory, "hf")
    resolution = options["resolution"]
    sizes = {
        "size.shortest_edge": (processor.get("size") or {}).get("shortest_edge", resolution),
        "crop_size.height": (processor.get("crop_size") or {}).get("height", resolution),
        "crop_size.width": (processor.get("crop_size") or {}).get("width", resolution),
    }
    wrong = {k: v for k, v in sizes.items() if v != resolution}
    if wrong:
        raise CheckpointError(
            f"{where!r}: {wrong} differ from the image tokenizer's resolution {resolution} (vq_config); "
            "only square inputs of that size are supported"
        )
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
        if processor.get(flag, True) is not True:
            raise CheckpointError(f"{where!r}: {flag}=false is not supported")
    stats = {}
    for key, default in (("image_mean", 1.0), ("image_std", 1.0)):
        value = processor.get(key, default)
        values = value if isinstance(value, list) else [value]
        if not values or any(v != values[0] for v in values) or not isinstance(values[0], (int, float)):
            raise CheckpointError(f"{where!r}: {key} must be one number for all channels, got {value!r}")
        stats[key] = float(values[0])
    resample = processor.get("resample", 1)
    if resample not in RESAMPLE_FILTERS:
        raise CheckpointError(f"{where!r}: resample {resample!r} is not a PIL resampling filter code (0-5)")
    rescale = processor.get("rescale_factor", 0.0078)
    if isinstance(rescale, bool) or not isinstance(rescale, (int, float)):
        raise CheckpointError(f"{where!r}: rescale_factor must be a number, got {rescale!r}")
    return {
        **options,
        "preprocessing": "hf",
        "resample": RESAMPLE_FILTERS[resample],
        "rescale_factor": float(rescale),
        **stats,
    }


def _hf_release(directory: Path) -> Release:
    text_file = _require(directory / HF_TOKENIZER, "the text tokenizer (byte-level BPE, read by the 'bpe' plugin)")
    image_options = _hf_image_options(directory)
    load, portable = _pipeline_configs(text_file, image_options, directory, "hf", "hf")
    return Release(layout="hf", load_config=load, config=portable, model_path=directory, model_format="hf")


def _meta_model_folder(directory: Path) -> tuple[Path, Path]:
    """``(models/NAME, tokenizer/)`` for Meta's download root or one of its model folders."""
    if (directory / "params.json").is_file():
        return directory, directory.parent.parent / "tokenizer"
    found = [directory / "models" / name for name in META_MODELS if (directory / "models" / name).is_dir()]
    if len(found) > 1:
        raise CheckpointError(
            f"{str(directory)!r} holds several models ({[p.name for p in found]}): pass the one to load, "
            f"e.g. {str(found[0])!r}"
        )
    return found[0], directory / "tokenizer"


def _meta_release(directory: Path) -> Release:
    model, tokenizer = _meta_model_folder(directory)
    _require(model / "params.json", "the model's hyper-parameters (Meta's layout)")
    text_file = _require(tokenizer / META_TOKENIZER[0], "the text tokenizer (byte-level BPE, read by the 'bpe' plugin)")
    _require(tokenizer / META_TOKENIZER[1], "the image tokenizer's architecture (a taming VQGAN config)")
    _require(tokenizer / META_TOKENIZER[2], "the image tokenizer's weights (VQGAN encoder and decoder)")
    image_options = {**_architecture(tokenizer, "original"), "preprocessing": "meta"}
    load, portable = _pipeline_configs(text_file, image_options, tokenizer, "original", "native")
    return Release(layout="meta", load_config=load, config=portable, model_path=model, model_format="original")


def _is_hf(directory: Path) -> bool:
    try:
        config = read_json(directory / HF_CONFIG)
    except CheckpointError:
        return False
    return isinstance(config, dict) and config.get("model_type") == "chameleon"


def find_release(directory: Path) -> Release:
    """How to load the released checkpoint in ``directory`` (see the module docstring).

    :raises CheckpointError: when the folder is no known layout, or lacks a file it needs (named,
        with what it is for).
    """
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {str(directory)!r} does not exist (or is not a folder)")
    if (directory / HF_CONFIG).is_file() and _is_hf(directory):
        return _hf_release(directory)
    meta_models = any((directory / "models" / name).is_dir() for name in META_MODELS)
    if (directory / "params.json").is_file() or meta_models:
        return _meta_release(directory)
    listing = sorted(p.name for p in directory.iterdir())[:10]
    raise CheckpointError(
        f"{str(directory)!r} is not a pipeline or a released checkpoint (it holds {listing}): expected "
        "pipeline.json (a saved pipeline), config.json with model_type 'chameleon' (Hugging Face), or "
        "models/7b|30b beside tokenizer/ (Meta's download, Anole)"
    )
