"""The ``hf`` checkpoint format: the directory ``transformers``' ``ChameleonForConditionalGeneration`` reads.

``config.json`` (``model_type: "chameleon"``, ``vocabulary_map``, ``swin_norm``...) plus
``model.safetensors`` or shards with ``model.safetensors.index.json``. Keys are Llama-style
(``model.layers.N.self_attn.q_proj.weight``...), rotary already in rotate-half order, and the QK-norm
tables stored per head (``[heads, head_dim]``, rows repeated when heads share one norm). That layout
always applies QK-norm; ``swin_norm: true`` is our ``norm-reorder`` trick.

The image tokenizer's weights (``model.vqmodel.*``) are not part of the language model: loading
skips them (``chameleon_sdk.read_image_tokenizer(path)`` reads them, with ``config.json``'s
``vq_config``, through this format's image tokenizer methods in ``vqgan.py``), and saving a model
that was loaded from an ``hf`` directory copies them from there so the written checkpoint stays
complete.

The QK-norm LayerNorm epsilon is 1e-5 whatever ``rms_norm_eps`` says, in ``transformers`` as in
Meta's code and ours (``qk-norm``'s ``eps`` option).

One numerical difference is deliberate: ``transformers`` sets the logits of every image-code id to the
dtype's minimum in ``forward`` (so it can never generate an image); our model returns real logits for
every id and leaves constraints to the sampler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from torch import nn

import chameleon_sdk
from chameleon_checkpoint import vqgan
from chameleon_checkpoint.layout import (
    INFERENCE_NEUTRAL,
    NORM_REORDER,
    QK_NORM,
    collapse_rows,
    expand_rows,
    json_object,
    load_into_new_model,
    qk_norm_spec,
    require_chameleon_model,
    shareable,
    stability_names,
    table_rows,
)
from chameleon_sdk import CheckpointError, CheckpointInfo, ComponentSpec, ModelConfig, PluginRegistry, plugin_api
from chameleon_sdk.plugin_api import ImageTokenizerCheckpoint

CONFIG_FILE = "config.json"
VQ_PREFIX = "model.vqmodel."

_GLOBAL_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_KEYS = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention.q_norm.weight": "self_attn.q_norm.weight",
    "attention.q_norm.bias": "self_attn.q_norm.bias",
    "attention.k_norm.weight": "self_attn.k_norm.weight",
    "attention.k_norm.bias": "self_attn.k_norm.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
_HF_LAYER_KEYS = {hf: ours for ours, hf in _LAYER_KEYS.items()}
_HF_GLOBAL_KEYS = {hf: ours for ours, hf in _GLOBAL_KEYS.items()}


def hf_key(key: str) -> str:
    """Our state-dict key -> the ``transformers`` one."""
    if key in _GLOBAL_KEYS:
        return _GLOBAL_KEYS[key]
    layer, _, rest = key.removeprefix("layers.").partition(".")
    if key.startswith("layers.") and layer.isdigit() and rest in _LAYER_KEYS:
        return f"model.layers.{layer}.{_LAYER_KEYS[rest]}"
    raise CheckpointError(f"the hf layout has no place for tensor {key!r}")


def our_key(key: str, source: str) -> str:
    """A ``transformers`` state-dict key -> ours."""
    if key in _HF_GLOBAL_KEYS:
        return _HF_GLOBAL_KEYS[key]
    layer, _, rest = key.removeprefix("model.layers.").partition(".")
    if key.startswith("model.layers.") and layer.isdigit() and rest in _HF_LAYER_KEYS:
        return f"layers.{layer}.{_HF_LAYER_KEYS[rest]}"
    raise CheckpointError(f"checkpoint {source!r}: tensor {key!r} is not part of a Chameleon language model")


def _is_qk_norm(key: str) -> bool:
    return ".q_norm." in key or ".k_norm." in key


@attrs.frozen(kw_only=True)
class HFOptions:
    """Options of the ``hf`` checkpoint format.

    :param attention: the attention backend of a loaded model.
    :param qk_norm_sharing: ``"head"`` loads the per-head tables as they are (each head trains its
        own norm); ``"auto"`` shares one norm by the fewest contiguous head groups whose rows are all
        equal (one per layer for the released 7B), which reproduces the original parameterisation.
    :param max_shard_bytes: when saving, split tensors into shards of at most this many bytes.
    """

    attention: str = "sdpa"
    qk_norm_sharing: Literal["head", "auto"] = "head"
    max_shard_bytes: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.gt(0)))


def _read_config(path: Path) -> dict[str, Any]:
    config = plugin_api.read_json(path / CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(path / CONFIG_FILE)!r}: expected a JSON object")
    return config


def model_config_from_hf(config: dict[str, Any], source: str) -> ModelConfig:
    """Our :class:`ModelConfig` for a ``transformers`` Chameleon ``config.json``, refusing what we cannot run."""

    def field(name: str, default: Any = attrs.NOTHING) -> Any:
        if name not in config:
            if default is attrs.NOTHING:
                raise CheckpointError(f"{source!r}: config.json lacks {name!r}")
            return default
        return config[name]

    for flag in ("attention_bias", "mlp_bias"):
        if field(flag, False):
            raise CheckpointError(f"{source!r}: {flag} is true, but our model has no biases in linear layers")
    if field("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source!r}: hidden_act {config['hidden_act']!r} is not supported (only 'silu')")
    rope = field("rope_parameters", None) or field("rope_scaling", None) or {}
    if not isinstance(rope, dict):
        raise CheckpointError(f"{source!r}: rope_parameters must be an object, got {rope!r:.60}")
    for name in ("num_attention_heads", "hidden_size"):
        plugin_api.check_number(
            field(name), f"{source!r}: config.json {name}", integer=True, low=1, error=CheckpointError
        )
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise CheckpointError(f"{source!r}: rope scaling {rope!r} is not supported (only plain RoPE)")
    theta = rope.get("rope_theta", field("rope_theta", 10000.0))
    heads = field("num_attention_heads")
    hidden = field("hidden_size")
    if config.get("head_dim") not in (None, hidden // heads):
        raise CheckpointError(f"{source!r}: head_dim {config['head_dim']} differs from hidden_size / heads")
    try:
        return ModelConfig(
            dim=hidden,
            num_layers=field("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=field("num_key_value_heads", None) or heads,
            vocab_size=field("vocab_size"),
            ffn_dim=field("intermediate_size"),
            rope_theta=float(theta),
            norm_eps=float(field("rms_norm_eps", 1e-5)),
            max_seq_len=field("max_position_embeddings", 4096),
            init_std=float(field("initializer_range", 0.02)),
        )
    except (chameleon_sdk.ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source!r}: config.json does not describe a valid model: {exc}") from exc


def image_block_length(config: dict[str, Any], source: str) -> int | None:
    """Codes per image: the code grid of ``vq_config``; without one, 1,024 for the released 8,192-code
    vocabulary (its grid is 32 x 32) and unknown otherwise."""
    vq = config.get("vq_config")
    if isinstance(vq, dict):
        return vqgan.architecture_from_hf(vq, f"{source!r}: config.json vq_config").block_length
    names = config.get("vocabulary_map")
    codes = sum(1 for n in names if isinstance(n, str) and n.startswith("IMGIMG")) if isinstance(names, dict) else 0
    return vqgan.RELEASED_BLOCK_LENGTH if codes == vqgan.RELEASED_CODES else None


def hf_config_from_model(model: nn.Module, base: dict[str, Any] | None, groups: int) -> dict[str, Any]:
    """The ``config.json`` for ``model``; fields of ``base`` we do not own (``vq_config``...) are kept."""
    config: ModelConfig = model.config
    vocabulary = getattr(model, "vocabulary", None)
    out = dict(base or {})
    for stale in ("rope_scaling", "head_dim", "_name_or_path", "image_token_id", "torch_dtype"):
        out.pop(stale, None)
    if "vocabulary_map" not in out:
        out["vocabulary_map"] = vocabulary.token_names() if vocabulary is not None else {}
    if vocabulary is not None:
        out.update(
            bos_token_id=vocabulary.specials["bos"],
            eos_token_id=vocabulary.specials["eos"],
            pad_token_id=vocabulary.specials["pad"],
        )
    dtype = str(model.tok_embeddings.weight.dtype).removeprefix("torch.")
    out.update(
        architectures=["ChameleonForConditionalGeneration"],
        model_type="chameleon",
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        intermediate_size=config.hidden_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.kv_heads,
        hidden_act="silu",
        max_position_embeddings=config.max_seq_len,
        initializer_range=config.init_std,
        rms_norm_eps=config.norm_eps,
        rope_parameters={"rope_theta": config.rope_theta, "rope_type": "default"},
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        model_parallel_size=groups if 1 < groups < config.num_heads else 1,
        swin_norm=getattr(model, "layout", "pre_norm") == "reordered",
        tie_word_embeddings=False,
        dtype=dtype,
    )
    return out


class HFFormat:
    """Reads and writes the ``transformers`` ``ChameleonForConditionalGeneration`` directory layout."""

    name = "hf"

    def __init__(self, options: HFOptions | None = None) -> None:
        self.options = options or HFOptions()

    def detect(self, path: Path) -> bool:
        config = json_object(path / CONFIG_FILE)
        return config is not None and config.get("model_type") == "chameleon"

    # -- load ---------------------------------------------------------------------------------

    def load(self, path: Path, *, registry: PluginRegistry, dtype: torch.dtype | None = None) -> nn.Module:
        source = str(path)
        raw = _read_config(path)
        config = model_config_from_hf(raw, source)
        tensors = {
            key: value for key, value in plugin_api.read_safetensors(path).items() if not key.startswith(VQ_PREFIX)
        }
        embeddings = tensors.get("model.embed_tokens.weight")
        if "lm_head.weight" not in tensors and raw.get("tie_word_embeddings") and embeddings is not None:
            tensors["lm_head.weight"] = embeddings
        state = {our_key(key, source): value for key, value in tensors.items()}
        groups = self._groups(state, config, source)
        for key in [k for k in state if _is_qk_norm(k)]:
            state[key] = collapse_rows(state[key], table_rows(key, groups, config), key)
        stability = [qk_norm_spec(groups, config.num_heads)]
        if raw.get("swin_norm"):
            stability.append(ComponentSpec(name=NORM_REORDER))
        model = load_into_new_model(
            config,
            state,
            attention=self.options.attention,
            stability=stability,
            registry=registry,
            source=source,
            dtype=dtype,
        )
        vocabulary_map = raw.get("vocabulary_map")
        model.vocabulary = (  # type: ignore[assignment]
            chameleon_sdk.Vocabulary.from_token_names(
                vocabulary_map,
                size=config.vocab_size or 0,
                fallback_ids={r: raw.get(f"{r}_token_id") for r in ("bos", "eos", "pad")},
                block_lengths={"image": image_block_length(raw, source)},
                where=f"{source!r}: config.json vocabulary_map",
            )
            if vocabulary_map
            else None
        )
        model.checkpoint_info = CheckpointInfo(format=self.name, path=source, metadata={"config": raw})  # type: ignore[assignment]
        return model

    def _groups(self, state: dict[str, torch.Tensor], config: ModelConfig, source: str) -> int:
        """How many query QK-norm groups the loaded model gets (``num_heads``: one per head)."""
        if sum(1 for k in state if ".q_norm." in k) != 2 * config.num_layers:
            raise CheckpointError(f"checkpoint {source!r}: expected q_norm weight and bias in every layer")
        if self.options.qk_norm_sharing == "head":
            return config.num_heads
        for groups in (g for g in range(1, config.num_heads + 1) if config.num_heads % g == 0):
            if shareable(state, config, groups):
                return groups
        return config.num_heads

    # -- save ---------------------------------------------------------------------------------

    def save(self, model: nn.Module, path: Path) -> None:
        require_chameleon_model(model, self.name)
        config: ModelConfig = model.config
        unsupported = [n for n in stability_names(model) if n not in {QK_NORM, NORM_REORDER, *INFERENCE_NEUTRAL}]
        if unsupported:
            raise CheckpointError(f"the hf layout cannot express the stability trick(s) {unsupported}")
        state = model.state_dict()
        if not any(_is_qk_norm(k) for k in state):
            raise CheckpointError("the hf layout always applies QK-norm, but this model has no q_norm/k_norm tables")
        groups = next(v.shape[0] for k, v in state.items() if k.endswith("attention.q_norm.weight"))
        tensors: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if _is_qk_norm(key):
                value = expand_rows(value, table_rows(key, config.num_heads, config), key)
            tensors[hf_key(key)] = value
        info = getattr(model, "checkpoint_info", None)
        base = dict(info.metadata.get("config", {})) if info is not None and info.format == self.name else None
        if base is not None and Path(info.path).exists():
            tensors.update(plugin_api.read_safetensors(info.path, prefix=VQ_PREFIX))
        plugin_api.write_json(path / CONFIG_FILE, hf_config_from_model(model, base, groups))
        plugin_api.write_safetensors(tensors, path, max_shard_bytes=self.options.max_shard_bytes)

    # -- image tokenizers (plugin_api.ImageTokenizerFormat; the layout is in vqgan.py) ------------

    def detect_image_tokenizer(self, path: Path) -> bool:
        return vqgan.detect_hf(path)

    def read_image_tokenizer(self, path: Path) -> ImageTokenizerCheckpoint:
        return vqgan.read_hf(path)

    def write_image_tokenizer(self, checkpoint: ImageTokenizerCheckpoint, path: Path) -> None:
        vqgan.write_hf(checkpoint, path, max_shard_bytes=self.options.max_shard_bytes)
