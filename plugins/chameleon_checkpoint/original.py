"""The ``original`` checkpoint format: Meta's Chameleon release (writing it: ``original_writer.py``).

A directory with ``params.json`` (the hyper-parameters, either flat or under ``"model"``, with
``model_parallel_size`` beside them) and ``consolidated.pth`` or model-parallel shards
``consolidated.00.pth`` ... ``consolidated.NN.pth``, read with ``torch.load(weights_only=True)``.
The release keeps the tokenizer beside the models (``tokenizer/text_tokenizer.json``); when found,
its vocabulary becomes ``model.vocabulary`` (see :class:`OriginalOptions`).

Converting to our layout:

- Shards are merged the way the model was split: ``wq``, ``wk``, ``wv``, ``w1``, ``w3`` and ``output``
  by output rows; ``wo`` and ``w2`` by input columns; ``tok_embeddings`` by embedding columns; norms
  are replicated (the first shard's copy is used).
- Rotary: Meta's code rotates interleaved pairs (dims 0,1), (2,3)...; ours rotates halves (i, i+Dh/2).
  Each head's rows of ``wq``/``wk`` and the QK-norm vectors are reordered accordingly, which leaves
  q·k unchanged (LayerNorm over head_dim does not care about the order of the dims it normalises).
- ``q_normalization``/``k_normalization``: one LayerNorm per shard (per layer when unsharded); each
  shard held a contiguous block of heads, so the model gets ``qk-norm`` shared by that many groups.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

import chameleon_sdk
from chameleon_checkpoint import vqgan
from chameleon_checkpoint.layout import NORM_REORDER, interleaved_to_half, load_into_new_model, qk_norm_spec
from chameleon_checkpoint.original_writer import write_original
from chameleon_sdk import CheckpointError, CheckpointInfo, ComponentSpec, ModelConfig, PluginRegistry, plugin_api
from chameleon_sdk.plugin_api import ImageTokenizerCheckpoint

PARAMS_FILE = "params.json"
CONSOLIDATE_FILE = "consolidate_params.json"
TOKENIZER_FILE = Path("tokenizer") / "text_tokenizer.json"
_SHARD = re.compile(r"consolidated\.(\d+)\.pth")

_BY_ROWS = (
    "attention.wq.weight",
    "attention.wk.weight",
    "attention.wv.weight",
    "feed_forward.w1.weight",
    "feed_forward.w3.weight",
)
_BY_COLUMNS = ("attention.wo.weight", "feed_forward.w2.weight")
_REPLICATED = ("attention_norm.weight", "ffn_norm.weight")
_QK_NORMS = {
    "attention.q_normalization.weight": "attention.q_norm.weight",
    "attention.q_normalization.bias": "attention.q_norm.bias",
    "attention.k_normalization.weight": "attention.k_norm.weight",
    "attention.k_normalization.bias": "attention.k_norm.bias",
}


@attrs.frozen(kw_only=True)
class OriginalOptions:
    """Options of the ``original`` checkpoint format.

    :param attention: the attention backend of the loaded model.
    :param text_tokenizer: the release's ``text_tokenizer.json``, whose ``model.vocab`` names every id
        and gives the model its vocabulary; by default it is looked for in ``<dir>/tokenizer/`` and,
        as the release lays it out, ``<dir>/../../tokenizer/``. Without one, ``model.vocabulary`` is None.
    """

    attention: str = "sdpa"
    text_tokenizer: str | None = None


def shard_files(path: Path) -> list[Path]:
    """``consolidated.pth``, or the numbered shards in order (numbers must run 0..N-1)."""
    single = path / "consolidated.pth"
    numbered = sorted((int(m.group(1)), p) for p in path.glob("consolidated.*.pth") if (m := _SHARD.fullmatch(p.name)))
    if numbered:
        numbers = [n for n, _ in numbered]
        if numbers != list(range(len(numbers))):
            raise CheckpointError(f"checkpoint {str(path)!r}: shard numbers {numbers} do not run 0..{len(numbers) - 1}")
        return [p for _, p in numbered]
    if single.is_file():
        return [single]
    raise CheckpointError(f"checkpoint {str(path)!r} has no consolidated.pth or consolidated.NN.pth")


def _params(path: Path) -> tuple[dict[str, Any], int | None]:
    """The hyper-parameters as Meta's loader merges them: ``params.json``, its ``"model"`` section over
    it, and ``consolidate_params.json`` (when present, as in the Anole release) over both."""
    raw = _json_object(path / PARAMS_FILE)
    nested = raw.get("model", {})
    if not isinstance(nested, dict):
        raise CheckpointError(f"{str(path / PARAMS_FILE)!r}: 'model' must be a JSON object, got {nested!r:.80}")
    consolidate = _json_object(path / CONSOLIDATE_FILE) if (path / CONSOLIDATE_FILE).is_file() else {}
    params = {**raw, **nested, **consolidate}
    return params, params.get("model_parallel_size")


def _json_object(path: Path) -> dict[str, Any]:
    data = plugin_api.read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r}: expected a JSON object")
    return data


class OriginalFormat:
    """Meta's released layout (``params.json`` + ``consolidated*.pth``); saves one unsharded checkpoint."""

    name = "original"

    def __init__(self, options: OriginalOptions | None = None) -> None:
        self.options = options or OriginalOptions()

    def detect(self, path: Path) -> bool:
        return (path / PARAMS_FILE).is_file() and any(
            p.name == "consolidated.pth" or _SHARD.fullmatch(p.name) for p in path.glob("consolidated*.pth")
        )

    def load(self, path: Path, *, registry: PluginRegistry, dtype: torch.dtype | None = None) -> nn.Module:
        source = str(path)
        params, parallel = _params(path)
        files = shard_files(path)
        if parallel is not None and parallel != len(files):
            raise CheckpointError(
                f"{source!r}: params.json says model_parallel_size {parallel} but there are {len(files)} shard files"
            )
        shards = [plugin_api.read_torch_weights(f) for f in files]
        merged = merge_shards(shards, source)
        config = self._config(params, merged, source)
        state = to_rotate_half(merged, config, len(shards))
        stability = []
        if any(k.endswith("attention.q_norm.weight") for k in state):
            stability.append(qk_norm_spec(state["layers.0.attention.q_norm.weight"].shape[0], config.num_heads))
        if params.get("swin_norm"):
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
        model.vocabulary = self._vocabulary(path, config)  # type: ignore[assignment]
        model.checkpoint_info = CheckpointInfo(format=self.name, path=source, metadata={"params": params})  # type: ignore[assignment]
        return model

    def _config(self, params: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> ModelConfig:
        try:
            dim, heads = params["dim"], params["n_heads"]
            vocab, _ = state["tok_embeddings.weight"].shape
            return ModelConfig(
                dim=dim,
                num_layers=params["n_layers"],
                num_heads=heads,
                num_kv_heads=params.get("n_kv_heads") or heads,
                vocab_size=vocab,
                ffn_dim=state["layers.0.feed_forward.w1.weight"].shape[0],
                rope_theta=float(params.get("rope_theta", 10000.0)),
                norm_eps=float(params.get("norm_eps", 1e-5)),
                max_seq_len=params.get("max_seq_len", 4096),
            )
        except KeyError as exc:
            raise CheckpointError(f"{source!r}: params.json or the weights lack {exc}") from exc
        except chameleon_sdk.ConfigError as exc:
            raise CheckpointError(f"{source!r}: params.json does not describe a valid model: {exc}") from exc

    def _vocabulary(self, path: Path, config: ModelConfig) -> chameleon_sdk.Vocabulary | None:
        if self.options.text_tokenizer is not None:
            candidates = [Path(self.options.text_tokenizer)]
            if not candidates[0].is_file():
                raise CheckpointError(f"text tokenizer file {self.options.text_tokenizer!r} is missing")
        else:
            candidates = [path / TOKENIZER_FILE, path.parent.parent / TOKENIZER_FILE]
        for candidate in candidates:
            if candidate.is_file():
                tokenizer = plugin_api.read_json(candidate)
                vocab = tokenizer.get("model", {}).get("vocab") if isinstance(tokenizer, dict) else None
                if not isinstance(vocab, dict):
                    raise CheckpointError(f"{str(candidate)!r} has no 'model.vocab' mapping of token names to ids")
                return chameleon_sdk.Vocabulary.from_token_names(
                    vocab,
                    size=config.vocab_size or 0,
                    block_lengths={"image": _image_block_length(candidate.parent)},
                    where=f"{str(candidate)!r}: model.vocab",
                )
        return None

    def save(self, model: nn.Module, path: Path) -> None:
        write_original(model, path)

    # -- image tokenizers (plugin_api.ImageTokenizerFormat; the layout is in vqgan.py) ------------

    def detect_image_tokenizer(self, path: Path) -> bool:
        return vqgan.detect_original(path)

    def read_image_tokenizer(self, path: Path) -> ImageTokenizerCheckpoint:
        return vqgan.read_original(path)

    def write_image_tokenizer(self, checkpoint: ImageTokenizerCheckpoint, path: Path) -> None:
        raise CheckpointError("the original format is read-only; save the image tokenizer as 'native' or 'hf'")


def _image_block_length(tokenizer_dir: Path) -> int:
    """Codes per image: the grid of the ``vqgan.yaml`` beside the text tokenizer as Meta's
    ``ImageTokenizer`` runs it, or its fixed 32 x 32 without one."""
    if not (tokenizer_dir / vqgan.ORIGINAL_CONFIG).is_file():
        return vqgan.RELEASED_BLOCK_LENGTH
    return vqgan.read_original_architecture(tokenizer_dir / vqgan.ORIGINAL_CONFIG).block_length


def merge_shards(shards: list[dict[str, torch.Tensor]], source: str) -> dict[str, torch.Tensor]:
    """One state dict (Meta's key names) from model-parallel shards; QK-norm vectors stacked ``[shards, Dh]``."""
    keys = set(shards[0])
    for i, shard in enumerate(shards[1:], start=1):
        if set(shard) != keys:
            diff = sorted(set(shard) ^ keys)[:5]
            raise CheckpointError(f"{source!r}: shard {i} holds different tensors than shard 0 ({diff})")
    merged: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        parts = [shard[key] for shard in shards]
        suffix = key.split(".", 2)[-1] if key.startswith("layers.") else key
        if key == "rope.freqs":
            continue  # precomputed rotary table; recomputed from rope_theta
        if suffix in _BY_ROWS or key == "output.weight":
            merged[key] = _joined(parts, dim=0)
        elif suffix in _BY_COLUMNS or key == "tok_embeddings.weight":
            merged[key] = _joined(parts, dim=1)
        elif suffix in _REPLICATED or key == "norm.weight":
            merged[key] = parts[0]
        elif suffix in _QK_NORMS:
            merged[key] = torch.stack(parts)
        else:
            raise CheckpointError(f"{source!r}: tensor {key!r} is not part of a Chameleon model")
    return merged


def _joined(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """The shards' slices as one tensor; an unsharded checkpoint's own (memory-mapped) tensor, not a copy."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def to_rotate_half(merged: dict[str, torch.Tensor], config: ModelConfig, groups: int) -> dict[str, torch.Tensor]:
    """Rename to our keys and permute rotary dims from interleaved pairs to rotate-half order."""
    state: dict[str, torch.Tensor] = {}
    for key, value in merged.items():
        layer, _, suffix = key.removeprefix("layers.").partition(".")
        if not key.startswith("layers."):
            state[key] = value
        elif suffix == "attention.wq.weight":
            state[key] = interleaved_to_half(value, config.num_heads)
        elif suffix == "attention.wk.weight":
            state[key] = interleaved_to_half(value, config.kv_heads)
        elif suffix in _QK_NORMS:
            # [groups, Dh]: each row is one head-sized vector in interleaved order.
            state[f"layers.{layer}.{_QK_NORMS[suffix]}"] = interleaved_to_half(value.reshape(-1), groups).reshape(
                groups, -1
            )
        else:
            state[key] = value
    return state
