"""onednn-packed: bf16 weights packed for oneDNN give the plain bf16 model's logits and tokens."""

from __future__ import annotations

import json

import pytest
import torch
from chameleon_quantization.onednn_packed import PackedLinear, _available
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs

pytestmark = pytest.mark.skipif(not _available(), reason="this torch build has no oneDNN packed linear ops")

VOCAB = 96


def _model(dtype: torch.dtype = torch.bfloat16) -> cs.ChameleonModel:
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=64, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=VOCAB, max_seq_len=64)
    return cs.build_model(config).eval().to(dtype)


PLAIN = _model()
PACKED = cs.quantize_model(_model(), "onednn-packed")


def test_every_linear_is_packed_and_nothing_else_changes():
    linears = {name for name, m in _model().named_modules() if isinstance(m, torch.nn.Linear)}
    packed = {name for name, m in PACKED.named_modules() if isinstance(m, PackedLinear)}
    assert packed == linears and "output" in packed
    assert not any(isinstance(m, torch.nn.Linear) for m in PACKED.modules())
    assert all(PACKED.get_submodule(name).weight.is_mkldnn for name in packed)
    kept = {name for name, _ in PACKED.named_parameters()}
    assert kept == {name for name, _ in PLAIN.named_parameters() if name.rsplit(".", 1)[0] not in linears}


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 4), length=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_packed_logits_equal_the_plain_bf16_logits(rows, length, seed):
    ids = torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        plain, packed = PLAIN(ids).logits, PACKED(ids).logits
    assert packed.dtype == plain.dtype == torch.bfloat16
    # the same products summed in oneDNN's order either way; allow for a different blocking
    assert (packed.float() - plain.float()).abs().max() <= 0.02 * plain.float().std()


@pytest.mark.parametrize("compile", [False, True, "frozen"])
def test_packed_decoding_gives_the_plain_bf16_tokens(compile):
    prompts = [[0, 5, 9, 40], [0, 7]]
    plain = cs.generate_tokens(PLAIN, prompts, max_new_tokens=12, stop_ids=[])
    packed = cs.generate_tokens(PACKED, prompts, max_new_tokens=12, stop_ids=[], compile=compile)
    assert packed.shape == (2, 12) and torch.equal(plain, packed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_weights_other_than_bf16_are_refused(dtype):
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(cs.ConfigError, match=rf"packs bf16 weights on the CPU, but \S+ holds {name} on cpu"):
        cs.quantize_model(_model(dtype), "onednn-packed")


def test_one_fp32_layer_among_bf16_ones_is_named_and_nothing_is_packed():
    model = _model()
    model.layers[1].feed_forward.w2.float()
    with pytest.raises(cs.ConfigError, match=r"but layers\.1\.feed_forward\.w2 holds float32"):
        cs.quantize_model(model, "onednn-packed")
    assert not any(isinstance(m, PackedLinear) for m in model.modules())


def test_converting_packed_weights_is_a_clear_error_that_converts_nothing_and_the_cpu_a_no_op():
    model = cs.quantize_model(_model(), "onednn-packed")
    assert model.to("cpu") is model
    conversions = (lambda m: m.to(torch.float32), lambda m: m.half(), lambda m: m.layers.float())
    for convert, first in zip(conversions, ("output", "output", "layers.0.attention.wq")):
        with pytest.raises(cs.ConfigError, match=rf"stay as packed \(bf16, CPU\), and {first} holds some: nothing"):
            convert(model)
        # the embedding and the norms come before the first packed layer: none of them was converted
        assert {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()} == {torch.bfloat16}
    with pytest.raises(cs.ConfigError, match="and this layer holds some"):
        model.output.float()
    model.norm.float()  # a module without packed layers converts as always
    assert model.norm.weight.dtype == torch.float32


def test_pipeline_and_cli_load_packed_weights(saved_pipe, tmp_path):
    from chameleon_sdk.cli import main

    pipe = cs.Pipeline.from_pretrained(saved_pipe, dtype=torch.bfloat16, quantize="onednn-packed")
    assert isinstance(pipe.model.output, PackedLinear)
    text, digits = pipe.generate(["a red", "digits:"], mode=["text", "digits"], max_new_tokens=6)
    assert text.text and len(digits.segments[-1].payload) == 3
    out = tmp_path / "out.json"
    args = ["generate", "--model", str(saved_pipe), "--prompt", "a red", "--max-new-tokens", "4", "--quiet"]
    assert main([*args, "--dtype", "bfloat16", "--quantize", "onednn-packed", "--out", str(out)]) == 0
    assert "a red" in json.dumps(json.loads(out.read_text(encoding="utf-8")))
