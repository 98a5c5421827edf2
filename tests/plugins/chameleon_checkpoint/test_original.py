"""The ``original`` format (Meta's release layout), tested with checkpoints this file writes from known models.

The writer here is independent of the reader: it builds each head's interleaved row order with an
explicit gather index and splits tensors the way model parallelism does.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk
from chameleon_sdk import CheckpointError
from chameleon_sdk.token_names import image_name

ROW_SPLIT = ("wq", "wk", "wv", "w1", "w3")
COLUMN_SPLIT = ("wo", "w2")


def interleaved_rows(heads: int, head_dim: int) -> torch.Tensor:
    """Index turning rotate-half rows into interleaved pairs: row 2j <- j, row 2j+1 <- j + Dh/2."""
    half = head_dim // 2
    order = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    return (torch.arange(heads)[:, None] * head_dim + order[None, :]).flatten()


def write_meta_checkpoint(model, directory, *, shards: int, nested_params: bool = True, rope_freqs: bool = False):
    """Write ``model`` as Meta's ``params.json`` + ``consolidated*.pth`` with ``shards`` model-parallel shards."""
    config = model.config
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    q_index = interleaved_rows(config.num_heads, config.head_dim)
    k_index = interleaved_rows(config.kv_heads, config.head_dim)
    vector_index = interleaved_rows(1, config.head_dim)
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(shards)]

    def split(key, tensor, dim):
        for part, chunk in zip(parts, tensor.chunk(shards, dim=dim), strict=True):
            part[key] = chunk.clone()

    for key, tensor in state.items():
        name = key.split(".")[-2] if key.endswith(".weight") or key.endswith(".bias") else key
        if key.endswith("attention.wq.weight"):
            split(key, tensor[q_index], 0)
        elif key.endswith("attention.wk.weight"):
            split(key, tensor[k_index], 0)
        elif name in ROW_SPLIT or key == "output.weight":
            split(key, tensor, 0)
        elif name in COLUMN_SPLIT or key == "tok_embeddings.weight":
            split(key, tensor, 1)
        elif name in ("q_norm", "k_norm"):
            meta_key = key.replace("q_norm", "q_normalization").replace("k_norm", "k_normalization")
            assert tensor.shape[0] == shards, "one QK-norm vector per shard"
            for part, row in zip(parts, tensor, strict=True):
                part[meta_key] = row[vector_index].clone()
        else:  # norms are replicated on every shard
            for part in parts:
                part[key] = tensor.clone()
    if rope_freqs:
        for part in parts:
            part["rope.freqs"] = torch.ones(config.head_dim // 2)
    names = ["consolidated.pth"] if shards == 1 else [f"consolidated.{i:02d}.pth" for i in range(shards)]
    for name, part in zip(names, parts, strict=True):
        torch.save(part, directory / name)
    params = {
        "dim": config.dim,
        "n_layers": config.num_layers,
        "n_heads": config.num_heads,
        "n_kv_heads": config.kv_heads,
        "norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "swin_norm": model.layout == "reordered",
        "multiple_of": 8,
    }
    data = {"model": params, "model_parallel_size": shards} if nested_params else params
    (directory / "params.json").write_text(json.dumps(data))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from([(4, 4, 1), (4, 2, 1), (4, 2, 2), (4, 4, 4), (8, 4, 2), (8, 4, 4), (2, 1, 1)]),
    head_dim=st.sampled_from([4, 8]),
    reorder=st.booleans(),
    nested=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_meta_checkpoints_load_with_equal_logits(
    registry, make_model, tmp_path_factory, shape, head_dim, reorder, nested, seed
):
    heads, kv_heads, shards = shape
    # one LayerNorm per shard: shared per layer, per head when every head had its own shard, else per group
    qk = {"sharing": "layer"} if shards == 1 else {"sharing": "group", "num_groups": shards}
    if shards == heads:
        qk = {"sharing": "head"}
    stability = [{"name": "qk-norm", "options": qk}, *(["norm-reorder"] if reorder else [])]
    dims = {"dim": heads * head_dim, "num_heads": heads, "num_kv_heads": kv_heads, "ffn_dim": 8 * shards}
    known = make_model(stability=stability, seed=seed, **dims)
    directory = tmp_path_factory.mktemp("meta")
    write_meta_checkpoint(known, directory, shards=shards, nested_params=nested, rope_freqs=seed % 2 == 0)
    assert chameleon_sdk.detect_format(directory) == "original"
    loaded = chameleon_sdk.load_model(directory)
    assert loaded.config == known.config
    assert loaded.stability_specs == known.stability_specs
    ids = torch.randint(0, known.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(_logits(loaded, ids), _logits(known, ids), rtol=0, atol=1e-5)


def test_a_loaded_meta_checkpoint_saves_as_hf_and_native(registry, make_model, tmp_path):
    known = make_model(stability=["qk-norm"])
    write_meta_checkpoint(known, tmp_path / "meta", shards=1)
    loaded = chameleon_sdk.load_model(tmp_path / "meta")
    for fmt in ("native", "hf"):
        chameleon_sdk.save_model(loaded, tmp_path / fmt, format=fmt)
        again = chameleon_sdk.load_model(tmp_path / fmt)
        ids = torch.randint(0, 48, (1, 5))
        torch.testing.assert_close(_logits(again, ids), _logits(loaded, ids), rtol=0, atol=0)


def test_bad_meta_checkpoints_are_named(registry, make_model, tmp_path):
    known = make_model(stability=[{"name": "qk-norm", "options": {"sharing": "group", "num_groups": 2}}])
    write_meta_checkpoint(known, tmp_path, shards=2)
    params = json.loads((tmp_path / "params.json").read_text())
    (tmp_path / "params.json").write_text(json.dumps(params | {"model_parallel_size": 4}))
    with pytest.raises(CheckpointError, match="model_parallel_size 4 but there are 2 shard files"):
        chameleon_sdk.load_model(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps(params))
    (tmp_path / "consolidated.01.pth").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match=r"consolidated\.01\.pth' cannot be read"):
        chameleon_sdk.load_model(tmp_path)
    (tmp_path / "consolidated.01.pth").rename(tmp_path / "consolidated.02.pth")
    with pytest.raises(CheckpointError, match=r"shard numbers \[0, 2\]"):
        chameleon_sdk.load_model(tmp_path, format="original")
    with pytest.raises(CheckpointError, match="QK-norm rows differ"):  # two groups: the writer makes one shard
        chameleon_sdk.save_model(known, tmp_path / "out", format="original")


def test_pickled_code_in_a_shard_is_refused(registry, make_model, tmp_path):
    write_meta_checkpoint(make_model(stability=["qk-norm"]), tmp_path, shards=1)
    state = torch.load(tmp_path / "consolidated.pth", weights_only=True)
    state["output.weight"] = torch.nn.Linear(2, 2)  # a module: only a full unpickler would build it
    torch.save(state, tmp_path / "consolidated.pth")
    with pytest.raises(CheckpointError, match=r"refusing to load '.*consolidated\.pth': it needs pickled code"):
        chameleon_sdk.load_model(tmp_path)


def test_the_release_tokenizer_gives_the_vocabulary(registry, make_model, tmp_path):
    model_dir = tmp_path / "models" / "7b"
    write_meta_checkpoint(make_model(stability=["qk-norm"]), model_dir, shards=1)
    assert chameleon_sdk.load_model(model_dir).vocabulary is None
    names = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<eoss>": 12, "<racm3:break>": 13, "<reserved08707>": 14}
    names |= {image_name(code): 4 + code for code in range(8)}
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "text_tokenizer.json").write_text(json.dumps({"model": {"vocab": names}}))
    vocabulary = chameleon_sdk.load_model(model_dir).vocabulary
    assert vocabulary.blocks["image"].code_ids.tolist() == list(range(4, 12))
    assert vocabulary.specials["<reserved08707>"] == 14
    with pytest.raises(CheckpointError, match=r"nowhere\.json' is missing"):
        chameleon_sdk.load_model(model_dir, options={"text_tokenizer": str(tmp_path / "nowhere.json")})


def test_the_writer_agrees_with_this_files_independent_one(registry, make_model, tmp_path):
    known = make_model(stability=["qk-norm", "norm-reorder"], dim=48, num_heads=4, num_kv_heads=2)
    write_meta_checkpoint(known, tmp_path / "independent", shards=1)
    chameleon_sdk.save_model(known, tmp_path / "plugin", format="original")
    expected = torch.load(tmp_path / "independent" / "consolidated.pth", weights_only=True)
    written = torch.load(tmp_path / "plugin" / "consolidated.pth", weights_only=True)
    assert sorted(written) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(written[key], tensor.reshape(written[key].shape)), key
