"""int8-weight-only (torchao) and bf16 weights through generate_tokens, Pipeline.generate and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import chameleon_sdk as cs

pytest.importorskip("torchao")


def _model(vocab_size: int = 96) -> cs.ChameleonModel:
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=64, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=vocab_size, max_seq_len=64)
    return cs.build_model(config).eval()


def _quantized_weights(model) -> set[str]:
    return {name for name, p in model.named_parameters() if hasattr(p, "qdata")}


def test_every_linear_weight_becomes_int8_with_the_head_optional():
    model = cs.quantize_model(_model(), "int8-weight-only")
    linears = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert _quantized_weights(model) == linears and "output.weight" in linears
    keep_head = cs.quantize_model(_model(), {"name": "int8-weight-only", "options": {"output_head": False}})
    assert _quantized_weights(keep_head) == linears - {"output.weight"}
    with pytest.raises(cs.ConfigError, match="output_head"):
        cs.quantize_model(_model(), {"name": "int8-weight-only", "options": {"output_head": "yes"}})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_logits_stay_close_to_the_full_precision_ones(dtype):
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = _model().to(dtype)(ids).logits.float()
        quantized = cs.quantize_model(_model().to(dtype), "int8-weight-only")(ids).logits
    assert quantized.dtype == dtype
    # per-channel int8 keeps ~2 significant digits of every weight: logits move by a few % of their spread
    assert (quantized.float() - reference).abs().max() < 0.1 * reference.std()
    assert not torch.equal(quantized.float(), reference)


@pytest.mark.parametrize("prompts", [[[0, 5, 9, 40], [0, 7]], [[0, 5, 9, 40]]], ids=["library matmul", "one row"])
def test_int8_compiled_decode_equals_eager_decode(prompts):
    # one row: the compiled step's matmuls are reductions and the int8 weights go to fp32 directly
    model = cs.quantize_model(_model(), "int8-weight-only")
    eager = cs.generate_tokens(model, prompts, max_new_tokens=12, stop_ids=[])
    compiled = cs.generate_tokens(model, prompts, max_new_tokens=12, stop_ids=[], compile=True)
    assert eager.shape == (len(prompts), 12) and torch.equal(eager, compiled)


@pytest.mark.slow
def test_frozen_int8_decode_equals_eager_and_reads_the_int8_weights():
    # an fp32 model's int8 weights: freezing would otherwise fold each one's dequantization into an
    # fp32 copy (chameleon_sdk.generation.compiled.int8_upcasts_through_bf16)
    from torch._inductor.utils import run_and_get_code

    model = cs.quantize_model(_model(), "int8-weight-only")
    eager = cs.generate_tokens(model, [0, 5, 9, 40], max_new_tokens=12, stop_ids=[])
    frozen, code = run_and_get_code(
        lambda: cs.generate_tokens(model, [0, 5, 9, 40], max_new_tokens=12, stop_ids=[], compile="frozen")
    )
    assert torch.equal(frozen, eager)
    assert "const int8_t*" in "".join(code)


def test_bf16_decode_starts_with_the_argmax_of_its_own_forward():
    model = _model().to(torch.bfloat16)
    prompt = [0, 5, 9, 40]
    tokens = cs.generate_tokens(model, prompt, max_new_tokens=10, stop_ids=[])
    with torch.no_grad():
        first = int(model(torch.tensor([prompt])).logits[0, -1].argmax())
    assert tokens.shape == (10,) and int(tokens[0]) == first
    assert model.new_cache(1, 8).dtype == torch.bfloat16


@pytest.mark.parametrize(("dtype", "quantize"), [(torch.bfloat16, None), (torch.bfloat16, "int8-weight-only")])
def test_pipeline_from_pretrained_loads_bf16_and_int8_and_generates(saved_pipe, dtype, quantize):
    pipe = cs.Pipeline.from_pretrained(saved_pipe, dtype=dtype, quantize=quantize)
    assert pipe.model.output.weight.dtype == dtype if quantize is None else _quantized_weights(pipe.model)
    text, digits = pipe.generate(["a red", "digits:"], mode=["text", "digits"], max_new_tokens=6)
    assert isinstance(text.segments[0], cs.Text) and text.text
    assert isinstance(digits.segments[-1], cs.Segment) and len(digits.segments[-1].payload) == 3


def test_cli_generate_with_bf16_int8_weights(saved_pipe, tmp_path, capsys):
    from chameleon_sdk.cli import main

    out = tmp_path / "out.json"
    args = ["generate", "--model", str(saved_pipe), "--prompt", "a red", "--max-new-tokens", "4", "--quiet"]
    code = main([*args, "--dtype", "bfloat16", "--quantize", "int8-weight-only", "--out", str(out)])
    assert code == 0 and "a red" in json.dumps(json.loads(out.read_text(encoding="utf-8")))
    assert main([*args, "--quantize", "int3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no quantization plugin named 'int3'" in err and "Traceback" not in err


def test_cli_int8_prints_nothing_on_stderr_under_quiet(tmp_path):
    # a new process: torchao's import-time notices (kernel libraries it cannot load on a CPU) come once
    from chameleon_sdk.tiny_release import write_tiny_release

    release = write_tiny_release(tmp_path / "release")
    script = str(Path(sys.executable).with_name("chameleon"))
    args = ["generate", "--model", str(release), "--prompt", "a red", "--max-new-tokens", "4", "--quiet"]
    args += ["--dtype", "bfloat16", "--quantize", "int8-weight-only"]
    result = subprocess.run([script, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    assert result.stderr == "", result.stderr
